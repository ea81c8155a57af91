"""What ``mvmic compress``, ``decompress`` and ``send`` share: one-line errors and exit
statuses, input → output pairs for a file or a folder, and the guard on what a run may write.

Exit status 0 ok, 2 bad usage or bad input (one line naming the file and the fix), 1 an
unexpected failure (with its traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from mvmic.codecs.base import Codec

# Nothing here imports PyTorch at module level: the supervisor of `mvmic serve --workers N`
# shares the parser and the error type, and holds no model (about 1 GB less memory).


class UsageError(ValueError):
    """Bad command-line usage or input: reported in one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse whose errors are a :class:`UsageError` (one line), not a usage dump."""

    def error(self, message: str) -> None:  # one line, exit status 2 (no usage dump)
        raise UsageError(f"{message} (see {self.prog} --help)")


def load_model(ckpt: str | Path) -> Any:
    """The module saved in a checkpoint, in eval mode (``mvmic.modules.load_module``)."""
    if not Path(ckpt).is_file():
        raise UsageError(f"checkpoint {ckpt} does not exist")
    from mvmic.modules import load_module

    try:
        return load_module(ckpt)
    except (ValueError, KeyError, FileNotFoundError) as err:
        raise UsageError(f"cannot load checkpoint {ckpt}: {err}") from None


def resolve_for_cli(model: Any, ckpt: str | Path) -> tuple[Codec, nn.Module | None]:
    """The codec (entropy tables updated) and task network of a loaded checkpoint."""
    from mvmic.coding import resolve_model  # the API module; it imports nothing from here

    try:
        codec, task = resolve_model(model)
    except TypeError as err:
        raise UsageError(f"checkpoint {ckpt}: {err}") from None
    codec.update()  # entropy tables before hashing: files carry the hash of updated tables
    return codec, task


def run_command(name: str, body, argv: list[str] | None) -> int:
    """Run ``body(argv)`` as ``mvmic NAME``: bad input is one line and status 2, a bug 1."""
    from mvmic.codecs.bitstream import BitstreamError
    from mvmic.io import ImageReadError

    try:
        return body(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as err:  # --help
        return int(err.code or 0)
    except (UsageError, BitstreamError, ImageReadError, FileNotFoundError) as err:
        print(f"mvmic {name}: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - a bug or an environment problem
        traceback.print_exc()
        print(f"mvmic {name}: unexpected error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1


def input_pairs(src: Path, dst: Path, accept, new_suffix: str) -> list[tuple[Path, Path]]:
    """(input, output) pairs: one file, or every accepted file under a folder, mirrored."""
    if not src.exists():
        raise UsageError(f"input {src} does not exist")
    if src.is_dir():
        # Hidden files (``.DS_Store``, ``._a.png``, unfinished ``.a.png.…part.png``) are
        # never images to process.
        files = sorted(
            p
            for p in src.rglob("*")
            if p.is_file() and accept(p) and not hidden(p.relative_to(src))
        )
        if not files:
            raise UsageError(f"input folder {src} holds no files to process")
        if dst.exists() and not dst.is_dir():
            raise UsageError(f"output {dst} must be a folder when the input is a folder")
        return [(p, dst / renamed(p.relative_to(src), new_suffix)) for p in files]
    if dst.is_dir() or str(dst).endswith(("/", "\\")):
        return [(src, dst / renamed(Path(src.name), new_suffix))]
    return [(src, dst)]


def hidden(rel: Path) -> bool:
    """Whether a path (relative to the folder scanned) has a hidden part."""
    return any(part.startswith(".") for part in rel.parts)


def file_key(path: Path) -> tuple[int, int] | str:
    """Identity of a file: device and inode when it exists (links, ``a/../a``), else its path."""
    try:
        st = os.stat(path)
    except OSError:
        return os.path.normcase(os.path.realpath(path))
    return st.st_dev, st.st_ino


class Outputs:
    """What a command may write: never one of its inputs, never one file twice in a run, and
    no existing file unless ``--overwrite``."""

    def __init__(self, inputs: list[Path], overwrite: bool) -> None:
        self.inputs = {file_key(p): p for p in inputs}
        self.overwrite = overwrite
        self.written: dict[tuple[int, int] | str, Path] = {}

    def plan(self, pairs: list[tuple[Path, Path]], existing: bool) -> None:
        """Refuse the whole run before anything is written (``existing``: check that too)."""
        planned: dict[tuple[int, int] | str, Path] = {}
        for src, dst in pairs:
            key = file_key(dst)
            if key in planned:
                raise UsageError(
                    f"{planned[key]} and {src} would both be written to {dst}; "
                    "rename one of them or put them in different folders"
                )
            planned[key] = src
            self.check(src, [dst], existing=False)
        if existing and not self.overwrite:
            there = [dst for _, dst in pairs if dst.exists() or dst.is_symlink()]
            if there:
                more = f" (and {len(there) - 1} more outputs)" if len(there) > 1 else ""
                raise UsageError(f"{there[0]} exists{more}; pass --overwrite to replace")

    def check(self, src: Path, paths: list[Path], existing: bool = True) -> None:
        """Refuse writing ``paths`` (from ``src``): an input, twice in a run, or (with
        ``existing``) a file that exists unless ``--overwrite``."""
        from mvmic.io import check_writable

        for p in paths:
            key = file_key(p)
            if key in self.inputs:
                raise UsageError(
                    f"output {p} is the input {self.inputs[key]}; write to another file or folder"
                )
            if key in self.written:
                raise UsageError(
                    f"{p} would be written from both {self.written[key]} and {src}; "
                    "rename one of them or put them in different folders"
                )
            try:
                check_writable(p, self.overwrite or not existing)
            except FileExistsError:
                raise UsageError(f"{p} exists; pass --overwrite to replace it") from None
            except OSError as err:
                raise UsageError(str(err)) from None

    def write(self, src: Path, paths: list[Path], write, *args: Any, **kwargs: Any) -> list[Path]:
        """Check ``paths``, run ``write(*args, **kwargs)`` and record the paths it returns;
        every failure is a UsageError naming the file."""
        self.check(src, paths)
        try:
            written = write(*args, **kwargs)
        except FileExistsError as err:
            raise UsageError(f"{err}; pass --overwrite to replace it") from None
        except ValueError as err:  # an output format that cannot hold this result
            raise UsageError(str(err)) from None
        except OSError as err:  # permissions, a full disk, ...
            msg = f"cannot write {err.filename or paths[0]}: {err.strerror}"
            raise UsageError(msg if err.strerror else str(err)) from None
        for p in written:
            self.written[file_key(p)] = src
        return written


def renamed(rel: Path, new_suffix: str) -> Path:
    """``rel`` with its suffix (``.nii.gz`` counted as one) replaced."""
    from mvmic.io import suffix_of

    suffix = suffix_of(rel)
    return rel.with_name(rel.name[: len(rel.name) - len(suffix)] + new_suffix)


def progress(items: list, desc: str):
    """A tqdm bar on stderr, shown for two items or more."""
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="file", file=sys.stderr, disable=len(items) < 2)


def add_overwrite_arg(parser: argparse.ArgumentParser) -> None:
    """The ``--overwrite`` flag, worded the same in every command."""
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing output files (an input is never overwritten)",
    )

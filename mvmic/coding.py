"""Compress images to ``.mvmic`` files and back: the Python API and ``mvmic compress|decompress``.

Python::

    data = mvmic.compress(image, model)     # image: tensor/array in [0, 1] or a file path
    x_hat = mvmic.decompress(data, model)   # F×C×H×W tensor in [0, 1]

``model`` is a :class:`~mvmic.codecs.Codec` or a LightningModule with ``.codec`` (and ``.task``),
e.g. ``mvmic.modules.load_module("best.ckpt")``.

Command line (exit status 0 ok, 2 bad usage or bad input, 1 unexpected failure)::

    mvmic compress   --ckpt best.ckpt scan.dcm scan.mvmic
    mvmic compress   --ckpt best.ckpt folder_in/ folder_out/   # never replaces a file unless
                                                                # --overwrite; never an input
    mvmic decompress --ckpt best.ckpt scan.mvmic scan.png
    mvmic decompress --ckpt best.ckpt scan.mvmic scan_rec.dcm --like scan.dcm
    mvmic decompress --ckpt best.ckpt scan.mvmic mask.png --task
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mvmic.codecs.base import Codec
from mvmic.codecs.bitstream import Bitstream, BitstreamError
from mvmic.io import (
    NPY_LAYOUTS,
    ImageReadError,
    atomic_outputs,
    check_writable,
    frames_to_nifti,
    is_supported,
    match_channels,
    npy_layout_note,
    output_paths,
    read_image,
    suffix_of,
    write_image,
)

SUFFIX = ".mvmic"


class UsageError(ValueError):
    """Bad command-line usage or input: reported in one line, exit status 2."""


# -- Python API ---------------------------------------------------------------------------
def resolve_model(model: Any) -> tuple[Codec, nn.Module | None]:
    """The codec (and task network, if any) of a Codec or an mvmic LightningModule."""
    if isinstance(model, Codec):
        return model, None
    codec = getattr(model, "codec", None)
    if isinstance(codec, Codec):
        return codec, getattr(model, "task", None)
    raise TypeError(
        f"expected a Codec or a module with a .codec (e.g. MVMICNet), got {type(model).__name__}; "
        "a TaskModule checkpoint has no codec"
    )


def as_image(
    image: Tensor | np.ndarray | str | Path,
    bit_depth: int | None = None,
    *,
    npy_layout: str = "auto",
) -> tuple[Tensor, int]:
    """``(x, bit_depth)`` with ``x`` a float tensor (C×H×W or F×C×H×W) in [0, 1].

    ``npy_layout`` is passed to :func:`mvmic.io.read_image` for a ``.npy`` path.
    """
    if isinstance(image, str | Path):
        x, bits, _ = read_image(image, npy_layout=npy_layout)
        return torch.from_numpy(x), bit_depth or bits
    x = torch.from_numpy(np.asarray(image)) if not isinstance(image, Tensor) else image
    if x.dtype == torch.uint8:
        x, bit_depth = x.float() / 255, bit_depth or 8
    elif not x.is_floating_point():
        raise ValueError(f"image tensor of dtype {x.dtype}: pass floats in [0, 1] (or uint8)")
    if x.dim() not in (3, 4) or x.shape[-3] not in (1, 3):
        raise ValueError(f"image of shape {tuple(x.shape)}: expected C×H×W or F×C×H×W, C = 1 or 3")
    if not torch.isfinite(x).all():
        raise ValueError("image contains NaN or infinite values")
    return x.detach().float().cpu(), bit_depth or 8


def encode(
    image: Tensor | np.ndarray | str | Path,
    model: Any,
    bit_depth: int | None = None,
    *,
    npy_layout: str = "auto",
) -> Bitstream:
    """Compress to a :class:`Bitstream` (see :func:`compress`)."""
    codec, _ = resolve_model(model)
    x, bits = as_image(image, bit_depth, npy_layout=npy_layout)
    h, w = x.shape[-2:]
    if h > 0xFFFF or w > 0xFFFF:
        raise ValueError(f"image of {h}x{w} pixels: at most 65535 a side")
    # A grey model takes grey natively; colour/grey mismatches are converted (BT.601 luma or
    # channel repeat), so that one checkpoint accepts every input.
    x = match_channels(x, codec.in_channels)
    if codec.spatial_dims == 3:  # a volumetric codec codes the slices as one C×D×H×W volume
        x = (x if x.dim() == 4 else x[None]).movedim(0, 1)
    return codec.compress(x, bit_depth=bits)


def compress(
    image: Tensor | np.ndarray | str | Path,
    model: Any,
    bit_depth: int | None = None,
    *,
    npy_layout: str = "auto",
) -> bytes:
    """Compress one image (C×H×W), a stack of slices (F×C×H×W) or an image file to bytes.

    Args:
        image: float tensor/array in [0, 1] (uint8 is divided by 255), or a path that
            :func:`mvmic.io.read_image` reads.
        model: a Codec or a module with ``.codec``.
        bit_depth: the source bit depth to record (default: the file's, or 8).
        npy_layout: how a 3-D ``.npy`` file is read (see :func:`mvmic.io.read_image`).

    Returns:
        The ``.mvmic`` container bytes.
    """
    return encode(image, model, bit_depth, npy_layout=npy_layout).to_bytes()


def decompress(data: bytes | str | Path, model: Any) -> Tensor:
    """Decode container bytes (or a ``.mvmic`` file) to an F×C×H×W tensor in [0, 1].

    Raises:
        BitstreamError: truncated, corrupted, empty, foreign or wrong-version data, or data
            made by another codec/checkpoint; the message says which.
    """
    codec, _ = resolve_model(model)
    if isinstance(data, str | Path):
        path = Path(data)
        if not path.is_file():
            raise BitstreamError(f"{path}: no such file")
        return codec.decompress(path.read_bytes(), source=str(path))
    return codec.decompress(data)


# -- command line -------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
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


def _resolve_cli(model: Any, ckpt: str | Path) -> tuple[Codec, nn.Module | None]:
    try:
        codec, task = resolve_model(model)
    except TypeError as err:
        raise UsageError(f"checkpoint {ckpt}: {err}") from None
    codec.update()  # entropy tables before hashing: files carry the hash of updated tables
    return codec, task


def _run(name: str, body, argv: list[str] | None) -> int:
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


def _pairs(src: Path, dst: Path, accept, new_suffix: str) -> list[tuple[Path, Path]]:
    """(input, output) pairs: one file, or every accepted file under a folder, mirrored."""
    if not src.exists():
        raise UsageError(f"input {src} does not exist")
    if src.is_dir():
        # Hidden files (``.DS_Store``, ``._a.png``, unfinished ``.a.png.…part.png``) are
        # never images to process.
        files = sorted(
            p
            for p in src.rglob("*")
            if p.is_file() and accept(p) and not _hidden(p.relative_to(src))
        )
        if not files:
            raise UsageError(f"input folder {src} holds no files to process")
        if dst.exists() and not dst.is_dir():
            raise UsageError(f"output {dst} must be a folder when the input is a folder")
        return [(p, dst / _renamed(p.relative_to(src), new_suffix)) for p in files]
    if dst.is_dir() or str(dst).endswith(("/", "\\")):
        return [(src, dst / _renamed(Path(src.name), new_suffix))]
    return [(src, dst)]


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def _file_key(path: Path) -> tuple[int, int] | str:
    """Identity of a file: device and inode when it exists (links, ``a/../a``), else its path."""
    try:
        st = os.stat(path)
    except OSError:
        return os.path.normcase(os.path.realpath(path))
    return st.st_dev, st.st_ino


class _Outputs:
    """What a command may write: never one of its inputs, never one file twice in a run, and
    no existing file unless ``--overwrite``."""

    def __init__(self, inputs: list[Path], overwrite: bool) -> None:
        self.inputs = {_file_key(p): p for p in inputs}
        self.overwrite = overwrite
        self.written: dict[tuple[int, int] | str, Path] = {}

    def plan(self, pairs: list[tuple[Path, Path]], existing: bool) -> None:
        """Refuse the whole run before anything is written (``existing``: check that too)."""
        planned: dict[tuple[int, int] | str, Path] = {}
        for src, dst in pairs:
            key = _file_key(dst)
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
        for p in paths:
            key = _file_key(p)
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
            self.written[_file_key(p)] = src
        return written


def _renamed(rel: Path, new_suffix: str) -> Path:
    suffix = suffix_of(rel)
    return rel.with_name(rel.name[: len(rel.name) - len(suffix)] + new_suffix)


def _progress(items: list, desc: str):
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="file", file=sys.stderr, disable=len(items) < 2)


def _overwrite_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing output files (an input is never overwritten)",
    )


def _compress_cli(argv: list[str]) -> int:
    parser = _Parser(
        prog="mvmic compress",
        description="Compress image, DICOM, NIfTI or .npy files into .mvmic bitstreams.",
    )
    parser.add_argument("--ckpt", required=True, help="checkpoint of a trained MVMICNet")
    parser.add_argument("input", type=Path, help="a file, or a folder (searched recursively)")
    parser.add_argument("output", type=Path, help="a .mvmic file, or a folder")
    _overwrite_arg(parser)
    parser.add_argument(
        "--npy_layout",
        choices=list(NPY_LAYOUTS),
        default="auto",
        help="how a 3-D .npy array is read: auto (3×H×W = 3 slices; H×W×3 = RGB for uint8 "
        "and [0, 1] floats only), dhw (slices), chw or hwc (one grey or RGB image)",
    )
    args = parser.parse_args(argv)
    pairs = _pairs(args.input, args.output, is_supported, SUFFIX)
    outputs = _Outputs([src for src, _ in pairs] + [Path(args.ckpt)], args.overwrite)
    outputs.plan(pairs, existing=True)
    codec, _ = _resolve_cli(load_model(args.ckpt), args.ckpt)
    failed = 0
    bar = _progress(pairs, "compress")
    for src, dst in bar:
        try:
            try:
                x, bits, meta = read_image(src, npy_layout=args.npy_layout)
                note = npy_layout_note(meta, "--npy_layout ")
                if note:
                    bar.write(f"mvmic compress: note: {note}", file=sys.stderr)
                bitstream = encode(torch.from_numpy(x), codec, bits)
                data = bitstream.to_bytes()
            except (ImageReadError, ValueError) as err:
                raise UsageError(str(err)) from None
            outputs.write(src, [dst], _write_bytes, dst, data, args.overwrite)
        except UsageError as err:
            if len(pairs) == 1:
                raise
            bar.write(f"mvmic compress: error: {err}", file=sys.stderr)
            failed += 1
            continue
        pixels = len(bitstream.frames) * bitstream.depth * bitstream.height * bitstream.width
        bar.write(f"{src} -> {dst}: {len(data)} bytes, {8 * len(data) / pixels:.4f} bpp")
    if failed:
        print(f"mvmic compress: {failed} of {len(pairs)} files failed", file=sys.stderr)
        return 2
    return 0


def _write_bytes(path: Path, data: bytes, overwrite: bool) -> list[Path]:
    with atomic_outputs([path], overwrite) as (tmp,):
        tmp.write_bytes(data)
    return [path]


def _decompress_cli(argv: list[str]) -> int:
    parser = _Parser(
        prog="mvmic decompress",
        description="Decode .mvmic bitstreams to images, or run the task network on them.",
    )
    parser.add_argument("--ckpt", required=True, help="the checkpoint that compressed the file")
    parser.add_argument("input", type=Path, help="a .mvmic file, or a folder of them")
    parser.add_argument(
        "output",
        type=Path,
        help="an image file (.png, .tif, .npy, .nii.gz) "
        "or a folder; with --task: a mask .png or a detections .json",
    )
    parser.add_argument(
        "--like",
        type=Path,
        help="the source file (DICOM, NIfTI, .npy, ...) the .mvmic was made from: the output "
        "gets its channels (grey stays grey), and with OUT.dcm is a DICOM copy of it, with "
        "OUT.nii.gz its affine and values",
    )
    parser.add_argument(
        "--task",
        action="store_true",
        help="write the task network's output instead of the reconstruction",
    )
    _overwrite_arg(parser)
    args = parser.parse_args(argv)
    if not args.input.exists():
        raise UsageError(f"input {args.input} does not exist")
    model = load_model(args.ckpt)
    codec, task = _resolve_cli(model, args.ckpt)
    if args.task and task is None:
        raise UsageError(f"checkpoint {args.ckpt} has no task network")
    detection = args.task and getattr(task, "task", "") == "detection"
    out_suffix = ".json" if detection else ".png"
    pairs = _pairs(args.input, args.output, lambda p: p.suffix == SUFFIX, out_suffix)
    if args.like is not None and (args.task or len(pairs) != 1):
        raise UsageError("--like takes one input file and no --task")
    inputs = [src for src, _ in pairs] + [Path(args.ckpt)]
    outputs = _Outputs(inputs + ([args.like] if args.like is not None else []), args.overwrite)
    # Existence is checked per file: the number of outputs depends on the frames decoded.
    outputs.plan(pairs, existing=False)
    like = None
    if args.like is not None:
        _, like_bits, like = read_image(args.like)
    failed = 0
    bar = _progress(pairs, "decompress")
    for src, dst in bar:
        try:
            bitstream = Bitstream.load(
                src, expect_codec=codec.name, expect_hash=codec.weights_hash()
            )
            volume = codec.decompress(bitstream, source=str(src))
            x_hat = as_frames(volume)
            paths = output_paths(dst, x_hat.shape[0])
            if args.task:
                written = outputs.write(
                    src, paths, write_task_output, dst, task, volume, overwrite=args.overwrite
                )
                shape = "x".join(map(str, x_hat.shape))
            else:
                if like is not None:
                    _check_like(args.like, like, like_bits, src, x_hat, bitstream.bit_depth)
                bits = bitstream.bit_depth
                written = outputs.write(
                    src, paths, write_image, dst, x_hat, bits, like, overwrite=args.overwrite
                )
                shape = _written_shape(x_hat, like)
        except (BitstreamError, UsageError) as err:
            if len(pairs) == 1:
                raise
            bar.write(f"mvmic decompress: error: {err}", file=sys.stderr)
            failed += 1
            continue
        bar.write(f"{src} -> {', '.join(map(str, written))}: {shape}, {bitstream.bit_depth}-bit")
    if failed:
        print(f"mvmic decompress: {failed} of {len(pairs)} files failed", file=sys.stderr)
        return 2
    return 0


def _check_like(
    like_path: Path, like: dict[str, Any], like_bits: int, src: Path, x_hat: Tensor, bits: int
) -> None:
    """Refuse a ``--like`` that is not the source of ``src``: other frames, size or depth."""
    f, _, h, w = like["shape"]
    got = (x_hat.shape[0], *x_hat.shape[2:])
    if got != (f, h, w):
        raise UsageError(
            f"--like {like_path} is {f}×{h}×{w} (frames×H×W) but {src} decodes to "
            f"{'×'.join(map(str, got))}: not its source; pass the file it was compressed from"
        )
    if like_bits != bits:
        raise UsageError(
            f"--like {like_path} is {like_bits}-bit, {src} was made from a {bits}-bit image: "
            "not its source; pass the file it was compressed from"
        )


def _written_shape(x_hat: Tensor, like: dict[str, Any] | None) -> str:
    c = like["shape"][1] if like else x_hat.shape[1]
    shape = "x".join(map(str, (x_hat.shape[0], c, *x_hat.shape[2:])))
    if c == x_hat.shape[1]:
        return shape
    how = "grey by BT.601 luma" if c == 1 else "RGB by repeating the grey channel"
    return f"{shape} (decoded with {x_hat.shape[1]} channels, {how} like the --like source)"


def as_frames(x: Tensor) -> Tensor:
    """A volumetric codec's output (B×C×D×H×W) as its slices, (B·D)×C×H×W; else ``x``."""
    return x.movedim(2, 1).flatten(0, 1) if x.dim() == 5 else x


@torch.no_grad()
def write_task_output(
    path: Path, task: nn.Module, x_hat: Tensor, *, overwrite: bool = True
) -> list[Path]:
    """Run the task network on decoded frames and write what it predicts.

    Segmentation: an index mask (PNG, uint8, or uint16 above 255 classes; several frames →
    one PNG per frame, or one ``.npy``/``.nii.gz`` volume). Detection: JSON with one entry per
    frame, ``{"boxes": [[x1, y1, x2, y2], …], "labels": […], "scores": […]}``. Files are
    written through a temporary name and renamed (see :func:`mvmic.io.atomic_outputs`);
    ``overwrite=False`` refuses existing files.
    """
    path = Path(path)
    preds = task.predict(x_hat)
    if isinstance(preds, Tensor):  # segmentation: F×H×W class indices
        mask = preds.cpu().numpy()
        mask = mask.reshape(-1, *mask.shape[-2:])  # a volume's mask (B×D×H×W): its slices
        mask = mask.astype(np.uint8 if mask.max(initial=0) < 256 else np.uint16)
        suffix = suffix_of(path)
        if suffix not in (".png", ".npy", ".nii", ".nii.gz"):
            raise UsageError(f"{path}: write a segmentation mask as .png, .npy or .nii.gz")
        paths = output_paths(path, len(mask))
        with atomic_outputs(paths, overwrite) as tmps:
            if suffix == ".npy":
                with open(tmps[0], "wb") as f:
                    np.save(f, mask[0] if len(mask) == 1 else mask)
            elif suffix in (".nii", ".nii.gz"):
                import nibabel as nib

                nib.save(nib.Nifti1Image(frames_to_nifti(mask), np.eye(4)), tmps[0])
            else:
                from PIL import Image

                for m, p in zip(mask, tmps, strict=True):
                    Image.fromarray(m).save(p)
        return paths
    detections = [
        {k: p[k].detach().cpu().tolist() for k in ("boxes", "labels", "scores") if k in p}
        for p in preds
    ]
    with atomic_outputs([path], overwrite) as (tmp,):
        tmp.write_text(json.dumps(detections[0] if len(detections) == 1 else detections))
    return [path]


def compress_main(argv: list[str] | None = None) -> int:
    """``mvmic compress --ckpt CKPT IN OUT``; returns the exit status."""
    return _run("compress", _compress_cli, argv)


def decompress_main(argv: list[str] | None = None) -> int:
    """``mvmic decompress --ckpt CKPT IN.mvmic OUT [--task]``; returns the exit status."""
    return _run("decompress", _decompress_cli, argv)

"""Compress images to ``.mvmic`` files and back: the Python API and ``mvmic compress|decompress``.

Python::

    data = mvmic.compress(image, model)     # image: tensor/array in [0, 1] or a file path
    x_hat = mvmic.decompress(data, model)   # F×C×H×W tensor in [0, 1]

``model`` is a :class:`~mvmic.codecs.Codec` or a LightningModule with ``.codec`` (and ``.task``),
e.g. ``mvmic.modules.load_module("best.ckpt")``.

Command line (exit status 0 ok, 2 bad usage or bad input, 1 unexpected failure)::

    mvmic compress   --ckpt best.ckpt scan.dcm scan.mvmic
    mvmic compress   --ckpt best.ckpt folder_in/ folder_out/
    mvmic decompress --ckpt best.ckpt scan.mvmic scan.png
    mvmic decompress --ckpt best.ckpt scan.mvmic scan_rec.dcm --like scan.dcm
    mvmic decompress --ckpt best.ckpt scan.mvmic mask.png --task
"""

from __future__ import annotations

import argparse
import json
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
    ImageReadError,
    is_supported,
    match_channels,
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


def as_image(image: Tensor | np.ndarray | str | Path, bit_depth: int | None = None):
    """``(x, bit_depth)`` with ``x`` a float tensor (C×H×W or F×C×H×W) in [0, 1]."""
    if isinstance(image, str | Path):
        x, bits, _ = read_image(image)
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
    image: Tensor | np.ndarray | str | Path, model: Any, bit_depth: int | None = None
) -> Bitstream:
    """Compress to a :class:`Bitstream` (see :func:`compress`)."""
    codec, _ = resolve_model(model)
    x, bits = as_image(image, bit_depth)
    h, w = x.shape[-2:]
    if h > 0xFFFF or w > 0xFFFF:
        raise ValueError(f"image of {h}x{w} pixels: at most 65535 a side")
    # A grey model takes grey natively; colour/grey mismatches are converted (BT.601 luma or
    # channel repeat), so that one checkpoint accepts every input.
    x = match_channels(x, codec.in_channels)
    return codec.compress(x, bit_depth=bits)


def compress(
    image: Tensor | np.ndarray | str | Path, model: Any, bit_depth: int | None = None
) -> bytes:
    """Compress one image (C×H×W), a stack of slices (F×C×H×W) or an image file to bytes.

    Args:
        image: float tensor/array in [0, 1] (uint8 is divided by 255), or a path that
            :func:`mvmic.io.read_image` reads.
        model: a Codec or a module with ``.codec``.
        bit_depth: the source bit depth to record (default: the file's, or 8).

    Returns:
        The ``.mvmic`` container bytes.
    """
    return encode(image, model, bit_depth).to_bytes()


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
        files = sorted(p for p in src.rglob("*") if p.is_file() and accept(p))
        if not files:
            raise UsageError(f"input folder {src} holds no files to process")
        if dst.exists() and not dst.is_dir():
            raise UsageError(f"output {dst} must be a folder when the input is a folder")
        return [(p, dst / _renamed(p.relative_to(src), new_suffix)) for p in files]
    if dst.is_dir() or str(dst).endswith(("/", "\\")):
        return [(src, dst / _renamed(Path(src.name), new_suffix))]
    return [(src, dst)]


def _renamed(rel: Path, new_suffix: str) -> Path:
    suffix = suffix_of(rel)
    return rel.with_name(rel.name[: len(rel.name) - len(suffix)] + new_suffix)


def _progress(items: list, desc: str):
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="file", file=sys.stderr, disable=len(items) < 2)


def _compress_cli(argv: list[str]) -> int:
    parser = _Parser(
        prog="mvmic compress",
        description="Compress image, DICOM, NIfTI or .npy files into .mvmic bitstreams.",
    )
    parser.add_argument("--ckpt", required=True, help="checkpoint of a trained MVMICNet")
    parser.add_argument("input", type=Path, help="a file, or a folder (searched recursively)")
    parser.add_argument("output", type=Path, help="a .mvmic file, or a folder")
    args = parser.parse_args(argv)
    pairs = _pairs(args.input, args.output, is_supported, SUFFIX)
    codec, _ = _resolve_cli(load_model(args.ckpt), args.ckpt)
    failed = 0
    bar = _progress(pairs, "compress")
    for src, dst in bar:
        try:
            bitstream = encode(src, codec)
        except (ImageReadError, ValueError) as err:
            if len(pairs) == 1:
                raise UsageError(str(err)) from None
            bar.write(f"mvmic compress: error: {err}", file=sys.stderr)
            failed += 1
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        n = bitstream.save(dst)
        pixels = len(bitstream.frames) * bitstream.height * bitstream.width
        bar.write(f"{src} -> {dst}: {n} bytes, {8 * n / pixels:.4f} bpp")
    if failed:
        print(f"mvmic compress: {failed} of {len(pairs)} files failed", file=sys.stderr)
        return 2
    return 0


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
        help="the source file (DICOM, NIfTI, .npy) to take metadata from: with OUT.dcm a "
        "DICOM copy holding the reconstruction, with OUT.nii.gz its affine and values",
    )
    parser.add_argument(
        "--task",
        action="store_true",
        help="write the task network's output instead of the reconstruction",
    )
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
    like = None
    if args.like is not None:
        if args.task or len(pairs) != 1:
            raise UsageError("--like takes one input file and no --task")
        _, like_bits, like = read_image(args.like)
    failed = 0
    bar = _progress(pairs, "decompress")
    for src, dst in bar:
        try:
            bitstream = Bitstream.load(
                src, expect_codec=codec.name, expect_hash=codec.weights_hash()
            )
            x_hat = codec.decompress(bitstream, source=str(src))
        except BitstreamError as err:
            if len(pairs) == 1:
                raise
            bar.write(f"mvmic decompress: error: {err}", file=sys.stderr)
            failed += 1
            continue
        try:
            if args.task:
                written = write_task_output(dst, task, x_hat)
            else:
                if like is not None and like_bits != bitstream.bit_depth:
                    raise UsageError(
                        f"{args.like} is {like_bits}-bit, {src} was made from a "
                        f"{bitstream.bit_depth}-bit image: not its source"
                    )
                written = write_image(dst, x_hat, bitstream.bit_depth, like)
        except ValueError as err:  # an output format that cannot hold this result
            raise UsageError(str(err)) from None
        shape = "x".join(map(str, x_hat.shape))
        bar.write(f"{src} -> {', '.join(map(str, written))}: {shape}, {bitstream.bit_depth}-bit")
    if failed:
        print(f"mvmic decompress: {failed} of {len(pairs)} files failed", file=sys.stderr)
        return 2
    return 0


@torch.no_grad()
def write_task_output(path: Path, task: nn.Module, x_hat: Tensor) -> list[Path]:
    """Run the task network on decoded frames and write what it predicts.

    Segmentation: an index mask (PNG, uint8, or uint16 above 255 classes; several frames →
    one PNG per frame, or one ``.npy``/``.nii.gz`` volume). Detection: JSON with one entry per
    frame, ``{"boxes": [[x1, y1, x2, y2], …], "labels": […], "scores": […]}``.
    """
    preds = task.predict(x_hat)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(preds, Tensor):  # segmentation: F×H×W class indices
        mask = preds.cpu().numpy()
        mask = mask.astype(np.uint8 if mask.max(initial=0) < 256 else np.uint16)
        suffix = suffix_of(path)
        if suffix == ".npy":
            np.save(path, mask[0] if len(mask) == 1 else mask)
            return [path]
        if suffix in (".nii", ".nii.gz"):
            import nibabel as nib

            nib.save(nib.Nifti1Image(mask.transpose(1, 2, 0), np.eye(4)), path)
            return [path]
        from PIL import Image

        if suffix != ".png":
            raise UsageError(f"{path}: write a segmentation mask as .png, .npy or .nii.gz")
        if len(mask) == 1:
            Image.fromarray(mask[0]).save(path)
            return [path]
        paths = [path.with_name(f"{path.stem}_{i:04d}.png") for i in range(len(mask))]
        for m, p in zip(mask, paths):
            Image.fromarray(m).save(p)
        return paths
    detections = [
        {k: p[k].detach().cpu().tolist() for k in ("boxes", "labels", "scores") if k in p}
        for p in preds
    ]
    path.write_text(json.dumps(detections[0] if len(detections) == 1 else detections))
    return [path]


def compress_main(argv: list[str] | None = None) -> int:
    """``mvmic compress --ckpt CKPT IN OUT``; returns the exit status."""
    return _run("compress", _compress_cli, argv)


def decompress_main(argv: list[str] | None = None) -> int:
    """``mvmic decompress --ckpt CKPT IN.mvmic OUT [--task]``; returns the exit status."""
    return _run("decompress", _decompress_cli, argv)

"""``mvmic compress`` and ``mvmic decompress``: files and folders to ``.mvmic`` and back.

    mvmic compress   --ckpt best.ckpt scan.dcm scan.mvmic
    mvmic compress   --ckpt best.ckpt folder_in/ folder_out/   # never replaces a file unless
                                                                # --overwrite; never an input
    mvmic decompress --ckpt best.ckpt scan.mvmic scan.png
    mvmic decompress --ckpt best.ckpt scan.mvmic scan_rec.dcm --like scan.dcm
    mvmic decompress --ckpt best.ckpt scan.mvmic mask.png --task

The Python API is :mod:`mvmic.coding`; what the commands share with ``mvmic send`` is
:mod:`mvmic.cli_common`; task outputs are written by :mod:`mvmic.io.task_outputs`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mvmic.cli_common import (
    Outputs,
    Parser,
    UsageError,
    add_overwrite_arg,
    input_pairs,
    load_model,
    progress,
    resolve_for_cli,
    run_command,
)
from mvmic.codecs.bitstream import Bitstream, BitstreamError
from mvmic.coding import SUFFIX, as_frames, encode
from mvmic.io import (
    NPY_LAYOUTS,
    ImageReadError,
    atomic_outputs,
    is_supported,
    npy_layout_note,
    output_paths,
    read_image,
    write_image,
)
from mvmic.io.task_outputs import write_task_output


def _compress_cli(argv: list[str]) -> int:
    parser = Parser(
        prog="mvmic compress",
        description="Compress image, DICOM, NIfTI or .npy files into .mvmic bitstreams.",
    )
    parser.add_argument("--ckpt", required=True, help="checkpoint of a trained MVMICNet")
    parser.add_argument("input", type=Path, help="a file, or a folder (searched recursively)")
    parser.add_argument("output", type=Path, help="a .mvmic file, or a folder")
    add_overwrite_arg(parser)
    parser.add_argument(
        "--npy_layout",
        choices=list(NPY_LAYOUTS),
        default="auto",
        help="how a 3-D .npy array is read: auto (3×H×W = 3 slices; H×W×3 = RGB for uint8 "
        "and [0, 1] floats only), dhw (slices), chw or hwc (one grey or RGB image)",
    )
    args = parser.parse_args(argv)
    pairs = input_pairs(args.input, args.output, is_supported, SUFFIX)
    outputs = Outputs([src for src, _ in pairs] + [Path(args.ckpt)], args.overwrite)
    outputs.plan(pairs, existing=True)
    codec, _ = resolve_for_cli(load_model(args.ckpt), args.ckpt)
    failed, encoded_px, encode_s = 0, 0, 0.0
    bar = progress(pairs, "compress")
    for src, dst in bar:
        try:
            try:
                x, bits, meta = read_image(src, npy_layout=args.npy_layout)
                note = npy_layout_note(meta, "--npy_layout ")
                if note:
                    bar.write(f"mvmic compress: note: {note}", file=sys.stderr)
                t0 = time.perf_counter()
                bitstream = encode(torch.from_numpy(x), codec, bits)
                data = bitstream.to_bytes()
                encode_s += time.perf_counter() - t0
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
        encoded_px += pixels
        bar.write(f"{src} -> {dst}: {len(data)} bytes, {8 * len(data) / pixels:.4f} bpp")
    if len(pairs) > 1 and encode_s > 0:  # folder mode: the model stayed loaded across files
        print(
            f"mvmic compress: encoded {encoded_px / 1e6:.3g} MP in {encode_s:.3g} s: "
            f"{encoded_px / encode_s / 1e6:.3g} MP/s",
            file=sys.stderr,
        )
    if failed:
        print(f"mvmic compress: {failed} of {len(pairs)} files failed", file=sys.stderr)
        return 2
    return 0


def _write_bytes(path: Path, data: bytes, overwrite: bool) -> list[Path]:
    with atomic_outputs([path], overwrite) as (tmp,):
        tmp.write_bytes(data)
    return [path]


def _decompress_cli(argv: list[str]) -> int:
    parser = Parser(
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
    add_overwrite_arg(parser)
    args = parser.parse_args(argv)
    if not args.input.exists():
        raise UsageError(f"input {args.input} does not exist")
    model = load_model(args.ckpt)
    codec, task = resolve_for_cli(model, args.ckpt)
    if args.task and task is None:
        raise UsageError(f"checkpoint {args.ckpt} has no task network")
    detection = args.task and getattr(task, "task", "") == "detection"
    out_suffix = ".json" if detection else ".png"
    pairs = input_pairs(args.input, args.output, lambda p: p.suffix == SUFFIX, out_suffix)
    if args.like is not None and (args.task or len(pairs) != 1):
        raise UsageError("--like takes one input file and no --task")
    inputs = [src for src, _ in pairs] + [Path(args.ckpt)]
    outputs = Outputs(inputs + ([args.like] if args.like is not None else []), args.overwrite)
    # Existence is checked per file: the number of outputs depends on the frames decoded.
    outputs.plan(pairs, existing=False)
    like = None
    if args.like is not None:
        _, like_bits, like = read_image(args.like)
    failed = 0
    bar = progress(pairs, "decompress")
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
                    src, paths, _task_output, dst, task, volume, overwrite=args.overwrite
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


@torch.no_grad()
def _task_output(path: Path, task: Any, volume: Tensor, *, overwrite: bool) -> list[Path]:
    """Run the task network on a decoded volume and write what it predicts."""
    return write_task_output(path, task.predict(volume), overwrite=overwrite)


def compress_main(argv: list[str] | None = None) -> int:
    """``mvmic compress --ckpt CKPT IN OUT``; returns the exit status."""
    return run_command("compress", _compress_cli, argv)


def decompress_main(argv: list[str] | None = None) -> int:
    """``mvmic decompress --ckpt CKPT IN.mvmic OUT [--task]``; returns the exit status."""
    return run_command("decompress", _decompress_cli, argv)

"""``mvmic send``: compress here, upload to ``mvmic serve``, write what it answers.

    mvmic send --url http://HOST:8000 --ckpt best.ckpt scan.dcm mask.dcm
    mvmic send --url URL --ckpt CKPT in_folder/ out_folder/ [--concurrency 4]
               [--token-file FILE] [--bandwidth 10Mbit] [--overwrite]

The server's ``/v1/model`` hash is checked against the checkpoint before anything is
uploaded (:func:`~mvmic.serve.client.check_model`); the HTTP side is
:class:`~mvmic.serve.client.Client`.

Outputs by suffix: ``.png`` (one frame; ``name_0000.png`` … for several), ``.nii.gz``/``.nii``
(with the source's affine when the source is NIfTI), ``.npy``, ``.dcm`` (a DICOM
Segmentation referencing a DICOM source), ``.json`` (detections). A folder gets ``.dcm`` for
DICOM inputs, ``.nii.gz`` for NIfTI, ``.png`` otherwise (``.json`` for detection).
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mvmic.io import DICOM_SUFFIXES, suffix_of
from mvmic.io.task_outputs import MASK_SUFFIXES as FILE_MASK_SUFFIXES
from mvmic.io.task_outputs import write_detections, write_mask
from mvmic.serve import inference as inf
from mvmic.serve.client import Answer, Client, check_model, usage_error

#: what a mask answer can be written as: the mask files, or a DICOM Segmentation
MASK_SUFFIXES = (*FILE_MASK_SUFFIXES, ".dcm")


def default_suffix(src: Path, kind: str) -> str:
    """The output suffix for ``src`` in folder mode."""
    if kind == "detection":
        return ".json"
    suffix = suffix_of(src)
    if suffix in DICOM_SUFFIXES:
        return ".dcm"
    return ".nii.gz" if suffix in (".nii", ".nii.gz") else ".png"


def _check_output(dst: Path, src: Path, kind: str) -> None:
    suffix = suffix_of(dst)
    allowed = (".json",) if kind == "detection" else MASK_SUFFIXES
    if suffix not in allowed:
        raise usage_error(
            f"{dst}: a {kind} answer is written as {', '.join(allowed)}; rename the output"
        )
    if suffix == ".dcm" and suffix_of(src) not in DICOM_SUFFIXES:
        raise usage_error(
            f"{dst}: a DICOM Segmentation references its source DICOM, and {src} is not one; "
            "write .png or .nii.gz"
        )


def write_answer(
    dst: Path,
    src: Path,
    answer: Answer,
    meta: dict[str, Any],
    class_names: list[str],
    parameters: dict[str, str],
    overwrite: bool,
) -> list[Path]:
    """Write a 200 answer to ``dst`` in the format its suffix names (the writer of
    ``mvmic decompress --task``, or a DICOM Segmentation)."""
    if suffix_of(dst) == ".json":
        dets = json.loads(answer.content)
        return write_detections(
            dst, dets if isinstance(dets, list) else [dets], overwrite=overwrite
        )
    mask = inf.read_mask(answer.content, answer.media_type)
    if suffix_of(dst) == ".dcm":
        from mvmic.serve.dicom import write_segmentation

        return write_segmentation(
            dst, src, mask, class_names, parameters=parameters, overwrite=overwrite
        )
    # The bitstream carries no geometry; the source NIfTI's affine goes back on here.
    affine = meta["affine"] if meta.get("format") == "nifti" else None
    return write_mask(dst, mask, affine=affine, overwrite=overwrite)


@dataclass
class _Job:
    src: Path
    dst: Path
    meta: dict[str, Any]
    paths: list[Path]
    sent: int
    encode_ms: float


def _send_cli(argv: list[str]) -> int:
    import httpx
    import torch
    from tqdm import tqdm

    from mvmic.cli_common import (
        Outputs,
        Parser,
        UsageError,
        add_overwrite_arg,
        input_pairs,
        load_model,
        resolve_for_cli,
    )
    from mvmic.coding import encode
    from mvmic.evaluation.latency import parse_bandwidth
    from mvmic.io import ImageReadError, is_supported, output_paths, read_image
    from mvmic.serve.api import read_token

    parser = Parser(
        prog="mvmic send",
        description="Compress files here and get the task output from a `mvmic serve`.",
    )
    parser.add_argument("--url", required=True, help="the server, e.g. http://HOST:8000")
    parser.add_argument("--ckpt", required=True, help="the checkpoint the server runs")
    parser.add_argument("input", type=Path, help="a file, or a folder (searched recursively)")
    parser.add_argument("output", type=Path, help="a mask/detections file, or a folder")
    parser.add_argument("--token-file", type=Path, help="the server's bearer token")
    parser.add_argument("--bandwidth", help="pace uploads to emulate a link, e.g. 10Mbit")
    parser.add_argument("--concurrency", type=int, default=1, help="uploads in flight")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    parser.add_argument("--retries", type=int, default=4, help="retries of refused/503")
    add_overwrite_arg(parser)
    args = parser.parse_args(argv)
    url = httpx.URL(args.url) if "://" in args.url else None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise UsageError(f"--url {args.url!r}: give http://HOST:PORT (or https://)")
    if args.concurrency < 1:
        raise UsageError(f"--concurrency must be >= 1, got {args.concurrency}")
    if args.retries < 0 or args.timeout <= 0:
        raise UsageError("--retries must be >= 0 and --timeout positive")
    try:
        bps = parse_bandwidth(args.bandwidth) if args.bandwidth else None
        token = read_token(args.token_file) if args.token_file else None
    except ValueError as err:
        raise UsageError(str(err)) from None

    model = load_model(args.ckpt)
    codec, task = resolve_for_cli(model, args.ckpt)
    if task is None:
        raise UsageError(f"checkpoint {args.ckpt} has no task network")
    kind = getattr(task, "task", "segmentation")
    if args.input.is_dir():
        pairs = input_pairs(args.input, args.output, is_supported, "")
        pairs = [(s, d.with_name(d.name + default_suffix(s, kind))) for s, d in pairs]
    else:
        pairs = input_pairs(args.input, args.output, is_supported, default_suffix(args.input, kind))
    for src, dst in pairs:
        _check_output(dst, src, kind)
    protected = [src for src, _ in pairs] + [Path(args.ckpt)]
    outputs = Outputs(protected + ([args.token_file] if args.token_file else []), args.overwrite)
    outputs.plan(pairs, existing=True)

    client = Client(str(url).rstrip("/"), token, timeout=args.timeout, retries=args.retries,
                    bandwidth=bps)  # fmt: skip
    with client:
        info = client.model()
        check_model(info, codec, args.url, args.ckpt)
        names = info.get("classes") or []
        params = {"codec": codec.name, "weights_hash": info["weights_hash"]}
        bar = tqdm(total=len(pairs), desc="send", unit="file", file=sys.stderr,
                   disable=len(pairs) < 2)  # fmt: skip
        failed = 0

        def fail(src: Path, message: str) -> None:
            nonlocal failed
            if len(pairs) == 1:
                raise UsageError(message)
            bar.write(f"mvmic send: error: {message}", file=sys.stderr)
            failed += 1
            bar.update(1)

        def finish(job: _Job, fut: Future) -> None:
            try:
                answer: Answer = fut.result()
            except UsageError as err:
                fail(job.src, f"{job.src}: {err}")
                return
            if not answer.ok:
                fail(job.src, f"{job.src}: the server refused it: {answer.refusal()}")
                return
            try:
                written = outputs.write(
                    job.src, job.paths, write_answer, job.dst, job.src, answer, job.meta,
                    names, params, args.overwrite,
                )  # fmt: skip
            except UsageError as err:
                fail(job.src, str(err))
                return
            t = answer.timing
            bar.write(
                f"{job.src} -> {', '.join(map(str, written))}: {job.sent} bytes; encode "
                f"{job.encode_ms:.1f} ms, upload {answer.upload_ms:.1f} ms, server decode "
                f"{t.get('decode', float('nan')):.1f} ms + task {t.get('task', float('nan')):.1f}"
                f" ms; {job.encode_ms + answer.total_ms:.1f} ms in all"
            )
            bar.update(1)

        inflight: dict[Future, _Job] = {}
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            for src, dst in pairs:
                try:
                    x, bits, meta = read_image(src)
                    t0 = time.perf_counter()
                    bitstream = encode(torch.from_numpy(x), codec, bits)
                    data = bitstream.to_bytes()
                    encode_ms = 1e3 * (time.perf_counter() - t0)
                except (ImageReadError, ValueError) as err:
                    fail(src, str(err))
                    continue
                frames = len(bitstream.frames) * (bitstream.depth if codec.spatial_dims == 3 else 1)
                if kind == "detection":
                    accept = inf.JSON
                elif frames == 1 and suffix_of(dst) == ".png":
                    accept = inf.PNG
                else:
                    accept = inf.NIFTI
                paths = output_paths(dst, frames) if suffix_of(dst) == ".png" else [dst]
                job = _Job(src, dst, meta, paths, len(data), encode_ms)
                inflight[pool.submit(client.infer, data, accept)] = job
                while len(inflight) >= args.concurrency:
                    done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                    for fut in done:
                        finish(inflight.pop(fut), fut)
            while inflight:
                done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                for fut in done:
                    finish(inflight.pop(fut), fut)
        bar.close()
    if failed:
        print(f"mvmic send: {failed} of {len(pairs)} files failed", file=sys.stderr)
        return 2
    return 0


def send_main(argv: list[str] | None = None) -> int:
    """``mvmic send --url URL --ckpt CKPT IN OUT [options]``; returns the exit status."""
    from mvmic.cli_common import run_command

    return run_command("send", _send_cli, argv)


if __name__ == "__main__":
    sys.exit(send_main())

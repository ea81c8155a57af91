"""``mvmic anchors``: standard codecs through a task network, one results record per codec.

Each test image, exactly as the data module hands it to the learned codecs (same resize, same
channels), is quantised to 8 (or 16) bits, encoded with a standard codec at each quality,
decoded, and fed to the task network from a checkpoint. Every (codec, quality) becomes one point
of the record ``<results_dir>/<dataset>/<codec>.json`` with ``quality``, ``bpp`` (rate payload,
see :mod:`mvmic.codecs.standard`), ``bpp_container`` (whole file), ``psnr``, ``ms-ssim``, the task
metrics (the task network's own ``build_metrics``/``update_metrics``/``record``, so segmentation
and detection both work), ``bytes``/``pixels``/``height``/``width`` per image and the measured
``enc_ms``/``dec_ms``/``task_ms`` per image (for ``mvmic latency``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mvmic.codecs.standard import STANDARD_CODECS, CodecUnavailableError, get_standard_codec
from mvmic.evaluation.records import append_point

DEFAULT_CODECS = ("jpeg", "jpeg2000", "webp", "avif", "hevc")


def load_datamodule(config: str, overrides: Sequence[str] = ()) -> Any:
    """Instantiate the ``data:`` section of a LightningCLI config (jsonargparse, as ``mvmic fit``).

    Args:
        config: a YAML path or a bare name resolved in ``configs/``.
        overrides: ``--data.X value`` arguments, as on the ``mvmic fit`` command line.
    """
    import yaml
    from jsonargparse import ArgumentParser
    from lightning import LightningDataModule

    from mvmic.cli import resolve_config

    path = Path(resolve_config(config))
    if not path.is_file():
        raise FileNotFoundError(f"config {config} not found (looked at {path} and in configs/)")
    section = (yaml.safe_load(path.read_text()) or {}).get("data")
    if not section:
        raise ValueError(f"{path} has no 'data:' section; pass the config used for `mvmic fit`")
    parser = ArgumentParser(exit_on_error=False, default_env=False)
    parser.add_subclass_arguments(LightningDataModule, "data", required=True)
    cfg = parser.parse_args(["--data", yaml.safe_dump(section), *overrides])
    return parser.instantiate_classes(cfg).data


def _to_uint(x: torch.Tensor, bit_depth: int) -> np.ndarray:
    """C×H×W floats in [0, 1] -> H×W or H×W×3 uint8/uint16 (exact for 8-bit sources)."""
    peak = (1 << bit_depth) - 1
    arr = (x.detach().cpu().clamp(0, 1) * peak).round().numpy()
    arr = arr.astype(np.uint16 if bit_depth > 8 else np.uint8)
    return arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)


def _to_float(arr: np.ndarray, bit_depth: int) -> torch.Tensor:
    peak = (1 << bit_depth) - 1
    t = torch.from_numpy(arr.astype(np.float32) / peak)
    return t.unsqueeze(0) if t.dim() == 2 else t.permute(2, 0, 1)


@torch.inference_mode()
def evaluate_codec(
    codec_name: str,
    quality: float,
    task: torch.nn.Module,
    loader: Any,
    bit_depth: int = 8,
) -> dict[str, float]:
    """One operating point: encode/decode every test image, run the task, average the metrics."""
    from mvmic.metrics import image_quality_metrics

    codec = get_standard_codec(codec_name)
    task_metrics = task.build_metrics()
    quality_metrics = image_quality_metrics()
    totals = {"bpp": 0.0, "bpp_container": 0.0, "bytes": 0.0, "file_bytes": 0.0, "pixels": 0.0}
    totals.update(height=0.0, width=0.0)
    times = {"enc_ms": 0.0, "dec_ms": 0.0, "task_ms": 0.0}
    n = 0
    for batch in loader:
        x = batch["image"]
        decoded = []
        for img in x:
            arr = _to_uint(img, bit_depth)
            t0 = time.perf_counter()
            data = codec.encode(arr, quality)
            t1 = time.perf_counter()
            out = codec.decode(data, channels=img.shape[0])
            t2 = time.perf_counter()
            pixels = arr.shape[0] * arr.shape[1]
            payload = codec.payload_bytes(data)
            totals["bpp"] += 8.0 * payload / pixels
            totals["bpp_container"] += 8.0 * len(data) / pixels
            totals["bytes"] += payload
            totals["file_bytes"] += len(data)
            totals["pixels"] += pixels
            totals["height"] += arr.shape[0]
            totals["width"] += arr.shape[1]
            times["enc_ms"] += 1e3 * (t1 - t0)
            times["dec_ms"] += 1e3 * (t2 - t1)
            decoded.append(_to_float(out, bit_depth))
        x_hat = torch.stack(decoded).to(x.dtype)
        t0 = time.perf_counter()
        preds = task.predict(x_hat)
        times["task_ms"] += 1e3 * (time.perf_counter() - t0)
        task.update_metrics(task_metrics, preds, batch)
        quality_metrics["psnr"].update(x_hat, x)
        quality_metrics["ms-ssim"].update(x_hat, x)
        n += len(x)
    if n == 0:
        raise ValueError("the test split is empty; check data.root and the split fractions")
    point: dict[str, float] = {"quality": float(quality)}
    point.update({k: v / n for k, v in totals.items()})
    point.update({k: float(v) for k, v in quality_metrics.compute().items()})
    point.update(task.record(task_metrics.compute()))
    point.update({k: v / n for k, v in times.items()})
    return point


def _parse_qualities(text: str | None, codecs: Sequence[str]) -> dict[str, list[float]]:
    """``"5,10,20"`` (all codecs) or ``"jpeg=5,10;hevc=20,30"`` (per codec) -> per-codec lists."""
    out = {c: list(STANDARD_CODECS[c].qualities) for c in codecs}
    if not text:
        return out
    if "=" not in text:
        values = [float(v) for v in text.split(",") if v.strip()]
        return {c: values for c in codecs}
    for part in text.split(";"):
        if not part.strip():
            continue
        name, _, values = part.partition("=")
        name = name.strip()
        if name not in out:
            raise ValueError(f"--qualities names codec {name!r} that is not in --codecs")
        out[name] = [float(v) for v in values.split(",") if v.strip()]
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mvmic anchors",
        description="Standard-codec anchors (JPEG, JPEG 2000, WebP, AVIF, HEVC, H.264) through "
        "a task network; extra --data.X options override the config's data section.",
    )
    p.add_argument("--config", required=True, help="the LightningCLI config (its data: section)")
    p.add_argument("--ckpt_path", required=True, help="checkpoint with the task network")
    p.add_argument("--codecs", default=",".join(DEFAULT_CODECS), help="comma-separated codecs")
    p.add_argument(
        "--qualities",
        default=None,
        help="'5,10,20' for every codec or 'jpeg=5,10;hevc=20,30' per codec "
        "(default: each codec's low-rate list)",
    )
    p.add_argument("--results_dir", default="runs/results", help="results store")
    p.add_argument("--bit_depth", type=int, choices=(8, 16), default=8)
    p.add_argument("--limit", type=int, default=None, help="use only the first N test batches")
    p.add_argument("--no_curves", action="store_true", help="do not redraw the curves")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``mvmic anchors``: see :func:`build_parser`."""
    args, rest = build_parser().parse_known_args(argv)
    bad = [a for a in rest if a.startswith("--") and not a.startswith("--data")]
    if bad:
        print(
            f"mvmic anchors: unknown options {bad}; only --data.X overrides pass through",
            file=sys.stderr,
        )
        return 2
    from mvmic.modules import load_module

    codecs, skipped = [], []
    for name in [c.strip() for c in args.codecs.split(",") if c.strip()]:
        try:
            codecs.append(get_standard_codec(name).name)
        except CodecUnavailableError as err:
            skipped.append(str(err))
    for line in skipped:
        print(f"skipping {line}", file=sys.stderr)
    qualities = _parse_qualities(args.qualities, codecs)

    module = load_module(args.ckpt_path)
    task = module.task.eval()
    dm = load_datamodule(args.config, rest)
    dm.setup("test")
    loader = list(dm.test_dataloader())
    if args.limit:
        loader = loader[: args.limit]
    dataset = dm.dataset_name
    root = getattr(dm, "hparams", {}).get("root")
    for name in codecs:
        codec = STANDARD_CODECS[name]
        for q in qualities[name]:
            point = evaluate_codec(name, q, task, loader, args.bit_depth)
            path = append_point(
                args.results_dir,
                dataset,
                name,
                point,
                description=f"{name} ({codec.quality_meaning}) through the task net of "
                f"{args.ckpt_path}",
                fields={
                    "anchor": True,
                    "codec": name,
                    "quality_meaning": codec.quality_meaning,
                    "data_root": str(Path(root).resolve()) if root else None,
                    "task": getattr(task, "task", None),
                    "bit_depth": args.bit_depth,
                },
            )
            shown = {k: round(v, 4) for k, v in point.items()}
            print(f"{name} q={q:g}: {shown}")
        print(f"results: {path}")
    if not args.no_curves:
        from mvmic.evaluation.curves import main as curves_main

        return curves_main([args.results_dir])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``mvmic anchors``: standard codecs through a task network, one results record per codec.

Each test image, exactly as the data module hands it to the learned codecs (same resize, same
channels), is quantised to the bit depth it is coded at (``--bit_depth auto``: the sources'
own, 8 or 16, where the codec supports it, else 8), encoded with a standard codec at each quality,
decoded, and fed to the task network from a checkpoint. Every (codec, quality) becomes one point
of the record ``<results_dir>/<dataset>/<codec>.json`` with ``quality``, ``bpp`` (rate payload,
see :mod:`mvmic.codecs.standard`), ``bpp_container`` (whole file), ``psnr``, ``ms-ssim``, the task
metrics (the task network's own ``build_metrics``/``update_metrics``/``record``, so segmentation
and detection both work), ``bytes``/``pixels``/``height``/``width`` per image and the measured
``enc_ms``/``dec_ms``/``task_ms`` per image (for ``mvmic latency``). A 3D data module's volumes
go whole through the volume codecs instead (:mod:`mvmic.evaluation.volume_anchors`).
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
from mvmic.codecs.volume import VOLUME_CODECS, get_volume_codec
from mvmic.evaluation.anchor_readout import TaskReadout
from mvmic.evaluation.provenance import datamodule_spec
from mvmic.evaluation.records import append_point
from mvmic.evaluation.volume_anchors import (
    DEFAULT_VOLUME_CODECS,
    evaluate_volume_codec,
    is_volumetric,
    volume_roundtrip,
)

DEFAULT_CODECS = ("jpeg", "jpeg2000", "webp", "avif", "hevc")


def load_datamodule(config: str, overrides: Sequence[str] = ()) -> Any:
    """The data module of a config, as ``mvmic fit --config CONFIG OVERRIDES`` builds it.

    Args:
        config: a YAML path or a bare name resolved in ``configs/``.
        overrides: ``--data.X value`` arguments, as on the ``mvmic fit`` command line.
    """
    from mvmic.cli_lightning import instantiate_data, load_config

    return instantiate_data(load_config(config, overrides)["data"])


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


def source_bit_depth(loader: Any) -> int:
    """The test set's bit depth: 16 when any image came from a 16-bit file, else 8."""
    depths = [int(d) for batch in loader for d in batch.get("bit_depth", [8])]
    return 16 if max(depths, default=8) > 8 else 8


def coded_bit_depth(
    codec_name: str, requested: str, source: int, channels: int, volumes: bool = False
) -> tuple[int, str | None]:
    """The depth a codec codes this run at, and a note when ``auto`` had to fall back.

    ``requested`` is ``--bit_depth``: ``8``/``16`` as given (a codec without it fails with its
    own error), or ``auto``: the sources' depth where the codec codes it for this channel
    count, else 8 (the sources rounded to 8 bits first, which the note says).
    """
    if requested != "auto":
        return int(requested), None
    if volumes or source == 8:
        note = "volume codecs code 8-bit volumes" if volumes and source > 8 else None
        return 8, note and f"{codec_name}: {note}; the {source}-bit sources are rounded to 8 bits"
    supported = STANDARD_CODECS[codec_name].bit_depths.get(channels, ())
    if source in supported:
        return source, None
    return 8, (
        f"{codec_name}: cannot code {channels}-channel {source}-bit images (it codes "
        f"{list(supported) or 'none'}); the {source}-bit sources are rounded to 8 bits"
    )


def standard_roundtrip(
    codec_name: str, image: torch.Tensor, quality: float, bit_depth: int = 8
) -> tuple[torch.Tensor, int]:
    """One C×H×W image through a standard codec: the decoded image and its payload bytes."""
    codec = get_standard_codec(codec_name)
    data = codec.encode(_to_uint(image, bit_depth), quality)
    out = codec.decode(data, channels=image.shape[0])
    return _to_float(out, bit_depth).to(image.dtype), codec.payload_bytes(data)


@torch.inference_mode()
def evaluate_codec(
    codec_name: str,
    quality: float,
    tasks: Sequence[torch.nn.Module],
    loader: Any,
    bit_depth: int = 8,
) -> list[dict[str, float]]:
    """One operating point per task net: encode/decode every test image once, run each task
    net on the decoded images (``hevc`` and ``hevc+ft`` read the same bytes), average the
    metrics."""
    from mvmic.metrics import image_quality_metrics

    codec = get_standard_codec(codec_name)
    readouts = [TaskReadout(task) for task in tasks]
    quality_metrics = image_quality_metrics()
    totals = {"bpp": 0.0, "bpp_container": 0.0, "bytes": 0.0, "file_bytes": 0.0, "pixels": 0.0}
    totals.update(height=0.0, width=0.0)
    times = {"enc_ms": 0.0, "dec_ms": 0.0}
    for batch in loader:
        x = batch["image"]
        decoded, nbytes = [], []
        for img in x:
            arr = _to_uint(img, bit_depth)
            t0 = time.perf_counter()
            data = codec.encode(arr, quality)
            t1 = time.perf_counter()
            out = codec.decode(data, channels=img.shape[0])
            t2 = time.perf_counter()
            pixels = arr.shape[0] * arr.shape[1]
            payload = codec.payload_bytes(data)
            nbytes.append(payload)
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
        for readout in readouts:
            readout.read(x_hat, batch, nbytes)
        quality_metrics["psnr"].update(x_hat, x)
        quality_metrics["ms-ssim"].update(x_hat, x)
    shared = {"quality": float(quality)}
    shared.update({k: float(v) for k, v in quality_metrics.compute().items()})
    return [readout.point(shared, totals, times) for readout in readouts]


def _parse_qualities(
    text: str | None, codecs: Sequence[str], registry: dict[str, Any] = STANDARD_CODECS
) -> dict[str, list[float]]:
    """``"5,10,20"`` (all codecs) or ``"jpeg=5,10;hevc=20,30"`` (per codec) -> per-codec lists."""
    out = {c: list(registry[c].qualities) for c in codecs}
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
    p.add_argument(
        "--codecs",
        default=None,
        help=f"comma-separated codecs (default {','.join(DEFAULT_CODECS)}; for a 3D data "
        f"module the volume codecs {','.join(DEFAULT_VOLUME_CODECS)})",
    )
    p.add_argument(
        "--qualities",
        default=None,
        help="'5,10,20' for every codec or 'jpeg=5,10;hevc=20,30' per codec "
        "(default: each codec's low-rate list)",
    )
    p.add_argument("--results_dir", default="runs/results", help="results store")
    p.add_argument(
        "--bit_depth",
        choices=("auto", "8", "16"),
        default="auto",
        help="bits per sample the codecs are fed (auto: the sources' own, 8 or 16, where the "
        "codec codes it, else 8; volumes: 8)",
    )
    p.add_argument("--limit", type=int, default=None, help="use only the first N test batches")
    p.add_argument("--no_curves", action="store_true", help="do not redraw the curves")
    p.add_argument(
        "--finetune",
        type=int,
        default=0,
        metavar="STEPS",
        help="also fine-tune the task net STEPS steps per codec on its decoded training images "
        "(a mix of its qualities; MVMICNet stage 2's budget) and record <codec>+ft",
    )
    p.add_argument("--finetune_lr", type=float, default=1e-4, help="Adam lr (stage 2's lr)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fine-tuning run")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``mvmic anchors``: see :func:`build_parser`."""
    args, rest = build_parser().parse_known_args(argv)
    if args.finetune < 0:
        print(f"mvmic anchors: --finetune {args.finetune}: give a step count ≥ 1", file=sys.stderr)
        return 2
    bad = [a for a in rest if a.startswith("--") and not a.startswith("--data")]
    if bad:
        print(
            f"mvmic anchors: unknown options {bad}; only --data.X overrides pass through",
            file=sys.stderr,
        )
        return 2
    from mvmic.modules import load_module

    module = load_module(args.ckpt_path)
    task = module.task.eval()
    dm = load_datamodule(args.config, rest)
    dm.setup("test")
    loader = list(dm.test_dataloader())
    if args.limit:
        loader = loader[: args.limit]
    volumes = is_volumetric(loader)  # 3D: volume codecs on whole volumes
    registry = VOLUME_CODECS if volumes else STANDARD_CODECS
    codecs = _available_codecs(args.codecs, volumes)
    qualities = _parse_qualities(args.qualities, codecs, registry)
    dataset = dm.dataset_name
    root = getattr(dm, "hparams", {}).get("root")
    train_batches = _train_batches(args, rest) if args.finetune else None
    identity = _checkpoint_identity(args.ckpt_path) if args.finetune else {}
    source_depth = source_bit_depth(loader)
    channels = int(loader[0]["image"].shape[1]) if loader else 1
    for name in codecs:
        codec = registry[name]
        depth, note = coded_bit_depth(name, args.bit_depth, source_depth, channels, volumes)
        if note:
            print(f"mvmic anchors: {note}")
        variants = [(name, task, {"task_ckpt": str(Path(args.ckpt_path).resolve())})]
        if train_batches is not None:
            method, tuned, extra = _finetuned(
                name, task, qualities[name], train_batches, args, depth, volumes
            )
            saved = Path(args.results_dir) / dataset / "finetuned" / f"{method}.ckpt"
            extra["task_ckpt"] = str(save_finetuned(module, tuned, identity, saved))
            variants.append((method, tuned, extra))
        evaluate = evaluate_volume_codec if volumes else evaluate_codec
        paths: dict[str, Path] = {}
        for q in qualities[name]:
            # each image coded once per quality, read by the plain and the fine-tuned net
            points = evaluate(name, q, [net for _, net, _ in variants], loader, depth)
            for (method, net, extra), point in zip(variants, points):
                paths[method] = append_point(
                    args.results_dir,
                    dataset,
                    method,
                    point,
                    description=f"{name} ({codec.quality_meaning}) through the task net of "
                    f"{args.ckpt_path}" + (f", fine-tuned on {name}" if net is not task else ""),
                    fields={
                        "anchor": True,
                        "codec": name,
                        "quality_meaning": codec.quality_meaning,
                        "data_root": str(Path(root).resolve()) if root else None,
                        "task": getattr(task, "task", None),
                        "bit_depth": depth,
                        "source_bit_depth": source_depth,
                        # what `mvmic compare` decodes again (mvmic.evaluation.provenance)
                        "data": datamodule_spec(dm),
                        **extra,
                    },
                )
                shown = {k: round(v, 4) for k, v in point.items() if not k.startswith("per_")}
                print(f"{method} q={q:g}: {shown}")
        for path in paths.values():
            print(f"results: {path}")
    if not args.no_curves:
        from mvmic.evaluation.curves import main as curves_main

        return curves_main([args.results_dir])
    return 0


def _train_batches(args: argparse.Namespace, rest: Sequence[str]) -> Any:
    """A fresh pass over the training split (its crops and augmentation), per call."""
    dm = load_datamodule(args.config, rest)
    dm.setup("fit")
    return dm.train_dataloader


def _available_codecs(text: str | None, volumes: bool) -> list[str]:
    """The codecs of ``--codecs`` that work here (others named on stderr and skipped)."""
    default = DEFAULT_VOLUME_CODECS if volumes else DEFAULT_CODECS
    get = get_volume_codec if volumes else get_standard_codec
    codecs = []
    for name in [c.strip() for c in (text or ",".join(default)).split(",") if c.strip()]:
        try:
            codecs.append(get(name).name)
        except CodecUnavailableError as err:
            print(f"skipping {err}", file=sys.stderr)
    return codecs


def _finetuned(
    name: str,
    task: torch.nn.Module,
    qualities: Sequence[float],
    batches: Any,
    args: Any,
    bit_depth: int = 8,
    volumes: bool = False,
) -> tuple[str, torch.nn.Module, dict[str, Any]]:
    """``<codec>+ft``: the task net fine-tuned on this codec's decoded training images."""
    from mvmic.evaluation.anchor_finetune import finetune_on_codec
    from mvmic.evaluation.methods import FT_SUFFIX

    def roundtrip(img: torch.Tensor, quality: float) -> torch.Tensor:
        if volumes:  # one training crop 1×D×H×W through the volume codec
            return volume_roundtrip(name, img, quality)[0]
        return standard_roundtrip(name, img, quality, bit_depth)[0]

    t0 = time.perf_counter()
    tuned, losses = finetune_on_codec(
        task, roundtrip, qualities, batches, args.finetune, args.finetune_lr, args.seed
    )
    print(
        f"{name}{FT_SUFFIX}: {args.finetune} steps at lr {args.finetune_lr:g} on {name} "
        f"q={','.join(f'{q:g}' for q in qualities)}: loss {losses[0]:.4f} -> {losses[-1]:.4f} "
        f"({time.perf_counter() - t0:.0f} s)"
    )
    info = {"steps": args.finetune, "lr": args.finetune_lr, "seed": args.seed}
    info.update(qualities=list(qualities), first_loss=losses[0], last_loss=losses[-1])
    return f"{name}{FT_SUFFIX}", tuned, {"finetune": info}


def _checkpoint_identity(ckpt_path: str) -> dict[str, Any]:
    """The class and hyperparameters a checkpoint is rebuilt from (read once per run)."""
    from mvmic.modules.checkpoints import load_checkpoint

    saved = load_checkpoint(ckpt_path)
    return {k: saved[k] for k in ("mvmic_class", "hyper_parameters") if k in saved}


def save_finetuned(
    module: Any, tuned: torch.nn.Module, identity: dict[str, Any], out: Path
) -> Path:
    """``module`` with ``tuned`` as its task net, as a checkpoint (``identity``: the original's
    class and hyperparameters) that :func:`mvmic.modules.load_module` rebuilds, so `mvmic
    compare` can decode ``+ft`` points."""
    original = module.task
    module.task = tuned
    try:
        state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    finally:
        module.task = original
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**identity, "state_dict": state}, out)
    return out.resolve()


if __name__ == "__main__":
    raise SystemExit(main())

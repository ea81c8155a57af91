"""``mvmic compare``: the same test images through every method of a results folder.

For each method (a record: learned codecs, standard codecs, ``+ft`` variants, the
uncompressed reference) the operating point closest to ``--bpp`` (in log rate) is **decoded
again**: the record names the checkpoint that made the point and the data module it was tested
on (:mod:`mvmic.evaluation.provenance`), so the first ``--images`` images of that test split go
through the real path once more, exactly as ``mvmic test`` / ``mvmic anchors`` ran them
(compress → bytes → decompress → task, or the standard codec at the point's quality → the
record's task net). Each tile shows the decoded image with the prediction over it, titled with
the image's own bpp and metric; the ground truth comes last.

A second figure shows where the bits go (:func:`mvmic.codecs.bit_map.bit_map`) for every
learned codec, with the share of the estimated bits that falls on the lesion.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mvmic.evaluation.panels import (
    Tile,
    bits_overlay,
    bits_title,
    draw_grid,
    metric_text,
    per_image_metrics,
    prediction_tiles,
    slice_batch,
    to_rgb,
)
from mvmic.evaluation.provenance import build_datamodule
from mvmic.evaluation.records import iter_records


@dataclass
class Choice:
    """One method's operating point closest to the requested rate."""

    dataset: str
    name: str
    path: Path
    record: dict[str, Any]
    index: int
    bpp: float

    def value(self, key: str) -> Any:
        column = self.record["results"].get(key) or []
        return column[self.index] if self.index < len(column) else None

    @property
    def label(self) -> str:
        """The point's setting: ``λ=0.0067`` or ``q=40``."""
        for key, sym in (("quality", "q"), ("lmbda", "λ")):
            v = self.value(key)
            if isinstance(v, int | float) and (key == "quality" or v > 0):
                return f"{sym}={v:g}"
        return ""


@dataclass
class Decoded:
    """What one method made of one image."""

    shown: torch.Tensor  # 1×C×H×W: the decoded image (or the input where none is decoded)
    preds: Any
    bpp: float
    bits: np.ndarray | None = None  # H×W estimated bits (learned 2D codecs)


@dataclass
class CompareResult:
    """What :func:`compare` wrote and measured."""

    panel: Path
    bits: Path | None
    choices: list[Choice]
    rows: list[dict[str, Any]] = field(default_factory=list)  # per image and method
    skipped: list[str] = field(default_factory=list)


def choose_points(
    results_dir: str | Path, bpp: float, dataset: str | None = None
) -> tuple[list[Choice], list[str]]:
    """Per record of one dataset, the point closest to ``bpp``; and records without a rate."""
    root = Path(results_dir)
    records = iter_records(root, skip=(root / "curves", root / "compare", root / "report"))
    datasets = sorted({d for d, _, _ in records})
    if not records:
        raise FileNotFoundError(f"no results records under {root}; run `mvmic test` first")
    dataset = dataset or datasets[0]
    if dataset not in datasets:
        raise ValueError(f"--dataset {dataset!r}: not under {root}; choose from {datasets}")
    choices, skipped = [], []
    for ds, path, record in records:
        if ds != dataset:
            continue
        rates = record["results"].get("bpp") or []
        valid = [(i, float(r)) for i, r in enumerate(rates) if isinstance(r, int | float) and r > 0]
        if not valid:
            skipped.append(f"{path}: no bpp")
            continue
        i, rate = min(valid, key=lambda ir: abs(math.log(ir[1] / bpp)))
        name = str(record.get("name") or path.stem)
        choices.append(Choice(ds, name, path, record, i, rate))
    choices.sort(key=lambda c: (bool(c.record.get("anchor")), c.name))
    return choices, skipped


class Decoder:
    """Re-runs a record's point on single images (modules loaded once per checkpoint)."""

    def __init__(self) -> None:
        self._modules: dict[str, Any] = {}

    def module(self, ckpt: str) -> Any:
        from mvmic.modules import load_module

        if not ckpt:
            raise ValueError(
                "it names no checkpoint for this point (records written before `mvmic "
                "compare` existed, or +ft anchors from before their nets were saved); re-run its "
                "`mvmic test` or `mvmic anchors`"
            )
        if ckpt not in self._modules:
            self._modules[ckpt] = load_module(ckpt)
        return self._modules[ckpt]

    def decode(self, choice: Choice, one: dict[str, Any]) -> tuple[Decoded, Any]:
        """The point's decode of a batch of one image; and the task net that read it."""
        ckpt = choice.value("ckpt_path")
        task_ckpt = choice.value("task_ckpt") or choice.record.get("task_ckpt")
        # Built outside no_grad: building a task net may run autograd (freeze_unused).
        module = self.module(str(ckpt if isinstance(ckpt, str) else task_ckpt or ""))
        with torch.no_grad():
            return self._decode(choice, one, module, isinstance(ckpt, str))

    def _decode(
        self, choice: Choice, one: dict[str, Any], module: Any, learned: bool
    ) -> tuple[Decoded, Any]:
        from mvmic.codecs.bit_map import bit_map

        x = one["image"]
        npix = math.prod(x.shape[2:])
        depths = one.get("bit_depth")
        bit_depth = int(depths[0]) if depths is not None else 8
        if learned:
            if not module.transmits:  # the uncompressed reference
                return Decoded(x, module.task_output(x), 8.0 * x.shape[1]), module.task
            decoded, bitstream, _ = module.transmit(x, bit_depth)
            preds = module.task_output(decoded)
            shown = decoded if module.codec.decodes_image else x
            bits = bit_map(module.codec, x)[0].numpy() if module.codec.spatial_dims == 2 else None
            return Decoded(shown, preds, 8.0 * bitstream.payload_bytes / npix, bits), module.task
        codec, quality = choice.record.get("codec"), choice.value("quality")
        if isinstance(codec, str) and isinstance(quality, int | float):
            from mvmic.evaluation.anchors import standard_roundtrip

            task = module.task.eval()
            depth = int(choice.record.get("bit_depth") or 8)
            decoded, payload = standard_roundtrip(codec, x[0], float(quality), depth)
            decoded = decoded.unsqueeze(0)
            return Decoded(decoded, task.predict(decoded), 8.0 * payload / npix), task
        raise ValueError(f"{choice.path}: a task_ckpt but no standard codec and quality")


def first_test_images(choices: Sequence[Choice], n: int, config: str | None = None) -> list[dict]:
    """The first ``n`` test images (batches of one) of the data module the records name."""
    if config:
        from mvmic.evaluation.anchors import load_datamodule

        dm = load_datamodule(config)
    else:
        spec = next((c for c in choices if c.record.get("data")), None)
        if spec is None:
            raise ValueError(
                "no record names its data module (records written before `mvmic compare` "
                "existed); pass --config CONFIG with the data: section they were tested on"
            )
        dm = build_datamodule(spec.record["data"], str(spec.path))
    dm.setup("test")
    images: list[dict] = []
    for batch in dm.test_dataloader():
        if batch["image"].dim() != 4:
            raise ValueError(f"{dm.dataset_name}: compare draws 2D images; this test set is 3D")
        for i in range(len(batch["image"])):
            images.append(slice_batch(batch, i))
            if len(images) == n:
                return images
    if not images:
        raise ValueError("the test split is empty; check the data module's root and fractions")
    return images


def lesion_share(bits: np.ndarray, one: dict[str, Any]) -> str:
    """``62 % of bits on 9 % of pixels (lesion)`` for a segmentation mask; '' otherwise."""
    mask = one.get("mask")
    if not isinstance(mask, torch.Tensor) or mask.shape[-2:] != bits.shape:
        return ""
    fg = mask[0].cpu().numpy() > 0
    total = float(bits.sum())
    if total <= 0 or not fg.any():
        return ""
    return f"{100 * bits[fg].sum() / total:.0f} % of bits on {100 * fg.mean():.0f} % of pixels"


def compare(
    results_dir: str | Path,
    images: int = 4,
    bpp: float = 0.05,
    out: str | Path | None = None,
    dataset: str | None = None,
    config: str | None = None,
) -> CompareResult:
    """Decode ``images`` test images with every method at its point nearest ``bpp``; draw."""
    if images < 1 or not bpp > 0:
        raise ValueError(f"--images {images} / --bpp {bpp}: need at least 1 image and bpp > 0")
    choices, skipped = choose_points(results_dir, bpp, dataset)
    out = Path(out) if out else Path(results_dir) / "compare" / f"compare_bpp{bpp:g}.png"
    samples = first_test_images(choices, images, config)
    decoder = Decoder()
    usable, per_method = [], []
    for c in choices:
        try:
            per_method.append([decoder.decode(c, one) for one in samples])
            usable.append(c)
        except (ValueError, FileNotFoundError) as err:
            skipped.append(f"{c.name} ({c.path.name}): " + " ".join(str(err).split()))
    if not usable:
        raise ValueError("no method could be decoded again: " + "; ".join(skipped))
    rows, bit_rows, measured = [], [], []
    for i, one in enumerate(samples):
        name = one.get("name")
        label = str(name[0]) if name is not None else f"image {i}"
        row = [Tile(to_rgb(one["image"][0]), label)]
        truth = None
        bit_row: list[Tile] = []
        for c, results in zip(usable, per_method):
            d, task = results[i]
            pred_tile, truth_tile = prediction_tiles(task, d.preds, {**one}, d.shown)
            values = per_image_metrics(task, d.preds, {**one, "image": d.shown})[0]
            text = " · ".join(t for t in (c.label, f"{d.bpp:.3f} bpp") if t)
            row.append(Tile(pred_tile[0], f"{text}\n{metric_text(values)}"))
            measured.append({"image": label, "method": c.name, "bpp": d.bpp, **values})
            if truth is None:
                truth = prediction_tiles(task, d.preds, {**one}, one["image"])[1][0]
            if d.bits is not None:
                share = lesion_share(d.bits, one)
                bit_row.append(
                    Tile(
                        bits_overlay(to_rgb(one["image"][0]), d.bits),
                        f"{bits_title(d.bits)}\n{d.bpp:.3f} bpp coded\n{share}",
                    )
                )
        row.append(Tile(truth, ""))
        rows.append(row)
        if bit_row:
            bit_rows.append([Tile(truth, label), *bit_row])
    titles = ["original", *(c.name for c in usable), "ground truth"]
    out.parent.mkdir(parents=True, exist_ok=True)
    draw_grid(rows, titles).savefig(out)
    bits_path = None
    if bit_rows:
        learned = [c.name for c, r in zip(usable, per_method) if r[0][0].bits is not None]
        bits_path = out.with_name(out.stem + "_bits.png")
        titles = ["ground truth", *(f"{n}: bits" for n in learned)]
        draw_grid(bit_rows, titles, title_lines=3).savefig(bits_path)
    return CompareResult(out, bits_path, usable, measured, skipped)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mvmic compare",
        description="Test images decoded by every method of a results folder at the operating "
        "point nearest --bpp, with predictions, per-image metrics and bit maps (PNG, W&B).",
    )
    p.add_argument("results_dir", type=Path, help="results store (<dataset>/<method>.json)")
    p.add_argument("--images", type=int, default=4, help="test images, one row each")
    p.add_argument("--bpp", type=float, default=0.05, help="target rate of each method's point")
    p.add_argument("--out", type=Path, default=None, help="PNG (default RESULTS/compare/…)")
    p.add_argument("--dataset", default=None, help="dataset folder (default: the first)")
    p.add_argument("--config", default=None, help="data config, for records that name none")
    p.add_argument("--no_wandb", action="store_true", help="do not log the panels to W&B")
    p.add_argument("--wandb_project", default="mvmic")
    p.add_argument("--wandb_dir", default=None, help="where the offline run folder goes")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``mvmic compare``: see :func:`build_parser`."""
    args = build_parser().parse_args(argv)
    try:
        result = compare(
            args.results_dir, args.images, args.bpp, args.out, args.dataset, args.config
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"mvmic compare: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    for line in result.skipped:
        print(f"skipped {line}", file=sys.stderr)
    for c in result.choices:
        print(f"{c.name:<24} {c.label:<10} record bpp {c.bpp:.4f}  ({c.path})")
    print(f"wrote {result.panel}" + (f"\nwrote {result.bits}" if result.bits else ""))
    if not args.no_wandb:
        from mvmic.evaluation.wandb_log import log_images_to_wandb

        pngs = {"compare/panel": result.panel}
        if result.bits:
            pngs["compare/bits"] = result.bits
        run_dir = log_images_to_wandb(pngs, args.wandb_project, args.wandb_dir, "compare")
        if run_dir:
            print(f"W&B run: {run_dir} (offline unless WANDB_MODE=online)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

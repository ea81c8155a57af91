"""Liu et al.'s Table 1 for any set of 3D records: per-volume, per-class Dice and IoU.

A 3D test (``mvmic test`` of a volume design) or a volume anchor (``mvmic anchors`` on a 3D data
module) keeps, in its point's ``per_volume`` entry, each test volume's name, per-class scores
(the task network's own metrics computed on that volume alone) and measured bpp::

    {"names": ["pat3", …], "dice_myocardium": [...], "iou_myocardium": [...], …, "bpp": [...]}

The task's record averages its samplewise Dice/IoU over volumes, so the mean of these columns is
the record's ``dice_<class>``/``iou_<class>``. :func:`liu_table` lays them out as Liu et al.'s
Table 1: one row per volume and an ``Average`` row, a column group per class and metric with
one column per method (point), and a ``bpp`` row.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

#: the metrics of the table, as the GAN segmentor's record names them (``dice_<class>``)
TABLE_METRICS = ("dice", "iou")
_LABEL = {"dice": "Dice", "iou": "IoU"}


class VolumeScores:
    """Collects ``per_volume`` during a 3D test loop (nothing for 2D batches)."""

    def __init__(self, task: Any) -> None:
        self.task = task
        self.rows: list[dict[str, float]] = []
        self.names: list[str] = []

    def update(
        self, preds: torch.Tensor, batch: dict[str, Any], nbytes: Sequence[int] | None = None
    ) -> None:
        """Score each volume of a batch alone; ``nbytes``: its coded bytes (None: raw 8 bits)."""
        x = batch["image"]
        if x.dim() != 5 or not isinstance(preds, torch.Tensor):
            return
        from mvmic.evaluation.panels import per_image_metrics

        names = batch.get("name") or [f"volume{len(self.names) + i}" for i in range(len(x))]
        alone = per_image_metrics(self.task, preds.cpu(), {"image": x, "mask": batch["mask"].cpu()})
        prefixes = tuple(f"{m}_" for m in TABLE_METRICS)
        for i, scores in enumerate(alone):
            row = {k: v for k, v in scores.items() if k.startswith(prefixes)}
            voxels = math.prod(x.shape[2:])
            row["bpp"] = 8.0 * x.shape[1] if nbytes is None else 8.0 * nbytes[i] / voxels
            self.rows.append(row)
            self.names.append(str(names[i]))

    def result(self) -> dict[str, list] | None:
        if not self.rows:
            return None
        keys = list(self.rows[0])
        return {"names": self.names, **{k: [r.get(k) for r in self.rows] for k in keys}}


def table_columns(
    records: Sequence[tuple[str, dict[str, Any]]],
) -> list[tuple[str, dict[str, list]]]:
    """``(label, per_volume)`` for every point with volume scores, in the order given.

    A method with one such point is labelled by its name, one with several by name and bpp.
    """
    out = []
    for name, results in records:
        points = [
            (i, pv) for i, pv in enumerate(results.get("per_volume") or []) if isinstance(pv, dict)
        ]
        for i, pv in points:
            label = name
            if len(points) > 1:
                bpp = (results.get("bpp") or [None] * (i + 1))[i]
                label = f"{name} @{bpp:.3g}" if bpp is not None else f"{name} #{i}"
            out.append((label, pv))
    return out


def _mean(values: Sequence[float | None]) -> float:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(vals) / len(vals) if vals else float("nan")


def liu_table(records: Sequence[tuple[str, dict[str, Any]]], classes: Sequence[str] = ()) -> str:
    """Markdown: Liu et al.'s Table 1 layout for the ``(method, results)`` given.

    Args:
        records: method names and their records' ``results`` (points without ``per_volume``
            are left out).
        classes: foreground classes to show (default: every ``dice_<class>`` found).

    Returns:
        The table, or ``""`` when no point has per-volume scores.
    """
    columns = table_columns(records)
    if not columns:
        return ""
    if not classes:
        seen: dict[str, None] = {}
        for _, pv in columns:
            for key in pv:
                if key.startswith("dice_"):
                    seen.setdefault(key[len("dice_") :])
        classes = list(seen)
    groups = [(c, m) for c in classes for m in TABLE_METRICS]
    volumes: dict[str, None] = {}
    for _, pv in columns:
        volumes.update(dict.fromkeys(pv["names"]))
    header = ["volume"] + [f"{c} {_LABEL[m]} · {label}" for c, m in groups for label, _ in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def cell(pv: dict[str, list], key: str, volume: str | None) -> str:
        values = pv.get(key) or []
        if volume is None:
            v = _mean(values)
        else:
            idx = [i for i, n in enumerate(pv["names"]) if n == volume]
            v = _mean([values[i] for i in idx if i < len(values)]) if idx else float("nan")
        return "–" if math.isnan(v) else f"{v:.3f}"

    for volume in [*volumes, None]:
        cells = [volume if volume is not None else "**Average**"]
        cells += [cell(pv, f"{m}_{c}", volume) for c, m in groups for _, pv in columns]
        lines.append("| " + " | ".join(cells) + " |")
    bpp = ", ".join(f"{label} ({_mean(pv.get('bpp') or []):.4g})" for label, pv in columns)
    lines += ["", f"bpp (measured, mean over volumes): {bpp}"]
    return "\n".join(lines) + "\n"


def table_averages(per_volume: dict[str, list]) -> dict[str, float]:
    """The ``Average`` row of one column: the mean of each score over the volumes."""
    return {k: _mean(v) for k, v in per_volume.items() if k != "names"}


def write_liu_tables(
    results_dir: str | Path, out_dir: str | Path, methods: Sequence[str] | None = None
) -> list[Path]:
    """``liu_table_<dataset>.md`` under ``out_dir`` for every dataset with 3D records.

    Args:
        methods: record names to show, in this order (default: all, as found).
    """
    from mvmic.evaluation.methods import load_methods

    written = []
    for dataset, found in load_methods(results_dir).items():
        pairs = [(m.name, m.results) for m in found]
        if methods_wanted := [n.strip() for n in methods or () if n.strip()]:
            by_name = dict(pairs)
            pairs = [(n, by_name[n]) for n in methods_wanted if n in by_name]
        text = liu_table(pairs)
        if not text:
            continue
        path = Path(out_dir) / f"liu_table_{dataset}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# {dataset}: per-volume Dice and IoU (Liu et al., Table 1)\n\n{text}")
        written.append(path)
    return written

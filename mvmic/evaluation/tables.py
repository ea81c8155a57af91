"""The BD table as Markdown (one table per dataset) and long-form CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from mvmic.evaluation.bd import BDCell
from mvmic.evaluation.methods import METRIC_SHORT, Method


def format_markdown(
    cells: Sequence[BDCell], anchors: dict[str, str], grouped: dict[str, list[Method]]
) -> str:
    """One Markdown table per dataset: methods as rows, BD-rate and BD-metric per metric."""
    lines = []
    for dataset, ref in anchors.items():
        ds = [c for c in cells if c.dataset == dataset]
        lines.append(f"### {dataset} — BD against `{ref}` (pchip)\n")
        if not ds:
            lines.append("_no other method to compare_\n")
            continue
        metrics = list(dict.fromkeys(c.metric for c in ds))
        header = ["method"]
        for m in metrics:
            label = METRIC_SHORT.get(m, m)
            header += [f"BD-rate {label}", f"BD-{label}"]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for method in dict.fromkeys(c.method for c in ds):
            row = [method]
            for metric in metrics:
                cell = next((c for c in ds if c.method == method and c.metric == metric), None)
                row += ["—", "—"] if cell is None else [cell.rate_text(), cell.metric_text()]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def format_csv(cells: Sequence[BDCell]) -> str:
    """Long-form CSV: one row per (dataset, method, metric); empty value + note when n/a."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(
        ["dataset", "anchor", "method", "metric", "n_points", "bd_rate_pct", "bd_metric", "note"]
    )
    for c in cells:
        w.writerow(
            [
                c.dataset,
                c.anchor,
                c.method,
                c.metric,
                c.n_points,
                "" if c.bd_rate is None else f"{c.bd_rate:.4f}",
                "" if c.bd_metric is None else f"{c.bd_metric:.6f}",
                c.note,
            ]
        )
    return buf.getvalue()

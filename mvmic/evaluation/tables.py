"""The BD table as Markdown (one table per dataset) and long-form CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from mvmic.evaluation.bd import BDCell
from mvmic.evaluation.methods import METRIC_SHORT, Method

#: metrics whose points get intervals in the points table when no --metrics are named
TASK_METRICS = ("miou", "dice", "iou", "map")


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
        + ["bd_rate_low", "bd_rate_high"]
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
                "" if c.rate_low is None else f"{c.rate_low:.4f}",
                "" if c.rate_high is None else f"{c.rate_high:.4f}",
            ]
        )
    return buf.getvalue()


def point_intervals(method: Method, metric: str, draws: int) -> list[dict]:
    """``method``'s points sorted by rate with their bootstrap intervals (low/high None
    without per-image statistics, or with ``draws`` = 0)."""
    from mvmic.evaluation.bootstrap import curve_with_intervals

    if draws > 0:
        return curve_with_intervals({"results": method.results}, metric, draws=draws)
    return [
        {"bpp": r, "value": v, "low": None, "high": None} for r, v in zip(*method.points(metric))
    ]


def format_points(
    grouped: dict[str, list[Method]], metrics: Sequence[str] | None, draws: int
) -> str:
    """Per dataset, the task-metric points that have intervals: value [95 % interval]."""
    if draws <= 0:
        return ""
    lines = []
    for dataset, methods in grouped.items():
        rows = []
        for m in methods:
            for metric in metrics or TASK_METRICS:
                for p in point_intervals(m, metric, draws):
                    if p["low"] is not None:
                        label = METRIC_SHORT.get(metric, metric)
                        rows.append(
                            f"| {m.name} | {label} | {p['bpp']:.4f} | {p['value']:.4f} "
                            f"| [{p['low']:.4f}, {p['high']:.4f}] |"
                        )
        if rows:
            lines += [
                f"### {dataset} — task metric per point, 95 % bootstrap interval ({draws} draws)\n"
            ]
            lines += [
                "| method | metric | bpp | value | interval |",
                "|---|---|---|---|---|",
                *rows,
                "",
            ]
    return "\n".join(lines)

"""The bench's report: the summary as Markdown, the machine line, the docs-page region."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

from mvmic.evaluation.bench_settings import GanPart, Part


def format_summary(part: Part | GanPart, summary: dict[str, Any]) -> str:
    metric = summary["metric"]
    lines = [f"### {part.name}: {metric} against bpp (bpp measured from real bitstreams)", ""]
    lines += [f"| method | bpp | {metric} | 95 % interval | PSNR |", "|---|---|---|---|---|"]
    for name, cols in summary["methods"].items():
        bpp = cols.get("bpp") or []
        cis = cols.get("interval") or [None] * len(bpp)
        rows = zip(bpp, cols.get(metric) or [], cis, cols.get("psnr") or [None] * len(bpp))
        for b, v, ci, p in rows:
            psnr = "–" if p is None or not math.isfinite(p) else f"{p:.2f}"
            band = "–" if ci is None else f"[{ci[0]:.4f}, {ci[1]:.4f}]"
            lines.append(f"| {name} | {b:.4f} | {v:.4f} | {band} | {psnr} |")
    if summary.get("bd"):
        anchor = summary["bd"][0]["anchor"]
        lines += ["", f"BD against `{anchor}` (`mvmic curves --envelope`, pchip):", ""]
        lines += [
            "| method | metric | points | BD-rate | BD-metric | note |",
            "|---|---|---|---|---|---|",
        ]
        for row in summary["bd"]:
            rate = f"{float(row['bd_rate_pct']):+.1f} %" if row["bd_rate_pct"] else "n/a"
            value = f"{float(row['bd_metric']):+.4f}" if row["bd_metric"] else "n/a"
            lines.append(
                f"| {row['method']} | {row['metric']} | {row['n_points']} | {rate} | {value} "
                f"| {row['note']} |"
            )
    # met: the whole 95 % interval meets the goal; no: it all misses; within noise: it straddles
    lines += ["", "| goal | verdict | measured [95 % interval] |", "|---|---|---|"]
    for g in summary["goals"]:
        met = {True: "met", False: "**no**", None: "n/a"}.get(g["met"], g["met"])
        lines.append(f"| {g['goal']} | {met} | {g['why']} |")
    return "\n".join(lines) + "\n"


def machine() -> str:
    """One line: CPU model and cores, torch build, date."""
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} cores, {gpu}; torch {torch.__version__}, "
        f"Python {platform.python_version()}; {time.strftime('%Y-%m-%d')}"
    )


#: the page whose marked region ``--readme`` rewrites when given no path
BENCHMARKS_PAGE = Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md"
README_BEGIN = "<!-- bench_rate_accuracy:begin (written by the tool; do not edit) -->"
README_END = "<!-- bench_rate_accuracy:end -->"


def update_readme(readme: Path, summary_md: str, figures: Path | None) -> None:
    """Replace the marked region of ``readme`` with the summary and the copied figures."""
    text = readme.read_text()
    if README_BEGIN not in text or README_END not in text:
        raise SystemExit(f"bench: {readme} has no {README_BEGIN} … {README_END} region")
    body = summary_md
    if figures is not None:
        rel = os.path.relpath(figures, readme.parent)
        body += "\n" + "\n".join(
            f"![{png.stem}]({rel}/{png.name})" for png in sorted(figures.glob("*.png"))
        )
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    readme.write_text(f"{head}{README_BEGIN}\n{body}\n{README_END}{tail}")

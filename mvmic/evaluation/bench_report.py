"""The bench's report: the summary as Markdown, the machine line, the docs-page region."""

from __future__ import annotations

import math
import os
import re
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


# one part's section of a summary: its heading down to its own "wall time" line
_SECTION = re.compile(r"^### (?P<name>[\w-]+): .*?^wall time: (?P<wall>[\d.]+) s$\n?", re.M | re.S)


def with_provenance(section: str, command: str, machine_line: str) -> str:
    """A part section with the command and machine that produced it under its heading, so a
    page that mixes parts from several runs says which run each came from."""
    heading, rest = section.split("\n", 1)
    return f"{heading}\n\ncommand: `{command}`  \nmachine: {machine_line}\n{rest}"


def part_sections(summary_md: str) -> dict[str, str]:
    """The part sections of a written summary, by part name. A section without its own
    ``command:`` line (a summary written before sections carried one) gets the summary's."""
    lead = summary_md.split("\n### ", 1)[0]
    provenance = [ln for ln in lead.splitlines() if ln.startswith(("command:", "machine:"))]
    sections = {}
    for match in _SECTION.finditer(summary_md):
        text = match.group(0).rstrip("\n") + "\n"
        heading, rest = text.split("\n", 1)
        if provenance and not rest.lstrip("\n").startswith("command:"):
            text = f"{heading}\n\n" + "\n".join(provenance) + f"\n{rest}"
        sections[match["name"]] = text
    return sections


def joined_summary(sections: dict[str, str], order: tuple[str, ...]) -> str:
    """Sections in ``order`` and the total of their own wall times."""
    names = [n for n in order if n in sections]
    wall = sum(float(_SECTION.search(sections[n])["wall"]) for n in names)
    runs = {re.search(r"^command: (.*)$", sections[n], re.M)[1] for n in names}
    how = "the sum of the parts' own" + (f", from {len(runs)} runs" if len(runs) > 1 else "")
    body = "\n".join(sections[n] for n in names)
    return body + f"\ntotal wall time: {wall:.0f} s ({wall / 60:.1f} min; {how})\n"


def readme_region(readme: Path) -> str:
    """The text between the markers of ``readme`` (empty when it has none)."""
    text = readme.read_text() if readme.is_file() else ""
    if README_BEGIN not in text or README_END not in text:
        return ""
    return text.split(README_BEGIN, 1)[1].split(README_END, 1)[0]


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

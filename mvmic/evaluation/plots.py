"""Rate-curve figures (bpp on x, one line per method, anchors dashed) and the curves folder."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mvmic.evaluation.bd import BDCell, bd_table
from mvmic.evaluation.bootstrap import DRAWS
from mvmic.evaluation.methods import (
    DEFAULT_METRICS,
    METRIC_LABELS,
    Method,
    choose_anchor,
    family,
    load_methods,
)
from mvmic.evaluation.tables import format_csv, format_markdown, format_points, point_intervals


def plot_metric(dataset: str, metric: str, methods: Sequence[Method], draws: int = DRAWS):
    """A matplotlib Figure of ``metric`` against bpp: one line per method, anchors dashed.

    Points whose record keeps per-image statistics carry their 95 % bootstrap interval
    (``draws`` resamples of the test images; 0: none) as a vertical bar in the line's colour.
    Methods with no point for the metric are left out, so ``len(ax.lines)`` is the number of
    methods drawn.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.2), dpi=120)
    ax = fig.add_subplot()
    markers = "osD^v<>pPX*h"
    ordered = sorted(methods, key=lambda m: (m.anchor, family(m.name), m.name))
    # one colour per codec: `hevc` and `hevc+ft` alike, dash-dotted when fine-tuned
    families = list(dict.fromkeys(family(m.name) for m in ordered))
    palette = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, m in enumerate(ordered):
        rates, values = m.points(metric)
        if not rates:
            continue
        tuned = m.name != family(m.name)
        (line,) = ax.plot(
            rates,
            values,
            color=palette[families.index(family(m.name)) % len(palette)],
            linestyle=("-." if tuned else "--") if m.anchor else "-",
            marker=markers[i % len(markers)],
            markersize=4,
            linewidth=1.2 if m.anchor else 1.8,
            label=m.name,
        )
        bars = [r for r in point_intervals(m, metric, draws) if r["low"] is not None]
        if bars:  # a LineCollection, so ax.lines stays one line per method
            ax.vlines(
                [r["bpp"] for r in bars],
                [r["low"] for r in bars],
                [r["high"] for r in bars],
                colors=line.get_color(),
                linewidth=1.0,
                alpha=0.7,
            )
    # Rates span orders of magnitude (learned codecs at ~0.05 bpp, raw images at 24).
    ax.set_xscale("log")
    ax.set_xlabel("bits per pixel (bpp, log scale)")
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    ax.set_title(f"{dataset}: {METRIC_LABELS.get(metric, metric)} vs rate")
    ax.grid(True, alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


@dataclass
class CurvesResult:
    """What :func:`draw_curves` wrote and computed."""

    pngs: list[Path]
    cells: list[BDCell]
    markdown: str
    csv_path: Path | None
    md_path: Path | None
    methods: dict[str, list[Method]]
    anchors: dict[str, str]


def draw_curves(
    results_dir: str | Path,
    out: str | Path | None = None,
    anchor: str | None = None,
    metrics: Sequence[str] | None = None,
    envelope: bool = False,
    draws: int = DRAWS,
) -> CurvesResult:
    """Draw the PNGs and write the BD table for every dataset under ``results_dir``.

    Args:
        results_dir: the results store.
        out: output folder (default ``<results_dir>/curves``).
        anchor: reference method for BD values (default: the first of hevc, jpeg2000, jpeg,
            webp, avif present, else the first anchor record).
        metrics: metrics to draw (default: those of psnr, ms-ssim, miou, dice, map present).
        envelope: compute BD-rate of non-monotone curves on their upper envelope.
        draws: bootstrap resamples for the 95 % intervals of points and BD-rates (records
            with per-image statistics only; 0: no intervals).

    Raises:
        FileNotFoundError: no results folder or no records in it.
        ValueError: ``anchor`` names no record of a dataset.
    """
    out = Path(out) if out else Path(results_dir) / "curves"
    grouped = load_methods(results_dir, skip=(out,))
    if not grouped:
        raise FileNotFoundError(
            f"no results records under {results_dir}; run `mvmic test` or `mvmic anchors` first"
        )
    if metrics:
        columns = {k for ms in grouped.values() for m in ms for k in m.results}
        known = sorted(columns - {"bpp", "per_image", "per_volume"})
        unknown = [k for k in metrics if k not in known]
        if unknown:
            raise ValueError(
                f"--metrics {','.join(unknown)}: not in any record under {results_dir}; "
                f"choose from {', '.join(known) or '(none)'}"
            )
    out.mkdir(parents=True, exist_ok=True)
    pngs, cells, anchors = [], [], {}
    for dataset, methods in grouped.items():
        present = {k for m in methods for k in m.results}
        ms = [k for k in (metrics or DEFAULT_METRICS) if k in present]
        ref = choose_anchor(methods, anchor)
        if ref is None:
            names = ", ".join(m.name for m in methods)
            raise ValueError(f"anchor {anchor!r} not among {dataset}'s methods ({names})")
        anchors[dataset] = ref.name
        for metric in ms:
            fig = plot_metric(dataset, metric, methods, draws)
            path = out / f"{dataset}_{_safe(metric)}.png"
            fig.savefig(path)
            pngs.append(path)
        cells.extend(bd_table(dataset, methods, ref, ms, envelope, draws))
    markdown = format_markdown(cells, anchors, grouped)
    points = format_points(grouped, metrics, draws)
    if points:
        markdown += "\n" + points
    md_path, csv_path = out / "bd_rate.md", out / "bd_rate.csv"
    md_path.write_text(markdown)
    csv_path.write_text(format_csv(cells))
    return CurvesResult(pngs, cells, markdown, csv_path, md_path, grouped, anchors)


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)

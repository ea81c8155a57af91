"""Rate curves and Bjøntegaard deltas from the results store.

``mvmic curves RESULTS_DIR`` reads every record under ``RESULTS_DIR`` (``<dataset>/<method>.json``,
found recursively), draws one PNG per metric per dataset (bpp on x, one line with markers per
method, anchors dashed) and writes a table of BD-rate and BD-metric of every method against an
anchor, for every metric (task metrics too), as Markdown and CSV.

BD values come from the ``bjontegaard`` package with piecewise-cubic (``pchip``) interpolation,
as in the usual reference implementation. A cell reads ``n/a (reason)`` where the numbers do not
allow a Bjøntegaard delta: fewer than 4 points on either curve, curves whose ranges do not
overlap, or (BD-rate only) a metric that does not grow strictly with the rate.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mvmic.results import is_anchor, iter_records, record_points

DEFAULT_METRICS = ("psnr", "ms-ssim", "miou", "iou", "dice", "map")
METRIC_LABELS = {
    "psnr": "PSNR (dB)",
    "ms-ssim": "MS-SSIM",
    "miou": "mIoU",
    "iou": "IoU",
    "dice": "Dice",
    "map": "mAP",
    "map_50": "mAP@50",
    "map_75": "mAP@75",
}
METRIC_SHORT = {
    "psnr": "PSNR",
    "ms-ssim": "MS-SSIM",
    "miou": "mIoU",
    "iou": "IoU",
    "dice": "Dice",
    "map": "mAP",
}
#: Preferred default BD reference, first one present wins (BPG/HEVC intra is the usual anchor).
DEFAULT_ANCHORS = ("hevc", "bpg", "jpeg2000", "jpeg", "webp", "avif")
MIN_POINTS = 4
MIN_OVERLAP = 0.75  # below this the value is kept but flagged, as the reference tool warns


@dataclass
class Method:
    """One method's curve data within one dataset (records with the same name are merged)."""

    name: str
    anchor: bool
    results: dict[str, list] = field(default_factory=dict)
    paths: list[Path] = field(default_factory=list)

    def points(self, metric: str) -> tuple[list[float], list[float]]:
        return record_points({"results": self.results}, metric)


@dataclass
class BDCell:
    """BD-rate (%) and BD-metric of one method against the anchor for one metric."""

    dataset: str
    anchor: str
    method: str
    metric: str
    n_points: int
    bd_rate: float | None
    bd_metric: float | None
    rate_note: str = ""
    metric_note: str = ""

    @property
    def note(self) -> str:
        parts = [f"bd_rate: {self.rate_note}"] if self.rate_note else []
        return "; ".join(parts + ([f"bd_metric: {self.metric_note}"] if self.metric_note else []))

    def rate_text(self) -> str:
        return _cell_text(self.bd_rate, self.rate_note, "{:+.2f} %")

    def metric_text(self) -> str:
        return _cell_text(
            self.bd_metric, self.metric_note, "{:+.2f}" if self.metric == "psnr" else "{:+.4f}"
        )


def _cell_text(value: float | None, note: str, fmt: str) -> str:
    if value is None:
        return f"n/a ({note})"
    return fmt.format(value) + (f" ({note})" if note else "")


def load_methods(results_dir: str | Path, skip: Sequence[Path] = ()) -> dict[str, list[Method]]:
    """Records under ``results_dir`` grouped by dataset, one :class:`Method` per record name."""
    grouped: dict[str, dict[str, Method]] = {}
    for dataset, path, record in iter_records(results_dir, skip=tuple(skip)):
        name = str(record.get("name") or path.stem)
        methods = grouped.setdefault(dataset, {})
        m = methods.get(name)
        if m is None:
            m = methods[name] = Method(name, is_anchor({**record, "name": name}))
        _merge_columns(m.results, record["results"])
        m.paths.append(path)
    return {d: list(ms.values()) for d, ms in sorted(grouped.items())}


def _merge_columns(into: dict[str, list], results: dict[str, list]) -> None:
    # Columns of a record may be ragged (None-padded by append_point); keep rows aligned.
    n_old = max((len(v) for v in into.values()), default=0)
    n_new = max((len(v) for v in results.values()), default=0)
    for key in set(into) | set(results):
        col = into.setdefault(key, [])
        col.extend([None] * (n_old - len(col)))
        new = list(results.get(key) or [])
        col.extend(new + [None] * (n_new - len(new)))


def choose_anchor(methods: Sequence[Method], anchor: str | None) -> Method | None:
    """The reference method: ``anchor`` by name (case-insensitive), else a default."""
    by_name = {m.name.lower(): m for m in methods}
    by_stem = {p.stem.lower(): m for m in methods for p in m.paths}
    if anchor:
        return by_name.get(anchor.lower()) or by_stem.get(anchor.lower())
    for name in DEFAULT_ANCHORS:
        if name in by_name:
            return by_name[name]
    return next((m for m in methods if m.anchor), methods[0] if methods else None)


def upper_envelope(rates: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The points (sorted by rate) whose value beats every lower-rate point: a monotone curve."""
    keep, best = [], -np.inf
    for i, v in enumerate(values):
        if v > best:
            keep.append(i)
            best = v
    return rates[keep], values[keep]


def bd_cell(
    anchor: tuple[Sequence[float], Sequence[float]],
    test: tuple[Sequence[float], Sequence[float]],
    envelope: bool = False,
) -> tuple[float | None, str, float | None, str]:
    """BD-rate (%) and BD-metric of ``test`` against ``anchor``.

    Both curves are ``(rates, values)`` sorted by rate (see :func:`mvmic.results.record_points`).
    BD-rate needs a metric that grows strictly with the rate; with ``envelope=True`` a curve that
    does not is replaced, for BD-rate only, by its :func:`upper_envelope` (noted in the cell).

    Returns:
        ``(bd_rate, rate_note, bd_metric, metric_note)``; a value is ``None`` when it cannot be
        computed and its note says why; a note beside a value flags a low overlap.
    """
    import bjontegaard as bd

    (ra, va), (rt, vt) = anchor, test
    n_a, n_t = len(ra), len(rt)
    if min(n_a, n_t) < MIN_POINTS:
        which = "anchor" if n_a < MIN_POINTS else "method"
        reason = f"{which} has {min(n_a, n_t)} points < {MIN_POINTS}"
        return None, reason, None, reason
    ra, va, rt, vt = (np.asarray(a, dtype=float) for a in (ra, va, rt, vt))
    if np.any(np.diff(ra) <= 0) or np.any(np.diff(rt) <= 0):
        return None, "repeated rates", None, "repeated rates"
    bd_metric, metric_note = _bd(bd.bd_psnr, ra, va, rt, vt, np.log10(ra), np.log10(rt), "rate")
    notes = []
    if envelope:
        for which, (r, v) in (("anchor", (ra, va)), ("method", (rt, vt))):
            er, ev = upper_envelope(r, v)
            if len(er) < len(r):
                notes.append(f"{which} envelope {len(er)}/{len(r)} points")
            if which == "anchor":
                ra_e, va_e = er, ev
            else:
                rt_e, vt_e = er, ev
        if min(len(ra_e), len(rt_e)) < MIN_POINTS:
            return None, "; ".join(notes) + f" < {MIN_POINTS}", bd_metric, metric_note
    else:
        ra_e, va_e, rt_e, vt_e = ra, va, rt, vt
    if np.all(np.diff(va_e) > 0) and np.all(np.diff(vt_e) > 0):
        bd_rate, rate_note = _bd(bd.bd_rate, ra_e, va_e, rt_e, vt_e, va_e, vt_e, "metric")
        rate_note = "; ".join(notes + ([rate_note] if rate_note else []))
    else:
        which = "anchor" if np.any(np.diff(va_e) <= 0) else "method"
        bd_rate, rate_note = None, f"{which} metric not increasing with rate"
    return bd_rate, rate_note, bd_metric, metric_note


def _bd(fn, ra, va, rt, vt, xa, xt, axis: str) -> tuple[float | None, str]:
    # Overlap of the integration axis, as the reference tool measures it (it only warns).
    lo, hi = max(xa.min(), xt.min()), min(xa.max(), xt.max())
    span = max(xa.max(), xt.max()) - min(xa.min(), xt.min())
    overlap = (hi - lo) / span if span > 0 else 0.0
    if overlap <= 0:
        return None, f"{axis} ranges do not overlap"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # low overlap is reported in the note instead
        value = float(fn(ra, va, rt, vt, method="pchip", require_matching_points=False))
    if not math.isfinite(value):
        return None, f"{axis} interpolation failed"
    return value, (f"{axis} overlap {overlap:.0%}" if overlap < MIN_OVERLAP else "")


def bd_table(
    dataset: str,
    methods: Sequence[Method],
    anchor: Method,
    metrics: Sequence[str],
    envelope: bool = False,
) -> list[BDCell]:
    """BD cells of every non-anchor method against ``anchor`` for each metric."""
    cells = []
    for metric in metrics:
        ref = anchor.points(metric)
        for m in methods:
            if m is anchor:
                continue
            pts = m.points(metric)
            if not pts[0]:
                continue
            rate, rnote, value, vnote = bd_cell(ref, pts, envelope)
            cells.append(
                BDCell(dataset, anchor.name, m.name, metric, len(pts[0]), rate, value, rnote, vnote)
            )
    return cells


def plot_metric(dataset: str, metric: str, methods: Sequence[Method]):
    """A matplotlib Figure of ``metric`` against bpp: one line per method, anchors dashed.

    Methods with no point for the metric are left out, so ``len(ax.lines)`` is the number of
    methods drawn.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.2), dpi=120)
    ax = fig.add_subplot()
    markers = "osD^v<>pPX*h"
    for i, m in enumerate(sorted(methods, key=lambda m: (m.anchor, m.name))):
        rates, values = m.points(metric)
        if not rates:
            continue
        ax.plot(
            rates,
            values,
            linestyle="--" if m.anchor else "-",
            marker=markers[i % len(markers)],
            markersize=4,
            linewidth=1.2 if m.anchor else 1.8,
            label=m.name,
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
) -> CurvesResult:
    """Draw the PNGs and write the BD table for every dataset under ``results_dir``.

    Args:
        results_dir: the results store.
        out: output folder (default ``<results_dir>/curves``).
        anchor: reference method for BD values (default: the first of hevc, jpeg2000, jpeg,
            webp, avif present, else the first anchor record).
        metrics: metrics to draw (default: those of psnr, ms-ssim, miou, dice, map present).
        envelope: compute BD-rate of non-monotone curves on their upper envelope.

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
            fig = plot_metric(dataset, metric, methods)
            path = out / f"{dataset}_{_safe(metric)}.png"
            fig.savefig(path)
            pngs.append(path)
        cells.extend(bd_table(dataset, methods, ref, ms, envelope))
    markdown = format_markdown(cells, anchors, grouped)
    md_path, csv_path = out / "bd_rate.md", out / "bd_rate.csv"
    md_path.write_text(markdown)
    csv_path.write_text(format_csv(cells))
    return CurvesResult(pngs, cells, markdown, csv_path, md_path, grouped, anchors)


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


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


def log_curves_to_wandb(
    result: CurvesResult,
    run: Any = None,
    project: str = "mvmic",
    group: str | None = None,
    wandb_dir: str | Path | None = None,
) -> str | None:
    """Log the curves as ``wandb.Table`` s with line plots, and the BD table.

    Uses the active run (or ``run``); otherwise starts a ``job_type="curves"`` run in offline
    mode unless ``WANDB_MODE`` says otherwise, so it never blocks on the network. Upload later
    with ``wandb sync <wandb_dir>/wandb/offline-run-*``.

    Returns:
        The run's local directory (where the offline files are), or None if wandb is missing.
    """
    try:
        import wandb
    except ImportError:
        print("wandb not installed; skipping the W&B curves", file=sys.stderr)
        return None
    own = False
    run = run or wandb.run
    if run is None:
        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ.setdefault("WANDB_SILENT", "true")
        run = wandb.init(
            project=project,
            group=group or os.environ.get("WANDB_RUN_GROUP"),
            job_type="curves",
            dir=str(wandb_dir) if wandb_dir else None,
            settings=wandb.Settings(console="off"),
        )
        own = True
    rows = []
    logs: dict[str, Any] = {}
    for dataset, methods in result.methods.items():
        metrics = sorted({c.metric for c in result.cells if c.dataset == dataset})
        metrics = metrics or [k for k in DEFAULT_METRICS if any(k in m.results for m in methods)]
        for metric in metrics:
            xs, ys, keys = [], [], []
            for m in methods:
                rates, values = m.points(metric)
                if not rates:
                    continue
                xs.append(rates)
                ys.append(values)
                keys.append(m.name)
                rows += [[dataset, m.name, m.anchor, metric, r, v] for r, v in zip(rates, values)]
            if keys:
                logs[f"curves/{dataset}/{metric}"] = wandb.plot.line_series(
                    xs=xs,
                    ys=ys,
                    keys=keys,
                    title=f"{dataset}: {METRIC_LABELS.get(metric, metric)} vs bpp",
                    xname="bpp",
                )
    logs["curves/table"] = wandb.Table(
        columns=["dataset", "method", "anchor", "metric", "bpp", "value"], data=rows
    )
    logs["curves/bd_rate"] = wandb.Table(
        columns=[
            "dataset",
            "anchor",
            "method",
            "metric",
            "n_points",
            "bd_rate_pct",
            "bd_metric",
            "note",
        ],
        data=[
            [c.dataset, c.anchor, c.method, c.metric, c.n_points, c.bd_rate, c.bd_metric, c.note]
            for c in result.cells
        ],
    )
    run.log(logs)
    run_dir = str(Path(run.dir).parent)
    if own:
        run.finish()
    return run_dir


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mvmic curves",
        description="Rate curves (PNG) and BD-rate/BD-metric tables from a results folder.",
    )
    p.add_argument("results_dir", type=Path, help="results store (<dataset>/<method>.json)")
    p.add_argument("--anchor", default=None, help="reference method for BD values")
    p.add_argument(
        "--metrics",
        default=None,
        help=f"comma-separated metrics (default: those of {','.join(DEFAULT_METRICS)} present)",
    )
    p.add_argument("--out", type=Path, default=None, help="output folder (default RESULTS/curves)")
    p.add_argument(
        "--envelope",
        action="store_true",
        help="BD-rate of a curve whose metric is not monotone in rate: use its upper envelope "
        "(default: n/a)",
    )
    p.add_argument("--wandb", action="store_true", help="also log the curves to W&B (offline)")
    p.add_argument("--wandb_project", default="mvmic")
    p.add_argument("--wandb_group", default=None)
    p.add_argument("--wandb_dir", default=None, help="where the offline run folder goes")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``mvmic curves``: see :func:`build_parser`."""
    args = build_parser().parse_args(argv)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    try:
        result = draw_curves(args.results_dir, args.out, args.anchor, metrics, args.envelope)
    except (FileNotFoundError, ValueError) as err:
        print(f"mvmic curves: {err}", file=sys.stderr)
        return 2
    print(result.markdown)
    for path in result.pngs:
        print(f"wrote {path}")
    print(f"wrote {result.md_path}\nwrote {result.csv_path}")
    if args.wandb:
        run_dir = log_curves_to_wandb(
            result, project=args.wandb_project, group=args.wandb_group, wandb_dir=args.wandb_dir
        )
        if run_dir:
            print(f"W&B run: {run_dir} (offline unless WANDB_MODE=online; `wandb sync {run_dir}`)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

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
import sys
from collections.abc import Sequence
from pathlib import Path

# The public curves API, importable from here as it was from ``mvmic.curves``.
from mvmic.evaluation.bd import BDCell, bd_cell, bd_table, upper_envelope
from mvmic.evaluation.bootstrap import DRAWS
from mvmic.evaluation.liu_table import write_liu_tables
from mvmic.evaluation.methods import DEFAULT_METRICS, Method, choose_anchor, load_methods
from mvmic.evaluation.plots import CurvesResult, draw_curves, plot_metric
from mvmic.evaluation.tables import format_csv, format_markdown
from mvmic.evaluation.wandb_log import log_curves_to_wandb

__all__ = [
    "BDCell",
    "CurvesResult",
    "Method",
    "bd_cell",
    "bd_table",
    "build_parser",
    "choose_anchor",
    "draw_curves",
    "format_csv",
    "format_markdown",
    "load_methods",
    "log_curves_to_wandb",
    "main",
    "plot_metric",
    "upper_envelope",
]


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
    p.add_argument(
        "--draws",
        type=int,
        default=DRAWS,
        help="bootstrap resamples of the test images for 95 %% intervals of points and "
        "BD-rates (records with per-image statistics; 0: none)",
    )
    p.add_argument(
        "--table_methods",
        default=None,
        help="3D records: the methods (comma-separated names) of Liu et al.'s Table 1 layout "
        "(liu_table_<dataset>.md; default: every record with per-volume scores)",
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
        result = draw_curves(
            args.results_dir, args.out, args.anchor, metrics, args.envelope, args.draws
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"mvmic curves: {err}", file=sys.stderr)
        return 2
    print(result.markdown)
    for path in result.pngs:
        print(f"wrote {path}")
    print(f"wrote {result.md_path}\nwrote {result.csv_path}")
    names = args.table_methods.split(",") if args.table_methods else None
    for path in write_liu_tables(args.results_dir, args.out or args.results_dir / "curves", names):
        print(f"\n{path.read_text()}wrote {path}")
    if args.wandb:
        run_dir = log_curves_to_wandb(
            result, project=args.wandb_project, group=args.wandb_group, wandb_dir=args.wandb_dir
        )
        if run_dir:
            print(f"W&B run: {run_dir} (offline unless WANDB_MODE=online; `wandb sync {run_dir}`)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

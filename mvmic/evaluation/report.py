"""``mvmic report``: one self-contained HTML page of a results folder.

The page holds the rate curves (``mvmic curves``' figures; error bars where records keep
per-image statistics), every measured point (with its bootstrap interval when there is one),
the BD tables, the benchmark's goal verdicts when a ``summary.json`` of
``tools/bench_rate_accuracy.py`` sits beside the results, and the comparison panels and bit maps
of ``mvmic compare``. Images are embedded as ``data:`` URIs and the style is inline: the file
opens anywhere, with no network access.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mvmic.evaluation.methods import METRIC_LABELS

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; height: auto; display: block; margin: 0.5em 0; }
.yes { color: #0a7a0a; font-weight: bold; } .no { color: #b00; font-weight: bold; }
.note { color: #666; font-size: 0.9em; }
"""


def data_uri(png: Path) -> str:
    """A PNG file as a ``data:image/png;base64,…`` URI."""
    return "data:image/png;base64," + base64.b64encode(Path(png).read_bytes()).decode("ascii")


def _img(png: Path, alt: str) -> str:
    return f'<img src="{data_uri(png)}" alt="{html.escape(alt)}">'


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "") -> str:
    """An HTML table; cells are escaped text (a ``(text, css_class)`` pair sets a class)."""

    def cell(tag: str, value: Any) -> str:
        if isinstance(value, tuple):
            text, css = value
            return f'<{tag} class="{css}">{html.escape(str(text))}</{tag}>'
        return f"<{tag}>{html.escape(str(value))}</{tag}>"

    head = "<tr>" + "".join(cell("th", h) for h in header) + "</tr>"
    body = "".join("<tr>" + "".join(cell("td", v) for v in row) + "</tr>" for row in rows)
    attr = f' class="{cls}"' if cls else ""
    return f"<table{attr}><thead>{head}</thead><tbody>{body}</tbody></table>"


def _fmt(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else "–"


def points_rows(methods: Sequence[Any], metric: str) -> list[list[Any]]:
    """Per method and point: bpp, the metric and its 95 % bootstrap interval (when kept)."""
    from mvmic.evaluation.bootstrap import DRAWS
    from mvmic.evaluation.tables import point_intervals

    rows = []
    for m in sorted(methods, key=lambda m: (m.anchor, m.name)):
        for p in point_intervals(m, metric, DRAWS):
            shown = "–" if p["low"] is None else f"[{p['low']:.4f}, {p['high']:.4f}]"
            rows.append([m.name, _fmt(p["bpp"]), _fmt(p["value"]), shown])
    return rows


def find_summary(results_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The bench's ``summary.json`` in the results folder or up to two folders above it."""
    for folder in (results_dir, results_dir.parent, results_dir.parent.parent):
        path = folder / "summary.json"
        if path.is_file():
            try:
                return path, json.loads(path.read_text())
            except json.JSONDecodeError:
                return None
    return None


def goal_rows(summary: dict[str, Any], part: str | None) -> list[list[Any]]:
    """Goal | part | met | measured, for the bench part these results belong to (or all)."""
    parts = summary.get("parts") or {}
    if part in parts:
        parts = {part: parts[part]}
    rows = []
    for name, s in parts.items():
        for g in s.get("goals") or []:
            met = g.get("met")
            text, css = {True: ("met", "yes"), False: ("no", "no")}.get(met, (str(met), ""))
            if met is None:
                text = "n/a"
            rows.append([g.get("goal", ""), name, (text, css), g.get("why", "")])
    return rows


def build_report(
    results_dir: str | Path,
    out: str | Path,
    images: int = 2,
    bpp: float = 0.05,
    anchor: str | None = None,
    envelope: bool = True,
    panels: bool = True,
    config: str | None = None,
) -> Path:
    """Write the HTML page; return its path. Figures are drawn under ``<out>_files/``."""
    from mvmic.evaluation.plots import draw_curves

    results_dir, out = Path(results_dir), Path(out)
    assets = out.with_name(out.stem + "_files")
    curves = draw_curves(results_dir, assets / "curves", anchor=anchor, envelope=envelope)
    body = [f"<h1>mvmic results: {html.escape(str(results_dir))}</h1>"]
    body.append(
        f'<p class="note">written {time.strftime("%Y-%m-%d %H:%M")} by <code>mvmic report</code>'
        "; bpp measured from real bitstreams.</p>"
    )
    body.append("<h2>Rate curves</h2>")
    body += [_img(png, png.stem) for png in curves.pngs]
    for dataset, methods in curves.methods.items():
        present = [k for k in METRIC_LABELS if any(k in m.results for m in methods)]
        for metric in present:
            body.append(f"<h3>{html.escape(dataset)}: {html.escape(METRIC_LABELS[metric])}</h3>")
            header = ["method", "bpp", metric, "95 % interval"]
            body.append(table(header, points_rows(methods, metric), "points"))
    body.append("<h2>BD tables</h2>")
    for dataset, ref in curves.anchors.items():
        cells = [c for c in curves.cells if c.dataset == dataset]
        body.append(f"<h3>{html.escape(dataset)}: BD against {html.escape(ref)} (pchip)</h3>")
        rows = [[c.method, c.metric, c.n_points, c.rate_text(), c.metric_text()] for c in cells]
        header = ["method", "metric", "points", "BD-rate", "BD-metric"]
        body.append(table(header, rows, "bd") if rows else "<p>no other method to compare</p>")
    found = find_summary(results_dir)
    if found:
        path, summary = found
        body.append("<h2>Benchmark goals</h2>")
        body.append(f'<p class="note">from {html.escape(str(path))}</p>')
        rows = goal_rows(summary, results_dir.parent.name)
        body.append(table(["goal", "part", "met", "measured"], rows, "goals"))
    if panels:
        body.append(f"<h2>Comparison panels (nearest {bpp:g} bpp)</h2>")
        body.append(_panels(results_dir, assets, images, bpp, config))
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>mvmic report</title><style>{STYLE}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out


def _panels(results_dir: Path, assets: Path, images: int, bpp: float, config: str | None) -> str:
    from mvmic.evaluation.compare import compare

    try:
        result = compare(results_dir, images, bpp, assets / "compare.png", config=config)
    except (FileNotFoundError, ValueError) as err:
        return f'<p class="note">no panels: {html.escape(" ".join(str(err).split()))}</p>'
    parts = [_img(result.panel, "comparison panel")]
    keys = ("miou", "dice", "map")
    rows = [[r["image"], r["method"], _fmt(r["bpp"]), *(_fmt(r.get(k)) for k in keys)]
            for r in result.rows]  # fmt: skip
    parts.append(table(["image", "method", "bpp", "mIoU", "Dice", "mAP"], rows, "per-image"))
    if result.bits:
        parts.append("<h2>Where the bits go</h2>")
        parts.append(
            '<p class="note">estimated bits per pixel position (−log₂ of each latent\'s '
            "likelihood, summed over channels, spread over the pixels it covers); the share "
            "on the lesion is of the ground-truth mask.</p>"
        )
        parts.append(_img(result.bits, "bit-allocation maps"))
    parts += [f'<p class="note">skipped {html.escape(s)}</p>' for s in result.skipped]
    return "\n".join(parts)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mvmic report",
        description="One self-contained HTML page: rate curves, points, BD tables, bench goals, "
        "comparison panels and bit maps of a results folder.",
    )
    p.add_argument("results_dir", type=Path, help="results store (<dataset>/<method>.json)")
    p.add_argument("--out", type=Path, default=None, help="HTML file (default RESULTS/report.html)")
    p.add_argument("--images", type=int, default=2, help="test images in the panels")
    p.add_argument("--bpp", type=float, default=0.05, help="target rate of the panels")
    p.add_argument("--anchor", default=None, help="reference method for BD values")
    p.add_argument("--no_envelope", action="store_true", help="BD-rate n/a on non-monotone curves")
    p.add_argument("--no_panels", action="store_true", help="skip the decode for the panels")
    p.add_argument("--config", default=None, help="data config, for records that name none")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``mvmic report``: see :func:`build_parser`."""
    args = build_parser().parse_args(argv)
    out = args.out or args.results_dir / "report.html"
    try:
        path = build_report(
            args.results_dir,
            out,
            args.images,
            args.bpp,
            args.anchor,
            not args.no_envelope,
            not args.no_panels,
            args.config,
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"mvmic report: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(f"report: {path.resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

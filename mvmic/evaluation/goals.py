"""The bench's goal maths: bits at equal accuracy, per-point ratios, BD-rate verdicts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mvmic.evaluation.bd import bd_cell, upper_envelope
from mvmic.evaluation.bench_settings import GanPart, Part
from mvmic.evaluation.methods import load_methods


def rate_at(rates: Sequence[float], values: Sequence[float], target: float) -> tuple[float, str]:
    """The rate a method needs for ``target``: log-rate interpolation on its upper envelope.

    Returns ``(rate, bound)``: bound is ``""`` for an interpolated rate, ``">"`` when the method
    never reaches ``target`` (the rate is its highest measured one: the true need is above), and
    ``"<"`` when its cheapest point already beats ``target`` (its cheapest rate: the need is below).
    """
    r, v = upper_envelope(np.asarray(rates, float), np.asarray(values, float))
    if target > v[-1]:
        return float(r[-1]), ">"
    if target <= v[0]:
        return float(r[0]), "<"
    return float(10 ** np.interp(target, v, np.log10(r))), ""


def bit_ratios(method: tuple[list, list], anchor: tuple[list, list]) -> list[dict[str, Any]]:
    """Per point of ``method``: its rate over the anchor's rate at the same metric value."""
    rows = []
    for r, v in zip(*method):
        ar, bound = rate_at(*anchor, v)
        # anchor needs more than ar (">") -> our ratio is below r/ar, and the reverse
        flip = {">": "<", "<": ">", "": ""}[bound]
        rows.append({"bpp": r, "value": v, "anchor_bpp": ar, "ratio": r / ar, "bound": flip})
    return rows


def _fmt_ratio(row: dict[str, Any]) -> str:
    return f"{row['bound']}{row['ratio']:.3f}×"


def ratio_verdict(row: dict[str, Any], factor: float) -> bool | None:
    """Is this point's bit ratio ≤ ``factor``? ``None`` when its bound leaves it open (the
    anchor's measured range ends before the point's metric value)."""
    below = row["ratio"] <= factor
    if row["bound"] == "<":  # true ratio is below the printed one
        return True if below else None
    if row["bound"] == ">":  # true ratio is above the printed one
        return None if below else False
    return below


def all_verdicts(verdicts: Sequence[bool | None]) -> bool | str:
    """``False`` if any point fails, ``True`` if all pass, else ``"undetermined"``."""
    if any(v is False for v in verdicts):
        return False
    return True if all(v is True for v in verdicts) else "undetermined"


def summarize(part: Part, results: Path) -> dict[str, Any]:
    """Measured points, BD-rates and per-point bit ratios at equal task metric; goal verdicts."""
    methods = {m.name: m for ms in load_methods(results).values() for m in ms}
    metric = part.metric
    pts = {name: m.points(metric) for name, m in methods.items()}
    s1, s2 = pts.get("MVMICNet stage 1"), pts.get("MVMICNet stage 2")
    mse_name = next((n for n in methods if n.startswith(("mbt2018", "cheng2020", "bmshj"))), None)
    summary: dict[str, Any] = {"metric": metric, "methods": {}, "goals": []}
    for name, m in sorted(methods.items()):
        cols = ("bpp", "psnr", "ms-ssim", metric, "lmbda", "quality")
        rows = sorted(
            zip(*(m.results.get(k) or [None] * len(m.results["bpp"]) for k in cols)),
            key=lambda r: r[0],
        )
        summary["methods"][name] = {k: [r[i] for r in rows] for i, k in enumerate(cols)}

    def versus(anchor_name: str, factor: float) -> dict[str, Any]:
        goal: dict[str, Any] = {
            "goal": f"stage 2 needs ≤ {factor}× the bits of {anchor_name} at equal {metric}"
        }
        if s2 is None or anchor_name not in pts or not pts[anchor_name][0]:
            return {**goal, "met": None, "why": f"missing {anchor_name} or stage 2 points"}
        bd, note, _, _ = bd_cell(pts[anchor_name], s2, envelope=True)
        ratios = bit_ratios(s2, pts[anchor_name])
        goal.update(bd_rate=bd, bd_note=note, ratios=ratios)
        if bd is not None:
            goal["met"] = bd <= (factor - 1) * 100
            goal["why"] = f"BD-rate {bd:+.1f} % ({note or 'full overlap'})"
        else:  # no Bjøntegaard delta: every point's ratio (with its bound) decides
            goal["met"] = all_verdicts([ratio_verdict(r, factor) for r in ratios])
            goal["why"] = f"BD-rate n/a ({note}); per-point ratios decide"
        goal["why"] += "; per point: " + ", ".join(_fmt_ratio(r) for r in ratios)
        return goal

    summary["goals"].append(versus("hevc", 0.1))
    if mse_name:
        summary["goals"].append(versus(mse_name, 0.5))
    if s1 and s2:
        by_l1, by_l2 = (
            {lm: v for lm, v in zip(methods[n].results["lmbda"], methods[n].results[metric])}
            for n in ("MVMICNet stage 1", "MVMICNet stage 2")
        )
        pairs = [(lm, by_l1[lm], by_l2[lm]) for lm in sorted(by_l2) if lm in by_l1]
        summary["goals"].append(
            {
                "goal": f"stage 2 ≥ stage 1 in {metric} at every λ",
                "met": bool(pairs) and all(b >= a for _, a, b in pairs),
                "why": ", ".join(f"λ={lm:g}: {a:.4f} → {b:.4f}" for lm, a, b in pairs),
            }
        )
    if s2 and "uncompressed" in pts and pts["uncompressed"][1]:
        ref = pts["uncompressed"][1][0]
        low = s2[1][0]
        summary["goals"].append(
            {
                "goal": f"stage 2 at its lowest rate within 1 point of uncompressed {metric}",
                "met": low >= ref - 0.01,
                "why": f"{low:.4f} at {s2[0][0]:.4f} bpp vs uncompressed {ref:.4f}",
            }
        )
    return summary


def summarize_gan(part: GanPart, results: Path) -> dict[str, Any]:
    """D4 against D1 (no compression) and against JPEG 2000 at equal Dice."""
    methods = {m.name: m for ms in load_methods(results).values() for m in ms}
    metric = part.metric
    summary: dict[str, Any] = {"metric": metric, "methods": {}, "goals": []}
    for name, m in sorted(methods.items()):
        summary["methods"][name] = {k: m.results.get(k) for k in ("bpp", "psnr", metric)}
    pts = {name: m.points(metric) for name, m in methods.items()}
    d1, d4, j2k = (
        methods.get("liu2020-d1"),
        pts.get("liu2020-d4"),
        pts.get("jpeg2000"),
    )
    if d4 and d4[0] and d1 is not None:
        ref = d1.results[metric][0]
        summary["goals"].append(
            {
                "goal": f"D4 {metric} at least that of D1 (no compression) − 1 point",
                "met": d4[1][0] >= ref - 0.01,
                "why": f"D4 {d4[1][0]:.4f} at {d4[0][0]:.4f} bpp vs D1 {ref:.4f}",
            }
        )
    if d4 and d4[0] and j2k and j2k[0]:
        (row,) = bit_ratios(d4, j2k)
        summary["goals"].append(
            {
                "goal": f"D4 needs ≤ 0.1× the bits of JPEG 2000 at equal {metric}",
                "met": all_verdicts([ratio_verdict(row, 0.1)]),
                "why": f"D4 {row['bpp']:.4f} bpp vs JPEG 2000 {row['anchor_bpp']:.4f} bpp at "
                f"{metric} {row['value']:.4f}: {_fmt_ratio(row)}",
                "ratios": [row],
            }
        )
    return summary


def bd_rows(results: Path, metrics: Sequence[str]) -> list[dict[str, str]]:
    """The rows of ``mvmic curves``' BD table (``curves/bd_rate.csv``) for ``metrics``."""
    import csv

    path = results / "curves" / "bd_rate.csv"
    if not path.is_file():
        return []
    with path.open() as f:
        return [row for row in csv.DictReader(f) if row["metric"] in metrics]

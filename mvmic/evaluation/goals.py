"""The bench's goal maths: bits at equal accuracy, per-point ratios, verdicts with intervals.

A verdict is ``True`` (met) only when the whole 95 % bootstrap interval of what it judges meets
the goal, ``False`` (no) when the whole interval misses, ``"within noise"`` otherwise
(:mod:`mvmic.evaluation.bootstrap`; records without per-image statistics: the point value).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mvmic.evaluation.bd import bd_cell, upper_envelope
from mvmic.evaluation.bench_settings import GanPart, Part
from mvmic.evaluation.bootstrap import (
    DRAWS,
    bd_rate_interval,
    curve_draws,
    difference_interval,
    metric_interval,
)
from mvmic.evaluation.methods import FT_SUFFIX, Method, family, load_methods

#: names of the MSE (λ_t = 0) codecs' records
MSE_PREFIXES = ("mbt2018", "cheng2020", "bmshj")
#: the rate at or below which stage 2 must be within 1 point of the uncompressed task net
LOW_RATE = 0.05
#: the GAN goal: D4 needs at most this fraction of JPEG 2000's bits at equal Dice
GAN_FACTOR = 0.05


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


def band_verdict(low: float, high: float, threshold: float, lower_is_better: bool) -> bool | str:
    """A goal judged on an interval: True (met) when all of ``[low, high]`` meets
    ``threshold``, False (no) when all of it misses, ``"within noise"`` when it straddles."""
    meets_all = high <= threshold if lower_is_better else low >= threshold
    misses_all = low > threshold if lower_is_better else high < threshold
    return True if meets_all else (False if misses_all else "within noise")


def combine(verdicts: Sequence[bool | str | None]) -> bool | str | None:
    """Every point must meet a goal: no if one is no, met if all are, else the open word."""
    if not verdicts or any(v is None for v in verdicts):
        return None
    if any(v is False for v in verdicts):
        return False
    if all(v is True for v in verdicts):
        return True
    return "within noise" if "within noise" in verdicts else "undetermined"


def _ci_text(ci: tuple[float, float] | None, fmt: str = "{:+.4f}") -> str:
    if ci is None:
        return " (no per-image statistics: no interval)"
    return f" [{fmt.format(ci[0])}, {fmt.format(ci[1])}]"


def _index_by(method: Method, key: str) -> dict[Any, int]:
    return {v: i for i, v in enumerate(method.results.get(key) or []) if v is not None}


def _lowest_point(method: Method, metric: str) -> int | None:
    rates, values = method.results.get("bpp") or [], method.results.get(metric) or []
    rows = [
        (float(r), i)
        for i, (r, v) in enumerate(zip(rates, values))
        if r is not None and v is not None and float(r) > 0
    ]
    return min(rows)[1] if rows else None


def _point_intervals(
    method: Method, metric: str, draws: int, by_rate: bool = True
) -> dict[str, list]:
    """``{"interval": [...]}``: each point's 95 % interval, in order of rate (else of the
    record, as the table lists the points); ``{}`` without per-image statistics."""
    n = len(method.results["bpp"]) if draws else 0
    cis = [metric_interval({"results": method.results}, metric, draws, point=i) for i in range(n)]
    if not any(cis):
        return {}
    order = sorted(range(n), key=lambda i: method.results["bpp"][i]) if by_rate else range(n)
    return {"interval": [cis[i] for i in order]}


def _paired(a: Method, i: int, b: Method, j: int, metric: str, draws: int):
    """The interval of b's point j minus a's point i (same images drawn); None without."""
    if not draws:
        return None
    return difference_interval({"results": a.results}, i, {"results": b.results}, j, metric, draws)


def summarize(part: Part, results: Path, draws: int = DRAWS) -> dict[str, Any]:
    """Measured points, BD-rates and per-point bit ratios at equal task metric; goal verdicts.

    Each verdict uses the 95 % bootstrap interval (``draws`` resamples of the test images) of
    the value it judges where the records keep per-image statistics: ``True`` (met) when the
    whole interval meets the goal, ``False`` when it all misses, ``"within noise"`` otherwise;
    without statistics the point value decides and the line says there is no interval.
    """
    methods = {m.name: m for ms in load_methods(results).values() for m in ms}
    metric = part.metric
    pts = {name: m.points(metric) for name, m in methods.items()}
    s1, s2 = methods.get("MVMICNet stage 1"), methods.get("MVMICNet stage 2")
    mse_name = next(
        (n for n in sorted(methods) if n.startswith(MSE_PREFIXES) and family(n) == n), None
    )
    summary: dict[str, Any] = {"metric": metric, "methods": {}, "goals": []}
    for name, m in sorted(methods.items()):
        cols = ("bpp", "psnr", "ms-ssim", metric, "lmbda", "quality")
        rows = sorted(
            zip(*(m.results.get(k) or [None] * len(m.results["bpp"]) for k in cols)),
            key=lambda r: r[0],
        )
        summary["methods"][name] = {k: [r[i] for r in rows] for i, k in enumerate(cols)}
        summary["methods"][name].update(_point_intervals(m, metric, draws))

    def versus(anchor_name: str, factor: float) -> dict[str, Any]:
        goal: dict[str, Any] = {
            "goal": f"stage 2 needs ≤ {factor}× the bits of {anchor_name} at equal {metric}"
        }
        if s2 is None or anchor_name not in pts or not pts[anchor_name][0]:
            return {**goal, "met": None, "why": f"missing {anchor_name} or stage 2 points"}
        bd, note, _, _ = bd_cell(pts[anchor_name], pts[s2.name], envelope=True)
        ratios = bit_ratios(pts[s2.name], pts[anchor_name])
        goal.update(bd_rate=bd, bd_note=note, ratios=ratios)
        threshold = (factor - 1) * 100
        if bd is not None:
            ref = {"results": methods[anchor_name].results}
            ci = bd_rate_interval(ref, {"results": s2.results}, metric, draws) if draws else None
            if ci is not None and ci.low is not None:
                goal["met"] = band_verdict(ci.low, ci.high, threshold, lower_is_better=True)
                goal["bd_interval"] = [ci.low, ci.high]
                interval = f" [{ci.low:+.1f}, {ci.high:+.1f}] % (95 %, {ci.valid} draws)"
            else:
                goal["met"] = bd <= threshold
                interval = f" (no interval: {ci.note if ci else 'draws 0'})"
            goal["why"] = f"BD-rate {bd:+.1f} %{interval} vs ≤ {threshold:+.0f} % "
            goal["why"] += f"({note or 'full overlap'})"
        else:  # no Bjøntegaard delta: every point's ratio (with its bound) decides
            goal["met"] = all_verdicts([ratio_verdict(r, factor) for r in ratios])
            goal["why"] = f"BD-rate n/a ({note}); per-point ratios decide"
        goal["why"] += "; per point: " + ", ".join(_fmt_ratio(r) for r in ratios)
        return goal

    for name, factor in (("hevc", 0.1), (f"hevc{FT_SUFFIX}", 0.5)):
        if name in methods or name == "hevc":
            summary["goals"].append(versus(name, factor))
    if mse_name:
        summary["goals"].append(versus(mse_name, 0.5))
        if f"{mse_name}{FT_SUFFIX}" in methods:
            summary["goals"].append(versus(f"{mse_name}{FT_SUFFIX}", 0.5))
    if s1 and s2:
        summary["goals"].append(_stage_goal(s1, s2, metric, draws))
    unc = methods.get("uncompressed")
    if s2 and unc is not None and pts["uncompressed"][1]:
        summary["goals"].append(_low_rate_goal(s2, unc, metric, draws))
    return summary


def _stage_goal(s1: Method, s2: Method, metric: str, draws: int) -> dict[str, Any]:
    """Stage 2 ≥ stage 1 at every λ: per λ the paired interval of stage 2 − stage 1."""
    by_l1, by_l2 = _index_by(s1, "lmbda"), _index_by(s2, "lmbda")
    verdicts, parts = [], []
    for lm in sorted(by_l2):
        if lm not in by_l1:
            continue
        a, b = s1.results[metric][by_l1[lm]], s2.results[metric][by_l2[lm]]
        ci = _paired(s1, by_l1[lm], s2, by_l2[lm], metric, draws)
        verdicts.append(b >= a if ci is None else band_verdict(*ci, 0.0, lower_is_better=False))
        parts.append(f"λ={lm:g}: {a:.4f} → {b:.4f}" + _ci_text(ci))
    return {
        "goal": f"stage 2 ≥ stage 1 in {metric} at every λ (beyond noise)",
        "met": combine(verdicts) if verdicts else False,
        "why": ", ".join(parts) or "no λ has both stages",
    }


def _low_rate_goal(s2: Method, unc: Method, metric: str, draws: int) -> dict[str, Any]:
    """Stage 2's lowest rate is ≤ 0.05 bpp and within 1 point of the uncompressed net there."""
    goal = f"stage 2 at its lowest rate (≤ {LOW_RATE} bpp) within 1 point of uncompressed {metric}"
    i, j = _lowest_point(s2, metric), _lowest_point(unc, metric)
    rate, low, ref = s2.results["bpp"][i], s2.results[metric][i], unc.results[metric][j]
    ci = _paired(unc, j, s2, i, metric, draws)
    if rate > LOW_RATE:
        met: bool | str = False
    elif ci is None:
        met = low >= ref - 0.01
    else:
        met = band_verdict(*ci, -0.01, lower_is_better=False)
    why = f"{low:.4f} at {rate:.4f} bpp vs uncompressed {ref:.4f}: difference {low - ref:+.4f}"
    return {"goal": goal, "met": met, "why": why + _ci_text(ci) + " vs ≥ −0.01"}


def summarize_gan(part: GanPart, results: Path, draws: int = DRAWS) -> dict[str, Any]:
    """D4 against D1 (no compression) and against JPEG 2000 at equal Dice."""
    methods = {m.name: m for ms in load_methods(results).values() for m in ms}
    metric = part.metric
    summary: dict[str, Any] = {"metric": metric, "methods": {}, "goals": []}
    for name, m in sorted(methods.items()):
        summary["methods"][name] = {k: m.results.get(k) for k in ("bpp", "psnr", metric)}
        summary["methods"][name].update(_point_intervals(m, metric, draws, by_rate=False))
    pts = {name: m.points(metric) for name, m in methods.items()}
    # the bit goal's anchor: JPEG 2000 in 2D, H.264 (video of the slices) in 3D
    anchor, factor = part.anchor, part.bit_factor or GAN_FACTOR
    d1, d4, j2k = methods.get("liu2020-d1"), methods.get("liu2020-d4"), pts.get(anchor)
    d4_pts = pts.get("liu2020-d4")
    if d4_pts and d4_pts[0] and d1 is not None:
        i, j = _lowest_point(d4, metric), _lowest_point(d1, metric) or 0
        ref, value = d1.results[metric][j], d4.results[metric][i]
        ci = _paired(d1, j, d4, i, metric, draws)
        met = value >= ref - 0.01 if ci is None else band_verdict(*ci, -0.01, False)
        summary["goals"].append(
            {
                "goal": f"D4 {metric} at least that of D1 (no compression) − 1 point",
                "met": met,
                "why": f"D4 {value:.4f} at {d4.results['bpp'][i]:.4f} bpp vs D1 {ref:.4f}: "
                f"difference {value - ref:+.4f}" + _ci_text(ci) + " vs ≥ −0.01",
            }
        )
    if d4_pts and d4_pts[0] and j2k and j2k[0]:
        (row,) = bit_ratios(([d4_pts[0][0]], [d4_pts[1][0]]), j2k)
        ci = _ratio_interval(d4, methods[anchor], metric, draws) if draws else None
        if ci is None:
            met = all_verdicts([ratio_verdict(row, factor)])
            interval = " (no interval: no per-image statistics)"
        else:
            met = band_verdict(ci[0], ci[1], factor, lower_is_better=True)
            hi = "∞" if math.isinf(ci[1]) else f"{ci[1]:.3f}"
            interval = f" [{ci[0]:.3f}, {hi}]×"
            if ci[2]:
                interval += f" ({ci[2]} of {draws} draws beyond {anchor}'s range: at their bound)"
        summary["goals"].append(
            {
                "goal": f"D4 needs ≤ {factor}× the bits of {anchor} at equal {metric}",
                "met": met,
                "why": f"D4 {row['bpp']:.4f} bpp vs {anchor} {row['anchor_bpp']:.4f} bpp at "
                f"{metric} {row['value']:.4f}: {_fmt_ratio(row)}{interval}",
                "ratios": [row],
            }
        )
    return summary


def _ratio_interval(
    method: Method, anchor: Method, metric: str, draws: int
) -> tuple[float, float, int] | None:
    """The interval of the lowest point's bit ratio to ``anchor`` at equal metric, both curves
    drawn jointly, and how many draws left the anchor's measured range; None without stats.

    A draw beyond the anchor's range only bounds its ratio (above the anchor's best point the
    anchor needs more than its top rate: the ratio is below ``rate / top``; below its cheapest
    point the ratio is above ``rate / cheapest``). Each bound enters on the side where it can
    only widen the interval: an upper bound counts as 0 for the low end and as itself for the
    high end, a lower bound as itself for the low end and as ∞ for the high end.
    """
    mine = curve_draws({"results": method.results}, metric, draws)
    theirs = curve_draws({"results": anchor.results}, metric, draws)
    if mine is None or theirs is None or mine[2] != theirs[2]:
        return None
    (mr, mv, _), (ar, av, _) = mine, theirs
    k = int(np.argmin(mr[:, 0]))
    low_ends, high_ends, bounded = [], [], 0
    for d in range(mr.shape[1]):
        order = np.argsort(ar[:, d], kind="stable")
        need, bound = rate_at(ar[order, d], av[order, d], mv[k, d])
        ratio = mr[k, d] / need
        bounded += bool(bound)
        # rate_at's ">": the anchor needs more than `need`, so the ratio is at most `ratio`
        low_ends.append(0.0 if bound == ">" else ratio)
        high_ends.append(math.inf if bound == "<" else ratio)
    lo = float(np.quantile(low_ends, 0.025))
    hi = float(np.quantile(high_ends, 0.975, method="higher"))
    return lo, hi, bounded


def bd_rows(results: Path, metrics: Sequence[str]) -> list[dict[str, str]]:
    """The rows of ``mvmic curves``' BD table (``curves/bd_rate.csv``) for ``metrics``."""
    import csv

    path = results / "curves" / "bd_rate.csv"
    if not path.is_file():
        return []
    with path.open() as f:
        return [row for row in csv.DictReader(f) if row["metric"] in metrics]

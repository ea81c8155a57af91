"""Bjøntegaard deltas (BD-rate, BD-metric) between two rate curves.

Values come from the ``bjontegaard`` package with piecewise-cubic (``pchip``) interpolation,
as in the usual reference implementation. A cell reads ``n/a (reason)`` where the numbers do not
allow a Bjøntegaard delta: fewer than 4 points on either curve, curves whose ranges do not
overlap, or (BD-rate only) a metric that does not grow strictly with the rate.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mvmic.evaluation.methods import Method

MIN_POINTS = 4
MIN_OVERLAP = 0.75  # below this the value is kept but flagged, as the reference tool warns


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
    #: 95 % bootstrap interval of the BD-rate (None: no per-image statistics)
    rate_low: float | None = None
    rate_high: float | None = None

    @property
    def note(self) -> str:
        parts = [f"bd_rate: {self.rate_note}"] if self.rate_note else []
        return "; ".join(parts + ([f"bd_metric: {self.metric_note}"] if self.metric_note else []))

    def rate_text(self) -> str:
        text = _cell_text(self.bd_rate, self.rate_note, "{:+.2f} %")
        if self.bd_rate is not None and self.rate_low is not None:
            text += f" [{self.rate_low:+.1f}, {self.rate_high:+.1f}]"
        return text

    def metric_text(self) -> str:
        return _cell_text(
            self.bd_metric, self.metric_note, "{:+.2f}" if self.metric == "psnr" else "{:+.4f}"
        )


def _cell_text(value: float | None, note: str, fmt: str) -> str:
    if value is None:
        return f"n/a ({note})"
    return fmt.format(value) + (f" ({note})" if note else "")


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
    with_metric: bool = True,
) -> tuple[float | None, str, float | None, str]:
    """BD-rate (%) and BD-metric of ``test`` against ``anchor`` (``with_metric=False``: the
    BD-rate alone, its BD-metric None, for the bootstrap's thousand draws).

    Both curves are ``(rates, values)`` sorted by rate (see
    :func:`mvmic.evaluation.records.record_points`).
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
    bd_metric, metric_note = None, "not computed"
    if with_metric:
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
    draws: int = 0,
) -> list[BDCell]:
    """BD cells of every non-anchor method against ``anchor`` for each metric.

    With ``draws`` > 0, a BD-rate of two curves with per-image statistics gets its bootstrap
    interval (:func:`mvmic.evaluation.bootstrap.bd_rate_interval`).
    """
    from mvmic.evaluation.bootstrap import bd_rate_interval

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
            cell = BDCell(
                dataset, anchor.name, m.name, metric, len(pts[0]), rate, value, rnote, vnote
            )
            if rate is not None and draws > 0:
                ci = bd_rate_interval(
                    {"results": anchor.results}, {"results": m.results}, metric, draws,
                    envelope=envelope,
                )  # fmt: skip
                cell.rate_low, cell.rate_high = ci.low, ci.high
            cells.append(cell)
    return cells

"""Bootstrap intervals from records' per-image statistics: a point's task metric, a BD-rate.

Test images are resampled with replacement (a seeded ``numpy`` generator, ``draws`` times) and
the metric is recomputed exactly on each draw from the per-image statistics a point keeps
(:mod:`mvmic.evaluation.image_stats`); the interval is the percentile interval of the draws.
For a BD-rate the same draw of images is applied to every point of both curves (the points were
measured on the same test images), so the interval carries the correlation between them.

Intervals are ``None`` when a record has no per-image statistics (older records, or a task
metric they cannot give), so callers draw and print a plain value then.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from mvmic.evaluation.image_stats import n_images, recompute_draws

DRAWS = 1000
LEVEL = 0.95


def draw_weights(n: int, draws: int = DRAWS, seed: int = 0) -> np.ndarray:
    """``draws``×``n`` counts: how often each of ``n`` images is drawn in each resample."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(draws, n))
    weights = np.zeros((draws, n), dtype=np.int64)
    np.add.at(weights, (np.arange(draws)[:, None], idx), 1)
    return weights


def _quantiles(values: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def _results(record: dict[str, Any]) -> dict[str, list]:
    return record["results"] if "results" in record else {k: [v] for k, v in record.items()}


def point_stats(record: dict[str, Any], point: int = 0) -> dict[str, Any] | None:
    """The per-image statistics of ``record``'s point ``point`` (record order), or None.

    ``record`` is a results record (``{"results": {...}}``, a merged method's columns work
    too), or a single operating point (``{"bpp": …, "per_image": {...}}``).
    """
    column = _results(record).get("per_image") or []
    stats = column[point] if point < len(column) else None
    return stats if isinstance(stats, dict) and stats.get("kind") else None


def metric_interval(
    record: dict[str, Any],
    metric: str,
    draws: int = DRAWS,
    seed: int = 0,
    level: float = LEVEL,
    point: int = 0,
) -> tuple[float, float] | None:
    """The ``level`` bootstrap interval of ``metric`` at one point of ``record``.

    Returns:
        ``(low, high)``, or None when that point has no per-image statistics for ``metric``.
    """
    stats = point_stats(record, point)
    values = None if stats is None else metric_draws(stats, metric, draws, seed)
    return None if values is None else _quantiles(values, level)


#: metric values per draw, by (id of the statistics, metric, draws, seed); the statistics
#: object is kept with its values so its id stays unique while cached
_DRAWS: dict[tuple, tuple[dict, np.ndarray | None]] = {}


def metric_draws(
    stats: dict[str, Any], metric: str, draws: int = DRAWS, seed: int = 0
) -> np.ndarray | None:
    """``metric`` on each of ``draws`` resamples of the images (None: not computable).

    Every point with the same number of images gets the same resamples for the same seed,
    which is what makes BD-rate draws joint across the points of both curves.
    """
    key = (id(stats), metric, draws, seed)
    if key not in _DRAWS:
        try:
            values = recompute_draws(stats, metric, draw_weights(n_images(stats), draws, seed))
        except KeyError:
            values = None
        if len(_DRAWS) > 4096:
            _DRAWS.clear()
        _DRAWS[key] = (stats, values)
    return _DRAWS[key][1]


def metric_intervals(
    record: dict[str, Any], metric: str, draws: int = DRAWS, seed: int = 0, level: float = LEVEL
) -> list[tuple[float, float] | None]:
    """:func:`metric_interval` of every point, in the record's column order."""
    n = len(_results(record).get("bpp") or [])
    return [metric_interval(record, metric, draws, seed, level, i) for i in range(n)]


def curve_with_intervals(
    record: dict[str, Any],
    metric: str,
    rate_key: str = "bpp",
    draws: int = DRAWS,
    seed: int = 0,
    level: float = LEVEL,
) -> list[dict[str, Any]]:
    """The points of ``record`` sorted by rate: ``{"bpp", "value", "low", "high"}`` (low/high
    None without per-image statistics); points missing the rate or the metric are dropped."""
    results = _results(record)
    rows = []
    for i, (r, v) in enumerate(zip(results.get(rate_key) or [], results.get(metric) or [])):
        if not (_finite(r) and _finite(v)) or float(r) <= 0:
            continue
        ci = metric_interval(record, metric, draws, seed, level, i)
        rows.append({"bpp": float(r), "value": float(v), "low": ci and ci[0], "high": ci and ci[1]})
    return sorted(rows, key=lambda row: row["bpp"])


def _finite(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


# -- BD-rate ----------------------------------------------------------------------------------
@dataclass
class BDInterval:
    """A BD-rate's bootstrap interval; ``valid`` of ``draws`` resamples gave a BD-rate."""

    low: float | None
    high: float | None
    valid: int
    draws: int
    note: str = ""

    def text(self) -> str:
        if self.low is None:
            return f"n/a ({self.note})"
        return f"[{self.low:+.1f}, {self.high:+.1f}] %"


def _curve_stats(record: dict[str, Any], metric: str, rate_key: str = "bpp") -> list[tuple]:
    """``(bpp, per-image bpp or None, stats)`` of each point with a rate, the metric and stats."""
    results = _results(record)
    out = []
    for i, (r, v) in enumerate(zip(results.get(rate_key) or [], results.get(metric) or [])):
        stats = point_stats(record, i)
        if not (_finite(r) and _finite(v)) or float(r) <= 0 or stats is None:
            continue
        out.append((float(r), _image_bpp(stats), stats))
    return out


def _image_bpp(stats: dict[str, Any]) -> np.ndarray | None:
    nbytes, pixels = stats.get("bytes"), stats.get("pixels")
    if nbytes is None or pixels is None:
        return None
    return 8.0 * np.asarray(nbytes, dtype=float) / np.asarray(pixels, dtype=float)


def bd_rate_interval(
    anchor: dict[str, Any],
    test: dict[str, Any],
    metric: str,
    draws: int = DRAWS,
    seed: int = 0,
    level: float = LEVEL,
    envelope: bool = True,
) -> BDInterval:
    """The bootstrap interval of the BD-rate (%) of ``test`` against ``anchor`` on ``metric``.

    Every draw resamples the test images once and applies that draw to every point of both
    records (rate: mean per-image bpp of the draw; metric: recomputed), then computes the
    BD-rate as :func:`mvmic.evaluation.bd.bd_cell` does. Draws where no BD-rate exists (e.g. a
    curve no longer increasing) are left out; the interval needs at least half of them.
    """
    from mvmic.evaluation.bd import bd_cell

    drawn = [curve_draws(anchor, metric, draws, seed), curve_draws(test, metric, draws, seed)]
    if any(d is None for d in drawn):
        return BDInterval(None, None, 0, draws, "no per-image statistics")
    sizes = {d[2] for d in drawn}
    if len(sizes) != 1:
        return BDInterval(None, None, 0, draws, f"points have different test sets {sorted(sizes)}")
    out = []
    for d in range(draws):
        pairs = []
        for rates, values, _ in drawn:
            order = np.argsort(rates[:, d], kind="stable")
            pairs.append((rates[order, d].tolist(), values[order, d].tolist()))
        rate, *_ = bd_cell(pairs[0], pairs[1], envelope=envelope, with_metric=False)
        if rate is not None:
            out.append(rate)
    if len(out) < draws / 2:
        return BDInterval(None, None, len(out), draws, f"BD-rate n/a in {draws - len(out)} draws")
    low, high = _quantiles(np.asarray(out), level)
    return BDInterval(low, high, len(out), draws)


def curve_draws(
    record: dict[str, Any], metric: str, draws: int = DRAWS, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, int] | None:
    """Every point's rate and ``metric`` on each resample: ``(rates, values, n_images)``, the
    arrays points × draws (points with stats, in record order); None when a point with a rate
    and the metric lacks statistics or the points' test sets differ in size. The same seed
    gives the same resamples to every record of that test set: draws are joint across them."""
    curve = _curve_stats(record, metric)
    results = _results(record)
    expected = sum(
        1
        for r, v in zip(results.get("bpp") or [], results.get(metric) or [])
        if _finite(r) and _finite(v) and float(r) > 0
    )
    sizes = {n_images(s) for _, _, s in curve}
    if not curve or len(curve) < expected or len(sizes) != 1:
        return None
    n = sizes.pop()
    values = [metric_draws(s, metric, draws, seed) for _, _, s in curve]
    if any(v is None for v in values):
        return None
    weights = draw_weights(n, draws, seed)
    rates = [_drawn_rates(r, per_image, weights) for r, per_image, _ in curve]
    return np.array(rates), np.array(values), n


def difference_interval(
    a: dict[str, Any],
    point_a: int,
    b: dict[str, Any],
    point_b: int,
    metric: str,
    draws: int = DRAWS,
    seed: int = 0,
    level: float = LEVEL,
) -> tuple[float, float] | None:
    """The interval of ``metric`` at ``b``'s point minus ``a``'s, the same images drawn for both
    (a paired bootstrap: stage 2 vs stage 1 at one λ, D4 vs D1); None without statistics."""
    sa, sb = point_stats(a, point_a), point_stats(b, point_b)
    if sa is None or sb is None or n_images(sa) != n_images(sb):
        return None
    da, db = metric_draws(sa, metric, draws, seed), metric_draws(sb, metric, draws, seed)
    if da is None or db is None:
        return None
    return _quantiles(db - da, level)


def _drawn_rates(rate: float, per_image: np.ndarray | None, weights: np.ndarray) -> np.ndarray:
    if per_image is None:  # uncompressed or an old record: the rate does not vary
        return np.full(len(weights), rate)
    return weights @ per_image / weights.sum(1)

"""Edge upload arithmetic: when encode + transfer of a ``.mvmic`` beats uploading PNG or JPEG.

An edge device either encodes with mvmic and sends the file, or encodes a standard format and
sends that. Each path costs ``encode time + 8·bytes / bandwidth``. mvmic's encode is slower and
its file smaller, so it wins below a break-even bandwidth (the slower the link, the more the
saved bytes are worth). Used by ``tools/bench_edge.py``.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

#: the link the issue's goal is stated at (10 Mbit/s)
GOAL_BPS = 10e6
#: how much faster than the JPEG q90 upload the goal asks mvmic's encode + transfer to be
GOAL_SPEEDUP = 3.0


def upload_s(encode_s: float, n_bytes: float, bps: float) -> float:
    """Seconds to encode and send ``n_bytes`` over a ``bps`` bit/s link."""
    return encode_s + 8 * n_bytes / bps


def break_even_bps(encode_s: float, n_bytes: float, ref_encode_s: float, ref_bytes: float) -> float:
    """Bandwidth (bit/s) below which encode + transfer beats the reference's.

    ``math.inf``: faster at every bandwidth (encodes no slower and sends fewer bytes).
    ``0.0``: never faster on a slow link (sends at least as many bytes).
    """
    if n_bytes >= ref_bytes:
        return 0.0
    if encode_s <= ref_encode_s:
        return math.inf
    return 8 * (ref_bytes - n_bytes) / (encode_s - ref_encode_s)


@dataclass(frozen=True)
class Goal:
    """The issue's goal for one configuration at one rate: ≥ 3× faster than the JPEG upload."""

    speedup: float  #: JPEG q90 upload time / mvmic upload time at ``GOAL_BPS``
    needed_encode_s: float  #: mvmic encode time that would reach ``GOAL_SPEEDUP`` (≤ 0: none)

    @property
    def met(self) -> bool:
        return self.speedup >= GOAL_SPEEDUP


def goal(
    encode_s: float, n_bytes: float, jpeg_encode_s: float, jpeg_bytes: float, bps: float = GOAL_BPS
) -> Goal:
    """How far one configuration is from the goal at one rate (see :class:`Goal`)."""
    mine, jpeg = upload_s(encode_s, n_bytes, bps), upload_s(jpeg_encode_s, jpeg_bytes, bps)
    return Goal(jpeg / mine, jpeg / GOAL_SPEEDUP - 8 * n_bytes / bps)


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``fn`` after one warm-up call.

    The median, not the minimum: one quiet moment on a shared machine does not set the figure.
    """
    fn()
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)

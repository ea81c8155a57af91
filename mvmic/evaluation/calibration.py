"""λ-grid calibration: a grid whose curve reaches the knee (issue 16, item 3).

A learned method's λ grid should span from a rate where its task metric has fallen at least
``drop`` (5 points) below the uncompressed task net to one where it is within ``near`` (0.5
points) of it. :func:`calibrate_grid` finds such end points with short calibration runs (the
caller's ``measure``: λ -> task metric), widening the given grid geometrically at the end that
falls short, then spaces the grid's points evenly in log λ between them. It returns the grid
and one line per run saying why, for the bench to print.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Calibration:
    """The chosen grid, the measured (λ, metric) of every calibration run, and why."""

    grid: list[float]
    measured: dict[float, float] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    def text(self, name: str) -> str:
        runs = ", ".join(f"λ={lm:g}: {v:.4f}" for lm, v in sorted(self.measured.items()))
        grid = ", ".join(f"{lm:g}" for lm in self.grid)
        return f"{name} λ grid [{grid}] ({'; '.join(self.reasons)}; calibration runs {runs})"


def calibrate_grid(
    measure: Callable[[float], float],
    reference: float,
    grid: Sequence[float],
    drop: float = 0.05,
    near: float = 0.005,
    factor: float = 4.0,
    max_steps: int = 3,
) -> Calibration:
    """A λ grid with as many points as ``grid`` that spans the knee of the rate curve.

    Args:
        measure: runs a short calibration fit/test at λ and returns its task metric (a higher
            λ spends more bits, so the metric grows with λ).
        reference: the uncompressed task net's metric.
        grid: the starting grid (its ends are measured first; its length is kept).
        drop: the low end must be at least this far below ``reference``.
        near: the high end must be within this of ``reference``.
        factor: each widening step multiplies (high end) or divides (low end) λ by this.
        max_steps: widening steps per end at most; an end still short is said so.
    """
    lo, hi = min(grid), max(grid)
    cal = Calibration(list(grid))

    def value(lmbda: float) -> float:
        if lmbda not in cal.measured:
            cal.measured[lmbda] = float(measure(lmbda))
        return cal.measured[lmbda]

    for _ in range(max_steps):
        if value(lo) <= reference - drop:
            break
        lo /= factor
    low_ok = value(lo) <= reference - drop
    for _ in range(max_steps):
        if value(hi) >= reference - near:
            break
        hi *= factor
    high_ok = value(hi) >= reference - near
    cal.reasons.append(
        f"low end λ={lo:g} at {value(lo):.4f}, "
        + (f"≥ {drop:g} below" if low_ok else f"still < {drop:g} below")
        + f" uncompressed {reference:.4f}"
    )
    cal.reasons.append(
        f"high end λ={hi:g} at {value(hi):.4f}, "
        + (f"within {near:g}" if high_ok else f"still not within {near:g}")
    )
    n = len(grid)
    if n == 1:
        cal.grid = [hi]
    else:  # evenly spaced in log λ, ends included, rounded to 3 significant digits
        step = (math.log(hi) - math.log(lo)) / (n - 1)
        cal.grid = [float(f"{math.exp(math.log(lo) + i * step):.3g}") for i in range(n)]
    return cal


def bench_grid(
    runner: Any,
    config: Path,
    method: str,
    lmbdas: Sequence[float],
    metric: str,
    out: Path,
    group: str,
    fraction: float = 0.25,
) -> list[float]:
    """The bench's calibrated λ grid for ``method`` (its stage-1 ``config``), printed with why.

    Each calibration run is ``mvmic sweep --no_stage2`` at one λ with ``fraction`` of the
    config's epochs (its last checkpoint), into ``out/calib``; the reference is the
    uncompressed record in ``out/results`` (the part's results store). Re-running the bench
    skips finished runs (the sweep's DONE markers).
    """
    import yaml

    reference = _value(out / "results", "uncompressed", metric, None)
    trainer = yaml.safe_load(config.read_text()).get("trainer") or {}
    epochs = str(max(1, round(int(trainer.get("max_epochs") or 4) * fraction)))
    calib_results = out / "calib" / "results"

    def measure(lmbda: float) -> float:
        runner.mvmic(
            "sweep", "--config", str(config), "--no_stage2", "--lmbda", f"{lmbda:g}",
            "--root", str(out / "calib" / config.stem), "--results_dir", str(calib_results),
            "--group", group, "--no_wandb", "--ckpt", "last",
            "--trainer.max_epochs", epochs, "--trainer.check_val_every_n_epoch", epochs,
        )  # fmt: skip
        return _value(calib_results, method, metric, lmbda)

    cal = calibrate_grid(measure, reference, lmbdas)
    line = cal.text(method) + f"; {epochs} epoch(s) each"
    print(line, flush=True)
    (out / "calib").mkdir(parents=True, exist_ok=True)
    with (out / "calib" / "grids.txt").open("a") as f:
        f.write(line + "\n")
    return cal.grid


def _value(results: Path, method: str, metric: str, lmbda: float | None) -> float:
    """``method``'s ``metric`` in ``results`` (at ``lmbda``; the single point when None)."""
    from mvmic.evaluation.methods import load_methods

    methods = {m.name: m for ms in load_methods(results).values() for m in ms}
    if method not in methods:
        raise ValueError(f"calibration: no {method!r} record in {results}")
    cols = methods[method].results
    for i, value in enumerate(cols.get(metric) or []):
        lm = (cols.get("lmbda") or [None] * (i + 1))[i]
        if lmbda is None or (lm is not None and math.isclose(float(lm), lmbda)):
            return float(value)
    raise ValueError(f"calibration: {method!r} in {results} has no {metric} at λ={lmbda:g}")

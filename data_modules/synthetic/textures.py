"""Noise textures shared by the synthetic twins."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise rescaled to zero mean, unit std."""
    n = gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (n - n.mean()) / (n.std() + 1e-8)


def fractal_noise(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    sigmas: tuple[float, ...],
    weights: tuple[float, ...] | None = None,
) -> np.ndarray:
    weights = weights or tuple(1.0 / (i + 1) for i in range(len(sigmas)))
    n = sum(w * smooth_noise(rng, shape, s) for s, w in zip(sigmas, weights))
    return (n - n.mean()) / (n.std() + 1e-8)

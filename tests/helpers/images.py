"""A small deterministic test picture (smooth pattern plus noise) shared by codec-level tests."""

import numpy as np


def synthetic_image(kind: str) -> np.ndarray:
    """A 48x48 picture; ``kind`` is ``rgb8``, ``grey8``, ``grey16`` or ``rgb16``."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:48]
    g = (np.sin(xx / 5) + np.cos(yy / 7)) * 60 + 128 + rng.normal(0, 8, (48, 48))
    g = g.clip(0, 255)
    img = g if kind.startswith("grey") else np.stack([g, np.roll(g, 5, 0), 255 - g], -1)
    return (img * 257).astype(np.uint16) if kind.endswith("16") else img.astype(np.uint8)

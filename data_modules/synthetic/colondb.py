"""Synthetic CVC-ColonDB twin: polyp-like blobs with their own texture on tissue texture.

Written in the PraNet layout (``images/<N>.png``, ``masks/<N>.png``, masks 0/255; images 8-bit,
or 16-bit RGB with ``bit_depth=16``, written by :func:`mvmic.io.write_image`). The polyp's
mean colour is drawn from the same range as the tissue's, so a segmentor has to use the
polyp's outline, dome shading and finer texture rather than one colour threshold.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from data_modules.synthetic.textures import fractal_noise, smooth_noise
from mvmic.io import write_image


def _blob(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, size: int):
    cy, cx = rng.uniform(0.25, 0.75, 2) * size
    r0 = rng.uniform(0.12, 0.24) * size
    angle = np.arctan2(yy - cy, xx - cx)
    dist = np.hypot(yy - cy, xx - cx)
    # A lumpy outline: a few random harmonics on the radius.
    radius = r0 * (
        1
        + sum(
            rng.uniform(-0.12, 0.12) * np.cos(k * angle + rng.uniform(0, 6.3)) for k in range(2, 6)
        )
    )
    inside = dist < radius
    depth = np.clip(1 - (dist / radius) ** 2, 0, 1)  # dome height, 1 at the centre
    return inside, depth, (cy, cx, r0)


def render(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One H×W×3 uint8 image and its H×W uint8 mask (0/255)."""
    img, mask = render_float(rng, size)
    return img.astype(np.uint8), mask


def render_float(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One H×W×3 float image in [0, 255] (before quantisation) and its H×W uint8 mask."""
    s = size
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float64)
    base = rng.uniform([150, 70, 60], [215, 125, 110])  # pink-red mucosa
    tissue = fractal_noise(rng, (s, s), (s / 6, s / 16))
    img = base[None, None, :] * (1 + 0.12 * tissue[..., None])
    # Vessels: thin dark lines where a smooth field crosses zero.
    field = smooth_noise(rng, (s, s), s / 10)
    vessels = np.exp(-((field / 0.08) ** 2))
    img *= 1 - 0.35 * vessels[..., None] * np.array([0.3, 1.0, 1.0])
    mask = np.zeros((s, s), bool)
    for _ in range(rng.choice([1, 1, 1, 2])):
        inside, depth, _ = _blob(rng, yy, xx, s)
        # Own colour, drawn from the tissue's range, with a finer, stronger texture.
        colour = rng.uniform([150, 70, 60], [215, 125, 110])
        grain = smooth_noise(rng, (s, s), max(s / 64, 0.7))
        polyp = colour[None, None, :] * (1 + 0.18 * grain[..., None])
        # Dome shading: lit from the top-left, a shadow rim on the far side.
        gy, gx = np.gradient(depth)
        light = 1 + 6 * (-(gy + gx)) * s / 256
        polyp *= np.clip(light, 0.6, 1.4)[..., None]
        alpha = np.clip(depth * 6, 0, 1)[..., None] * inside[..., None]
        img = img * (1 - alpha) + polyp * alpha
        mask |= inside
    # Specular highlights and endoscope vignetting, on everything.
    spots = smooth_noise(rng, (s, s), max(s / 80, 0.6)) > 2.6
    img[spots] = 245
    vignette = 1 - 0.45 * (np.hypot(yy - s / 2, xx - s / 2) / (0.72 * s)) ** 2
    img *= np.clip(vignette, 0.2, 1)[..., None]
    img += rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255), (mask * 255).astype(np.uint8)


def generate(out: Path, num: int, size: int, seed: int, bit_depth: int = 8) -> None:
    """Write ``num`` image/mask pairs named ``1.png … num.png`` (PraNet layout).

    Args:
        out: dataset root (``images/`` and ``masks/`` are created).
        num: number of pairs (at least 1).
        size: image side in pixels (at least 8).
        seed: random seed; the same seed writes the same files.
        bit_depth: 8 (RGB PNG) or 16 (16-bit RGB PNG, the same images at finer steps).
    """
    if num < 1 or size < 8:
        raise ValueError(f"need num >= 1 and size >= 8, got num={num}, size={size}")
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(1, num + 1):
        image, mask = render_float(rng, size)
        if bit_depth == 8:
            Image.fromarray(image.astype(np.uint8)).save(out / "images" / f"{i}.png")
        else:
            write_image(out / "images" / f"{i}.png", image.transpose(2, 0, 1) / 255, bit_depth)
        Image.fromarray(mask).save(out / "masks" / f"{i}.png")

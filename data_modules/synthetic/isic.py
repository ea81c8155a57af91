"""Synthetic ISIC 2017 Part 1 twin: skin-like lesions on textured skin, in the public layout.

Writes ``ISIC-2017_{Training,Validation,Test_v2}_Data/ISIC_XXXXXXX.jpg`` (plus a
``_superpixels.png`` beside each image, which readers must skip, as in the real download) and
``ISIC-2017_<Split>_Part1_GroundTruth/ISIC_XXXXXXX_segmentation.png`` (0/255). Lesions are
brown, irregular, with darker blotches, and a few dark hairs cross some images (as in Fig. 4).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from data_modules.synthetic.textures import fractal_noise, smooth_noise

SPLITS = ("Training", "Validation", "Test_v2")


def render(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One H×W×3 uint8 dermoscopy-like image and its H×W uint8 mask (0/255)."""
    s = size
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float64)
    skin = rng.uniform([190, 140, 120], [235, 185, 160])
    img = skin[None, None, :] * (1 + 0.06 * fractal_noise(rng, (s, s), (s / 8, s / 32))[..., None])
    cy, cx = rng.uniform(0.35, 0.65, 2) * s
    r0 = rng.uniform(0.15, 0.3) * s
    angle, dist = np.arctan2(yy - cy, xx - cx), np.hypot(yy - cy, xx - cx)
    radius = r0 * (
        1
        + sum(
            rng.uniform(-0.15, 0.15) * np.cos(k * angle + rng.uniform(0, 6.3)) for k in range(2, 7)
        )
    )
    radius = radius * (1 + 0.05 * smooth_noise(rng, (s, s), s / 20))
    inside = dist < radius
    lesion = rng.uniform([90, 50, 30], [150, 95, 70])
    blotch = 0.5 + 0.5 * np.tanh(2 * fractal_noise(rng, (s, s), (s / 12, s / 30)))
    colour = lesion[None, None, :] * (0.7 + 0.3 * blotch[..., None])
    # Soft edge: a 2-pixel blend between lesion and skin.
    alpha = np.clip((radius - dist) / 2.0 + 0.5, 0, 1)[..., None]
    img = alpha * colour + (1 - alpha) * img
    for _ in range(rng.integers(0, 4)):  # hairs: dark thin curves
        y0, x0, th = rng.uniform(0, s), rng.uniform(0, s), rng.uniform(0, np.pi)
        bend = rng.uniform(-0.003, 0.003)
        d = (yy - y0) * np.cos(th) - (xx - x0) * np.sin(th) + bend * (xx - x0) ** 2
        img = img * (1 - 0.6 * np.exp(-((d / 0.8) ** 2))[..., None])
    img = img + rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), (inside * 255).astype(np.uint8)


def generate(out: Path, num: int, size: int, seed: int) -> None:
    """Write ``num`` training images and ``max(2, num // 4)`` validation and test images."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    counts = {"Training": num, "Validation": max(2, num // 4), "Test_v2": max(2, num // 4)}
    idx = 0
    for split in SPLITS:
        data = out / f"ISIC-2017_{split}_Data"
        gt = out / f"ISIC-2017_{split}_Part1_GroundTruth"
        data.mkdir(parents=True, exist_ok=True)
        gt.mkdir(parents=True, exist_ok=True)
        for _ in range(counts[split]):
            name = f"ISIC_{idx:07d}"
            idx += 1
            image, mask = render(rng, size)
            Image.fromarray(image).save(data / f"{name}.jpg", quality=95)
            # The real download ships superpixel maps beside the images; readers skip them.
            Image.fromarray(np.zeros((size, size, 3), np.uint8)).save(
                data / f"{name}_superpixels.png"
            )
            Image.fromarray(mask).save(gt / f"{name}_segmentation.png")

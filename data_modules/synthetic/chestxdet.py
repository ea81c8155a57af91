"""Synthetic twin of ChestX-Det: grey chest-film-like images with lesion boxes and polygons.

Writes the public ChestX-Det layout::

    out/train/00000.png …          grey 8-bit PNGs (16-bit with ``bit_depth=16``)
    out/test/00048.png …
    out/ChestX_Det_train.json      [{"file_name", "syms", "boxes", "polygons"}, …]
    out/ChestX_Det_test.json

Each image has a body, two dark lung fields crossed by bright ribs, a bright mediastinum and
heart, film grain, and 0–3 lesions drawn from six of the 13 ChestX-Det classes (Nodule, Mass,
Effusion, Cardiomegaly, Pneumothorax, Consolidation); about one image in six is normal (empty
``syms``). Boxes are ``[x1, y1, x2, y2]`` pixel bounds of each lesion polygon.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy.ndimage import gaussian_filter

from mvmic.io import write_image

#: Lesion classes the twin draws (a subset of the 13 ChestX-Det classes).
SYNTH_CLASSES = ("Nodule", "Mass", "Effusion", "Cardiomegaly", "Pneumothorax", "Consolidation")


def _ellipse_polygon(
    cx: float, cy: float, rx: float, ry: float, rng: np.random.Generator, wobble: float, n: int = 24
) -> np.ndarray:
    """A star-shaped polygon around (cx, cy): an ellipse with a smooth random radius wobble."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    phase = rng.uniform(0, 2 * np.pi, 3)
    r = 1 + wobble * (
        0.5 * np.sin(2 * t + phase[0])
        + 0.3 * np.sin(3 * t + phase[1])
        + 0.2 * np.sin(5 * t + phase[2])
    )
    return np.stack([cx + rx * r * np.cos(t), cy + ry * r * np.sin(t)], axis=1)


def _raster(poly: np.ndarray, size: int) -> np.ndarray:
    """Fill a polygon (K×2, x/y pixel coordinates) into a float mask."""
    img = Image.new("L", (size, size), 0)
    ImageDraw.Draw(img).polygon([tuple(p) for p in poly.tolist()], fill=1)
    return np.asarray(img, dtype=np.float32)


def _lung_polygon(side: int, size: int) -> np.ndarray:
    """Left (side=-1) or right (side=+1) lung field as a polygon."""
    cx = size * (0.5 + side * 0.2)
    t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
    # Taller than wide, narrower at the apex (top).
    rx = size * 0.14 * (1 + 0.25 * np.sin(t))
    return np.stack([cx + rx * np.cos(t), size * 0.5 + size * 0.3 * np.sin(t)], axis=1)


def _film(size: int, rng: np.random.Generator, heart_scale: float) -> tuple[np.ndarray, list]:
    """A normal chest film (floats ~[0, 1]) and the two lung polygons."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    body = ((xx - 0.5) / 0.42) ** 2 + ((yy - 0.55) / 0.55) ** 2 < 1
    img = np.where(body, 0.55, 0.08).astype(np.float32)
    lungs = [_lung_polygon(s, size) for s in (-1, 1)]
    lung_mask = np.clip(sum(_raster(p, size) for p in lungs), 0, 1)
    img -= 0.35 * gaussian_filter(lung_mask, size * 0.015)
    # Ribs: bright arcs across each lung field.
    for k in range(7):
        y0 = 0.25 + 0.085 * k + rng.uniform(-0.01, 0.01)
        arc = y0 + 0.12 * (xx - 0.5) ** 2 * 4
        img += 0.12 * np.exp(-(((yy - arc) / 0.012) ** 2)) * lung_mask
    # Mediastinum (spine shadow) and heart.
    img += 0.3 * np.exp(-(((xx - 0.5) / 0.05) ** 2)) * body
    hx, hy = 0.53 * size, 0.65 * size
    heart = _raster(
        _ellipse_polygon(hx, hy, size * 0.11 * heart_scale, size * 0.09, rng, 0.05), size
    )
    img += 0.2 * gaussian_filter(heart, size * 0.01)
    # Vessel-like texture inside the lungs, then film grain.
    img += (
        0.05 * gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), 2) * lung_mask
    )
    return img, lungs


def _lesion(
    cls: str, size: int, rng: np.random.Generator, lungs: list[np.ndarray]
) -> tuple[np.ndarray, float, float]:
    """Polygon, intensity change and blur (pixels) of one lesion of class ``cls``."""
    lung = lungs[rng.integers(2)]
    lx, ly = lung[:, 0], lung[:, 1]
    cx = rng.uniform(lx.min() + 0.3 * np.ptp(lx), lx.max() - 0.3 * np.ptp(lx))
    cy = rng.uniform(ly.min() + 0.25 * np.ptp(ly), ly.max() - 0.3 * np.ptp(ly))
    if cls == "Nodule":
        r = size * rng.uniform(0.025, 0.04)
        return _ellipse_polygon(cx, cy, r, r, rng, 0.1, 16), 0.35, 0.6
    if cls == "Mass":
        r = size * rng.uniform(0.06, 0.09)
        return _ellipse_polygon(cx, cy, r, r * rng.uniform(0.8, 1.2), rng, 0.25), 0.3, 1.5
    if cls == "Consolidation":
        r = size * rng.uniform(0.06, 0.1)
        return _ellipse_polygon(cx, cy, r * 1.3, r * 0.8, rng, 0.35), 0.2, 3.0
    if cls == "Effusion":
        # Bottom of a lung under a meniscus: the lung polygon clipped at a rising line.
        top = ly.min() + np.ptp(ly) * rng.uniform(0.6, 0.75)
        pts = lung[lung[:, 1] > top]
        order = np.argsort(np.arctan2(pts[:, 1] - pts[:, 1].mean(), pts[:, 0] - pts[:, 0].mean()))
        return pts[order], 0.35, 2.0
    if cls == "Pneumothorax":
        # Lateral apical crescent of a lung: a dark region without lung markings.
        side = 1 if lx.mean() > size / 2 else -1
        return (
            _ellipse_polygon(
                lx.mean() + side * 0.08 * size,
                ly.min() + 0.2 * np.ptp(ly),
                0.06 * size,
                0.12 * size,
                rng,
                0.1,
            ),
            -0.15,
            1.0,
        )
    raise ValueError(cls)


def _box(poly: np.ndarray, size: int) -> list[float]:
    x1, y1 = np.floor(poly.min(0)).clip(0, size - 1)
    x2, y2 = np.ceil(poly.max(0)).clip(1, size)
    return [float(x1), float(y1), float(x2), float(y2)]


def _sample(size: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """One film as floats in [0, 1] and its annotation."""
    normal = rng.random() < 1 / 6
    classes = (
        [] if normal else list(rng.choice(SYNTH_CLASSES, size=rng.integers(1, 4), replace=False))
    )
    img, lungs = _film(size, rng, heart_scale=1.45 if "Cardiomegaly" in classes else 1.0)
    syms, boxes, polys = [], [], []
    for cls in classes:
        if cls == "Cardiomegaly":
            # The enlarged heart itself is the finding: its outline is the polygon.
            poly = _ellipse_polygon(0.53 * size, 0.65 * size, size * 0.16, size * 0.09, rng, 0.0)
        else:
            poly, delta, blur = _lesion(cls, size, rng, lungs)
            img += delta * gaussian_filter(_raster(poly, size), blur)
        syms.append(str(cls))
        boxes.append(_box(poly, size))
        polys.append([[round(float(x), 1), round(float(y), 1)] for x, y in poly.clip(0, size - 1)])
    img += 0.03 * rng.standard_normal((size, size)).astype(np.float32)
    return np.clip(img, 0, 1), {"syms": syms, "boxes": boxes, "polygons": polys}


def generate(out: Path, num: int = 60, size: int = 256, seed: int = 0, bit_depth: int = 8) -> None:
    """Write ``num`` synthetic chest films (about 1/5 of them as the test split) into ``out``.

    Args:
        out: dataset root to create (``train/``, ``test/``, ``ChestX_Det_{train,test}.json``).
        num: total number of images (at least 2: one train, one test).
        size: image side in pixels.
        seed: random seed; the same seed writes the same files.
        bit_depth: 8 or 16 (grey 16-bit PNGs, as digital X-ray films often are).
    """
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    if num < 2:
        raise ValueError(f"num must be at least 2 (one train and one test image), got {num}")
    if size < 32:
        raise ValueError(f"size must be at least 32 pixels, got {size}")
    out = Path(out)
    rng = np.random.default_rng(seed)
    num_test = max(1, num // 5)
    for split, ids in (("train", range(num - num_test)), ("test", range(num - num_test, num))):
        (out / split).mkdir(parents=True, exist_ok=True)
        entries = []
        for i in ids:
            film, ann = _sample(size, rng)
            name = f"{i:05d}.png"
            if bit_depth == 8:
                png = (film * 255).round().astype(np.uint8)
                Image.fromarray(png, mode="L").save(out / split / name)
            else:
                write_image(out / split / name, film[None], bit_depth)
            entries.append({"file_name": name, **ann})
        (out / f"ChestX_Det_{split}.json").write_text(json.dumps(entries))

"""Synthetic HVSMR 2016 twin: MR-like volumes with a myocardium shell around a blood pool.

Writes ``training_axial_crop_pat<N>.nii.gz`` and ``training_axial_crop_pat<N>-label.nii.gz``
(labels 0 background, 1 myocardium, 2 blood pool), arrays in nibabel's (x, y, z) order like the
real files. Blood is bright, myocardium dark grey, background textured tissue, with a smooth
bias field and noise, so intensity alone does not separate the classes at the boundary.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from data_modules.synthetic.textures import smooth_noise


def render(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One (x, y, z) float32 volume (MR-like values) and its uint8 labels, size³ voxels."""
    s = size
    zz, yy, xx = np.mgrid[0:s, 0:s, 0:s].astype(np.float64)
    labels = np.zeros((s, s, s), np.uint8)
    for _ in range(rng.integers(1, 3)):  # one or two chambers
        c = rng.uniform(0.35, 0.65, 3) * s
        r = rng.uniform(0.12, 0.22, 3) * s
        wall = rng.uniform(0.05, 0.09) * s
        d = np.sqrt(
            ((xx - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((zz - c[2]) / r[2]) ** 2
        )
        shell = d < 1 + wall / r.mean()
        labels[shell & (labels == 0)] = 1
        labels[d < 1] = 2
    tissue = 0.35 + 0.08 * smooth_noise(rng, (s, s, s), s / 10)
    img = np.where(labels == 2, 0.85, np.where(labels == 1, 0.2, tissue))
    bias = 1 + 0.15 * smooth_noise(rng, (s, s, s), s / 3)
    img = img * bias + rng.normal(0, 0.04, img.shape)
    return (np.clip(img, 0, None) * 1000).astype(np.float32), labels


def generate(out: Path, num: int, size: int, seed: int) -> None:
    """Write ``num`` labelled volumes of ``size``³ voxels."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    affine = np.diag([0.9, 0.9, 0.9, 1.0])
    for n in range(num):
        image, labels = render(rng, size)
        nib.save(nib.Nifti1Image(image, affine), out / f"training_axial_crop_pat{n}.nii.gz")
        nib.save(nib.Nifti1Image(labels, affine), out / f"training_axial_crop_pat{n}-label.nii.gz")

"""The one writer of task outputs: masks as PNG / ``.npy`` / NIfTI, detections as JSON.

``mvmic decompress --task``, ``mvmic predict``, the ``mvmic serve`` answers and ``mvmic send``
all encode through :func:`mask_files` and :func:`detections_json`, so one prediction is the
same file whichever command wrote it:

- a mask is class indices, uint8 (uint16 above 255 classes); several frames are one PNG per
  frame (``name_0000.png``, …), or one ``.npy`` / NIfTI volume (frames in mvmic's axis order,
  :func:`~mvmic.io.formats.frames_to_nifti`; identity affine unless the source's is given);
- detections are one ``{"boxes": [[x1, y1, x2, y2], …], "labels": […], "scores": […]}`` per
  frame; a single frame is the dict itself.
"""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from mvmic.io.files import atomic_outputs, output_paths
from mvmic.io.formats import frames_to_nifti, suffix_of

#: the files a mask can be written as
MASK_SUFFIXES = (".png", ".npy", ".nii", ".nii.gz")
DETECTION_KEYS = ("boxes", "labels", "scores")


def mask_codes(pred: Tensor | np.ndarray) -> np.ndarray:
    """Class indices (H×W, F×H×W or B×D×H×W) as N×H×W slices, uint8 or uint16 above 255."""
    a = pred.detach().cpu().numpy() if isinstance(pred, Tensor) else np.asarray(pred)
    a = a.reshape(-1, *a.shape[-2:])
    return a.astype(np.uint8 if a.max(initial=0) < 256 else np.uint16)


def detection_records(preds: list[dict[str, Any]] | dict[str, Any]) -> list[dict[str, list]]:
    """torchvision-style detections (tensors) as plain lists, one dict per frame."""
    preds = [preds] if isinstance(preds, dict) else preds
    return [
        {k: (p[k].detach().cpu().tolist() if isinstance(p[k], Tensor) else list(p[k]))
         for k in DETECTION_KEYS if k in p}
        for p in preds
    ]  # fmt: skip


def detections_json(dets: list[dict[str, Any]] | dict[str, Any]) -> bytes:
    """The JSON of :func:`detection_records` (a single frame is the dict itself)."""
    records = detection_records(dets)
    return json.dumps(records[0] if len(records) == 1 else records).encode()


def mask_files(mask: Tensor | np.ndarray, suffix: str, affine: Any = None) -> list[bytes]:
    """The bytes of the file(s) a mask is written as (one per frame for PNG, else one).

    Args:
        mask: class indices (see :func:`mask_codes`).
        suffix: ``.png``, ``.npy``, ``.nii`` or ``.nii.gz``.
        affine: the NIfTI affine (4×4; default: identity).

    Raises:
        ValueError: another suffix.
    """
    codes = mask_codes(mask)
    if suffix == ".png":
        from PIL import Image

        out = []
        for m in codes:
            buf = io.BytesIO()
            Image.fromarray(m).save(buf, format="PNG")
            out.append(buf.getvalue())
        return out
    if suffix == ".npy":
        buf = io.BytesIO()
        np.save(buf, codes[0] if len(codes) == 1 else codes)
        return [buf.getvalue()]
    if suffix in (".nii", ".nii.gz"):
        import nibabel as nib

        affine = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
        raw = nib.Nifti1Image(frames_to_nifti(codes), affine).to_bytes()
        # mtime=0: the same mask gives the same bytes, run after run
        return [gzip.compress(raw, compresslevel=6, mtime=0) if suffix == ".nii.gz" else raw]
    raise ValueError(f"write a segmentation mask as .png, .npy or .nii.gz, not {suffix!r}")


def _write(paths: list[Path], blobs: list[bytes], overwrite: bool) -> list[Path]:
    with atomic_outputs(paths, overwrite) as tmps:
        for tmp, blob in zip(tmps, blobs, strict=True):
            tmp.write_bytes(blob)
    return paths


def write_mask(
    path: str | Path, mask: Tensor | np.ndarray, *, affine: Any = None, overwrite: bool = True
) -> list[Path]:
    """Write a mask to ``path`` (its suffix chooses the format); returns the paths written.

    Raises:
        ValueError: the suffix cannot hold a mask (naming the file).
    """
    path = Path(path)
    codes = mask_codes(mask)
    suffix = suffix_of(path)
    if suffix not in MASK_SUFFIXES:
        raise ValueError(f"{path}: write a segmentation mask as .png, .npy or .nii.gz")
    paths = output_paths(path, len(codes)) if suffix == ".png" else [path]
    return _write(paths, mask_files(codes, suffix, affine), overwrite)


def write_detections(
    path: str | Path, dets: list[dict[str, Any]] | dict[str, Any], *, overwrite: bool = True
) -> list[Path]:
    """Write detections (one dict per frame) as JSON to ``path``."""
    return _write([Path(path)], [detections_json(dets)], overwrite)


def write_task_output(
    path: str | Path, prediction: Any, *, affine: Any = None, overwrite: bool = True
) -> list[Path]:
    """Write what a task network's ``predict`` returned: a mask tensor, or detections."""
    if isinstance(prediction, Tensor | np.ndarray):
        return write_mask(path, prediction, affine=affine, overwrite=overwrite)
    return write_detections(path, prediction, overwrite=overwrite)

"""File formats, code ↔ value maps and channel conversion shared by the reader and the writer.

Codes ``v`` in ``[0, 2**b - 1]`` relate to a source's own values by
``value = u * meta["value_step"] + meta["value_min"]`` with
``u = (2**b - 1) - v if meta["invert"] else v`` (see :mod:`mvmic.io`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

#: File name endings that :func:`read_image` understands (others are tried as DICOM).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
DICOM_SUFFIXES = (".dcm", ".dicom")
SUPPORTED_SUFFIXES = (*IMAGE_SUFFIXES, *DICOM_SUFFIXES, ".nii", ".nii.gz", ".npy")
#: ITU-R BT.601 luma weights, the same as Pillow's ``convert("L")``.
LUMA = (0.299, 0.587, 0.114)
#: Layouts of a 3-D ``.npy`` array (``read_image(..., npy_layout=...)``), and what each means.
NPY_LAYOUTS = {
    "auto": "decided from the shape and dtype",
    "dhw": "slices (D×H×W)",
    "chw": "one image (C×H×W)",
    "hwc": "one image (H×W×C)",
}


class ImageReadError(ValueError):
    """A file cannot be read as an image (missing, unsupported or damaged)."""


def suffix_of(path: str | Path) -> str:
    """Lower-case suffix, with ``.nii.gz`` as one suffix."""
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def is_supported(path: str | Path) -> bool:
    """Whether :func:`read_image` reads files with this name ending."""
    return suffix_of(path) in SUPPORTED_SUFFIXES


def nifti_to_frames(a: np.ndarray) -> np.ndarray:
    """A NIfTI data array X×Y×Z[×…] as frames Z×Y×X[×…]: slice k, rows y, columns x.

    The one axis convention of mvmic for volumes (the HVSMR data module, ``mvmic compress``,
    ``predict``, the service), so a model sees files as it saw them in training.
    """
    return np.swapaxes(a, 0, 2)


def frames_to_nifti(v: np.ndarray) -> np.ndarray:
    """The inverse of :func:`nifti_to_frames`: frames Z×Y×X back to NIfTI's X×Y×Z."""
    return np.ascontiguousarray(np.swapaxes(v, 0, 2))


def match_channels(x: Tensor, channels: int) -> Tensor:
    """Give ``x`` (…×C×H×W) the model's channel count: RGB → grey by BT.601 luma, grey → RGB
    by repeating the channel."""
    c = x.shape[-3]
    if c == channels:
        return x
    if c == 3 and channels == 1:
        w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(3, 1, 1)
        return (x * w).sum(-3, keepdim=True)
    if c == 1 and channels == 3:
        return x.expand(*x.shape[:-3], 3, *x.shape[-2:]).contiguous()
    raise ValueError(f"cannot convert {c} channels to {channels}")


def to_codes(x: Tensor | np.ndarray, bit_depth: int) -> np.ndarray:
    """Round [0, 1] values to integer codes at ``bit_depth`` (uint8 up to 8 bits, else uint16)."""
    if isinstance(x, Tensor):
        x = x.detach().cpu().float().numpy()
    levels = 2**bit_depth - 1
    codes = np.round(np.clip(np.nan_to_num(x.astype(np.float64)), 0, 1) * levels)
    return codes.astype(np.uint8 if bit_depth <= 8 else np.uint16)


def source_values(codes: np.ndarray, bit_depth: int, meta: dict[str, Any]) -> np.ndarray:
    """Invert the reader's map: codes → the source's own values (in the source dtype)."""
    u = codes.astype(np.float64)
    if meta.get("invert"):
        u = (2**bit_depth - 1) - u
    values = u * meta.get("value_step", 1.0) + meta.get("value_min", 0.0)
    dtype = np.dtype(meta.get("dtype", codes.dtype))
    if dtype.kind in "iub":
        info = np.iinfo(dtype) if dtype.kind != "b" else np.iinfo(np.uint8)
        values = np.clip(np.round(values), info.min, info.max)
    return values.astype(dtype)

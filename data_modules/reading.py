"""Pixels for the 2D data modules, read only through :mod:`mvmic.io`.

What a model trains on is then exactly what ``mvmic compress`` sends: 8- and 16-bit PNG/TIFF,
JPEG, BMP and DICOM, each scaled to [0, 1] by its own bit depth (recorded per sample), grey/RGB
converted as :func:`mvmic.io.match_channels` does. Masks are label maps: their stored values
are used, never rescaled or clipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info

from mvmic.io import (
    DICOM_SUFFIXES,
    IMAGE_SUFFIXES,
    LUMA,
    ImageReadError,
    match_channels,
    read_image,
    source_values,
    suffix_of,
    to_codes,
)
from mvmic.validation import ConfigError, channels

#: image files a 2D data set may hold (what :func:`mvmic.io.read_image` reads in 2D)
IMAGE_EXTS = (*IMAGE_SUFFIXES, *DICOM_SUFFIXES)
#: lossy masks carry compression noise: always thresholded at 127
LOSSY_EXTS = (".jpg", ".jpeg")


class UnreadableFileError(ValueError):
    """A data file that cannot be read; ``path`` names it."""

    def __init__(self, path: str | Path, why: str, kind: str = "image") -> None:
        super().__init__(f"cannot read {kind} {path}: {why}")
        self.path = Path(path)


def check_window(window: Sequence[float] | None) -> tuple[float, float] | None:
    """Validate a ``data.window`` value: None, or ``[lo, hi]`` with ``lo < hi``.

    Raises:
        ConfigError: (a ValueError) naming ``--data.window``, the value and the expected form.
    """
    if window is None:
        return None
    try:
        lo, hi = (float(v) for v in window)
    except (TypeError, ValueError):
        raise ConfigError(
            "--data.window",
            f"is {window!r}; it must be two numbers [lo, hi] (stored values, or HU for a "
            "DICOM with a rescale)",
        ) from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ConfigError(
            "--data.window", f"is [{lo:g}, {hi:g}]; it needs finite lo < hi, e.g. [-160, 240]"
        )
    return lo, hi


def apply_window(
    x: np.ndarray, bit_depth: int, meta: dict[str, Any], window: tuple[float, float]
) -> np.ndarray:
    """Map a :func:`mvmic.io.read_image` result through a window ``[lo, hi]`` to [0, 1].

    ``lo`` and ``hi`` are source values (stored values), or rescaled values (HU for CT) when
    ``meta`` carries a DICOM RescaleSlope/Intercept. Values below ``lo`` become 0, above ``hi``
    1; MONOCHROME1 stays flipped, so that bright still means a high value.

    Args:
        x: the image in [0, 1], as ``read_image`` returned it.
        bit_depth: its bit depth, as returned with it.
        meta: its meta, as returned with it.
        window: ``(lo, hi)`` with ``lo < hi`` (see :func:`check_window`).

    Returns:
        float32 array of ``x``'s shape in [0, 1].
    """
    lo, hi = window
    u = to_codes(x, bit_depth).astype(np.float64)  # exact: x = codes / (2**b - 1)
    if meta.get("invert"):
        u = (2**bit_depth - 1) - u
    values = u * meta.get("value_step", 1.0) + meta.get("value_min", 0.0)
    values = values * meta.get("slope", 1.0) + meta.get("intercept", 0.0)
    y = np.clip((values - lo) / (hi - lo), 0.0, 1.0)
    return (1.0 - y if meta.get("invert") else y).astype(np.float32)


def _read(path: Path) -> tuple[np.ndarray, int, dict[str, Any]]:
    """``read_image`` for one 2D image: C×H×W, or :class:`UnreadableFileError` naming it."""
    try:
        x, bits, meta = read_image(path)
    except ImageReadError as err:
        why = str(err).removeprefix(f"{path}: ")
        raise UnreadableFileError(path, why) from None
    if x.ndim == 4:
        raise UnreadableFileError(
            path, f"holds {x.shape[0]} frames; a 2D data set takes one image per file"
        )
    return x, bits, meta


def image_size(path: str | Path, decode: bool = False) -> tuple[int, int]:
    """(width, height) of a 2D image file.

    Args:
        path: the file.
        decode: decode every pixel with :func:`mvmic.io.read_image`, the reader training uses.
            Only the header is read otherwise, which misses a truncated file or a damaged
            payload.

    Raises:
        UnreadableFileError: naming ``path``, when it cannot be opened, decoded, or holds more
            than one frame.
    """
    path = Path(path)
    if decode:
        x, _, _ = _read(path)
        return int(x.shape[-1]), int(x.shape[-2])
    if suffix_of(path) in DICOM_SUFFIXES:
        return _dicom_size(path)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            frames = getattr(img, "n_frames", 1)
            size = img.size
    # PIL reports bad data as any of these, depending on the format and where it breaks.
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise UnreadableFileError(path, str(err)) from None
    if frames > 1:
        raise UnreadableFileError(
            path, f"holds {frames} frames; a 2D data set takes one image per file"
        )
    return size


#: Pillow modes that hold one channel (mvmic.io reads every other mode as RGB)
GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")


def check_channels(name: str, value: Any) -> Any:
    """Validate an ``in_channels`` value of a data module: ``"auto"``, 1 or 3."""
    if value == "auto":
        return value
    return channels(name, value)


def image_channels(path: str | Path) -> int:
    """1 or 3: the channels :func:`mvmic.io.read_image` gives this file, from its header only.

    Raises:
        UnreadableFileError: naming ``path`` when its header cannot be read.
    """
    path = Path(path)
    if suffix_of(path) in DICOM_SUFFIXES:
        import pydicom
        from pydicom.errors import InvalidDicomError

        try:
            spp = int(pydicom.dcmread(path, stop_before_pixels=True).get("SamplesPerPixel", 1))
        except (InvalidDicomError, AttributeError, OSError, ValueError) as err:
            raise UnreadableFileError(path, f"not a readable DICOM image ({err})") from None
        return 1 if spp == 1 else 3
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            mode = img.mode
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise UnreadableFileError(path, str(err)) from None
    return 1 if mode in GREY_MODES else 3


def resolve_channels(setting: int | str, paths: Sequence[Path], what: str) -> int:
    """``in_channels`` of a data module: ``setting`` itself, or for ``"auto"`` 1 when every
    image in ``paths`` is single-channel (CT, X-ray, MR) and 3 otherwise (headers only).

    A grey file stored as RGB (three equal channels) counts as RGB: its header says so.
    """
    if setting != "auto":
        return int(setting)
    if not paths:
        raise ValueError(f"{what}: no images to detect in_channels from; set data.in_channels")
    found = []
    for path in paths:
        try:
            found.append(image_channels(path))
        except UnreadableFileError:
            continue  # named (or skipped, on_bad_image) when the split is screened
    grey = bool(found) and all(c == 1 for c in found)
    rank_zero_info(
        f"{what}: in_channels auto -> {1 if grey else 3} "
        f"({'every' if grey else 'not every'} one of {len(found)} images is single-channel)"
    )
    return 1 if grey else 3


def _dicom_size(path: Path) -> tuple[int, int]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (InvalidDicomError, AttributeError, OSError, ValueError) as err:
        raise UnreadableFileError(path, f"not a readable DICOM image ({err})") from None
    if frames > 1:
        raise UnreadableFileError(
            path, f"holds {frames} frames; a 2D data set takes one image per file"
        )
    return cols, rows


def read_image_2d(
    path: str | Path, channels: int, window: tuple[float, float] | None = None
) -> tuple[np.ndarray, int]:
    """One image as H×W×C float32 in [0, 1] (albumentations' layout) and its bit depth.

    Without ``window`` the values are ``mvmic.io.read_image``'s exactly (full bit depth); with
    it, :func:`apply_window`. Channels follow :func:`mvmic.io.match_channels`.

    Raises:
        UnreadableFileError: naming ``path``.
    """
    path = Path(path)
    x, bits, meta = _read(path)
    if window is not None:
        x = apply_window(x, bits, meta, window)
    x = match_channels(torch.from_numpy(x), channels).numpy()
    return np.ascontiguousarray(x.transpose(1, 2, 0)), bits


def read_label_map(path: str | Path) -> np.ndarray:
    """A mask's own stored values as an H×W int64 array (8- or 16-bit, never rescaled).

    A colour mask is reduced by BT.601 luma, as Pillow's ``convert("L")`` does.

    Raises:
        UnreadableFileError: naming ``path``.
    """
    path = Path(path)
    x, bits, meta = _read(path)
    values = source_values(to_codes(x, bits), bits, meta).astype(np.int64)
    if values.shape[0] == 3:
        if (values == values[:1]).all():
            return values[0]
        return np.round(np.tensordot(np.asarray(LUMA), values, axes=1)).astype(np.int64)
    return values[0]


def read_binary_mask(path: str | Path) -> np.ndarray:
    """A two-class mask as H×W uint8 0/1.

    A lossless mask whose values are all 0 or 1 is already a label map; otherwise foreground is
    a value above 127 (0/255 masks, 0/65535 16-bit masks, JPEG masks with compression noise).
    """
    values = read_label_map(path)
    if suffix_of(path) not in LOSSY_EXTS and values.min() >= 0 and values.max() <= 1:
        return values.astype(np.uint8)
    return (values > 127).astype(np.uint8)

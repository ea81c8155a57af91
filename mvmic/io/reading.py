"""Readers: PNG/JPEG/TIFF (Pillow, OpenCV for 16-bit RGB), DICOM, NIfTI and ``.npy`` → codes.

Each maps the source values to integer codes at the smallest fitting bit depth and records in
``meta`` how to map them back (:func:`mvmic.io.formats.source_values`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mvmic.io.formats import (
    IMAGE_SUFFIXES,
    NPY_LAYOUTS,
    SUPPORTED_SUFFIXES,
    ImageReadError,
    nifti_to_frames,
    suffix_of,
)


def read_image(
    path: str | Path, *, npy_layout: str = "auto"
) -> tuple[np.ndarray, int, dict[str, Any]]:
    """Read an image or volume as float32 in [0, 1].

    Args:
        path: a PNG/JPEG/TIFF, DICOM, NIfTI or ``.npy`` file.
        npy_layout: how a 3-D ``.npy`` array is read: ``"auto"`` (a 3×H×W array is 3
            slices; H×W×3 is RGB only for uint8, bool or [0, 1] float data), ``"dhw"``
            (slices), ``"chw"`` or ``"hwc"`` (one grey or RGB image). Other files ignore it.

    Returns:
        ``(x, bit_depth, meta)``: ``x`` is C×H×W for one image or F×C×H×W for several frames
        (slices, pages, DICOM frames), C = 1 or 3; ``bit_depth`` the source's bit depth
        (1..16); ``meta`` what :func:`write_image` needs to restore source values.

    Raises:
        ImageReadError: naming the file, when it is missing, unsupported or unreadable.
    """
    path = Path(path)
    if npy_layout not in NPY_LAYOUTS:
        raise ValueError(f"npy_layout {npy_layout!r}: use one of {list(NPY_LAYOUTS)}")
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    suffix = suffix_of(path)
    try:
        if suffix in IMAGE_SUFFIXES:
            codes, bits, meta = _read_pillow(path)
        elif suffix in (".nii", ".nii.gz"):
            codes, bits, meta = _read_nifti(path)
        elif suffix == ".npy":
            codes, bits, meta = _read_npy(path, npy_layout)
        else:
            codes, bits, meta = _read_dicom(path)
    except ImageReadError:
        raise
    except Exception as err:  # the libraries raise many types; the user needs one message
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ImageReadError(f"{path}: cannot read as an image ({msg})") from err
    if codes.ndim != 4 or codes.shape[1] not in (1, 3) or 0 in codes.shape:
        raise ImageReadError(f"{path}: unsupported image shape {codes.shape}")
    meta.update(source=str(path), shape=tuple(codes.shape), bit_depth=bits)
    if codes.dtype.kind == "f":  # already in [0, 1] (float .npy)
        x = codes.astype(np.float32)
    else:
        x = (codes.astype(np.float64) / (2**bits - 1)).astype(np.float32)
    return (x[0] if x.shape[0] == 1 else x), bits, meta


def _meta(fmt: str, **kw: Any) -> dict[str, Any]:
    return {"format": fmt, "value_min": 0.0, "value_step": 1.0, "invert": False, **kw}


def _int_codes(values: np.ndarray) -> tuple[np.ndarray, int, float]:
    """Codes for integer values: the smallest depth ≥ 8 bits holding them, signed → shifted."""
    lo, hi = int(values.min()), int(values.max())
    if lo >= 0:
        bits, offset = max(8, hi.bit_length()), 0
    else:
        bits = max(8, max((-lo - 1).bit_length(), hi.bit_length()) + 1)
        offset = 1 << (bits - 1)
    if bits > 16:
        raise ImageReadError(f"values {lo}..{hi} need {bits} bits; at most 16 are supported")
    return (values.astype(np.int64) + offset).astype(np.uint16), bits, float(-offset)


def _float_codes(values: np.ndarray) -> tuple[np.ndarray, int, dict[str, Any]]:
    values = values.astype(np.float64)
    if not np.isfinite(values).all():
        raise ImageReadError("contains NaN or infinite values")
    if np.array_equal(values, np.round(values)) and values.max() - values.min() < 65536:
        codes, bits, vmin = _int_codes(values.astype(np.int64))
        return codes, bits, {"value_min": vmin}
    lo, hi = float(values.min()), float(values.max())
    step = (hi - lo) / 65535 if hi > lo else 1.0
    codes = np.round((values - lo) / step).astype(np.uint16)
    return codes, 16, {"value_min": lo, "value_step": step}


def _to_fchw(a: np.ndarray, layout: str) -> np.ndarray:
    """Arrange frames × channels × H × W from a 'hw', 'hwc', 'fhw' or 'fhwc' array."""
    if layout == "hw":
        return a[None, None]
    if layout == "hwc":
        return a.transpose(2, 0, 1)[None]
    if layout == "fhw":
        return a[:, None]
    return a.transpose(0, 3, 1, 2)


def _read_pillow(path: Path) -> tuple[np.ndarray, int, dict[str, Any]]:
    from PIL import Image, ImageSequence

    with Image.open(path) as img:
        fmt = (img.format or path.suffix[1:]).lower()
        if img.mode in ("RGB", "RGBA") and _png_bit_depth(path) == 16:
            return _read_cv2(path, fmt)
        frames = [_pil_frame(f) for f in ImageSequence.Iterator(img)]
    if len({(f.shape, f.dtype) for f in frames}) != 1:
        raise ImageReadError(f"{path}: pages differ in size or type")
    a = np.stack(frames)
    if a.dtype == np.uint8:
        return _to_fchw(a, "fhwc" if a.ndim == 4 else "fhw"), 8, _meta(fmt)
    if a.dtype == np.uint16:
        return _to_fchw(a, "fhw"), 16, _meta(fmt)
    if a.dtype.kind == "i":  # Pillow mode "I"
        if a.min() >= 0 and a.max() <= 0xFFFF:
            return _to_fchw(a.astype(np.uint16), "fhw"), 16, _meta(fmt)
        codes, bits, vmin = _int_codes(a)
        return _to_fchw(codes, "fhw"), bits, _meta(fmt, value_min=vmin)
    codes, bits, extra = _float_codes(a)  # mode "F"
    return _to_fchw(codes, "fhw"), bits, _meta(fmt, **extra)


def _pil_frame(img) -> np.ndarray:
    mode = img.mode
    if mode in ("1", "LA"):
        img = img.convert("L")
    elif mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return np.asarray(img).astype(np.uint16)
    elif mode not in ("L", "RGB", "I", "F"):
        img = img.convert("RGB")  # palette, RGBA, CMYK, YCbCr, ...
    return np.asarray(img)


def _png_bit_depth(path: Path) -> int | None:
    with open(path, "rb") as f:
        head = f.read(25)
    # PNG signature, then the IHDR chunk: its bit depth is byte 24.
    return head[24] if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) == 25 else None


def _read_cv2(path: Path, fmt: str) -> tuple[np.ndarray, int, dict[str, Any]]:
    import cv2

    a = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if a is None:
        raise ImageReadError(f"{path}: OpenCV cannot decode this {fmt} file")
    a = cv2.cvtColor(a, cv2.COLOR_BGRA2RGB if a.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return _to_fchw(a, "hwc"), 16 if a.dtype == np.uint16 else 8, _meta(fmt)


def _read_dicom(path: Path) -> tuple[np.ndarray, int, dict[str, Any]]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError as err:
        if suffix_of(path) in (".dcm", ".dicom"):
            raise ImageReadError(f"{path}: not a valid DICOM file ({err})") from err
        raise ImageReadError(
            f"{path}: not a DICOM file, and its suffix is not one of {list(SUPPORTED_SUFFIXES)}"
        ) from err
    if "PixelData" not in ds:
        raise ImageReadError(f"{path}: DICOM file has no pixel data")
    a = ds.pixel_array
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    samples = int(ds.get("SamplesPerPixel", 1))
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    extra = {
        "photometric": photometric,
        "bits_stored": int(ds.get("BitsStored", 8)),
        "slope": float(ds.get("RescaleSlope", 1) or 1),
        "intercept": float(ds.get("RescaleIntercept", 0) or 0),
        "dtype": str(a.dtype),
        "frames": n_frames,
    }
    if samples == 3:  # pydicom converts YBR to RGB
        if a.dtype != np.uint8:
            codes, bits, vmin = _int_codes(a)
            return (
                _to_fchw(codes, "fhwc" if n_frames > 1 else "hwc"),
                bits,
                _meta("dicom", value_min=vmin, **extra),
            )
        return _to_fchw(a, "fhwc" if n_frames > 1 else "hwc"), 8, _meta("dicom", **extra)
    codes, bits, vmin = _int_codes(a)
    invert = photometric == "MONOCHROME1"
    if invert:  # MONOCHROME1 shows low values white: flip so that x follows brightness
        codes = ((1 << bits) - 1 - codes.astype(np.int64)).astype(np.uint16)
    layout = "fhw" if n_frames > 1 else "hw"
    return _to_fchw(codes, layout), bits, _meta("dicom", value_min=vmin, invert=invert, **extra)


def _read_nifti(path: Path) -> tuple[np.ndarray, int, dict[str, Any]]:
    import nibabel as nib

    img = nib.load(path)
    a = np.asanyarray(img.dataobj)
    if a.ndim == 4 and a.shape[3] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3):
        raise ImageReadError(f"{path}: NIfTI with shape {a.shape}; only 2D or 3D volumes")
    a = a[..., None] if a.ndim == 2 else a
    extra = {"affine": img.affine.tolist(), "dtype": str(a.dtype)}
    if a.dtype.kind in "iub":
        codes, bits, vmin = _int_codes(a.astype(np.int64))
        extra["value_min"] = vmin
    else:
        codes, bits, more = _float_codes(a)
        extra.update(more)
    return nifti_to_frames(codes)[:, None], bits, _meta("nifti", **extra)


def _read_npy(path: Path, npy_layout: str = "auto") -> tuple[np.ndarray, int, dict[str, Any]]:
    a = np.load(path, allow_pickle=False)
    extra: dict[str, Any] = {"dtype": str(a.dtype), "array_shape": tuple(a.shape)}
    if a.ndim == 2:
        layout = "hw"
    elif a.ndim == 3:
        layout, other = _npy_layout_3d(path, a, npy_layout)
        extra["npy_layout"] = layout
        if other:
            extra["npy_layout_other"] = other
    elif a.ndim == 4:
        layout = "fchw"
    else:
        raise ImageReadError(f"{path}: array of shape {a.shape} is not an image")
    if a.dtype == bool:
        a = a.astype(np.uint8)
    if a.dtype.kind in "iu":
        codes, bits, vmin = _int_codes(a)
        extra["value_min"] = vmin
    elif a.dtype.kind == "f" and a.size and 0 <= a.min() and a.max() <= 1:
        codes, bits = a.astype(np.float32), 16
        extra["value_step"] = 1 / 65535
    elif a.dtype.kind == "f":
        codes, bits, more = _float_codes(a)
        extra.update(more)
    else:
        raise ImageReadError(f"{path}: arrays of dtype {a.dtype} are not images")
    if layout == "chw":
        codes = codes[None]
    elif layout == "dhw":
        codes = codes[:, None]
    elif layout != "fchw":
        codes = _to_fchw(codes, layout)
    return codes, bits, _meta("npy", **extra)


def _npy_layout_3d(path: Path, a: np.ndarray, wanted: str) -> tuple[str, str | None]:
    """``(layout, other)`` of a 3-D array; ``other`` is the reading not taken when both fit."""
    first, last = a.shape[0], a.shape[2]
    if wanted == "dhw":
        return "dhw", None
    if wanted in ("chw", "hwc"):
        c = first if wanted == "chw" else last
        if c not in (1, 3):
            raise ImageReadError(
                f"{path}: npy_layout {wanted} needs 1 or 3 channels, the array is "
                f"{'×'.join(map(str, a.shape))}"
            )
        return wanted, None
    # Signed, wide-integer and non-[0, 1] float data are slices of a volume, never colour.
    colour = a.dtype in (np.uint8, np.bool_) or (
        a.dtype.kind == "f" and a.size > 0 and 0 <= np.nanmin(a) and np.nanmax(a) <= 1
    )
    if first == 1:
        return "chw", None
    if first == 3:  # 3 slices or one RGB image: slices, unless the caller says chw
        return "dhw", "chw" if colour else None
    if last == 1:
        return "hwc", None
    if last == 3 and colour:
        return "hwc", "dhw"
    return "dhw", None


def npy_layout_note(meta: dict[str, Any], option: str = "npy_layout=") -> str | None:
    """The layout a 3-D ``.npy`` was read with, when it could be read two ways, else ``None``.

    Args:
        meta: the meta of :func:`read_image`.
        option: how to spell the choice for the reader (a command passes ``"--npy_layout "``).

    Returns:
        e.g. ``"read a.npy (3×32×32 uint8) as 3 slices (D×H×W); pass npy_layout=chw to read
        it as one RGB image (C×H×W)"``.
    """
    other = meta.get("npy_layout_other")
    if not other:
        return None

    def said(layout: str) -> str:
        if layout == "dhw":
            return f"{meta['array_shape'][0]} slices (D×H×W)"
        return NPY_LAYOUTS[layout].replace("one image", "one RGB image")

    shape = "×".join(map(str, meta["array_shape"]))
    return (
        f"read {meta['source']} ({shape} {meta['dtype']}) as {said(meta['npy_layout'])}; "
        f"pass {option}{other} to read it as {said(other)}"
    )

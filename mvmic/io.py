"""Read medical and ordinary images into [0, 1] floats and write reconstructions back.

Every reader maps the source values to integer *codes* ``v`` in ``[0, 2**b - 1]`` and returns
``x = v / (2**b - 1)`` as float32, with ``b`` the bit depth. The map is exact and invertible:
``write_image`` turns ``x`` back into the same codes at the same bit depth, and with the
``meta`` of :func:`read_image` into the source's own values (DICOM stored values, NIfTI
voxels). The codes relate to the source values by

    value = u * meta["value_step"] + meta["value_min"]
    u = (2**b - 1) - v if meta["invert"] else v

Accepted inputs:

* PNG / JPEG / TIFF (Pillow): 1-, 8- and 16-bit grey, 8-bit RGB, 16-bit RGB PNG/TIFF (read with
  OpenCV, since Pillow reduces them to 8 bits); palette, alpha and CMYK images become RGB; a
  multi-page TIFF gives one frame per page.
* DICOM (pydicom): ``pixel_array`` (multi-frame → frames); grey images use the smallest bit
  depth ≥ 8 that holds the stored values, signed data is shifted by ``2**(b-1)``,
  MONOCHROME1 is inverted so that bright means a high value (as MONOCHROME2), and
  RescaleSlope/Intercept are kept in ``meta`` (``hu = value * slope + intercept``).
* NIfTI (nibabel): 2D or 3D; frame ``k`` is ``data[:, :, k]``. Integer-valued volumes are
  coded exactly like DICOM; other float volumes are min–max quantised to 16 bits
  (``meta["value_step"]`` is the quantisation step).
* ``.npy``: H×W, C×H×W or H×W×C (C = 1 or 3), D×H×W (grey frames), F×C×H×W. Integer arrays
  as DICOM; float arrays in [0, 1] are used as they are (16-bit codes when written); other
  float arrays are min–max quantised to 16 bits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

#: File name endings that :func:`read_image` understands (others are tried as DICOM).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
SUPPORTED_SUFFIXES = (*IMAGE_SUFFIXES, ".dcm", ".dicom", ".nii", ".nii.gz", ".npy")
#: ITU-R BT.601 luma weights, the same as Pillow's ``convert("L")``.
LUMA = (0.299, 0.587, 0.114)


class ImageReadError(ValueError):
    """A file cannot be read as an image (missing, unsupported or damaged)."""


def suffix_of(path: str | Path) -> str:
    """Lower-case suffix, with ``.nii.gz`` as one suffix."""
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def is_supported(path: str | Path) -> bool:
    return suffix_of(path) in SUPPORTED_SUFFIXES


# -- reading ------------------------------------------------------------------------------
def read_image(path: str | Path) -> tuple[np.ndarray, int, dict[str, Any]]:
    """Read an image or volume as float32 in [0, 1].

    Args:
        path: a PNG/JPEG/TIFF, DICOM, NIfTI or ``.npy`` file.

    Returns:
        ``(x, bit_depth, meta)``: ``x`` is C×H×W for one image or F×C×H×W for several frames
        (slices, pages, DICOM frames), C = 1 or 3; ``bit_depth`` the source's bit depth
        (1..16); ``meta`` what :func:`write_image` needs to restore source values.

    Raises:
        ImageReadError: naming the file, when it is missing, unsupported or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    suffix = suffix_of(path)
    try:
        if suffix in IMAGE_SUFFIXES:
            codes, bits, meta = _read_pillow(path)
        elif suffix in (".nii", ".nii.gz"):
            codes, bits, meta = _read_nifti(path)
        elif suffix == ".npy":
            codes, bits, meta = _read_npy(path)
        else:
            codes, bits, meta = _read_dicom(path)
    except ImageReadError:
        raise
    except Exception as err:  # the libraries raise many types; the user needs one message
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ImageReadError(f"{path}: cannot read as an image ({msg})") from err
    if codes.ndim != 4 or codes.shape[1] not in (1, 3) or 0 in codes.shape:
        raise ImageReadError(f"{path}: unsupported image shape {codes.shape}")
    meta.update(source=str(path), shape=tuple(codes.shape))
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
    return codes.transpose(2, 0, 1)[:, None], bits, _meta("nifti", **extra)


def _read_npy(path: Path) -> tuple[np.ndarray, int, dict[str, Any]]:
    a = np.load(path, allow_pickle=False)
    if a.dtype == bool:
        a = a.astype(np.uint8)
    if a.ndim == 2:
        layout = "hw"
    elif a.ndim == 3:
        layout = "chw" if a.shape[0] in (1, 3) else "hwc" if a.shape[2] in (1, 3) else "fhw"
    elif a.ndim == 4:
        layout = "fchw"
    else:
        raise ImageReadError(f"{path}: array of shape {a.shape} is not an image")
    extra: dict[str, Any] = {"dtype": str(a.dtype)}
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
    elif layout != "fchw":
        codes = _to_fchw(codes, layout)
    return codes, bits, _meta("npy", **extra)


# -- channels -----------------------------------------------------------------------------
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


# -- writing ------------------------------------------------------------------------------
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


def write_image(
    path: str | Path,
    x: Tensor | np.ndarray,
    bit_depth: int = 8,
    meta: dict[str, Any] | None = None,
) -> list[Path]:
    """Write a reconstruction (C×H×W or F×C×H×W in [0, 1]) at ``bit_depth``.

    ``.png``/``.tif``: 8-bit up to 8 bits, else 16-bit holding the codes ``0..2**b - 1``;
    several frames → a multi-page TIFF, or one PNG per frame (``name_0000.png``, …).
    ``.jpg``: 8-bit only. ``.npy``: the codes (uint8/uint16), or the source values when
    ``meta`` is given. ``.nii``/``.nii.gz``: grey frames as slices ``[:, :, k]``, in source
    values and with the source affine when ``meta`` comes from a NIfTI. ``.dcm``: a copy of
    the source DICOM (``meta["source"]``) with the reconstructed pixels, a new SOP Instance
    UID and LossyImageCompression = "01".

    Returns:
        The paths written.
    """
    path = Path(path)
    arr = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[1] not in (1, 3):
        raise ValueError(f"{path}: expected C×H×W or F×C×H×W with C = 1 or 3, got {arr.shape}")
    if not 1 <= bit_depth <= 16:
        raise ValueError(f"{path}: bit depth {bit_depth} is not 1..16")
    codes = to_codes(arr, bit_depth)
    suffix = suffix_of(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix in IMAGE_SUFFIXES:
        return _write_raster(path, codes, suffix)
    if suffix == ".npy":
        out = source_values(codes, bit_depth, meta) if meta else codes
        np.save(path, out[0] if out.shape[0] == 1 else out)
        return [path]
    if suffix in (".nii", ".nii.gz"):
        return [_write_nifti(path, codes, bit_depth, meta)]
    if suffix in (".dcm", ".dicom"):
        return [_write_dicom(path, codes, bit_depth, meta)]
    raise ValueError(
        f"{path}: cannot write {suffix or 'files without a suffix'}; "
        f"use one of {list(SUPPORTED_SUFFIXES)}"
    )


def _write_raster(path: Path, codes: np.ndarray, suffix: str) -> list[Path]:
    from PIL import Image

    deep = codes.dtype == np.uint16
    if suffix in (".jpg", ".jpeg", ".webp", ".bmp") and deep:
        raise ValueError(f"{path}: {suffix} holds 8 bits only; write a .png for 16-bit output")
    if deep and codes.shape[1] == 3:  # Pillow cannot write 48-bit RGB: OpenCV can
        import cv2

        if codes.shape[0] != 1 or suffix not in (".png", ".tif", ".tiff"):
            raise ValueError(f"{path}: 16-bit RGB is written as one .png or .tif per image")
        cv2.imwrite(str(path), cv2.cvtColor(codes[0].transpose(1, 2, 0), cv2.COLOR_RGB2BGR))
        return [path]
    images = [
        Image.fromarray(f[0] if f.shape[0] == 1 else np.ascontiguousarray(f.transpose(1, 2, 0)))
        for f in codes
    ]
    if len(images) == 1:
        images[0].save(path)
        return [path]
    if suffix in (".tif", ".tiff"):
        images[0].save(path, save_all=True, append_images=images[1:])
        return [path]
    paths = [path.with_name(f"{path.stem}_{i:04d}{path.suffix}") for i in range(len(images))]
    for img, p in zip(images, paths):
        img.save(p)
    return paths


def _write_nifti(path: Path, codes: np.ndarray, bits: int, meta: dict[str, Any] | None) -> Path:
    import nibabel as nib

    if codes.shape[1] != 1:
        raise ValueError(f"{path}: NIfTI output holds grey frames only")
    vol = codes[:, 0].transpose(1, 2, 0)  # F×H×W → H×W×F: frame k is [:, :, k]
    meta = meta or {}
    values = source_values(vol, bits, meta) if meta else vol
    affine = np.array(meta["affine"]) if "affine" in meta else np.eye(4)
    nib.save(nib.Nifti1Image(values, affine), path)
    return path


def _write_dicom(path: Path, codes: np.ndarray, bits: int, meta: dict[str, Any] | None) -> Path:
    import pydicom
    from pydicom.uid import generate_uid

    if not meta or meta.get("format") != "dicom":
        raise ValueError(f"{path}: a DICOM copy needs the meta of the source DICOM (read_image)")
    ds = pydicom.dcmread(meta["source"])
    stored = source_values(codes, bits, meta)  # F×C×H×W in the source dtype
    if stored.shape[1] == 1:
        stored = stored[:, 0]
    else:
        stored = stored.transpose(0, 2, 3, 1)
    if stored.shape[0] == 1:
        stored = stored[0]
    ds.set_pixel_data(stored, meta["photometric"], int(meta["bits_stored"]))
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.LossyImageCompression = "01"
    ds.DerivationDescription = "mvmic learned lossy compression"
    ds.save_as(path)
    return path

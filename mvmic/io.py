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
  float arrays are min–max quantised to 16 bits. A 3-D array with 3 on its first axis is read
  as 3 slices, never as one RGB image, unless ``npy_layout="chw"`` says so; H×W×3 is RGB only
  for uint8, bool or [0, 1] float data (signed, wider-integer and other float data is never
  RGB). ``meta["npy_layout"]`` says which layout was used and ``meta["npy_layout_other"]``
  the other reading when the array could be either.

Writing (:func:`write_image`) goes through a temporary file beside the target that is renamed
onto it, so a failure never leaves a half-written file; ``overwrite=False`` refuses existing
files. With ``meta``, the output takes the source's channels (an RGB decode of a grey source
goes back to grey by BT.601 luma, as on the way in; grey into an RGB source is repeated), and a
reconstruction whose frames or size differ from the source's is refused.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
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


# -- reading ------------------------------------------------------------------------------
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


def nifti_to_frames(a: np.ndarray) -> np.ndarray:
    """A NIfTI data array X×Y×Z[×…] as frames Z×Y×X[×…]: slice k, rows y, columns x.

    The one axis convention of mvmic for volumes (the HVSMR data module, ``mvmic compress``,
    ``predict``, the service), so a model sees files as it saw them in training.
    """
    return np.swapaxes(a, 0, 2)


def frames_to_nifti(v: np.ndarray) -> np.ndarray:
    """The inverse of :func:`nifti_to_frames`: frames Z×Y×X back to NIfTI's X×Y×Z."""
    return np.ascontiguousarray(np.swapaxes(v, 0, 2))


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


def output_paths(path: str | Path, frames: int) -> list[Path]:
    """The files that :func:`write_image` (or a mask writer) creates for ``frames`` frames.

    Several frames go to one multi-page ``.tif``, one volume (``.npy``, NIfTI, DICOM), or,
    for the other raster formats, one file per frame: ``name_0000.png``, ``name_0001.png``, …
    """
    path = Path(path)
    suffix = suffix_of(path)
    if frames > 1 and suffix in IMAGE_SUFFIXES and suffix not in (".tif", ".tiff"):
        return [path.with_name(f"{path.stem}_{i:04d}{path.suffix}") for i in range(frames)]
    return [path]


def check_writable(path: str | Path, overwrite: bool = True) -> None:
    """Raise the error that writing ``path`` would meet, before anything is written.

    Raises:
        NotADirectoryError: a folder above ``path`` is a regular file.
        IsADirectoryError: ``path`` is a folder.
        FileExistsError: ``path`` exists and ``overwrite`` is false.
    """
    path = Path(path)
    for parent in path.parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise NotADirectoryError(f"cannot write {path}: {parent} is a file, not a folder")
            break
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a folder")
    if not overwrite and (path.exists() or path.is_symlink()):
        raise FileExistsError(f"{path} already exists")


@contextmanager
def atomic_outputs(paths: list[Path], overwrite: bool = True) -> Iterator[list[Path]]:
    """Yield temporary paths beside ``paths`` to write; on success each is renamed onto its
    target, on any failure all are deleted, so no target is ever left half-written.

    Args:
        paths: the files to create (their folders are made as needed).
        overwrite: whether existing files may be replaced (else :class:`FileExistsError`).
    """
    paths = [Path(p) for p in paths]
    for p in paths:
        check_writable(p, overwrite)
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(4)
    # Same folder (a rename within one file system is atomic) and same suffix (the libraries
    # choose the format, and .nii.gz compression, from it); hidden so no folder scan reads it.
    tmps = [p.with_name(f".{p.name}.{token}.part{suffix_of(p)}") for p in paths]
    try:
        yield tmps
        if not overwrite:  # re-check: another process may have written one meanwhile
            for p in paths:
                check_writable(p, overwrite)
        for tmp, p in zip(tmps, paths):
            os.replace(tmp, p)
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)


def write_image(
    path: str | Path,
    x: Tensor | np.ndarray,
    bit_depth: int = 8,
    meta: dict[str, Any] | None = None,
    *,
    overwrite: bool = True,
) -> list[Path]:
    """Write a reconstruction (C×H×W or F×C×H×W in [0, 1]) at ``bit_depth``.

    ``.png``/``.tif``: 8-bit up to 8 bits, else 16-bit holding the codes ``0..2**b - 1``;
    several frames → a multi-page TIFF, or one PNG per frame (``name_0000.png``, …).
    ``.jpg``: 8-bit only. ``.npy``: the codes (uint8/uint16), or the source values (in the
    source's array layout for a ``.npy`` source) when ``meta`` is given. ``.nii``/``.nii.gz``:
    grey frames as slices ``[:, :, k]``, in source values and with the source affine when
    ``meta`` comes from a NIfTI. ``.dcm``: a copy of the source DICOM (``meta["source"]``)
    with the reconstructed pixels, a new SOP Instance UID and LossyImageCompression = "01".

    Channels: with ``meta`` every format gets the source's channel count (3 → 1 by BT.601
    luma, 1 → 3 by repeating); without it the channels are written as they are, and NIfTI,
    which holds grey only, refuses 3 channels.

    Args:
        path: the file to write; its suffix chooses the format.
        x: the reconstruction in [0, 1].
        bit_depth: the source bit depth (1..16).
        meta: the source's meta from :func:`read_image`; its frames, size and bit depth
            must match the reconstruction's.
        overwrite: replace existing files (else :class:`FileExistsError`, nothing written).

    Returns:
        The paths written.

    Raises:
        ValueError: the format cannot hold this reconstruction, or ``meta`` is not its source.
    """
    path = Path(path)
    arr = x.detach().cpu().float().numpy() if isinstance(x, Tensor) else np.asarray(x)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[1] not in (1, 3):
        raise ValueError(f"{path}: expected C×H×W or F×C×H×W with C = 1 or 3, got {arr.shape}")
    if not 1 <= bit_depth <= 16:
        raise ValueError(f"{path}: bit depth {bit_depth} is not 1..16")
    suffix = suffix_of(path)
    if suffix not in SUPPORTED_SUFFIXES:
        raise ValueError(
            f"{path}: cannot write {suffix or 'files without a suffix'}; "
            f"use one of {list(SUPPORTED_SUFFIXES)}"
        )
    if meta:
        arr = fit_to_source(arr, bit_depth, meta, path)
    if suffix in (".nii", ".nii.gz") and arr.shape[1] != 1:
        why = (
            f"the source {meta.get('source', '(meta)')} is RGB"
            if meta
            else "this reconstruction has 3 channels; give the grey source's meta "
            "(mvmic decompress --like SOURCE) to turn it grey"
        )
        raise ValueError(
            f"{path}: NIfTI holds grey frames only and {why}; or write .png, .tif or .npy"
        )
    codes = to_codes(arr, bit_depth)
    paths = output_paths(path, len(codes))
    with atomic_outputs(paths, overwrite) as tmps:
        if suffix in IMAGE_SUFFIXES:
            _write_raster(tmps, codes, suffix, path)
        elif suffix == ".npy":
            out = _npy_values(codes, bit_depth, meta)
            with open(tmps[0], "wb") as f:
                np.save(f, out)
        elif suffix in (".nii", ".nii.gz"):
            _write_nifti(tmps[0], codes, bit_depth, meta)  # grey: checked above
        else:
            _write_dicom(tmps[0], codes, bit_depth, meta, path)
    return paths


def fit_to_source(
    x: np.ndarray, bit_depth: int, meta: dict[str, Any], path: str | Path = "output"
) -> np.ndarray:
    """Give a reconstruction (F×C×H×W in [0, 1]) the channels of the source ``meta`` describes.

    A 3-channel decode of a grey source goes back to grey by BT.601 luma, as the encoder's
    conversion did on the way in; a grey decode of an RGB source is repeated to 3 channels.

    Raises:
        ValueError: the source's frames, size or bit depth differ from the reconstruction's
            (``meta`` is not this reconstruction's source), naming both.
    """
    shape = meta.get("shape")
    if shape is not None:
        f, c, h, w = shape
        if (x.shape[0], *x.shape[2:]) != (f, h, w):
            got = "×".join(map(str, (x.shape[0], *x.shape[2:])))
            raise ValueError(
                f"{path}: the reconstruction is {got} (frames×H×W) but the source "
                f"{meta.get('source', '(meta)')} is {f}×{h}×{w}: not its source"
            )
        if x.shape[1] != c:
            x = match_channels(torch.from_numpy(np.ascontiguousarray(x)), c).numpy()
    bits = meta.get("bit_depth")
    if bits is not None and bits != bit_depth:
        raise ValueError(
            f"{path}: the reconstruction is {bit_depth}-bit but the source "
            f"{meta.get('source', '(meta)')} is {bits}-bit: not its source"
        )
    return x


def _npy_values(codes: np.ndarray, bits: int, meta: dict[str, Any] | None) -> np.ndarray:
    if not meta:
        return codes[0] if codes.shape[0] == 1 else codes
    out = source_values(codes, bits, meta)
    layout = meta.get("npy_layout") or {2: "hw", 4: "fchw"}.get(len(meta.get("array_shape", ())))
    if meta.get("format") != "npy" or layout is None:
        return out[0] if out.shape[0] == 1 else out
    # Back to the source array's own layout, so that the copy can replace it.
    if layout == "hw":
        return out[0, 0]
    if layout == "chw":
        return out[0]
    if layout == "hwc":
        return out[0].transpose(1, 2, 0)
    if layout == "dhw":
        return out[:, 0]
    return out


def _write_raster(tmps: list[Path], codes: np.ndarray, suffix: str, path: Path) -> None:
    from PIL import Image

    deep = codes.dtype == np.uint16
    if suffix in (".jpg", ".jpeg", ".webp", ".bmp") and deep:
        raise ValueError(f"{path}: {suffix} holds 8 bits only; write a .png for 16-bit output")
    if deep and codes.shape[1] == 3:  # Pillow cannot write 48-bit RGB: OpenCV can
        import cv2

        if codes.shape[0] != 1 or suffix not in (".png", ".tif", ".tiff"):
            raise ValueError(f"{path}: 16-bit RGB is written as one .png or .tif per image")
        bgr = cv2.cvtColor(codes[0].transpose(1, 2, 0), cv2.COLOR_RGB2BGR)
        if not cv2.imwrite(str(tmps[0]), bgr):
            raise OSError(f"cannot write {path}: OpenCV failed")
        return
    images = [
        Image.fromarray(f[0] if f.shape[0] == 1 else np.ascontiguousarray(f.transpose(1, 2, 0)))
        for f in codes
    ]
    if len(images) > 1 and len(tmps) == 1:  # multi-page TIFF
        images[0].save(tmps[0], save_all=True, append_images=images[1:])
        return
    for img, p in zip(images, tmps, strict=True):
        img.save(p)


def _write_nifti(path: Path, codes: np.ndarray, bits: int, meta: dict[str, Any] | None) -> None:
    import nibabel as nib

    vol = frames_to_nifti(codes[:, 0])  # F×H×W → W×H×F: frame k is [:, :, k]
    meta = meta or {}
    values = source_values(vol, bits, meta) if meta else vol
    affine = np.array(meta["affine"]) if "affine" in meta else np.eye(4)
    nib.save(nib.Nifti1Image(values, affine), path)


def _write_dicom(
    tmp: Path, codes: np.ndarray, bits: int, meta: dict[str, Any] | None, path: Path
) -> None:
    import pydicom
    from pydicom.uid import generate_uid

    if not meta or meta.get("format") != "dicom":
        raise ValueError(f"{path}: a DICOM copy needs the meta of the source DICOM (read_image)")
    ds = pydicom.dcmread(meta["source"])
    samples = int(ds.get("SamplesPerPixel", 1))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    want = (frames, samples, int(ds.Rows), int(ds.Columns))
    if codes.shape != want:  # the header and the pixels must agree, or the file is malformed
        raise ValueError(
            f"{path}: the reconstruction is {'×'.join(map(str, codes.shape))} (F×C×H×W) but "
            f"{meta['source']} holds {'×'.join(map(str, want))}: not its source"
        )
    stored = source_values(codes, bits, meta)  # F×C×H×W in the source dtype
    stored = stored[:, 0] if samples == 1 else stored.transpose(0, 2, 3, 1)
    if frames == 1:
        stored = stored[0]
    # pydicom decodes YBR colour to RGB, so colour pixels are RGB whatever the source said.
    photometric = meta["photometric"] if samples == 1 else "RGB"
    ds.set_pixel_data(stored, photometric, int(meta["bits_stored"]))
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.LossyImageCompression = "01"
    ds.DerivationDescription = "mvmic learned lossy compression"
    ds.save_as(tmp)

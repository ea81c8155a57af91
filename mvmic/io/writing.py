"""The writer: a reconstruction in [0, 1] back to PNG/TIFF/JPEG, ``.npy``, NIfTI or DICOM.

With the reader's ``meta`` the output takes the source's channels, values, layout and header.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mvmic.io.files import atomic_outputs, output_paths
from mvmic.io.formats import (
    IMAGE_SUFFIXES,
    SUPPORTED_SUFFIXES,
    frames_to_nifti,
    match_channels,
    source_values,
    suffix_of,
    to_codes,
)


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

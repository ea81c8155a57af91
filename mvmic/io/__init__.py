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

The package: :mod:`~mvmic.io.formats` (suffixes, code ↔ value maps, channels, the NIfTI axis
order), :mod:`~mvmic.io.reading` (:func:`read_image`), :mod:`~mvmic.io.writing`
(:func:`write_image`) and :mod:`~mvmic.io.files` (atomic output files). Import from
``mvmic.io``.
"""

from __future__ import annotations

from mvmic.io.files import atomic_outputs, check_writable, output_paths
from mvmic.io.formats import (
    DICOM_SUFFIXES,
    IMAGE_SUFFIXES,
    LUMA,
    NPY_LAYOUTS,
    SUPPORTED_SUFFIXES,
    ImageReadError,
    frames_to_nifti,
    is_supported,
    match_channels,
    nifti_to_frames,
    source_values,
    suffix_of,
    to_codes,
)
from mvmic.io.reading import npy_layout_note, read_image
from mvmic.io.writing import fit_to_source, write_image

__all__ = [
    "DICOM_SUFFIXES",
    "IMAGE_SUFFIXES",
    "LUMA",
    "NPY_LAYOUTS",
    "SUPPORTED_SUFFIXES",
    "ImageReadError",
    "atomic_outputs",
    "check_writable",
    "fit_to_source",
    "frames_to_nifti",
    "is_supported",
    "match_channels",
    "nifti_to_frames",
    "npy_layout_note",
    "output_paths",
    "read_image",
    "source_values",
    "suffix_of",
    "to_codes",
    "write_image",
]

"""A returned mask as a DICOM Segmentation (highdicom) that references its source image.

The client keeps the DICOM it compressed; the server only ever saw the bitstream (shape and
bit depth, no patient data). This module turns the server's class-index mask into a SEG
instance in the source's study, beside the scan, so a PACS can store and show it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mvmic.io import atomic_outputs

#: series number of the SEG series (any positive number; DICOM does not require uniqueness)
SERIES_NUMBER = 9901
#: private coding scheme for the model's class names (DICOM private schemes start with "99")
SCHEME = "99MVMIC"


def write_segmentation(
    path: str | Path,
    source: str | Path,
    mask: np.ndarray,
    class_names: list[str],
    *,
    algorithm: str = "mvmic",
    parameters: dict[str, str] | None = None,
    overwrite: bool = True,
) -> list[Path]:
    """Write ``mask`` (N×H×W class indices, 0 = background) as a binary DICOM SEG.

    Args:
        path: the ``.dcm`` file to write (through a temporary name, then renamed).
        source: the DICOM file the mask was computed from; the SEG references it and takes
            its patient, study and frame of reference.
        mask: one frame per source frame, the source's rows and columns.
        class_names: the model's classes, background first; class ``k`` is segment ``k``.
        algorithm: the algorithm name recorded in the SEG.
        parameters: recorded with the algorithm (e.g. the codec and weights hash).
        overwrite: replace an existing file (else :class:`FileExistsError`).

    Returns:
        ``[path]``.

    Raises:
        ValueError: the mask does not fit the source, or the source cannot carry a SEG.
    """
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    import mvmic

    path, source = Path(path), Path(source)
    ds = pydicom.dcmread(source)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    expected = (frames, int(ds.Rows), int(ds.Columns))
    if mask.ndim == 2:
        mask = mask[None]
    if tuple(mask.shape) != expected:
        raise ValueError(
            f"{path}: mask of {'x'.join(map(str, mask.shape))} does not fit {source} "
            f"({'x'.join(map(str, expected))} frames x rows x columns)"
        )
    if int(mask.max(initial=0)) >= len(class_names):
        raise ValueError(f"{path}: mask holds class {int(mask.max())}, the model names only "
                         f"{len(class_names)}")  # fmt: skip
    family = codes.DCM.ArtificialIntelligence
    ident = hd.AlgorithmIdentificationSequence(
        name=algorithm[:64], family=family, version=mvmic.__version__, parameters=parameters
    )
    segments = [
        hd.seg.SegmentDescription(
            segment_number=k,
            segment_label=name[:64],
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=hd.sr.CodedConcept(
                value=f"class{k}"[:16], scheme_designator=SCHEME, meaning=name[:64]
            ),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=ident,
        )
        for k, name in enumerate(class_names)
        if k > 0
    ]
    try:
        seg = hd.seg.Segmentation(
            source_images=[ds],
            pixel_array=mask[0] if frames == 1 else mask,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=segments,
            series_instance_uid=hd.UID(),
            series_number=SERIES_NUMBER,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="mvmic",
            manufacturer_model_name=algorithm[:64],
            software_versions=mvmic.__version__,
            device_serial_number="0",
            series_description="mvmic segmentation",
            omit_empty_frames=False,
        )
    except (ValueError, TypeError, AttributeError, KeyError) as err:
        raise ValueError(
            f"{path}: cannot make a DICOM Segmentation of {source} ({err}); write the mask "
            "as .png or .nii.gz instead"
        ) from None
    with atomic_outputs([path], overwrite) as (tmp,):
        seg.save_as(tmp)
    return [path]

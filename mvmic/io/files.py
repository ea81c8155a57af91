"""Safe output files: the paths a multi-frame write creates, and writing through temporaries.

Every writer of mvmic (images, masks, boxes, DICOM SEG) goes through :func:`atomic_outputs`, so
a failure never leaves a half-written file and ``overwrite=False`` never replaces one.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mvmic.io.formats import IMAGE_SUFFIXES, suffix_of


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

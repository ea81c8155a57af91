"""Plain folders of images (or volumes) for ``mvmic predict --data.predict_root DIR``.

Files are read with :func:`mvmic.io.read_image`, so every format ``mvmic compress`` takes is
accepted and bit depths are exact (a 16-bit PNG is coded as 16-bit). Each sample is prepared as
the data module's test split is: the model's channel count, the working size, and for volumes
the same intensity scaling. No labels are needed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from data_modules.reading import UnreadableFileError, read_image_2d
from mvmic.io import SUPPORTED_SUFFIXES, ImageReadError, read_image, suffix_of

VOLUME_SUFFIXES = (".nii", ".nii.gz")


def _name(path: Path, root: Path) -> str:
    """The path below ``root`` without its suffix (``sub/scan`` for ``sub/scan.nii.gz``)."""
    rel = path.relative_to(root).as_posix()
    return rel[: len(rel) - len(suffix_of(path))]


class ImageFolderDataset(Dataset):
    """Every supported file below ``root`` (recursively; hidden files skipped), sorted.

    Samples are ``{"image", "name", "path", "bit_depth"}`` (+ ``"affine"`` for volumes):
    ``image`` C×H×W (2D) or 1×D×H×W (volumes, axes z, y, x as HVSMR volumes are read) in
    [0, 1], ``name`` the relative path without suffix, which names the prediction file.

    Args:
        root: the folder.
        in_channels: the model's channels (RGB → grey by BT.601 luma, grey → RGB by repeat,
            as ``mvmic compress`` converts).
        size: resize 2D images to (H, W), as the test transform does (None: keep their size).
        volumes: read 3D NIfTI volumes (``.nii``/``.nii.gz``) instead of 2D images.
        normalize: for volumes, the intensity scaling of the data module (D×H×W → [0, 1]).
        window: for 2D images, the data module's ``window`` (see
            :func:`data_modules.reading.read_image_2d`).

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: no file to predict on, or two files that would write the same output.
            Reading a sample raises ``UnreadableFileError`` (a ValueError) naming the file.
    """

    def __init__(
        self,
        root: str | Path,
        in_channels: int,
        size: tuple[int, int] | None = None,
        volumes: bool = False,
        normalize: Callable[[np.ndarray], np.ndarray] | None = None,
        window: tuple[float, float] | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"data.predict_root {self.root} is not a folder; point it at a folder of images"
            )
        suffixes = VOLUME_SUFFIXES if volumes else SUPPORTED_SUFFIXES
        self.files = sorted(
            p
            for p in self.root.rglob("*")
            if p.is_file()
            and suffix_of(p) in suffixes
            and not any(part.startswith(".") for part in p.relative_to(self.root).parts)
        )
        if not self.files:
            raise ValueError(
                f"data.predict_root {self.root} holds no {'volumes' if volumes else 'images'} "
                f"(looked for {', '.join(suffixes)}, recursively)"
            )
        self.names = [_name(p, self.root) for p in self.files]
        seen: dict[str, Path] = {}
        for name, path in zip(self.names, self.files):
            if name in seen:
                raise ValueError(
                    f"data.predict_root: {seen[name]} and {path} would both write the "
                    f"prediction {name}; rename or move one of them"
                )
            seen[name] = path
        self.in_channels, self.size = in_channels, size
        self.volumes, self.normalize, self.window = volumes, normalize, window

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, Any]:
        path, name = self.files[i], self.names[i]
        if self.volumes:
            try:
                x, bits, meta = read_image(path)
            except ImageReadError as err:
                raise UnreadableFileError(path, str(err).removeprefix(f"{path}: ")) from None
            item: dict[str, Any] = {"name": name, "path": str(path.absolute()), "bit_depth": bits}
            vol = x[:, 0] if x.ndim == 4 else x  # (z, y, x), as HVSMR volumes
            if self.normalize is not None:
                vol = self.normalize(vol)
            item["image"] = torch.from_numpy(np.ascontiguousarray(vol, dtype=np.float32))[None]
            item["affine"] = torch.tensor(
                meta.get("affine", np.eye(4).tolist()), dtype=torch.float64
            )
            return item
        hwc, bits = read_image_2d(path, self.in_channels, self.window)
        if self.size is not None and hwc.shape[:2] != tuple(self.size):
            # The test transform's resize (albumentations), on floats: no 8-bit rounding.
            hwc = A.Resize(*self.size)(image=hwc)["image"].reshape(*self.size, -1)
        image = torch.from_numpy(np.ascontiguousarray(hwc, dtype=np.float32)).permute(2, 0, 1)
        return {
            "image": image.contiguous(),
            "name": name,
            "path": str(path.absolute()),
            "bit_depth": bits,
        }


def folder_loader(dataset: ImageFolderDataset, batch_size: int, num_workers: int = 0) -> DataLoader:
    """An in-order loader over a plain folder; one image per batch when sizes may differ."""
    same_size = dataset.size is not None and not dataset.volumes
    return DataLoader(
        dataset,
        batch_size=batch_size if same_size else 1,
        shuffle=False,
        num_workers=num_workers,
    )

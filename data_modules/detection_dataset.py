"""The detection dataset behind :class:`data_modules.chestxdet.ChestXDetDataModule`: one
record per image (boxes, labels, polygons or RLE masks), read, resized and cropped with its
boxes and instance masks, and the batch collate."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import torch
from pycocotools import mask as mask_utils
from torch.utils.data import Dataset

from data_modules.augment import apply_seeded
from data_modules.crops import train_ops
from data_modules.reading import read_image_2d


@dataclass
class DetRecord:
    """One image and its objects in original pixel coordinates."""

    path: Path
    name: str
    width: int
    height: int
    boxes: np.ndarray  # N×4 float32 xyxy
    labels: np.ndarray  # N int64, 1-based
    # Per object: a list of polygons (each K×2 float) or a COCO RLE dict; None when absent.
    segms: list[Any] | None = field(default=None)


class ChestXDetDataset(Dataset):
    """Images resized to ``image_size`` with boxes (and instance masks) transformed alike;
    with ``crop`` (training), a random crop of that size is then cut from the resized image:
    boxes are clipped to it and a box with less than 30 % of its area inside is dropped, its
    mask with it.

    Pixels are read through :mod:`mvmic.io` (8/16-bit PNG/TIFF, JPEG, DICOM), scaled to [0, 1]
    by each file's own bit depth (``bit_depth`` in the sample) or mapped through ``window``.
    """

    def __init__(
        self,
        records: list[DetRecord],
        image_size: tuple[int, int],
        in_channels: int,
        with_masks: bool,
        augment: bool,
        window: tuple[float, float] | None = None,
        crop: tuple[int, int] | None = None,
    ) -> None:
        self.records = records
        self.window = window
        self.in_channels = in_channels
        self.with_masks = with_masks
        # Random ops (augmentation, crops) are seeded from torch's RNG, see data_modules.augment.
        self.augment = augment or crop is not None
        ops = train_ops(image_size, crop, train=crop is not None)
        if augment:
            ops += [
                A.HorizontalFlip(p=0.5),
                A.Affine(
                    scale=(0.95, 1.05), translate_percent=(-0.03, 0.03), rotate=(-5, 5), p=0.5
                ),
                A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.5),
            ]
        # "idx" follows each surviving box so its instance mask can be kept with it.
        self.transform = A.Compose(
            ops,
            bbox_params=A.BboxParams(
                format="pascal_voc", label_fields=["labels", "idx"], min_visibility=0.3, clip=True
            ),
        )

    def __len__(self) -> int:
        return len(self.records)

    def _masks(self, rec: DetRecord) -> np.ndarray:
        out = np.zeros((len(rec.labels), rec.height, rec.width), dtype=np.uint8)
        for i, segm in enumerate(rec.segms or []):
            if isinstance(segm, dict):  # COCO RLE
                rle = segm
                if isinstance(rle.get("counts"), list):
                    rle = mask_utils.frPyObjects(rle, rec.height, rec.width)
            else:
                flat = [np.asarray(p, dtype=np.float64).ravel().tolist() for p in segm]
                rle = mask_utils.merge(mask_utils.frPyObjects(flat, rec.height, rec.width))
            out[i] = mask_utils.decode(rle)
        return out

    def __getitem__(self, index: int) -> dict[str, Any]:
        rec = self.records[index]
        image, bits = read_image_2d(rec.path, self.in_channels, self.window)
        if image.shape[:2] != (rec.height, rec.width):
            raise ValueError(
                f"{rec.path}: image is {image.shape[1]}x{image.shape[0]} but its annotation "
                f"says {rec.width}x{rec.height}"
            )
        kw: dict[str, Any] = {
            "image": image,
            "bboxes": rec.boxes.reshape(-1, 4),
            "labels": rec.labels.tolist(),
            "idx": list(range(len(rec.labels))),
        }
        if self.with_masks and len(rec.labels):
            kw["masks"] = list(self._masks(rec))
        out = apply_seeded(self.transform, **kw) if self.augment else self.transform(**kw)
        # float32 H×W×C in [0, 1] through albumentations (resize, flips, brightness clip)
        img = torch.from_numpy(np.array(out["image"], dtype=np.float32)).permute(2, 0, 1)
        h, w = img.shape[-2:]
        boxes = torch.as_tensor(np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4))
        labels = torch.as_tensor(np.asarray(out["labels"], dtype=np.int64).reshape(-1))
        idx = np.asarray(out["idx"], dtype=np.int64).reshape(-1)
        # Resizing can squash a thin box below a pixel; torchvision rejects empty boxes.
        keep = ((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)
        target: dict[str, torch.Tensor] = {"boxes": boxes[keep], "labels": labels[keep]}
        if self.with_masks:
            if len(idx):
                masks = np.stack([np.asarray(m) for m in out["masks"]])[idx]
                target["masks"] = torch.as_tensor(masks, dtype=torch.uint8)[keep]
            else:
                target["masks"] = torch.zeros((0, h, w), dtype=torch.uint8)
        return {"image": img, "target": target, "name": rec.name, "bit_depth": bits}


def collate_detection(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack images (all the same size) and bit depths, keep targets and names as lists."""
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "target": [s["target"] for s in samples],
        "name": [s["name"] for s in samples],
        "bit_depth": torch.tensor([s["bit_depth"] for s in samples]),
    }

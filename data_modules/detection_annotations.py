"""Reading ChestX-Det, ChestX-Det10 and COCO-json annotations into :class:`DetRecord` lists:
the layouts, the image look-up inside the dataset folder, and the checks on every object.

:class:`DetectionAnnotations` is the annotation side of ``ChestXDetDataModule``; it reads the
module's ``root``, ``layout``, ``classes``, ``with_masks``, ``invalid_boxes`` and
``on_bad_image``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from data_modules.base import image_size as read_image_size
from data_modules.detection_dataset import DetRecord

CHESTXDET_CLASSES = (
    "Atelectasis", "Calcification", "Cardiomegaly", "Consolidation", "Diffuse Nodule",
    "Effusion", "Emphysema", "Fibrosis", "Fracture", "Mass", "Nodule", "Pleural Thickening",
    "Pneumothorax",
)  # fmt: skip
CHESTXDET10_CLASSES = (
    "Atelectasis", "Calcification", "Consolidation", "Effusion", "Emphysema", "Fibrosis",
    "Fracture", "Mass", "Nodule", "Pneumothorax",
)  # fmt: skip

SYNTH_HINT = "create a synthetic twin with `mvmic synth chestxdet --out {root}`"


def load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None


def detect_layout(data: Any, path: Path) -> str:
    """'chestxdet' (list with polygons), 'chestxdet10' (list, no polygons) or 'coco'."""
    if isinstance(data, dict) and {"images", "annotations", "categories"} <= data.keys():
        return "coco"
    if isinstance(data, list) and all(
        isinstance(e, dict) and {"file_name", "syms", "boxes"} <= e.keys() for e in data
    ):
        if path.name.startswith("ChestX_Det_") or any("polygons" in e for e in data):
            return "chestxdet"
        return "chestxdet10"
    raise ValueError(
        f"{path} is in no accepted layout: expected a ChestX-Det list of "
        '{"file_name", "syms", "boxes"[, "polygons"]} entries or a COCO dict with '
        '"images", "annotations" and "categories"'
    )


class DetectionAnnotations:
    """Parses a split's annotation file into records (a mixin of the detection data module)."""

    def _image_path(self, split: str, file_name: str, json_path: Path) -> Path:
        dirs = [
            self.root, self.root / split, self.root / "images", self.root / f"{split}_data",
            self.root / f"{split}_data" / split, self.root / "images" / split,
        ]  # fmt: skip
        # An annotation names a file inside the dataset, never a path out of it.
        if Path(file_name).is_absolute() or ".." in Path(file_name).parts:
            raise ValueError(
                f"{json_path}: image {file_name!r} points outside the dataset folder "
                f"{self.root}; file names must be relative paths inside it"
            )
        for d in dirs:
            if (d / file_name).is_file():
                return d / file_name
        raise FileNotFoundError(
            f"image {file_name!r} listed in {json_path} not found in any of "
            f"{', '.join(str(d) for d in dirs)}"
        )

    # ---------------------------------------------------------------- parsing + validation
    def _record(
        self, path: Path, name: str, width: int, height: int, boxes: list, labels: list,
        segms: list,
    ) -> DetRecord:  # fmt: skip
        """One image's record from the objects that passed the checks."""
        return DetRecord(
            path=path, name=Path(name).stem, width=width, height=height,
            boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
            labels=np.asarray(labels, dtype=np.int64),
            segms=segms if self.with_masks else None,
        )  # fmt: skip

    def _check_object(
        self, rec_name: str, box: list[float], polys: Any, width: int, height: int
    ) -> str | None:
        """Why an object is invalid (None when fine)."""
        if len(box) != 4:
            return f"box {box} does not have 4 numbers [x1, y1, x2, y2]"
        x1, y1, x2, y2 = box
        if x2 <= x1 or y2 <= y1:
            return f"box {box} has zero area"
        if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
            return f"box {box} lies outside the {width}x{height} image"
        if isinstance(polys, list):
            for poly in polys:
                if len(poly) < 3:
                    return f"polygon {poly} has {len(poly)} points (needs at least 3)"
        return None

    def _invalid(self, msg: str) -> None:
        if self.invalid_boxes == "fail":
            raise ValueError(
                f"{msg}; fix the annotation or set data.invalid_boxes drop to skip such objects"
            )
        warnings.warn(f"dropping object: {msg}", stacklevel=3)

    def _parse(self, split: str, path: Path, data: Any) -> list[DetRecord]:
        layout = detect_layout(data, path)
        if layout != self.layout:
            raise ValueError(f"{path} is {layout} but {self.train_json} is {self.layout}")
        if layout == "coco":
            return self._parse_coco(split, path, data)
        index = {c: i + 1 for i, c in enumerate(self.classes)}

        def entry(ke: tuple[int, dict[str, Any]]) -> DetRecord:
            k, e = ke
            name = e["file_name"]
            syms, boxes = e["syms"], e["boxes"]
            polys = e.get("polygons") if self.with_masks or layout == "chestxdet" else None
            if self.with_masks and polys is None:
                raise ValueError(
                    f"{path} entry {k} ({name}) has no 'polygons'; Mask R-CNN needs one per "
                    "finding (or set data.with_masks false)"
                )
            if len(syms) != len(boxes) or (polys is not None and len(polys) != len(syms)):
                raise ValueError(
                    f"{path} entry {k} ({name}): {len(syms)} syms, {len(boxes)} boxes"
                    + (f", {len(polys)} polygons" if polys is not None else "")
                    + " — each finding needs one of each"
                )
            img_path = self._image_path(split, name, path)
            width, height = read_image_size(img_path, decode=self.on_bad_image == "skip")
            keep_boxes, keep_labels, keep_segms = [], [], []
            for j, (sym, box) in enumerate(zip(syms, boxes)):
                if sym not in index:
                    raise ValueError(
                        f"{path} entry {k} ({name}): unknown class {sym!r} in syms; "
                        f"{self.layout} classes are {list(self.classes)}"
                    )
                poly = [polys[j]] if polys is not None else None
                why = self._check_object(name, box, poly, width, height)
                if why:
                    self._invalid(f"{path} entry {k} ({name}): {why}")
                    continue
                keep_boxes.append(box)
                keep_labels.append(index[sym])
                if poly is not None:
                    keep_segms.append(poly)
            return self._record(img_path, name, width, height, keep_boxes, keep_labels, keep_segms)

        return self.read_all(list(enumerate(data)), entry, f"{self.layout} {split}")

    def _parse_coco(self, split: str, path: Path, data: dict[str, Any]) -> list[DetRecord]:
        anns: dict[int, list[dict[str, Any]]] = {}
        for a in data["annotations"]:
            anns.setdefault(a["image_id"], []).append(a)

        def entry(img: dict[str, Any]) -> DetRecord:
            name = img["file_name"]
            img_path = self._image_path(split, name, path)
            # Opened even when the json gives the size: an unreadable file is found here.
            size = read_image_size(img_path, decode=self.on_bad_image == "skip")
            width, height = img.get("width") or size[0], img.get("height") or size[1]
            boxes, labels, segms = [], [], []
            for a in anns.get(img["id"], []):
                if a.get("iscrowd", 0):
                    continue
                if a["category_id"] not in self._cat_to_label:
                    raise ValueError(
                        f"{path}: annotation {a.get('id')} ({name}) has category_id "
                        f"{a['category_id']}, not in categories {sorted(self._cat_to_label)}"
                    )
                x, y, w, h = a["bbox"]
                box = [x, y, x + w, y + h]
                seg = a.get("segmentation")
                if self.with_masks and not seg:
                    raise ValueError(
                        f"{path}: annotation {a.get('id')} ({name}) has no segmentation; "
                        "Mask R-CNN needs one per object (or set data.with_masks false)"
                    )
                polys = None
                if isinstance(seg, list):
                    polys = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in seg]
                why = self._check_object(name, box, polys, width, height)
                if why:
                    self._invalid(f"{path} annotation {a.get('id')} ({name}): {why}")
                    continue
                boxes.append(box)
                labels.append(self._cat_to_label[a["category_id"]])
                segms.append(polys if polys is not None else seg)
            return self._record(img_path, name, width, height, boxes, labels, segms)

        return self.read_all(data["images"], entry, f"coco {split}")

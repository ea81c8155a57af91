"""ChestX-Det / ChestX-Det10 / COCO-json detection data for Faster R-CNN and Mask R-CNN.

Accepted layouts under ``root`` (split files are found automatically):

- **ChestX-Det**: ``ChestX_Det_train.json`` / ``ChestX_Det_test.json``, each a list of
  ``{"file_name", "syms", "boxes": [[x1, y1, x2, y2], …], "polygons": [[[x, y], …], …]}``,
  13 classes.
- **ChestX-Det10**: ``train.json`` / ``test.json`` in the same list form without polygons,
  10 classes.
- **COCO**: ``train.json`` / ``test.json`` (or ``annotations/instances_{train,test,val}.json``)
  holding ``{"images", "annotations", "categories"}``; classes come from ``categories``.

Images are looked up in ``root/``, ``root/<split>/``, ``root/images/``, ``root/<split>_data/``
and ``root/<split>_data/<split>/``. Entries with empty ``syms`` are normal images and stay in
the set. The validation split is carved from train with a seed and saved as JSON next to the
run, so it can be reused.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import albumentations as A
import lightning as L
import numpy as np
import torch
from pycocotools import mask as mask_utils
from torch.utils.data import DataLoader, Dataset

from data_modules.augment import apply_seeded
from data_modules.base import BadFilePolicy, check_on_bad_image, train_loader
from data_modules.base import image_size as read_image_size
from data_modules.reading import check_window, read_image_2d
from mvmic import validation as check

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
    """Images resized to ``image_size`` with boxes (and instance masks) transformed alike.

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
    ) -> None:
        self.records = records
        self.window = window
        self.in_channels = in_channels
        self.with_masks = with_masks
        self.augment = augment  # seeded from torch's RNG, as data_modules.augment explains
        h, w = image_size
        ops: list[A.BasicTransform] = [A.Resize(h, w)]
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


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None


def _detect_layout(data: Any, path: Path) -> str:
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


class ChestXDetDataModule(BadFilePolicy, L.LightningDataModule):
    """ChestX-Det (13 classes), ChestX-Det10 (10 classes) or COCO-json detection data.

    Batches: ``image`` B×C×H×W floats in [0, 1], ``target`` a list of B dicts with ``boxes``
    (N×4 xyxy pixels of the resized image), ``labels`` (1-based) and, with ``with_masks``,
    ``masks`` (N×H×W uint8), and ``name`` (file stems).

    Args:
        root: dataset folder in one of the accepted layouts (see the module docstring).
        train_json, test_json: split files relative to ``root`` (found automatically if None).
        image_size: side (or ``(h, w)``) images are resized to.
        in_channels: 1 keeps grey films grey; 3 converts to RGB (as ``mvmic compress`` does).
        batch_size: images per batch.
        num_workers: DataLoader workers.
        val_fraction: share of the train split held out (seeded) for validation.
        seed: seed of the validation split.
        invalid_boxes: "fail" raises on a box outside the image or with zero area (or a
            polygon with fewer than 3 points); "drop" drops that object with a warning.
        with_masks: build instance masks from polygons (Mask R-CNN).
        augment: flip / small affine / brightness-contrast on train.
        split_file: JSON of the validation split; read if it exists, else written there.
            Default: ``<trainer.log_dir>/chestxdet_split.json`` when a trainer is attached.
        on_bad_image: ``"error"`` (default): an unreadable image stops with its file name
            (headers are read at setup, pixels when loaded); ``"skip"``: every image is decoded
            at setup and unreadable ones are left out, each named in a warning and counted in
            ``skipped``. The validation split is drawn as if they were there.
        window: ``[lo, hi]`` mapped to [0, 1] (stored values, or HU for a DICOM with a
            rescale); default None: each film scaled by its own full bit depth.
        predict_root: a folder of plain films for ``mvmic predict`` (read with
            ``mvmic.io.read_image``, resized as the test split); default: the test split.
    """

    dataset_name = "chestxdet"

    def __init__(
        self,
        root: str | Path = "data/ChestX-Det",
        train_json: str | None = None,
        test_json: str | None = None,
        image_size: int | tuple[int, int] = 256,
        in_channels: int = 1,
        batch_size: int = 4,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        seed: int = 0,
        invalid_boxes: Literal["fail", "drop"] = "fail",
        with_masks: bool = False,
        augment: bool = True,
        split_file: str | None = None,
        on_bad_image: str = "error",
        window: list[float] | None = None,
        predict_root: str | None = None,
    ) -> None:
        check.file_under("--data.train_json", root, train_json)
        check.file_under("--data.test_json", root, test_json)
        check.sizes("--data.image_size", image_size, length=2)
        check.channels("--data.in_channels", in_channels)
        check.loader(batch_size=batch_size, num_workers=num_workers)
        check.fraction("--data.val_fraction", val_fraction, zero=False)
        check.one_of("--data.invalid_boxes", invalid_boxes, ("fail", "drop"))
        check.file_to_write("--data.split_file", split_file)
        super().__init__()
        # Records take data_root from here (mvmic latency measures PNG/JPEG uploads from it).
        self.save_hyperparameters()
        self.hparams["root"] = str(root)  # plain values only: checkpoints load weights_only
        self.on_bad_image = check_on_bad_image(on_bad_image)
        self.root = Path(root)
        if invalid_boxes not in ("fail", "drop"):
            raise ValueError(f"invalid_boxes must be 'fail' or 'drop', got {invalid_boxes!r}")
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        self.image_size = (
            (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        )
        self.in_channels = in_channels
        self.window = check_window(window)
        self.predict_root = predict_root
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_fraction = val_fraction
        self.seed = seed
        self.invalid_boxes = invalid_boxes
        self.with_masks = with_masks
        self.augment = augment
        self.split_file = split_file
        self._given_json = (train_json, test_json)
        self._discovered = False
        self.train_set: ChestXDetDataset | None = None
        self.val_set: ChestXDetDataset | None = None
        self.test_set: ChestXDetDataset | None = None
        self.split: dict[str, list[str]] | None = None

    # ---------------------------------------------------------------- layout discovery
    def _discover(self) -> None:
        """Find the split files and the layout (at first use: the CLI builds the data module
        before it can print a clean error, and a missing root must give one)."""
        if self._discovered:
            return
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"ChestX-Det root {self.root} does not exist; point data.root at the dataset "
                f"or {SYNTH_HINT.format(root=self.root)}"
            )
        train_json, test_json = self._given_json
        self._train_json = self._find_json("train", train_json)
        self._test_json = self._find_json("test", test_json, required=False)
        self._train_data = _load_json(self._train_json)
        self._layout = _detect_layout(self._train_data, self._train_json)
        if self._layout == "coco":
            cats = sorted(self._train_data["categories"], key=lambda c: c["id"])
            self._classes = tuple(c["name"] for c in cats)
            self._cat_to_label = {c["id"]: i + 1 for i, c in enumerate(cats)}
        else:
            self._classes = (
                CHESTXDET_CLASSES if self._layout == "chestxdet" else CHESTXDET10_CLASSES
            )
        if self.with_masks and self._layout == "chestxdet10":
            raise ValueError(
                f"{self._train_json} is ChestX-Det10 (boxes only, no polygons); masks for Mask "
                "R-CNN need ChestX-Det polygons or COCO segmentations: set data.with_masks false"
            )
        self._discovered = True

    @property
    def layout(self) -> str:
        """``"chestxdet"``, ``"chestxdet10"`` or ``"coco"``."""
        self._discover()
        return self._layout

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names; label ``i`` (1-based) is ``classes[i - 1]``."""
        self._discover()
        return self._classes

    @property
    def num_classes(self) -> int:
        """Classes including background (ChestX-Det 14, ChestX-Det10 11)."""
        return len(self.classes) + 1

    @property
    def train_json(self) -> Path:
        self._discover()
        return self._train_json

    @property
    def test_json(self) -> Path | None:
        self._discover()
        return self._test_json

    def _find_json(self, split: str, given: str | None, required: bool = True) -> Path | None:
        if given is not None:
            path = self.root / given
            if not path.is_file():
                raise FileNotFoundError(f"{split} annotation file {path} does not exist")
            return path
        names = [f"ChestX_Det_{split}.json", f"{split}.json", f"annotations/instances_{split}.json"]
        if split == "test":
            names += ["val.json", "annotations/instances_val.json"]
        for name in names:
            if (self.root / name).is_file():
                return self.root / name
        if not required:
            return None
        raise FileNotFoundError(
            f"no {split} annotations in {self.root}: looked for {', '.join(names)}; is root a "
            f"ChestX-Det / ChestX-Det10 / COCO folder? To try the pipeline, "
            f"{SYNTH_HINT.format(root=self.root)}"
        )

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
        layout = _detect_layout(data, path)
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
            return DetRecord(
                    path=img_path, name=Path(name).stem, width=width, height=height,
                    boxes=np.asarray(keep_boxes, dtype=np.float32).reshape(-1, 4),
                    labels=np.asarray(keep_labels, dtype=np.int64),
                    segms=keep_segms if self.with_masks else None,
            )  # fmt: skip

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
            return DetRecord(
                    path=img_path, name=Path(name).stem, width=width, height=height,
                    boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                    labels=np.asarray(labels, dtype=np.int64),
                    segms=segms if self.with_masks else None,
            )  # fmt: skip

        return self.read_all(data["images"], entry, f"coco {split}")

    # ---------------------------------------------------------------- splits
    def _split_path(self) -> Path | None:
        if self.split_file:
            return Path(self.split_file)
        trainer = getattr(self, "trainer", None)
        log_dir = getattr(trainer, "log_dir", None) if trainer is not None else None
        return Path(log_dir) / "chestxdet_split.json" if log_dir else None

    def _make_split(
        self, records: list[DetRecord], skipped: frozenset[str] = frozenset()
    ) -> dict[str, list[str]]:
        """The seeded train/val split, drawn (or checked) over the records and the ``skipped``
        names alike, so an unreadable image moves no other between train and val; the
        skipped names are then left out."""
        names = sorted({r.name for r in records} | skipped)
        path = self._split_path()
        if path is not None and path.is_file():
            split = _load_json(path)
            missing = set(split.get("val", [])) - set(names)
            if not {"train", "val"} <= split.keys() or missing:
                raise ValueError(
                    f"split file {path} does not match {self.train_json} "
                    f"(needs 'train' and 'val' lists of its images; unknown: {sorted(missing)[:5]})"
                )
            return {k: [n for n in split[k] if n not in skipped] for k in ("train", "val")}
        rng = np.random.default_rng(self.seed)
        n_val = max(1, round(len(names) * self.val_fraction)) if len(names) > 1 else 0
        val = set(rng.permutation(names)[:n_val].tolist())
        split = {"train": [n for n in names if n not in val], "val": sorted(val)}
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(
                json.dumps({"seed": self.seed, "source": str(self.train_json), **split})
            )
        return {k: [n for n in split[k] if n not in skipped] for k in ("train", "val")}

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict" and self.predict_root:
            return  # predict_dataloader reads the plain folder
        self._discover()
        if stage in (None, "fit", "validate") and self.train_set is None:
            before = self.skipped
            records = self._parse("train", self.train_json, self._train_data)
            if not records:
                raise ValueError(f"{self.train_json} lists no images")
            skipped = frozenset(p.stem for p in self.skipped_files[before:])
            self.split = self._make_split(records, skipped)
            by_name = {r.name: r for r in records}
            mk = lambda names, aug: ChestXDetDataset(  # noqa: E731
                [by_name[n] for n in names], self.image_size, self.in_channels,
                self.with_masks, aug, self.window,
            )  # fmt: skip
            self.train_set = mk(self.split["train"], self.augment)
            self.val_set = mk(self.split["val"], False)
        if stage in (None, "test", "predict") and self.test_set is None:
            if self.test_json is None:
                raise FileNotFoundError(
                    f"no test annotations in {self.root} (ChestX_Det_test.json, test.json, "
                    "val.json or annotations/instances_{test,val}.json); set data.test_json"
                )
            records = self._parse("test", self.test_json, _load_json(self.test_json))
            self.test_set = ChestXDetDataset(
                records, self.image_size, self.in_channels, self.with_masks, False, self.window
            )

    def _loader(self, ds: Dataset | None, shuffle: bool) -> DataLoader:
        assert ds is not None, "call setup() first"
        if shuffle:  # resumable mid-epoch, see data_modules.base.ResumableDataLoader
            return train_loader(ds, self.batch_size, self.num_workers, collate_fn=collate_detection)
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=collate_detection,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        if self.predict_root:
            from data_modules.predict import ImageFolderDataset, folder_loader

            ds = ImageFolderDataset(
                self.predict_root, self.in_channels, self.image_size, window=self.window
            )
            return folder_loader(ds, self.batch_size, self.num_workers)
        return self._loader(self.test_set, shuffle=False)

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
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, Dataset

from data_modules.base import BadFilePolicy, ChannelPolicy, check_on_bad_image, train_loader
from data_modules.crops import check_crop, pair_size
from data_modules.detection_annotations import (
    CHESTXDET10_CLASSES,
    CHESTXDET_CLASSES,
    SYNTH_HINT,
    DetectionAnnotations,
    detect_layout,
    load_json,
)
from data_modules.detection_dataset import ChestXDetDataset, DetRecord, collate_detection
from data_modules.reading import check_channels, check_window
from mvmic import validation as check


class ChestXDetDataModule(
    DetectionAnnotations, ChannelPolicy, BadFilePolicy, L.LightningDataModule
):
    """ChestX-Det (13 classes), ChestX-Det10 (10 classes) or COCO-json detection data.

    Batches: ``image`` B×C×H×W floats in [0, 1], ``target`` a list of B dicts with ``boxes``
    (N×4 xyxy pixels of the resized image), ``labels`` (1-based) and, with ``with_masks``,
    ``masks`` (N×H×W uint8), and ``name`` (file stems).

    Args:
        root: dataset folder in one of the accepted layouts (see the module docstring).
        train_json, test_json: split files relative to ``root`` (found automatically if None).
        image_size: side (or ``(h, w)``) images are resized to; validation, test and predict
            see whole images at this size.
        train_crop: train on random crops of this side (or ``(h, w)``) of the resized image;
            boxes are clipped to the crop, those less than 30 % inside dropped (masks with
            them). None: whole images. With a crop, set the detector's
            ``task_args.train_resize: false`` so that it does not scale the crops back up.
        in_channels: ``"auto"`` (default): 1 when every image of the split read is
            single-channel (headers only), else 3; 1 keeps grey films grey; 3 converts to RGB
            (as ``mvmic compress`` does).
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
        train_crop: int | tuple[int, int] | None = None,
        in_channels: int | Literal["auto"] = "auto",
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
        check.sizes("--data.train_crop", train_crop, length=2)
        check_crop(pair_size(train_crop), pair_size(image_size))
        check_channels("--data.in_channels", in_channels)
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
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        self.image_size = (
            (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        )
        self.train_crop = pair_size(train_crop)
        self.init_channels(in_channels)
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

    def channel_sources(self) -> list[Path]:
        """The training images (``"auto"`` asked before setup: set up the training split)."""
        self.setup("fit")
        assert self.train_set is not None
        return [r.path for r in self.train_set.records]

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
        self._train_data = load_json(self._train_json)
        self._layout = detect_layout(self._train_data, self._train_json)
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
            split = load_json(path)
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
            self.resolve_channels_from([r.path for r in records])
            skipped = frozenset(p.stem for p in self.skipped_files[before:])
            self.split = self._make_split(records, skipped)
            by_name = {r.name: r for r in records}
            mk = lambda names, aug, crop: ChestXDetDataset(  # noqa: E731
                [by_name[n] for n in names], self.image_size, self.in_channels,
                self.with_masks, aug, self.window, crop,
            )  # fmt: skip
            self.train_set = mk(self.split["train"], self.augment, self.train_crop)
            self.val_set = mk(self.split["val"], False, None)
        if stage in (None, "test", "predict") and self.test_set is None:
            if self.test_json is None:
                raise FileNotFoundError(
                    f"no test annotations in {self.root} (ChestX_Det_test.json, test.json, "
                    "val.json or annotations/instances_{test,val}.json); set data.test_json"
                )
            records = self._parse("test", self.test_json, load_json(self.test_json))
            self.resolve_channels_from([r.path for r in records])
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
                self.predict_root, self.predict_channels(), self.image_size, window=self.window
            )
            return folder_loader(ds, self.batch_size, self.num_workers)
        return self._loader(self.test_set, shuffle=False)

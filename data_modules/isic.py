"""ISIC 2017 Part 1 (lesion segmentation) in its public layout, with the official splits.

Layout (as downloaded from the ISIC challenge site)::

    ROOT/ISIC-2017_Training_Data/ISIC_0000000.jpg            (+ *_superpixels.png, skipped)
    ROOT/ISIC-2017_Training_Part1_GroundTruth/ISIC_0000000_segmentation.png   (0/255)
    ROOT/ISIC-2017_Validation_Data/…, ROOT/ISIC-2017_Validation_Part1_GroundTruth/…
    ROOT/ISIC-2017_Test_v2_Data/…,   ROOT/ISIC-2017_Test_v2_Part1_GroundTruth/…  (or Test_)
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import albumentations as A

from data_modules.base import ChannelPolicy, SplitDataModule, check_on_bad_image
from data_modules.crops import check_crop, pair_size, train_ops
from data_modules.reading import check_channels
from data_modules.segmentation import SegmentationDataset, check_pair
from mvmic import validation as check

#: split -> folder names tried in order (the official test set is published as "Test_v2")
SPLIT_DIRS = {"train": ("Training",), "val": ("Validation",), "test": ("Test_v2", "Test")}


def find_isic_pairs(root: str | Path, split: str) -> list[tuple[Path, Path]]:
    """Image/mask pairs of one official split, matched by ISIC id (never by sort order)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"ISIC 2017 root {root} does not exist; point data.root at the folder holding "
            f"ISIC-2017_Training_Data etc., or make a synthetic twin: "
            f"mvmic synth isic2017 --out {root}"
        )
    for name in SPLIT_DIRS[split]:
        data_dir = root / f"ISIC-2017_{name}_Data"
        gt_dir = root / f"ISIC-2017_{name}_Part1_GroundTruth"
        if data_dir.is_dir():
            break
    else:
        tried = ", ".join(f"ISIC-2017_{n}_Data" for n in SPLIT_DIRS[split])
        raise FileNotFoundError(f"{root}: no {split} images folder (looked for {tried})")
    if not gt_dir.is_dir():
        raise FileNotFoundError(f"{gt_dir} is missing: the {split} split needs its Part 1 masks")
    images = {
        p.stem: p
        for p in sorted(data_dir.iterdir())
        if p.suffix.lower() in (".jpg", ".jpeg", ".png") and not p.stem.endswith("_superpixels")
    }
    masks = {p.stem[: -len("_segmentation")]: p for p in sorted(gt_dir.glob("*_segmentation.png"))}
    no_mask = sorted(set(images) - set(masks))
    if no_mask:
        raise ValueError(
            f"{len(no_mask)} image(s) in {data_dir} have no <id>_segmentation.png in {gt_dir}: "
            + ", ".join(no_mask[:5])
            + (" …" if len(no_mask) > 5 else "")
        )
    if not images:
        raise ValueError(f"{data_dir}: no ISIC_*.jpg images")
    return [(images[k], masks[k]) for k in sorted(images)]


class ISICDataModule(ChannelPolicy, SplitDataModule):
    """ISIC 2017 Part 1: dermoscopy images and binary lesion masks (2 classes).

    Args:
        root: folder holding the ``ISIC-2017_<Split>_Data`` / ``_Part1_GroundTruth`` folders.
        image_size: resize to this square side (ISIC images differ in size; a batch needs one).
            Validation, test and predict see whole images at this size.
        train_crop: train on random square crops of this side cut from the resized image
            (see :class:`~data_modules.segmentation.SegmentationDataModule`); None: whole.
        in_channels: ``"auto"`` (default: 1 when every image is single-channel, else 3), 3 or
            1.
        batch_size, num_workers: loader settings.
        augment: flips, 90° rotations and colour jitter on the training split.
        eval_batch_size: batch size of validation/test (default: ``batch_size``).
        on_bad_image: ``"error"`` (default): an unreadable image or mask stops with its file
            name; ``"skip"``: files are decoded at setup and unreadable samples left out, each
            named in a warning and counted in ``skipped``.
        predict_root: a folder of plain images for ``mvmic predict`` (read with
            ``mvmic.io.read_image``, resized as the test split); default: the test split.
    """

    dataset_name = "isic2017"

    def __init__(
        self,
        root: str = "data/ISIC2017",
        image_size: int = 128,
        train_crop: int | None = None,
        in_channels: int | Literal["auto"] = "auto",
        batch_size: int = 8,
        num_workers: int = 0,
        augment: bool = True,
        eval_batch_size: int | None = None,
        on_bad_image: str = "error",
        predict_root: str | None = None,
    ) -> None:
        check.positive_int("--data.image_size", image_size)
        check.positive_int("--data.train_crop", train_crop)
        check_channels("--data.in_channels", in_channels)
        check_crop(pair_size(train_crop), pair_size(image_size))
        check.loader(
            batch_size=batch_size, num_workers=num_workers, eval_batch_size=eval_batch_size
        )
        super().__init__()
        check_on_bad_image(on_bad_image)
        self.save_hyperparameters()
        self.init_channels(in_channels)
        self.num_classes = 2
        self.datasets: dict[str, SegmentationDataset] = {}

    def transforms(self, train: bool) -> A.Compose:
        hp = self.hparams
        ops = train_ops(pair_size(hp.image_size), pair_size(hp.get("train_crop")), train)
        if train and self.hparams.augment:
            ops += [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5), A.RandomRotate90(p=0.5)]
            if self.in_channels == 3:
                ops.append(A.ColorJitter(0.1, 0.1, 0.1, 0.02, p=0.5))
            else:
                ops.append(A.RandomBrightnessContrast(0.1, 0.1, p=0.5))
        return A.Compose(ops)

    def channel_sources(self) -> list[Path]:
        paths: list[Path] = []
        for split in SPLIT_DIRS:
            try:
                paths += [image for image, _ in find_isic_pairs(self.hparams.root, split)]
            except FileNotFoundError:
                if not Path(self.hparams.root).is_dir():
                    raise
                continue  # a split that was not downloaded
        return paths

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict" and self.hparams.predict_root:
            return  # predict_dataloader reads the plain folder
        splits = {
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": ("test",),
            "predict": ("test",),
        }.get(stage or "fit", ("train", "val", "test"))
        decode = self.on_bad_image == "skip"
        crop = self.hparams.get("train_crop")
        channels = self.in_channels  # "auto": every split's headers
        for split in splits:
            if split not in self.datasets:
                pairs = self.read_all(
                    find_isic_pairs(self.hparams.root, split),
                    lambda pair: check_pair(*pair, decode=decode),
                    f"{self.dataset_name} {split}",
                )
                self.datasets[split] = SegmentationDataset(
                    pairs,
                    self.transforms(split == "train"),
                    in_channels=channels,
                    random=split == "train" and bool(self.hparams.augment or crop),
                )

    def batch_size_for(self, part: str) -> int:
        if part == "train":
            return self.hparams.batch_size
        return self.hparams.eval_batch_size or self.hparams.batch_size

"""2D segmentation data: CVC-ColonDB (PraNet and original layouts) and Kvasir-SEG."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from data_modules.augment import apply_seeded
from data_modules.base import ChannelPolicy, SplitDataModule, check_on_bad_image, image_size
from data_modules.crops import check_crop, pair_size, train_ops
from data_modules.reading import (
    IMAGE_EXTS,
    check_channels,
    check_window,
    read_binary_mask,
    read_image_2d,
)
from data_modules.splits import load_split, make_split, save_split
from mvmic import validation as check

LAYOUTS = ("auto", "pranet", "original", "kvasir")


def _files(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_EXTS}


def detect_layout(root: Path) -> str:
    """``pranet`` (images/ + masks/ PNG), ``kvasir`` (images/ + masks/ JPEG) or ``original``."""
    if (root / "images").is_dir() and (root / "masks").is_dir():
        masks = _files(root / "masks")
        jpeg = sum(p.suffix.lower() in (".jpg", ".jpeg") for p in masks.values())
        return "kvasir" if masks and jpeg > len(masks) / 2 else "pranet"
    if any(re.fullmatch(r"p\d+", p.stem) for p in root.iterdir() if p.is_file()):
        return "original"
    raise ValueError(
        f"{root}: no known segmentation layout: expected images/ + masks/ (PraNet, Kvasir-SEG) "
        "or <N>.bmp + p<N>.bmp (original CVC-ColonDB)"
    )


def find_pairs(root: str | Path, layout: str = "auto") -> tuple[list[tuple[Path, Path]], str]:
    """Pair every image with its mask by name (never by sort order)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"dataset root {root} does not exist; point data.root at the downloaded folder or "
            f"make a synthetic twin: mvmic synth colondb --out {root}"
        )
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    layout = detect_layout(root) if layout == "auto" else layout
    if layout == "original":
        files = _files(root)
        masks = {k[1:]: v for k, v in files.items() if re.fullmatch(r"p\d+", k)}
        images = {k: v for k, v in files.items() if re.fullmatch(r"\d+", k)}
        where = f"{root} (masks named p<N>)"
    else:
        for sub in ("images", "masks"):
            if not (root / sub).is_dir():
                raise FileNotFoundError(f"{root / sub} is missing for the {layout} layout")
        images, masks = _files(root / "images"), _files(root / "masks")
        where = f"{root / 'masks'}"
    no_mask = sorted(set(images) - set(masks))
    no_image = sorted(set(masks) - set(images))
    if no_mask:
        raise ValueError(
            f"{len(no_mask)} image(s) have no mask in {where}: {', '.join(no_mask[:5])}"
            + (" …" if len(no_mask) > 5 else "")
        )
    if no_image:
        raise ValueError(
            f"{len(no_image)} mask(s) have no image in {root}: {', '.join(no_image[:5])}"
            + (" …" if len(no_image) > 5 else "")
        )
    if not images:
        raise ValueError(f"{root}: no images found for the {layout} layout")
    key = (lambda s: (len(s), s)) if layout == "original" else (lambda s: s)
    return [(images[k], masks[k]) for k in sorted(images, key=key)], layout


def check_pair(image: Path, mask: Path, decode: bool = False) -> tuple[Path, Path]:
    """Open an image and its mask (``decode``: every pixel) and compare their sizes.

    Raises:
        UnreadableFileError: naming the file that cannot be read.
        ValueError: naming both files when their sizes differ.
    """
    (iw, ih), (mw, mh) = image_size(image, decode), image_size(mask, decode)
    if (iw, ih) != (mw, mh):
        raise ValueError(f"size mismatch: image {image} is {iw}x{ih} but mask {mask} is {mw}x{mh}")
    return image, mask


def check_sizes(pairs: list[tuple[Path, Path]]) -> None:
    """Fail early, naming both files, if an image and its mask differ in size or won't open."""
    for image, mask in pairs:
        check_pair(image, mask)


class SegmentationDataset(Dataset):
    """Image/mask pairs read through :mod:`mvmic.io` (see :mod:`data_modules.reading`).

    Samples: ``image`` C×H×W float32 in [0, 1] (scaled by the file's own bit depth, or by
    ``window``), ``mask`` H×W int64 0/1 (0/1 label maps as they are, else foreground above
    127: JPEG masks carry compression noise), ``bit_depth`` the image file's, ``name``.
    """

    def __init__(
        self,
        pairs: list[tuple[Path, Path]],
        transform: A.Compose,
        in_channels: int = 3,
        random: bool = False,
        window: tuple[float, float] | None = None,
    ) -> None:
        self.pairs, self.transform, self.in_channels = pairs, transform, in_channels
        self.random = random  # augmenting: seed each sample from torch's RNG
        self.window = window

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict[str, Any]:
        image_path, mask_path = self.pairs[i]
        image, bits = read_image_2d(image_path, self.in_channels, self.window)
        mask = read_binary_mask(mask_path)
        if self.random:
            out = apply_seeded(self.transform, image=image, mask=mask)
        else:
            out = self.transform(image=image, mask=mask)
        # albumentations keeps float32 H×W×C images in [0, 1] (resize, flips, jitter clip).
        image = torch.from_numpy(np.array(out["image"], dtype=np.float32)).permute(2, 0, 1)
        mask = torch.from_numpy(np.array(out["mask"])).long()
        return {"image": image, "mask": mask, "name": image_path.stem, "bit_depth": bits}


class SegmentationDataModule(ChannelPolicy, SplitDataModule):
    """CVC-ColonDB and Kvasir-SEG in their public layouts.

    Args:
        root: dataset folder (PraNet ``images/`` + ``masks/``, original ``<N>.bmp`` +
            ``p<N>.bmp``, or Kvasir-SEG ``images/*.jpg`` + ``masks/*.jpg``).
        layout: ``auto`` (detected), ``pranet``, ``original`` or ``kvasir``.
        dataset_name: name used for results records (default from the layout: ``colondb`` or
            ``kvasir``).
        image_size: resize to this (int or [H, W]); every batch needs one size. Validation,
            test and predict see whole images at this size.
        train_crop: train on random crops of this size (int or [H, W]) cut from the image
            resized to ``image_size``; None: whole images. Codecs and task nets are fully
            convolutional, so training costs the crop's pixels; a multiple of 64 fits the
            hyperprior codecs' stride without padding.
        in_channels: ``"auto"`` (default): 1 when every image of the dataset is single-channel
            (read from the file headers), else 3; or 3 (RGB) / 1 (grey), converted as
            ``mvmic compress`` converts.
        batch_size, num_workers: loader settings.
        val_fraction, test_fraction, seed: the seeded split (no official split exists).
        split_file: load this saved split instead of drawing one.
        augment: flips, small affine and colour jitter on the training split.
        on_bad_image: ``"error"`` (default): an unreadable image or mask stops the run with its
            file name (headers are checked at setup, pixels when read); ``"skip"``: every file
            is decoded at setup, unreadable samples are left out of their split, each named in
            a warning and counted in ``skipped``.
        window: ``[lo, hi]`` mapped to [0, 1] (stored values, or HU for a DICOM with a
            rescale); default None: each image scaled by its own full bit depth.
        predict_root: a folder of plain images for ``mvmic predict`` (read with
            ``mvmic.io.read_image``, resized as the test split); default: the test split.
    """

    def __init__(
        self,
        root: str = "data/CVC-ColonDB",
        layout: str = "auto",
        dataset_name: str | None = None,
        image_size: int | list[int] | None = 256,
        train_crop: int | list[int] | None = None,
        in_channels: int | Literal["auto"] = "auto",
        batch_size: int = 8,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        seed: int = 0,
        split_file: str | None = None,
        augment: bool = True,
        on_bad_image: str = "error",
        window: list[float] | None = None,
        predict_root: str | None = None,
    ) -> None:
        check.one_of("--data.layout", layout, LAYOUTS, "a layout")
        check.text("--data.dataset_name", dataset_name)
        check.sizes("--data.image_size", image_size, length=2)
        check.sizes("--data.train_crop", train_crop, length=2)
        check_channels("--data.in_channels", in_channels)
        check_crop(pair_size(train_crop), pair_size(image_size))
        check.loader(batch_size=batch_size, num_workers=num_workers)
        check.fractions_sum("--data", val_fraction=val_fraction, test_fraction=test_fraction)
        check.existing_file("--data.split_file", split_file)
        super().__init__()
        check_on_bad_image(on_bad_image)
        self.save_hyperparameters()
        self.init_channels(in_channels)
        self.window = check_window(window)
        self.num_classes = 2
        self._dataset_name = dataset_name
        self.split: dict[str, list[str]] | None = None

    @property
    def dataset_name(self) -> str:
        if self._dataset_name:
            return self._dataset_name
        layout = self.hparams.layout
        if layout == "auto" and Path(self.hparams.root).is_dir():
            try:
                layout = detect_layout(Path(self.hparams.root))
            except ValueError:
                pass
        return "kvasir" if layout == "kvasir" else "colondb"

    def _size(self) -> tuple[int, int] | None:
        return pair_size(self.hparams.image_size)

    def channel_sources(self) -> list[Path]:
        return [image for image, _ in find_pairs(self.hparams.root, self.hparams.layout)[0]]

    def transforms(self, train: bool) -> A.Compose:
        crop = pair_size(self.hparams.get("train_crop"))
        ops = train_ops(self._size(), crop, train)
        if train and self.hparams.augment:
            ops += [
                A.HorizontalFlip(p=0.5),
                A.VerticalFlip(p=0.5),
                A.Affine(
                    scale=(0.9, 1.1),
                    translate_percent=(-0.05, 0.05),
                    rotate=(-15, 15),
                    border_mode=0,
                    p=0.5,
                ),
            ]
            if self.in_channels == 3:
                ops.append(A.ColorJitter(0.1, 0.1, 0.1, 0.02, p=0.5))
            else:
                ops.append(A.RandomBrightnessContrast(0.1, 0.1, p=0.5))
        return A.Compose(ops)

    def setup(self, stage: str | None = None) -> None:
        if self.split is not None or (stage == "predict" and self.hparams.predict_root):
            return
        hp = self.hparams
        pairs, layout = find_pairs(hp.root, hp.layout)
        self.resolve_channels_from([image for image, _ in pairs])
        by_name = {image.stem: (image, mask) for image, mask in pairs}
        names = list(by_name)
        if hp.split_file:
            self.split = load_split(hp.split_file, names)
        else:
            self.split = make_split(names, hp.val_fraction, hp.test_fraction, hp.seed)
            trainer = self._trainer if hasattr(self, "_trainer") else None
            if trainer is not None and trainer.is_global_zero:
                save_split(self.split, Path(trainer.default_root_dir) / "split.json")
        # Screened after the split, so an unreadable file never moves others between splits.
        decode = self.on_bad_image == "skip"
        crop = self.hparams.get("train_crop")
        self.datasets = {
            part: SegmentationDataset(
                self.read_all(
                    [by_name[n] for n in self.split[part]],
                    lambda pair: check_pair(*pair, decode=decode),
                    f"{self.dataset_name} {part}",
                ),
                self.transforms(train=part == "train"),
                self.in_channels,
                random=part == "train" and bool(self.hparams.augment or crop),
                window=self.window,
            )
            for part in ("train", "val", "test")
        }

    def drop_last(self, part: str) -> bool:
        # A short last training batch would skew BatchNorm; keep it when it is the only one.
        return part == "train" and len(self.datasets[part]) > self.hparams.batch_size

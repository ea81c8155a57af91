"""HVSMR 2016 (whole-heart cardiac MR, 3D) in its public layout, with a seeded patient split.

Layout::

    ROOT/training_axial_crop_pat0.nii.gz          (or .nii)
    ROOT/training_axial_crop_pat0-label.nii.gz    labels: 0 background, 1 myocardium, 2 blood pool
    …

Volumes are read with nibabel and kept in one axis order: the array's (x, y, z) becomes
(D, H, W) = (z, y, x), so a batch is B×1×D×H×W with axial slices along D. Intensities are
scaled to [0, 1] per volume between the 0.5th and 99.5th percentiles. Training draws random
3D crops (MONAI); validation and test use whole volumes (sliding-window inference in the model).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.transforms import Compose, RandFlipd, RandSpatialCropd, SpatialPadd
from torch.utils.data import Dataset

from data_modules.base import SplitDataModule, UnreadableFileError, check_on_bad_image
from data_modules.splits import load_split, make_split, save_split
from mvmic import validation as check
from mvmic.io import nifti_to_frames

_IMAGE = re.compile(r"^(?P<stem>.*pat(?P<n>\d+))\.nii(\.gz)?$")
CLASS_NAMES = ("background", "myocardium", "blood_pool")


def find_hvsmr_pairs(root: str | Path) -> dict[str, tuple[Path, Path]]:
    """``{"pat<N>": (image, label)}`` for every ``*pat<N>.nii[.gz]`` with its ``-label`` file."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"HVSMR 2016 root {root} does not exist; point data.root at the folder holding "
            f"training_axial_crop_pat<N>.nii.gz, or make a synthetic twin: "
            f"mvmic synth hvsmr --out {root}"
        )
    pairs: dict[str, tuple[Path, Path]] = {}
    unlabeled = []
    for path in sorted(root.iterdir()):
        m = _IMAGE.match(path.name)
        if not m:
            continue
        labels = [root / f"{m['stem']}-label.nii{ext}" for ext in (".gz", "")]
        label = next((p for p in labels if p.is_file()), None)
        if label is None:
            unlabeled.append(path.name)
            continue
        pairs[f"pat{int(m['n'])}"] = (path, label)
    if unlabeled:
        raise ValueError(
            f"{len(unlabeled)} volume(s) in {root} have no <name>-label.nii[.gz]: "
            + ", ".join(unlabeled[:5])
        )
    if not pairs:
        raise ValueError(f"{root}: no training_axial_crop_pat<N>.nii[.gz] volumes")
    return dict(sorted(pairs.items(), key=lambda kv: int(kv[0][3:])))


def _read_nifti(path: Path, labels: bool = False) -> np.ndarray:
    try:
        nii = nib.load(str(path))
        return np.asarray(nii.dataobj) if labels else np.asarray(nii.get_fdata(dtype=np.float32))
    except Exception as err:  # noqa: BLE001 - nibabel raises many types for bad files
        raise UnreadableFileError(path, str(err), kind="NIfTI") from None


def load_volume(image: Path, label: Path) -> tuple[np.ndarray, np.ndarray]:
    """(1×D×H×W float32 in [0, 1], D×H×W int64 labels) with axes (z, y, x).

    Raises:
        UnreadableFileError: naming the file nibabel cannot read.
        ValueError: for shapes that differ or labels outside 0/1/2.
    """
    img, lab = _read_nifti(image), _read_nifti(label, labels=True)
    if img.ndim == 4 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim != 3 or img.shape != lab.shape[:3]:
        raise ValueError(
            f"{image} has shape {img.shape} but {label} has {lab.shape}; expected two equal 3D"
        )
    lab = np.rint(lab).astype(np.int64)
    bad = sorted(set(np.unique(lab).tolist()) - {0, 1, 2})
    if bad:
        raise ValueError(f"{label}: labels {bad[:5]} outside 0/1/2 (background/myocardium/blood)")
    img = scale_intensity(img)
    return nifti_to_frames(img)[None].copy(), nifti_to_frames(lab).copy()


def scale_intensity(img: np.ndarray) -> np.ndarray:
    """float32 in [0, 1] between the volume's 0.5th and 99.5th percentiles."""
    lo, hi = np.percentile(img, (0.5, 99.5))
    return np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1).astype(np.float32)


class HVSMRDataset(Dataset):
    """Whole volumes (eval) or ``crops_per_volume`` random crops per volume (training)."""

    def __init__(
        self,
        volumes: list[tuple[str, np.ndarray, np.ndarray]],
        crop_size: tuple[int, int, int] | None = None,
        crops_per_volume: int = 1,
        augment: bool = False,
    ) -> None:
        self.volumes, self.crop_size, self.n = volumes, crop_size, crops_per_volume
        ops = []
        if crop_size is not None:
            ops += [
                SpatialPadd(("image", "mask"), crop_size),
                RandSpatialCropd(("image", "mask"), crop_size, random_size=False),
            ]
            if augment:
                ops += [RandFlipd(("image", "mask"), prob=0.5, spatial_axis=a) for a in (1, 2)]
        self.transform = Compose(ops) if ops else None

    def __len__(self) -> int:
        return len(self.volumes) * self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        name, image, mask = self.volumes[i // self.n]
        item = {"image": torch.from_numpy(image), "mask": torch.from_numpy(mask)[None]}
        if self.transform is not None:
            # MONAI keeps its own RNG; seeding it from torch's makes crops and flips follow
            # seed_everything and a checkpoint's restored RNG state (as data_modules.augment).
            self.transform.set_random_state(seed=int(torch.randint(0, 2**31 - 1, ()).item()))
            item = self.transform(item)
        image, mask = (_plain(item[k]) for k in ("image", "mask"))
        return {
            "image": image.float().contiguous(),
            "mask": mask[0].long().contiguous(),
            "name": name,
        }


def _plain(t: Any) -> torch.Tensor:
    # MONAI returns MetaTensors; batches carry plain tensors.
    return t.as_tensor() if hasattr(t, "as_tensor") else torch.as_tensor(t)


class HVSMRDataModule(SplitDataModule):
    """HVSMR 2016: 3D cardiac MR, labels background / myocardium / blood pool.

    Args:
        root: folder with ``training_axial_crop_pat<N>.nii[.gz]`` and ``…-label.nii[.gz]``.
        crop_size: training crop (D, H, W); a multiple of the codec and segmentor strides.
        crops_per_volume: random crops per volume per epoch.
        batch_size: training batch size (val/test use whole volumes, one at a time).
        num_workers: loader workers.
        val_fraction, test_fraction, seed: the seeded patient split (saved as split.json in
            the run folder).
        split_file: load this saved split instead.
        augment: random flips of the training crops.
        on_bad_image: ``"error"`` (default): an unreadable volume stops with its file name;
            ``"skip"``: that patient is left out of its split, named in a warning and counted
            in ``skipped``. (Volumes are read whole at setup either way.)
        predict_root: a folder of NIfTI volumes (``.nii``/``.nii.gz``) for ``mvmic predict``,
            read with ``mvmic.io.read_image`` and scaled as the splits are; default: the test
            split.
    """

    dataset_name = "hvsmr"

    def __init__(
        self,
        root: str = "data/HVSMR2016",
        crop_size: list[int] | tuple[int, int, int] = (64, 64, 64),
        crops_per_volume: int = 8,
        batch_size: int = 2,
        num_workers: int = 0,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        seed: int = 0,
        split_file: str | None = None,
        augment: bool = True,
        on_bad_image: str = "error",
        predict_root: str | None = None,
    ) -> None:
        check.sizes("--data.crop_size", crop_size, length=3, scalar=False)
        check.each(check.positive_int, "--data", crops_per_volume=crops_per_volume)
        check.loader(batch_size=batch_size, num_workers=num_workers)
        check.fractions_sum("--data", val_fraction=val_fraction, test_fraction=test_fraction)
        check.existing_file("--data.split_file", split_file)
        super().__init__()
        check_on_bad_image(on_bad_image)
        if len(crop_size) != 3:
            raise ValueError(f"crop_size must be (D, H, W), got {crop_size}")
        self.save_hyperparameters()
        self.in_channels = 1
        self.num_classes = 3
        self.class_names = list(CLASS_NAMES)
        self.split: dict[str, list[str]] | None = None
        self.datasets: dict[str, HVSMRDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.split is not None or (stage == "predict" and self.hparams.predict_root):
            return
        hp = self.hparams
        pairs = find_hvsmr_pairs(hp.root)
        names = list(pairs)
        if hp.split_file:
            self.split = load_split(hp.split_file, names)
        else:
            self.split = make_split(names, hp.val_fraction, hp.test_fraction, hp.seed)
            trainer = getattr(self, "_trainer", None)
            if trainer is not None and trainer.is_global_zero:
                save_split(self.split, Path(trainer.default_root_dir) / "split.json")
        # Read after the split, so an unreadable volume never moves others between splits.
        vols = {
            part: self.read_all(
                self.split[part], lambda n: (n, *load_volume(*pairs[n])), f"hvsmr {part}"
            )
            for part in ("train", "val", "test")
        }
        self.datasets = {
            "train": HVSMRDataset(
                vols["train"], tuple(hp.crop_size), hp.crops_per_volume, hp.augment
            ),
            "val": HVSMRDataset(vols["val"]),
            "test": HVSMRDataset(vols["test"]),
        }

    def predict_dataset(self) -> Dataset:
        """The whole volumes of ``predict_root``, in the splits' axes and intensity scaling."""
        from data_modules.predict import ImageFolderDataset

        return ImageFolderDataset(
            self.hparams.predict_root, 1, volumes=True, normalize=scale_intensity
        )

    def batch_size_for(self, part: str) -> int:
        # Evaluation runs on whole volumes of differing sizes, one at a time.
        return self.hparams.batch_size if part == "train" else 1

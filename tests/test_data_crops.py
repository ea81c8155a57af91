"""Train on crops, evaluate on whole images (``data.train_crop``), and grey data stays grey
(``data.in_channels auto``)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from data_modules import SegmentationDataModule
from data_modules.chestxdet import ChestXDetDataModule, ChestXDetDataset, DetRecord
from data_modules.isic import ISICDataModule
from mvmic.callbacks import DataChannels
from mvmic.io import write_image
from mvmic.validation import ConfigError


def _pranet(root: Path, images: list[np.ndarray], masks: list[np.ndarray] | None = None) -> Path:
    """A PraNet-layout folder: images as given (PIL picks the mode from the array)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, img in enumerate(images, 1):
        if img.dtype == np.uint16:
            write_image(root / "images" / f"{i}.png", img[None] / 65535.0, 16)
        else:
            Image.fromarray(img).save(root / "images" / f"{i}.png")
        mask = masks[i - 1] if masks else np.zeros(img.shape[:2], np.uint8)
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")
    return root


def _squares(n: int, size: int = 48) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Grey images with a bright square and its mask (0/255), at different places."""
    rng = np.random.default_rng(0)
    images, masks = [], []
    for _ in range(n):
        y, x = rng.integers(0, size - 16, 2)
        img = np.zeros((size, size), np.uint8)
        img[y : y + 16, x : x + 16] = 255
        images.append(img)
        masks.append(img.copy())
    return images, masks


def test_segmentation_trains_on_crops_and_evaluates_whole_images(tmp_path):
    root = _pranet(tmp_path / "sq", *_squares(10))
    dm = SegmentationDataModule(
        root=str(root), image_size=None, train_crop=[24, 32], augment=False, batch_size=2,
        val_fraction=0.2, test_fraction=0.2,
    )  # fmt: skip
    dm.setup("fit")
    assert dm.in_channels == 1  # every image is single-channel ("auto")
    torch.manual_seed(0)
    train = [dm.datasets["train"][i] for i in range(len(dm.datasets["train"]))]
    for s in train:
        assert s["image"].shape == (1, 24, 32) and s["mask"].shape == (24, 32)
        # The mask is cut with its image: foreground exactly where the square is.
        assert torch.equal(s["mask"].bool(), s["image"][0] > 0.5)
    # Crops are drawn from torch's RNG: the same seed gives the same crops, another seed others.
    torch.manual_seed(0)
    again = [dm.datasets["train"][i] for i in range(len(dm.datasets["train"]))]
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(train, again))
    torch.manual_seed(1)
    other = [dm.datasets["train"][i] for i in range(len(dm.datasets["train"]))]
    assert not all(torch.equal(a["image"], b["image"]) for a, b in zip(train, other))
    for part in ("val", "test"):
        s = dm.datasets[part][0]
        assert s["image"].shape == (1, 48, 48) and s["mask"].shape == (48, 48)


def test_crop_is_cut_from_the_resized_image(colondb_root):
    dm = SegmentationDataModule(
        root=str(colondb_root), image_size=64, train_crop=32, batch_size=2, augment=True
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 32, 32) and batch["mask"].shape == (2, 32, 32)
    assert next(iter(dm.val_dataloader()))["image"].shape[-2:] == (64, 64)
    with pytest.raises(ConfigError, match=r"--data.train_crop \[96, 96\] is larger than"):
        SegmentationDataModule(root=str(colondb_root), image_size=64, train_crop=96)


def test_grey_data_stays_grey_and_16_bit_keeps_its_depth(tmp_path):
    grey16 = [
        np.random.default_rng(k).integers(0, 65536, (32, 32)).astype(np.uint16) for k in range(3)
    ]
    dm = SegmentationDataModule(
        root=str(_pranet(tmp_path / "g16", grey16)), image_size=None, augment=False,
        val_fraction=0.0, test_fraction=0.0,
    )  # fmt: skip
    dm.setup("fit")
    s = dm.datasets["train"][0]
    assert dm.in_channels == 1 and s["image"].shape == (1, 32, 32) and s["bit_depth"] == 16
    i = int(s["name"]) - 1
    assert torch.equal(
        (s["image"][0] * 65535).round().long(), torch.from_numpy(grey16[i].astype(np.int64))
    )

    # One RGB file among grey ones: the dataset is read as RGB, grey files repeated.
    mixed = [np.zeros((32, 32), np.uint8), np.zeros((32, 32, 3), np.uint8)]
    dm = SegmentationDataModule(root=str(_pranet(tmp_path / "mix", mixed)), image_size=None)
    assert dm.in_channels == 3
    # An explicit value is kept: a grey folder read as RGB on request.
    root = _pranet(tmp_path / "g8", [np.zeros((32, 32), np.uint8)] * 2)
    assert SegmentationDataModule(root=str(root), in_channels=3).in_channels == 3
    with pytest.raises(ConfigError, match=r"--data.in_channels must be 1 or 3"):
        SegmentationDataModule(root=str(root), in_channels=2)


def _det_image(path: Path, size: int = 64) -> Path:
    """A 16-bit grey image whose value at (y, x) is y * size + x: a crop's offset is readable."""
    yy, xx = np.mgrid[:size, :size]
    write_image(path, ((yy * size + xx) / 65535.0)[None], 16)
    return path


def test_detection_crop_clips_and_drops_boxes_with_their_masks(tmp_path):
    size, crop = 64, 32
    boxes = np.array([[20, 20, 44, 44], [0, 0, 10, 10], [50, 8, 64, 30]], np.float32)
    polys = [[[[x1, y1], [x2, y1], [x2, y2], [x1, y2]]] for x1, y1, x2, y2 in boxes.tolist()]
    rec = DetRecord(
        _det_image(tmp_path / "a.png"), "a", size, size, boxes,
        np.array([1, 2, 3], np.int64), polys,
    )  # fmt: skip
    ds = ChestXDetDataset([rec], (size, size), 1, with_masks=True, augment=False, crop=(crop,) * 2)
    seen = set()
    for seed in range(40):
        torch.manual_seed(seed)
        s = ds[0]
        img, t = s["image"], s["target"]
        assert img.shape == (1, crop, crop)
        v = int(round(float(img[0, 0, 0]) * 65535))
        y0, x0 = divmod(v, size)
        # The expected targets: boxes shifted and clipped to the crop, kept when >= 30 % inside.
        shifted = boxes - np.array([x0, y0, x0, y0], np.float32)
        clipped = shifted.clip(0, crop)
        area = lambda b: (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)  # noqa: E731
        keep = area(clipped) >= 0.3 * area(boxes)
        np.testing.assert_allclose(t["boxes"].numpy(), clipped[keep], atol=1e-4)
        assert t["labels"].tolist() == np.array([1, 2, 3])[keep].tolist()
        assert t["masks"].shape == (int(keep.sum()), crop, crop)
        for box, mask in zip(t["boxes"], t["masks"]):
            ys, xs = np.nonzero(mask.numpy())
            assert len(ys) and abs(xs.min() - box[0]) <= 1 and abs(ys.min() - box[1]) <= 1
            assert abs(xs.max() + 1 - box[2]) <= 1 and abs(ys.max() + 1 - box[3]) <= 1
        seen.add(int(keep.sum()))
    assert len(seen) > 1  # some draws dropped boxes that left the crop, others kept them


def test_detection_module_crops_training_only_and_reads_grey_films(chestxdet_root):
    dm = ChestXDetDataModule(root=chestxdet_root, image_size=64, train_crop=32, batch_size=2)
    dm.setup("fit")
    assert dm.in_channels == 1  # the synthetic twin is grey, as chest films are
    train = next(iter(dm.train_dataloader()))
    assert train["image"].shape == (2, 1, 32, 32)
    assert all((t["boxes"] >= 0).all() and (t["boxes"] <= 32).all() for t in train["target"])
    assert next(iter(dm.val_dataloader()))["image"].shape[1:] == (1, 64, 64)
    with pytest.raises(ConfigError, match="--data.train_crop"):
        ChestXDetDataModule(root=chestxdet_root, image_size=64, train_crop=[32, 80])


def test_isic_trains_on_crops(isic_root):
    dm = ISICDataModule(root=str(isic_root), image_size=64, train_crop=32, batch_size=2)
    dm.setup("fit")
    assert dm.in_channels == 3  # dermoscopy is RGB
    assert next(iter(dm.train_dataloader()))["image"].shape == (2, 3, 32, 32)
    assert next(iter(dm.val_dataloader()))["image"].shape == (2, 3, 64, 64)


def test_detector_keeps_training_crops_at_their_scale():
    from mvmic.tasks.detection import DetectionNet

    crops = [torch.rand(1, 32, 32)]
    for train_resize, want in ((True, (64, 64)), (False, (32, 32))):
        net = DetectionNet(
            "fasterrcnn_mobilenet_v3_large_fpn", in_channels=1, num_classes=3, min_size=64,
            max_size=64, train_resize=train_resize,
        ).train()  # fmt: skip
        assert net.model.transform(crops)[0].image_sizes == [want]
        net.eval()  # evaluation always resizes to min_size (whole images of that size)
        assert net.model.transform(crops)[0].image_sizes == [(64, 64)]


def test_model_channels_must_match_the_data(tmp_path):
    root = _pranet(tmp_path / "g", [np.zeros((32, 32), np.uint8)] * 2)
    dm = SegmentationDataModule(root=str(root))
    trainer = SimpleNamespace(datamodule=dm)
    DataChannels().setup(trainer, SimpleNamespace(hparams={"in_channels": 1}), "fit")
    DataChannels().setup(trainer, SimpleNamespace(hparams={"in_channels": 3}), "predict")
    with pytest.raises(ConfigError, match=r"--model.in_channels is 3 but the images of .* grey"):
        DataChannels().setup(trainer, SimpleNamespace(hparams={"in_channels": 3}), "fit")

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from data_modules.segmentation import SegmentationDataModule, find_pairs
from data_modules.splits import make_split


def _write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _pair(value, size=(8, 8)):
    image = np.full((*size, 3), value, np.uint8)
    mask = np.zeros(size, np.uint8)
    mask[: value % size[0] + 1] = 255  # the mask encodes which image it belongs to
    return image, mask


def test_pranet_layout_pairs_by_name_not_sort_order(tmp_path):
    # "10" sorts before "2" as text; each mask must still meet its own image.
    for name, value in [("2", 2), ("10", 10), ("1", 1)]:
        image, mask = _pair(value)
        _write(tmp_path / "images" / f"{name}.png", image)
        _write(tmp_path / "masks" / f"{name}.png", mask)
    pairs, layout = find_pairs(tmp_path)
    assert layout == "pranet"
    for image_path, mask_path in pairs:
        assert image_path.stem == mask_path.stem


def test_original_layout_bmp_with_p_prefix(tmp_path):
    for n in (1, 2, 11):
        image, mask = _pair(n)
        _write(tmp_path / f"{n}.bmp", image)
        _write(tmp_path / f"p{n}.bmp", mask)
    pairs, layout = find_pairs(tmp_path)
    assert layout == "original"
    assert [(i.name, m.name) for i, m in pairs] == [
        ("1.bmp", "p1.bmp"),
        ("2.bmp", "p2.bmp"),
        ("11.bmp", "p11.bmp"),
    ]


def test_kvasir_jpeg_masks_are_thresholded_at_127(tmp_path):
    image = np.full((16, 16, 3), 90, np.uint8)
    mask = np.zeros((16, 16), np.uint8)
    mask[:, 8:] = 255
    _write(tmp_path / "images" / "cju0.jpg", image)
    _write(tmp_path / "masks" / "cju0.jpg", mask)
    dm = SegmentationDataModule(
        root=str(tmp_path), image_size=16, val_fraction=0, test_fraction=0, augment=False
    )
    assert dm.dataset_name == "kvasir"
    pairs, layout = find_pairs(tmp_path)
    assert layout == "kvasir"
    from data_modules.segmentation import SegmentationDataset

    sample = SegmentationDataset(pairs, dm.transforms(train=False))[0]
    assert set(sample["mask"].unique().tolist()) == {0, 1}
    assert sample["mask"][:, :6].sum() == 0 and sample["mask"][:, 10:].min() == 1


def test_missing_root_suggests_synth(tmp_path):
    with pytest.raises(FileNotFoundError, match="mvmic synth colondb --out"):
        find_pairs(tmp_path / "nope")


def test_image_without_mask_and_mask_without_image(tmp_path):
    image, mask = _pair(1)
    _write(tmp_path / "images" / "1.png", image)
    _write(tmp_path / "masks" / "1.png", mask)
    _write(tmp_path / "images" / "7.png", image)
    with pytest.raises(ValueError, match="1 image\\(s\\) have no mask.*7"):
        find_pairs(tmp_path)
    (tmp_path / "images" / "7.png").unlink()
    _write(tmp_path / "masks" / "9.png", mask)
    with pytest.raises(ValueError, match="1 mask\\(s\\) have no image.*9"):
        find_pairs(tmp_path)


def test_size_mismatch_and_unreadable_file_are_named(tmp_path):
    for n in range(1, 6):
        image, mask = _pair(n)
        _write(tmp_path / "images" / f"{n}.png", image)
        _write(tmp_path / "masks" / f"{n}.png", mask)
    _write(tmp_path / "masks" / "3.png", np.zeros((9, 8), np.uint8))
    dm = SegmentationDataModule(root=str(tmp_path), val_fraction=0.2, test_fraction=0.2)
    with pytest.raises(ValueError, match="size mismatch: image .*3.png is 8x8 but mask .*3.png"):
        dm.setup("fit")
    _write(tmp_path / "masks" / "3.png", np.zeros((8, 8), np.uint8))
    (tmp_path / "images" / "4.png").write_bytes(b"not a png")
    dm = SegmentationDataModule(root=str(tmp_path), val_fraction=0.2, test_fraction=0.2)
    with pytest.raises(ValueError, match="cannot read image .*4.png"):
        dm.setup("fit")


def test_split_is_seeded_disjoint_and_complete():
    names = [str(i) for i in range(50)]
    a = make_split(names, 0.1, 0.2, seed=3)
    assert a == make_split(list(reversed(names)), 0.1, 0.2, seed=3)
    assert a != make_split(names, 0.1, 0.2, seed=4)
    assert (len(a["train"]), len(a["val"]), len(a["test"])) == (35, 5, 10)
    assert sorted(a["train"] + a["val"] + a["test"]) == sorted(names)


def test_split_is_saved_and_reloaded(colondb_root, tmp_path):
    dm = SegmentationDataModule(root=str(colondb_root), image_size=32, seed=5)
    dm.setup("fit")
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps(dm.split))
    again = SegmentationDataModule(
        root=str(colondb_root), image_size=32, seed=99, split_file=str(split_file)
    )
    again.setup("fit")
    assert again.split == dm.split


@pytest.mark.parametrize("channels", [1, 3])
def test_batches_have_the_contract_shape(colondb_root, channels):
    dm = SegmentationDataModule(
        root=str(colondb_root), image_size=[32, 48], in_channels=channels, batch_size=2
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, channels, 32, 48)
    assert batch["image"].dtype.is_floating_point and 0 <= batch["image"].min()
    assert batch["image"].max() <= 1
    assert batch["mask"].shape == (2, 32, 48) and set(batch["mask"].unique().tolist()) <= {0, 1}
    assert len(batch["name"]) == 2


def test_synthetic_twin_is_reproducible(tmp_path):
    from data_modules.synthetic import generate

    a = generate("colondb", tmp_path / "a", num=2, size=32, seed=1)
    b = generate("colondb", tmp_path / "b", num=2, size=32, seed=1)
    for sub in ("images", "masks"):
        assert (a / sub / "2.png").read_bytes() == (b / sub / "2.png").read_bytes()
    mask = np.asarray(Image.open(a / "masks" / "1.png"))
    assert set(np.unique(mask).tolist()) == {0, 255}
    shutil.rmtree(tmp_path / "b")

"""Unreadable files in a dataset: stop naming the file (``on_bad_image: error``, the default) or
leave it out and count it (``skip``), never a silent wrong batch."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from lightning import Trainer

from data_modules import SegmentationDataModule
from data_modules.chestxdet import ChestXDetDataModule
from data_modules.hvsmr import HVSMRDataModule
from data_modules.isic import ISICDataModule
from mvmic.modules import TaskModule


def _copy(src: Path, tmp_path: Path) -> Path:
    # The session fixtures are shared: corrupt a copy only.
    return Path(shutil.copytree(src, tmp_path / src.name))


def _truncate(path: Path) -> None:
    """Keep the header, cut the pixels: opening works, decoding fails."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _sizes(dm) -> int:
    return sum(len(ds) for ds in dm.datasets.values())


def test_garbage_image_fails_at_setup_naming_it(colondb_root, tmp_path):
    root = _copy(colondb_root, tmp_path)
    (root / "images" / "6.png").write_bytes(b"not a png at all")
    dm = SegmentationDataModule(root=str(root), image_size=32)
    with pytest.raises(ValueError, match=r"cannot read image .*images/6\.png.*on_bad_image skip"):
        dm.setup("fit")


def test_truncated_image_fails_when_read_naming_it(colondb_root, tmp_path):
    # Only the header is read at setup by default; the truncated payload fails in the loader.
    root = _copy(colondb_root, tmp_path)
    _truncate(root / "masks" / "6.png")
    dm = SegmentationDataModule(root=str(root), image_size=32, batch_size=4, augment=False)
    dm.setup("fit")
    part = next(p for p, names in dm.split.items() if "6" in names)
    loader = dm._loader(part, shuffle=False)
    with pytest.raises(ValueError, match=r"cannot read image .*masks/6\.png"):
        for _ in loader:
            pass


def test_skip_leaves_the_file_out_counts_it_and_trains(colondb_root, tmp_path):
    clean = SegmentationDataModule(root=str(colondb_root), image_size=32)
    clean.setup("fit")
    a, b = clean.split["train"][2], clean.split["train"][5]  # in the middle of the set
    root = _copy(colondb_root, tmp_path)
    _truncate(root / "images" / f"{a}.png")  # opens fine: only a full decode finds it
    (root / "masks" / f"{b}.png").write_bytes(b"")
    dm = SegmentationDataModule(root=str(root), image_size=32, batch_size=2, on_bad_image="skip")
    with pytest.warns(UserWarning, match=rf"images/{a}\.png") as record:
        dm.setup("fit")
    assert any(f"masks/{b}.png" in str(w.message) for w in record)
    assert _sizes(clean) == 12 and _sizes(dm) == 10
    assert dm.skipped == 2
    assert sorted(p.name for p in dm.skipped_files) == sorted([f"{a}.png", f"{b}.png"])
    # The split is drawn as if the files were there: no other image changes split.
    for part, names in clean.split.items():
        kept = [image.stem for image, _ in dm.datasets[part].pairs]
        assert kept == [n for n in names if n not in (a, b)], part
    model = TaskModule(
        arch="Unet",
        encoder="resnet18",
        task_args={"encoder_depth": 3, "decoder_channels": [16, 8, 4]},
    )
    trainer = Trainer(
        max_steps=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, dm)
    assert trainer.global_step == 2


def test_every_sample_unreadable_is_an_error_even_when_skipping(tmp_path):
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
        for n in (1, 2, 3):
            (tmp_path / sub / f"{n}.png").write_bytes(b"junk")
    dm = SegmentationDataModule(
        root=str(tmp_path), val_fraction=0.34, test_fraction=0.34, on_bad_image="skip"
    )
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="none of its 1 samples"):
        dm.setup("fit")


def test_bad_policy_value_is_refused():
    with pytest.raises(ValueError, match="on_bad_image must be one of"):
        SegmentationDataModule(on_bad_image="ignore")


def test_isic_error_and_skip(isic_root, tmp_path):
    root = _copy(isic_root, tmp_path)
    images = sorted((root / "ISIC-2017_Training_Data").glob("ISIC_*.jpg"))
    bad = images[len(images) // 2]
    _truncate(bad)
    # The default header check lets a cut file through; skip decodes every file.
    dm = ISICDataModule(root=str(root), image_size=32, on_bad_image="skip")
    with pytest.warns(UserWarning, match=bad.name):
        dm.setup("fit")
    assert len(dm.datasets["train"]) == len(images) - 1 and dm.skipped == 1
    assert dm.skipped_files == [bad]
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match=f"cannot read image .*{bad.name}"):
        ISICDataModule(root=str(root), image_size=32).setup("fit")


def test_chestxdet_error_and_skip(chestxdet_root, tmp_path):
    root = _copy(chestxdet_root, tmp_path)
    images = sorted(p for p in root.rglob("*.png"))
    clean = ChestXDetDataModule(root=str(chestxdet_root), image_size=32, split_file=None)
    clean.setup("fit")
    n_train = len(clean.train_set) + len(clean.val_set)
    bad = next(p for p in images if p.stem in clean.split["train"][1:])
    _truncate(bad)
    dm = ChestXDetDataModule(root=str(root), image_size=32, on_bad_image="skip")
    with pytest.warns(UserWarning, match=bad.name):
        dm.setup("fit")
    assert len(dm.train_set) + len(dm.val_set) == n_train - 1 and dm.skipped == 1
    assert dm.split["val"] == clean.split["val"]
    # The default header-only check passes a cut PNG; loading it names the file.
    dm = ChestXDetDataModule(root=str(root), image_size=32, augment=False)
    dm.setup("fit")
    index = next(i for i, r in enumerate(dm.train_set.records) if r.path == bad)
    with pytest.raises(ValueError, match=f"cannot read image .*{bad.name}"):
        dm.train_set[index]
    bad.write_bytes(b"junk")
    with pytest.raises(ValueError, match=f"cannot read image .*{bad.name}"):
        ChestXDetDataModule(root=str(root), image_size=32).setup("fit")


def test_hvsmr_error_and_skip(hvsmr_root, tmp_path):
    root = _copy(hvsmr_root, tmp_path)
    kw = dict(root=str(root), crop_size=(16, 16, 16), val_fraction=0.25, test_fraction=0.25)
    clean = HVSMRDataModule(**kw)
    clean.setup("fit")
    patient = clean.split["train"][0]
    bad = next(p for p in root.iterdir() if p.name.split(".")[0].endswith(patient))
    bad.write_bytes(b"junk")
    with pytest.raises(ValueError, match=f"cannot read NIfTI .*{bad.name}"):
        HVSMRDataModule(**kw).setup("fit")
    dm = HVSMRDataModule(**kw, on_bad_image="skip")
    with pytest.warns(UserWarning, match=bad.name):
        dm.setup("fit")
    assert dm.skipped == 1
    kept = [v[0] for part in dm.datasets.values() for v in part.volumes]
    assert sorted(kept) == sorted(
        n for names in clean.split.values() for n in names if n != patient
    )
    assert torch.is_tensor(dm.datasets["train"][0]["image"])

"""Data modules read pixels only through mvmic.io: 16-bit PNG and DICOM arrive unclipped,
scaled by their own bit depth, exactly as `mvmic compress` sends them; masks keep their own
values; `data.window` is the user's choice."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
import torch
from lightning import Trainer
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from data_modules import SegmentationDataModule
from data_modules.chestxdet import ChestXDetDataModule
from mvmic.cli import main
from mvmic.io import match_channels, read_image

ROOT = Path(__file__).resolve().parents[1]


def _seg_dm(root: Path, **kw) -> SegmentationDataModule:
    kw = {"image_size": None, "augment": False, "batch_size": 2, **kw}
    kw.setdefault("val_fraction", 0.0)
    kw.setdefault("test_fraction", 0.0)
    return SegmentationDataModule(root=str(root), **kw)


def _samples(dm) -> dict[str, dict]:
    """Every sample of every split, by name."""
    dm.setup("fit")
    return {s["name"]: s for ds in dm.datasets.values() for s in (ds[i] for i in range(len(ds)))}


def _png(path: Path, a: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)
    return path


def _disc(size: int = 32) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 4) ** 2


def _dicom(
    path: Path,
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    rescale: tuple[float, float] | None = None,
) -> Path:
    """A minimal CT DICOM file (pydicom only, no test data download)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = (
        meta.MediaStorageSOPClassUID,
        meta.MediaStorageSOPInstanceUID,
    )
    ds.Modality = "CT"
    ds.set_pixel_data(pixels, photometric, bits_stored)
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _dicom_folder(root: Path, n: int = 6, size: int = 32) -> Path:
    """PraNet layout with DICOM images of every kind the reader handles, PNG masks."""
    rng = np.random.default_rng(0)
    disc = _disc(size)
    for i in range(1, n + 1):
        kind = i % 3
        if kind == 0:  # unsigned 12-bit, rescaled to HU (the usual CT)
            hu = np.where(disc, 300, -700) + rng.integers(-50, 50, (size, size))
            px = (hu + 1024).astype(np.uint16)
            _dicom(root / "images" / f"{i}.dcm", px, rescale=(1.0, -1024.0))
        elif kind == 1:  # signed 16-bit stored HU
            px = (np.where(disc, 1200, -1000) + rng.integers(-80, 80, (size, size))).astype(
                np.int16
            )
            _dicom(root / "images" / f"{i}.dcm", px, bits_stored=16)
        else:  # MONOCHROME1 film: low values white
            px = np.where(disc, 500, 3500).astype(np.uint16) + rng.integers(0, 90, (size, size))
            _dicom(root / "images" / f"{i}.dcm", px.astype(np.uint16), "MONOCHROME1")
        _png(root / "masks" / f"{i}.png", (disc * 255).astype(np.uint8))
    return root


# -- 16-bit PNG ------------------------------------------------------------------------------
def test_16bit_grey_ct_slices_are_not_clipped(tmp_path):
    # The report: 16-bit CT slices, values 0..2536; Pillow's convert("L") made 54 % of them 255.
    rng = np.random.default_rng(1)
    values = {}
    for name in ("1", "2", "3"):
        v = rng.integers(0, 2537, (32, 32)).astype(np.uint16)
        v[0, 0] = 2536
        values[name] = v
        _png(tmp_path / "images" / f"{name}.png", v)
        _png(tmp_path / "masks" / f"{name}.png", (_disc() * 255).astype(np.uint8))
    for channels in (1, 3):
        samples = _samples(_seg_dm(tmp_path, in_channels=channels))
        for name, v in values.items():
            s = samples[name]
            assert s["bit_depth"] == 16 and s["image"].shape == (channels, 32, 32)
            codes = torch.round(s["image"] * 65535).to(torch.int64)
            assert torch.equal(codes, torch.from_numpy(v.astype(np.int64)).expand(channels, -1, -1))
            assert s["image"].max() * 65535 == pytest.approx(2536, abs=1e-3)


def test_16bit_colondb_twin_round_trips_through_the_data_module(tmp_path):
    out = tmp_path / "c16"
    assert main(["synth", "colondb", "--out", str(out), "--num", "4", "--size", "32",
                 "--bit_depth", "16"]) == 0  # fmt: skip
    samples = _samples(_seg_dm(out))
    for name, s in samples.items():
        codes = cv2.cvtColor(
            cv2.imread(str(out / "images" / f"{name}.png"), cv2.IMREAD_UNCHANGED),
            cv2.COLOR_BGR2RGB,
        ).transpose(2, 0, 1)
        assert codes.dtype == np.uint16 and codes.max() > 255
        assert s["bit_depth"] == 16
        # max code in = max code out × (2^16 − 1), and every other code too
        assert float(s["image"].max()) * 65535 == pytest.approx(codes.max(), abs=1e-3)
        assert np.array_equal(np.round(s["image"].numpy() * 65535), codes)
    # Augmented training batches stay float32 in [0, 1] and carry the bit depth.
    dm = _seg_dm(out, augment=True, image_size=24)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].dtype == torch.float32 and batch["image"].shape[1:] == (3, 24, 24)
    assert 0 <= batch["image"].min() and batch["image"].max() <= 1
    assert batch["bit_depth"].tolist() == [16, 16]


def test_16bit_chestxdet_twin_round_trips_through_the_data_module(tmp_path):
    out = tmp_path / "x16"
    assert main(["synth", "chestxdet", "--out", str(out), "--num", "5", "--size", "32",
                 "--bit_depth", "16"]) == 0  # fmt: skip
    dm = ChestXDetDataModule(out, image_size=32, augment=False, val_fraction=0.25, batch_size=2)
    dm.setup("fit")
    for rec, i in zip(dm.train_set.records, range(len(dm.train_set))):
        codes = np.asarray(Image.open(rec.path)).astype(np.int64)
        s = dm.train_set[i]
        assert s["bit_depth"] == 16 and codes.max() > 255
        assert float(s["image"].max()) * 65535 == pytest.approx(codes.max(), abs=1e-3)
        assert np.array_equal(np.round(s["image"][0].numpy() * 65535), codes)
    batch = next(iter(dm.train_dataloader()))
    assert batch["bit_depth"].tolist() == [16, 16] and len(batch["target"]) == 2


def test_mixed_bit_depths_in_one_batch(tmp_path):
    grey8 = np.full((32, 32), 200, np.uint8)
    grey16 = np.full((32, 32), 40000, np.uint16)
    for name, a in (("1", grey8), ("2", grey16)):
        _png(tmp_path / "images" / f"{name}.png", a)
        _png(tmp_path / "masks" / f"{name}.png", (_disc() * 255).astype(np.uint8))
    dm = _seg_dm(tmp_path, in_channels=1)
    dm.setup("fit")
    batch = next(iter(dm._loader("train", shuffle=False)))
    assert batch["bit_depth"].tolist() == [8, 16]
    assert batch["image"][0].max().item() == pytest.approx(200 / 255)
    assert batch["image"][1].max().item() == pytest.approx(40000 / 65535)


# -- masks -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "dtype, fg",
    [(np.uint8, 255), (np.uint8, 1), (np.uint16, 65535), (np.uint16, 1), (np.uint16, 300)],
)
def test_masks_are_label_maps_on_their_own_values(tmp_path, dtype, fg):
    _png(tmp_path / "images" / "1.png", np.full((32, 32), 90, np.uint8))
    _png(tmp_path / "masks" / "1.png", (_disc() * fg).astype(dtype))
    for size in (None, 16):  # resized masks stay labels (nearest neighbour)
        mask = _samples(_seg_dm(tmp_path, image_size=size))["1"]["mask"]
        assert set(mask.unique().tolist()) == {0, 1}
        if size is None:
            assert torch.equal(mask, torch.from_numpy(_disc().astype(np.int64)))


# -- DICOM -----------------------------------------------------------------------------------
def test_dicom_images_equal_what_the_reader_gives(tmp_path):
    root = _dicom_folder(tmp_path / "dcm")
    samples = _samples(_seg_dm(root, in_channels=1))
    assert len(samples) == 6
    for name, s in samples.items():
        x, bits, meta = read_image(root / "images" / f"{name}.dcm")
        assert s["bit_depth"] == bits
        assert torch.equal(s["image"], match_channels(torch.from_numpy(x), 1))
        assert torch.equal(s["mask"], torch.from_numpy(_disc().astype(np.int64)))
        # bright (dense) disc in every kind, MONOCHROME1 included
        disc = torch.from_numpy(_disc())
        assert s["image"][0][disc].mean() > s["image"][0][~disc].mean()


def test_window_in_hu_for_rescaled_dicom_and_in_stored_values_for_png(tmp_path):
    root = _dicom_folder(tmp_path / "dcm", n=3)
    lo, hi = -160.0, 240.0
    samples = _samples(_seg_dm(root, in_channels=1, window=[lo, hi]))
    for name, s in samples.items():
        ds = pydicom.dcmread(root / "images" / f"{name}.dcm")
        hu = ds.pixel_array.astype(np.float64) * float(ds.get("RescaleSlope", 1)) + float(
            ds.get("RescaleIntercept", 0)
        )
        want = np.clip((hu - lo) / (hi - lo), 0, 1)
        if ds.PhotometricInterpretation == "MONOCHROME1":
            want = 1 - want
        assert np.allclose(s["image"][0].numpy(), want, atol=1e-6), name
    png = tmp_path / "png"
    v = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 3  # 0 .. 3069
    _png(png / "images" / "1.png", v)
    _png(png / "masks" / "1.png", np.zeros((32, 32), np.uint8))
    s = _samples(_seg_dm(png, in_channels=1, window=[0, 2536]))["1"]
    assert s["bit_depth"] == 16
    assert np.allclose(s["image"][0].numpy(), np.clip(v / 2536, 0, 1), atol=1e-6)


@pytest.mark.parametrize("window", [[3, 1], [1], ["a", "b"], [0, float("nan")]])
def test_bad_window_is_refused(window):
    with pytest.raises(ValueError, match="data.window"):
        SegmentationDataModule(window=window)
    with pytest.raises(ValueError, match="data.window"):
        ChestXDetDataModule(window=window)


def test_chestxdet_dicom_films(tmp_path):
    disc = _disc(40)
    entries = []
    for i, photometric in enumerate(("MONOCHROME1", "MONOCHROME2")):
        px = np.where(disc, 3000, 800).astype(np.uint16)
        if photometric == "MONOCHROME1":
            px = 4095 - px
        _dicom(tmp_path / "train" / f"{i}.dcm", px, photometric)
        entries.append({"file_name": f"{i}.dcm", "syms": ["Mass"], "boxes": [[10, 10, 30, 30]],
                        "polygons": [[[10, 10], [30, 10], [30, 30], [10, 30]]]})  # fmt: skip
    (tmp_path / "ChestX_Det_train.json").write_text(json.dumps(entries))
    dm = ChestXDetDataModule(tmp_path, image_size=40, augment=False, val_fraction=0.5)
    dm.setup("fit")
    for ds in (dm.train_set, dm.val_set):
        s = ds[0]
        x, bits, _ = read_image(ds.records[0].path)
        assert s["bit_depth"] == bits == 12
        assert torch.equal(s["image"], torch.from_numpy(x))
        assert s["image"][0][torch.from_numpy(disc)].min() > 0.5  # the mass is bright in both


def test_unreadable_dicom_and_multi_frame_files_are_named(tmp_path):
    root = _dicom_folder(tmp_path / "dcm", n=4)
    (root / "images" / "2.dcm").write_bytes(b"not a dicom file")
    with pytest.raises(ValueError, match=r"cannot read image .*images/2\.dcm.*on_bad_image skip"):
        _seg_dm(root).setup("fit")
    # Header fine, pixel data cut: found when read, or at setup under skip.
    data = (root / "images" / "3.dcm").read_bytes()
    (root / "images" / "3.dcm").write_bytes(data[: len(data) - 600])
    dm = _seg_dm(root, on_bad_image="skip")
    with pytest.warns(UserWarning, match=r"images/2\.dcm"):
        dm.setup("fit")
    assert sorted(p.name for p in dm.skipped_files) == ["2.dcm", "3.dcm"]
    assert sum(len(d) for d in dm.datasets.values()) == 2
    (root / "images" / "2.dcm").unlink()
    (root / "masks" / "2.png").unlink()
    dm = _seg_dm(root)
    dm.setup("fit")
    index = [p[0].name for p in dm.datasets["train"].pairs].index("3.dcm")
    with pytest.raises(ValueError, match=r"cannot read image .*images/3\.dcm"):
        dm.datasets["train"][index]
    # A multi-page TIFF is not one 2D image.
    pages = [Image.fromarray(np.zeros((32, 32), np.uint8)) for _ in range(2)]
    pages[0].save(root / "images" / "9.tif", save_all=True, append_images=pages[1:])
    _png(root / "masks" / "9.png", np.zeros((32, 32), np.uint8))
    with pytest.raises(ValueError, match=r"images/9\.tif: holds 2 frames"):
        _seg_dm(root).setup("fit")


def test_dicom_dataset_trains_and_compress_sends_the_same_tensors(tmp_path, monkeypatch):
    from mvmic.codecs.base import Codec
    from mvmic.modules import MVMICNet

    root = _dicom_folder(tmp_path / "dcm")
    dm = _seg_dm(root, in_channels=1, val_fraction=0.2, test_fraction=0.2)
    torch.manual_seed(0)
    model = MVMICNet(
        arch="Unet", encoder="resnet18", codec="bmshj2018-hyperprior", N=8, M=12, in_channels=1,
        task_args={"encoder_depth": 3, "decoder_channels": [16, 8, 4]},
    )  # fmt: skip
    trainer = Trainer(
        max_steps=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(model, dm)
    assert trainer.global_step == 1
    ckpt = tmp_path / "dicom.ckpt"
    trainer.save_checkpoint(ckpt)
    samples = _samples(dm)

    sent: list[tuple[torch.Tensor, int]] = []
    original = Codec.compress

    def spy(self, x, bit_depth=8):
        sent.append((x.detach().clone(), bit_depth))
        return original(self, x, bit_depth=bit_depth)

    monkeypatch.setattr(Codec, "compress", spy)
    out = tmp_path / "bits"
    assert main(["compress", "--ckpt", str(ckpt), str(root / "images"), str(out)]) == 0
    files = sorted((root / "images").glob("*.dcm"))  # the CLI walks the folder sorted
    assert len(sent) == len(files) == len(samples) == 6
    for path, (x, bits) in zip(files, sent):
        s = samples[path.stem]
        assert torch.equal(x.reshape(s["image"].shape), s["image"]), path.name
        assert bits == s["bit_depth"]
        assert (out / f"{path.stem}.mvmic").is_file()


# -- mvmic synth -----------------------------------------------------------------------------
@pytest.mark.slow  # a fresh interpreter imports torch and Lightning: ~20 s on 2 busy cores
def test_synth_num_zero_is_refused_through_the_real_cli(tmp_path):
    out = tmp_path / "twin"
    run = subprocess.run(
        [sys.executable, "-m", "mvmic.cli", "synth", "colondb", "--out", str(out), "--num", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 2
    assert run.stderr.strip() == "mvmic: error: --num must be at least 1 (colondb twin), got 0"
    assert not out.exists()


@pytest.mark.parametrize(
    "family, args, message",
    [
        ("colondb", ["--num", "0"], "--num must be at least 1"),
        ("colondb", ["--size", "0"], "--size must be at least 8"),
        ("hvsmr", ["--num", "0"], "--num must be at least 1"),
        ("isic2017", ["--num", "-3"], "--num must be at least 1"),
        ("chestxdet", ["--seed", "-1"], "--seed must be at least 0"),
        ("isic2017", ["--bit_depth", "16"], "--bit_depth 16 is not available"),
        ("colondb", ["--bit_depth", "12"], "--bit_depth 12 is not available"),
    ],
)
def test_synth_refuses_every_out_of_range_number(tmp_path, capsys, family, args, message):
    out = tmp_path / "twin"
    assert main(["synth", family, "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()

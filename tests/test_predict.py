"""``mvmic predict``: per-image task outputs through the real bitstream, written to a folder."""

from __future__ import annotations

import csv
import functools
import json
from pathlib import Path

import lightning as L
import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from data_modules import (
    ChestXDetDataModule,
    HVSMRDataModule,
    ISICDataModule,
    SegmentationDataModule,
)
from data_modules.hvsmr import load_volume, scale_intensity
from data_modules.predict import ImageFolderDataset
from mvmic import coding
from mvmic.cli import main
from mvmic.modules import MVMICNet, TaskModule, load_module
from mvmic.modules.gan_seg import GanSegmentation
from mvmic.prediction import PredictionWriter, write_result

MV = dict(arch="Unet", encoder="resnet18", codec="mbt2018-mean", N=8, M=12)
GAN2D = dict(
    design="D2",
    in_channels=3,
    num_classes=2,
    class_names=["background", "lesion"],
    code_channels=8,
    codec_width=8,
    encoder="resnet18",
    seg_args={"encoder_depth": 3, "decoder_channels": [32, 16, 8]},
)
GAN3D = dict(
    design="D2",
    dims=3,
    in_channels=1,
    num_classes=3,
    class_names=["background", "myocardium", "blood_pool"],
    arch="UNet",
    code_channels=4,
    codec_width=8,
    roi_size=[16, 16, 16],
    sw_batch_size=1,
    seg_args={"channels": [8, 16], "strides": [2], "num_res_units": 0},
)
DET = dict(
    task="detection",
    arch="fasterrcnn_mobilenet_v3_large_fpn",
    num_classes=14,
    in_channels=1,
    task_args={"min_size": 64, "max_size": 64, "anchor_sizes": [8, 16, 32, 64, 128]},
)


def _flags(prefix: str, kwargs: dict) -> list[str]:
    out = []
    for key, value in kwargs.items():
        out += [f"--{prefix}.{key}", value if isinstance(value, str) else json.dumps(value)]
    return out


def _checkpoint(path: Path, model: L.LightningModule, dm: L.LightningDataModule) -> Path:
    """A real Lightning checkpoint after one training step (what `mvmic fit` leaves)."""
    trainer = L.Trainer(
        accelerator="cpu",
        default_root_dir=str(path.parent),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        max_steps=1,
        limit_val_batches=0,
    )
    trainer.fit(model, dm)
    trainer.save_checkpoint(path)
    return path


def _predict(
    config: str, ckpt: Path | None, out: Path | None, *flags: str, loggers: bool = False
) -> int:
    args = ["predict", "--config", config, *flags, "--trainer.enable_progress_bar", "false"]
    args += ["--ckpt_path", str(ckpt)] if ckpt else []
    args += [] if loggers else ["--trainer.logger", "false"]
    return main(args + (["--predict_dir", str(out)] if out else []))


def _rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "predictions.csv", newline="") as f:
        return {row["file"]: row for row in csv.DictReader(f)}


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


# -- the plain-folder dataset and the writer (fast) -----------------------------------------
def test_folder_dataset_reads_exact_bits_and_names_and_refuses_bad_folders(tmp_path):
    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    grey16 = (np.arange(40 * 48, dtype=np.uint16).reshape(40, 48) * 31).astype(np.uint16)
    Image.fromarray(grey16).save(root / "sub" / "a16.png")
    rgb = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(root / "b.png")
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.png").write_bytes(b"")

    ds = ImageFolderDataset(root, in_channels=3)
    assert ds.names == ["b", "sub/a16"]
    item = ds[1]
    assert item["bit_depth"] == 16 and item["image"].shape == (3, 40, 48)
    # 16 bits exactly: no rounding to 8 on the way in
    assert torch.equal(item["image"][0], torch.from_numpy(grey16 / 65535).float())
    assert torch.equal(ds[0]["image"], torch.from_numpy(rgb / 255).float().permute(2, 0, 1))
    resized = ImageFolderDataset(root, in_channels=1, size=(16, 16))[1]["image"]
    assert resized.shape == (1, 16, 16)

    with pytest.raises(FileNotFoundError, match="predict_root .* is not a folder"):
        ImageFolderDataset(tmp_path / "none", 3)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        ImageFolderDataset(empty, 3)
    Image.fromarray(rgb).save(root / "b.jpg")
    with pytest.raises(ValueError, match="would both write the prediction b"):
        ImageFolderDataset(root, 3)


def test_folder_volumes_follow_the_hvsmr_axes_and_scaling(hvsmr_root, tmp_path):
    src = hvsmr_root / "training_axial_crop_pat0.nii.gz"
    vol = nib.load(src)
    data = np.asarray(vol.dataobj)[:20, :18, :16]  # (x, y, z), not a cube
    root = tmp_path / "vols"
    root.mkdir()
    nib.save(nib.Nifti1Image(data, vol.affine), root / "p.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.uint8), np.eye(4)), root / "q.nii")
    ds = ImageFolderDataset(root, 1, volumes=True, normalize=scale_intensity)
    assert ds.names == ["p", "q"]
    item = ds[0]
    assert item["image"].shape == (1, 16, 18, 20)  # (z, y, x)
    nib.save(nib.Nifti1Image(np.zeros_like(data, np.uint8), vol.affine), tmp_path / "l.nii.gz")
    ref, _ = load_volume(root / "p.nii.gz", tmp_path / "l.nii.gz")
    assert np.allclose(item["image"].numpy(), ref, atol=1e-3)
    assert np.allclose(item["affine"].numpy(), vol.affine)


def test_writer_writes_one_file_per_image_and_the_table(tmp_path):
    mask = torch.tensor([[0, 1], [2, 1]])
    volume = torch.arange(24).reshape(2, 3, 4) % 3  # (z, y, x)
    affine = torch.diag(torch.tensor([0.5, 0.6, 0.7, 1.0], dtype=torch.float64))
    det = {
        "boxes": torch.tensor([[1.0, 2.0, 3.0, 4.0]]),
        "labels": torch.tensor([3]),
        "scores": torch.tensor([0.5]),
        "masks": torch.zeros(1, 1, 8, 8),
    }
    results = [
        {"name": "m", "prediction": mask, "shape": (2, 2), "bytes": 10, "bpp": 20.0},
        {"name": "sub/v", "prediction": volume, "shape": (2, 3, 4), "bytes": 3, "bpp": 1.0,
         "affine": affine, "source": "/data/v.nii.gz"},
        {"name": "d", "prediction": det, "shape": (8, 8), "bytes": 64, "bpp": 8.0},
    ]  # fmt: skip
    writer = PredictionWriter(tmp_path / "out")
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    writer.on_predict_start(trainer, None)
    writer.write_on_batch_end(trainer, None, results, None, None, 0, 0)
    out = tmp_path / "out"
    assert np.array_equal(_png(out / "m.png"), mask.numpy().astype(np.uint8))
    assert _png(out / "m.png").dtype == np.uint8
    nii = nib.load(out / "sub" / "v.nii.gz")
    assert np.array_equal(np.asarray(nii.dataobj), volume.numpy().transpose(2, 1, 0))
    assert np.allclose(nii.affine, affine.numpy())
    assert json.loads((out / "d.json").read_text()) == {
        "boxes": [[1.0, 2.0, 3.0, 4.0]],
        "labels": [3],
        "scores": [0.5],
    }
    rows = _rows(out)
    assert list(rows) == ["m.png", "sub/v.nii.gz", "d.json"]
    assert rows["sub/v.nii.gz"]["depth"] == "2" and rows["sub/v.nii.gz"]["height"] == "3"
    assert rows["sub/v.nii.gz"]["source"] == "/data/v.nii.gz" and rows["m.png"]["bytes"] == "10"
    with pytest.raises(ValueError, match="outside"):
        write_result(out, {**results[0], "name": "../escape"})
    # A rerun replaces its own predictions; other files are never replaced.
    writer.on_predict_start(trainer, None)
    images = tmp_path / "images"
    images.mkdir()
    (images / "m.png").write_bytes(b"source")
    with pytest.raises(ValueError, match="not an earlier predict run"):
        PredictionWriter(images).on_predict_start(trainer, None)
    with pytest.raises(ValueError, match="would replace it"):
        write_result(images, {**results[0], "source": str(images / "m.png")})
    assert (images / "m.png").read_bytes() == b"source"


# -- predict_step: the deployment path (fast, no trainer) -----------------------------------
def test_predict_step_sends_real_bits_per_image():
    torch.manual_seed(0)
    small = {"encoder_depth": 3, "decoder_channels": [16, 8, 4]}
    model = MVMICNet(**MV, task_args=small).eval()
    model.codec.update(force=True)
    x = torch.rand(2, 3, 32, 32)
    batch = {"image": x, "name": ["a", "b"], "bit_depth": torch.tensor([8, 16])}
    out = model.predict_step(batch, 0)
    assert [r["name"] for r in out] == ["a", "b"]
    for i, r in enumerate(out):
        bits = int(batch["bit_depth"][i])
        data = coding.compress(x[i], model, bit_depth=bits)
        assert r["bytes"] == len(data) and r["bpp"] == 8 * len(data) / (32 * 32)
        expect = model.task.predict(coding.decompress(data, model))[0]
        assert torch.equal(r["prediction"], expect) and r["shape"] == (32, 32)

    task = TaskModule(arch="Unet", encoder="resnet18", task_args=small).eval()
    raw = task.predict_step({"image": x, "name": ["a", "b"]}, 0)
    assert raw[0]["bytes"] == 3 * 32 * 32 and raw[0]["bpp"] == 24.0
    assert torch.equal(raw[1]["prediction"], task.task.predict(x[1:]).squeeze(0))


def test_predict_step_3d_gan_segments_the_decoded_volume_by_sliding_window():
    torch.manual_seed(0)
    model = GanSegmentation(**GAN3D).eval()
    x = torch.rand(1, 1, 20, 24, 16)
    (r,) = model.predict_step({"image": x, "name": ["v"]}, 0)
    data = model.codec.compress(x).to_bytes()
    assert r["bytes"] == len(data) and r["shape"] == (20, 24, 16)
    feats = model.codec.decompress(data)
    assert torch.equal(r["prediction"], model.segment(feats).argmax(1)[0])
    d1 = GanSegmentation(**{**GAN3D, "design": "D1"}).eval()
    (r,) = d1.predict_step({"image": x, "name": ["v"]}, 0)
    assert r["bytes"] == 20 * 24 * 16 and r["bpp"] == 8.0


# -- the real CLI --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mv_ckpt(colondb_root, tmp_path_factory) -> Path:
    L.seed_everything(0)
    dm = SegmentationDataModule(root=str(colondb_root), image_size=32, batch_size=2)
    return _checkpoint(tmp_path_factory.mktemp("mv") / "mv.ckpt", MVMICNet(**MV), dm)


@pytest.mark.slow
def test_predict_mvmicnet_test_split_and_folder_match_compress_and_decompress(
    mv_ckpt, colondb_root, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    data = ["--data.root", str(colondb_root), "--data.image_size", "32"]
    flags = [*data, "--data.batch_size", "2", *_flags("model", MV)]
    seen = {}
    predict = L.Trainer.predict

    @functools.wraps(predict)  # LightningCLI reads predict's signature for its options
    def spy(self, *args, **kwargs):
        seen.update(kwargs)
        return predict(self, *args, **kwargs)

    monkeypatch.setattr(L.Trainer, "predict", spy)
    # The config as it is (CSV and offline W&B loggers, checkpoint callbacks).
    assert _predict("colondb_seg.yaml", mv_ckpt, None, *flags, loggers=True) == 0
    # Nothing is kept in memory; the checkpoint is read as plain tensors.
    assert seen["return_predictions"] is False and seen["weights_only"] is True
    out = tmp_path / "runs/colondb_seg/predict"  # default: <default_root_dir>/predict
    dm = SegmentationDataModule(root=str(colondb_root), image_size=32, batch_size=2)
    dm.setup("test")
    test = dm.datasets["test"]
    rows = _rows(out)
    assert sorted(rows) == sorted(f"{s['name']}.png" for s in test)
    model = load_module(mv_ckpt)
    for sample in test:
        name = sample["name"]
        data = coding.compress(sample["image"], model, bit_depth=sample.get("bit_depth"))
        assert int(rows[f"{name}.png"]["bytes"]) == len(data)
        (tmp_path / f"{name}.mvmic").write_bytes(data)
        args = ["--ckpt", str(mv_ckpt), f"{name}.mvmic", f"dec_{name}.png", "--task"]
        assert main(["decompress", *args]) == 0
        assert np.array_equal(_png(out / f"{name}.png"), _png(tmp_path / f"dec_{name}.png"))

    # A plain folder at the working size: an 8-bit RGB image, a 16-bit grey one in a subfolder.
    folder = tmp_path / "plain"
    (folder / "sub").mkdir(parents=True)
    src = sorted((colondb_root / "images").iterdir())[0]
    Image.open(src).convert("RGB").resize((32, 32)).save(folder / "rgb.png")
    grey = (np.random.default_rng(1).random((32, 32)) * 65535).astype(np.uint16)
    Image.fromarray(grey).save(folder / "sub" / "grey16.png")
    out = tmp_path / "pred_plain"
    assert _predict("colondb_seg.yaml", mv_ckpt, out, *flags, "--data.predict_root", "plain") == 0
    rows = _rows(out)
    assert sorted(rows) == ["rgb.png", "sub/grey16.png"]
    for i, file in enumerate(rows):
        image = folder / file
        assert main(["compress", "--ckpt", str(mv_ckpt), str(image), f"{i}.mvmic"]) == 0
        assert int(rows[file]["bytes"]) == (tmp_path / f"{i}.mvmic").stat().st_size
        assert rows[file]["source"] == str(image)
        assert main(["decompress", "--ckpt", str(mv_ckpt), f"{i}.mvmic", f"{i}.png", "--task"]) == 0
        assert np.array_equal(_png(out / file), _png(tmp_path / f"{i}.png"))


@pytest.mark.slow
def test_predict_gan_2d_and_3d_write_masks_and_volumes(
    isic_root, hvsmr_root, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    L.seed_everything(0)
    dm2 = ISICDataModule(root=str(isic_root), image_size=32, batch_size=2)
    ckpt2 = _checkpoint(tmp_path / "gan2.ckpt", GanSegmentation(**GAN2D), dm2)
    folder = tmp_path / "plain2d"
    folder.mkdir()
    for src in sorted((isic_root / "ISIC-2017_Test_v2_Data").glob("ISIC_*.jpg"))[:2]:
        Image.open(src).convert("RGB").resize((32, 32)).save(folder / f"{src.stem}.png")
    flags = ["--data.root", str(isic_root), "--data.image_size", "32", *_flags("model", GAN2D)]
    out = tmp_path / "out2d"
    d2 = ["--config", "isic_gan/d2.yaml"]  # design D2 on the ISIC dataset config
    assert _predict("isic_gan.yaml", ckpt2, out, *d2, *flags, "--data.predict_root", "plain2d") == 0
    rows = _rows(out)
    assert sorted(rows) == sorted(f"{p.stem}.png" for p in folder.iterdir())
    for i, file in enumerate(rows):
        assert main(["compress", "--ckpt", str(ckpt2), str(folder / file), f"{i}.mvmic"]) == 0
        assert int(rows[file]["bytes"]) == (tmp_path / f"{i}.mvmic").stat().st_size
        assert main(["decompress", "--ckpt", str(ckpt2), f"{i}.mvmic", f"{i}.png", "--task"]) == 0
        assert np.array_equal(_png(out / file), _png(tmp_path / f"{i}.png"))

    dm3 = HVSMRDataModule(
        root=str(hvsmr_root), crop_size=(16, 16, 16), crops_per_volume=1, batch_size=1
    )
    ckpt3 = _checkpoint(tmp_path / "gan3.ckpt", GanSegmentation(**GAN3D), dm3)
    vols = tmp_path / "vols"
    vols.mkdir()
    src = nib.load(hvsmr_root / "training_axial_crop_pat1.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(src.dataobj)[:, :24, :16], src.affine), vols / "v.nii.gz")
    flags = ["--data.root", str(hvsmr_root), *_flags("model", GAN3D)]
    out = tmp_path / "out3d"
    d2 = ["--config", "hvsmr_gan3d/d2.yaml"]
    assert _predict("hvsmr_gan3d.yaml", ckpt3, out, *d2, *flags, "--data.predict_root", "vols") == 0
    rows = _rows(out)
    assert list(rows) == ["v.nii.gz"]
    written = nib.load(out / "v.nii.gz")
    assert written.shape == src.shape[:1] + (24, 16)  # the source's voxel grid and affine
    assert np.allclose(written.affine, src.affine)
    model = load_module(ckpt3)
    item = ImageFolderDataset(vols, 1, volumes=True, normalize=scale_intensity)[0]
    data = model.codec.compress(item["image"][None], bit_depth=item["bit_depth"]).to_bytes()
    assert int(rows["v.nii.gz"]["bytes"]) == len(data)
    assert rows["v.nii.gz"]["depth"] == "16"
    expect = model.task_output(model.codec.decompress(data))[0].numpy().transpose(2, 1, 0)
    assert np.array_equal(np.asarray(written.dataobj), expect)


@pytest.mark.slow
def test_predict_task_module_detection_writes_json_per_image(chestxdet_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    L.seed_everything(0)
    dm = ChestXDetDataModule(root=str(chestxdet_root), image_size=64, batch_size=2, augment=False)
    ckpt = _checkpoint(tmp_path / "det.ckpt", TaskModule(**DET), dm)
    flags = ["--data.root", str(chestxdet_root), "--data.image_size", "64", *_flags("model", DET)]
    out = tmp_path / "out"
    assert _predict("chestxdet_task.yaml", ckpt, out, *flags) == 0
    dm.setup("test")
    rows = _rows(out)
    assert sorted(rows) == sorted(f"{r.name}.json" for r in dm.test_set.records)
    for file, row in rows.items():
        det = json.loads((out / file).read_text())
        assert set(det) == {"boxes", "labels", "scores"}
        assert len(det["boxes"]) == len(det["labels"]) == len(det["scores"])
        # no codec: the raw 8-bit grey film is what would be sent
        assert (row["height"], row["width"], row["bytes"]) == ("64", "64", str(64 * 64))


def test_predict_dir_is_a_predict_option_only(colondb_root, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["fit", "--config", "colondb_seg.yaml", "--predict_dir", str(tmp_path / "x")]
    assert main(args + ["--data.root", str(colondb_root)]) == 2
    assert "unrecognized arguments: --predict_dir" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_predict_root_that_is_missing_is_one_clear_line(
    colondb_root, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    flags = ["--data.root", str(colondb_root), "--data.image_size", "32", *_flags("model", MV)]
    code = _predict(
        "colondb_seg.yaml", None, tmp_path / "o", *flags, "--data.predict_root", "nowhere"
    )
    err = capsys.readouterr().err
    assert code == 2 and "data.predict_root nowhere is not a folder" in err
    assert "Traceback" not in err

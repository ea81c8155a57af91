"""DDP on CPU (gloo): two processes give the same test metrics as one, one record is written."""

import json
import subprocess
import sys

import pytest
import torch
from lightning import Trainer

from data_modules import SegmentationDataModule
from mvmic.modules import MVMICNet


@pytest.fixture(scope="module")
def checkpoint(colondb_root, tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ddp") / "m.ckpt"
    model = MVMICNet(arch="Unet", encoder="resnet18", codec="mbt2018-mean", N=8, M=12)
    dm = SegmentationDataModule(root=str(colondb_root), image_size=32, batch_size=2)
    trainer = Trainer(
        max_steps=1,
        limit_val_batches=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=path.parent,
    )
    trainer.fit(model, dm)
    trainer.save_checkpoint(path)
    return path


def _test(root, ckpt, cwd, devices: int, results: str):
    args = [
        "test",
        "--config",
        "colondb_seg.yaml",
        "--data.root",
        str(root),
        "--data.image_size",
        "32",
        "--data.batch_size",
        "1",
        "--data.test_fraction",
        "0.34",
        "--model.N",
        "8",
        "--model.M",
        "12",
        "--model.encoder",
        "resnet18",
        "--model.codec",
        "mbt2018-mean",
        "--model.results_dir",
        results,
        "--trainer.logger",
        "false",
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        str(devices),
        "--ckpt_path",
        str(ckpt),
    ]
    if devices > 1:
        args += ["--trainer.strategy", "ddp"]
    r = subprocess.run(
        [sys.executable, "-m", "mvmic.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    record = json.loads((cwd / results / "colondb" / "MVMICNet_stage_1.json").read_text())
    return record["results"]


def test_two_process_test_matches_one_process(colondb_root, checkpoint, tmp_path):
    one = _test(colondb_root, checkpoint, tmp_path, 1, "one")
    two = _test(colondb_root, checkpoint, tmp_path, 2, "two")
    # 12 images, 4 in the test split: 2 per rank, no padding duplicates.
    assert len(two["bpp"]) == 1, "rank 0 alone writes the record"
    for key in ("bpp", "bpp_est", "psnr", "ms-ssim", "miou", "dice"):
        assert two[key][0] == pytest.approx(one[key][0], rel=1e-5, abs=1e-6), key

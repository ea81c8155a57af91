"""``mvmic compare``: records name what made them; their points decode again (real bits)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_modules import _trainer

TASK_ARGS = {"encoder_depth": 3, "decoder_channels": [16, 8, 4]}


def _fit_and_test(module, dm, root: Path) -> Path:
    trainer = _trainer(root, max_steps=2, limit_val_batches=0)
    trainer.fit(module, dm)
    ckpt = root / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    _trainer(root).test(module, dm, ckpt_path=str(ckpt))
    return ckpt


@pytest.fixture(scope="module")
def results(colondb_root, tmp_path_factory) -> Path:
    """uncompressed + MVMICNet stage 1 (mvmic test) + JPEG (mvmic anchors), all tiny."""
    import yaml

    from data_modules import SegmentationDataModule
    from mvmic.evaluation.anchors import main as anchors_main
    from mvmic.modules import MVMICNet, TaskModule

    tmp = tmp_path_factory.mktemp("compare")
    out = tmp / "results"
    data = {"root": str(colondb_root), "image_size": 64, "batch_size": 4, "augment": False}
    torch.manual_seed(0)
    common = {"arch": "Unet", "encoder": "resnet18", "task_args": TASK_ARGS}
    task = TaskModule(**common, results_dir=str(out))
    task_ckpt = _fit_and_test(task, SegmentationDataModule(**data), tmp / "task")
    codec = MVMICNet(**common, N=16, M=24, init_task=str(task_ckpt), results_dir=str(out))
    _fit_and_test(codec, SegmentationDataModule(**data), tmp / "codec")
    config = tmp / "data.yaml"
    spec = {"class_path": "data_modules.SegmentationDataModule", "init_args": data}
    config.write_text(yaml.safe_dump({"data": spec}))
    args = ["--config", str(config), "--ckpt_path", str(task_ckpt), "--codecs", "jpeg"]
    assert (
        anchors_main([*args, "--qualities", "5,60", "--results_dir", str(out), "--no_curves"]) == 0
    )
    return out


@pytest.mark.slow  # the fixture fits and tests two tiny modules: ~60 s on 2 busy cores
def test_records_name_their_checkpoint_and_data_module(results):
    from mvmic.evaluation.provenance import build_datamodule

    learned = json.loads((results / "colondb" / "MVMICNet_stage_1.json").read_text())
    assert Path(learned["results"]["ckpt_path"][0]).is_file()
    assert learned["data"]["class_path"].startswith("data_modules.")
    jpeg = json.loads((results / "colondb" / "jpeg.json").read_text())
    assert Path(jpeg["task_ckpt"]).is_file() and jpeg["data"] == learned["data"]
    dm = build_datamodule(learned["data"], "record")
    assert dm.hparams["image_size"] == 64
    with pytest.raises(ValueError, match="not one of mvmic's data modules"):
        build_datamodule({"class_path": "os.system", "init_args": {}}, "evil.json")


@pytest.mark.slow
def test_compare_decodes_every_method_again(results, tmp_path):
    from mvmic.codecs.bit_map import bit_map
    from mvmic.evaluation.compare import compare
    from mvmic.modules import load_module

    out = tmp_path / "panel.png"
    result = compare(results, images=2, bpp=0.05, out=out)
    names = [c.name for c in result.choices]
    assert names == ["MVMICNet stage 1", "uncompressed", "jpeg"], names
    assert not result.skipped
    jpeg = next(c for c in result.choices if c.name == "jpeg")
    assert jpeg.value("quality") == 5.0  # the point nearest 0.05 bpp
    from PIL import Image

    with Image.open(out) as img:  # 2 rows of 5 tiles, each at least 256 px
        assert img.width >= 5 * 256 and img.height >= 2 * 256
    assert result.bits is not None and result.bits.is_file()
    rows = {(r["image"], r["method"]): r for r in result.rows}
    assert len(rows) == 6 and all(0 <= r["miou"] <= 1 for r in rows.values())
    # The learned codec's per-image rate is its real bitstream; the map sums to its estimate.
    learned = next(c for c in result.choices if c.name.startswith("MVMICNet"))
    model = load_module(learned.value("ckpt_path"))
    x = torch.rand(1, 3, 64, 64)
    est = model.bpp_estimates(x)[0] * 64 * 64
    assert float(bit_map(model.codec, x).sum()) == pytest.approx(float(est), rel=1e-5)
    assert np.isfinite([r["bpp"] for r in result.rows]).all()


@pytest.mark.slow
def test_report_embeds_the_panels_and_bit_maps(results, tmp_path):
    from test_report import _Page

    from mvmic.evaluation.report import build_report

    out = build_report(results, tmp_path / "report.html", images=1, bpp=0.05)
    page = _Page()
    page.feed(out.read_text(encoding="utf-8"))
    alts = out.read_text(encoding="utf-8")
    assert 'alt="comparison panel"' in alts and 'alt="bit-allocation maps"' in alts
    assert all(src.startswith("data:image/png;base64,") for src in page.images)
    per_image = page.tables["per-image"]
    assert len(per_image) == 1 + 3  # header + one image × three methods


def test_compare_cli_names_a_missing_folder(tmp_path, capsys):
    from mvmic.cli import main

    assert main(["compare", str(tmp_path / "nope"), "--no_wandb"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0]


def test_test_panels_have_titles_bits_and_per_image_metrics():
    """The panel `mvmic test` saves: titled columns, the bit map, each image's own metric."""
    from mvmic.evaluation.panels import figure_to_array, module_panel
    from mvmic.modules import MVMICNet

    torch.manual_seed(0)
    model = MVMICNet(arch="Unet", encoder="resnet18", task_args=TASK_ARGS, N=16, M=24).eval()
    model.codec.update(force=True)
    x = torch.rand(2, 3, 48, 64)
    mask = torch.zeros(2, 48, 64, dtype=torch.long)
    mask[:, 10:30, 20:40] = 1
    batch = {"image": x, "mask": mask, "name": ["a", "b"]}
    with torch.no_grad():
        decoded = model.codec.reconstruct(x)
        preds = model.task.predict(decoded)
    model.set_panel(x, decoded, preds, batch)
    fig = module_panel(model.task, model.panel, batch, 2)
    texts = [t.get_text() for t in fig.texts]
    assert texts[:5] == ["original", "decoded", "bits (estimated)", "prediction", "ground truth"]
    assert sum("mIoU" in t and "Dice" in t for t in texts) == 2  # one per image
    assert sum(" bits · peak " in t for t in texts) == 2
    pixels = figure_to_array(fig)
    # five columns, each at least 256 px wide (48×64 inputs upscaled ×4 to stay readable)
    assert pixels.shape[1] >= 5 * 256 and pixels.shape[0] >= 2 * 192


def test_data_spec_leaves_out_cli_entries_and_rebuilding_checks_the_signature(colondb_root):
    from data_modules import SegmentationDataModule
    from mvmic.evaluation.provenance import build_datamodule, datamodule_spec

    dm = SegmentationDataModule(root=str(colondb_root), image_size=32)
    dm.hparams["_class_path"] = "data_modules.SegmentationDataModule"  # what LightningCLI adds
    spec = datamodule_spec(dm)
    assert "_class_path" not in spec["init_args"]
    assert build_datamodule(spec, "r.json").hparams["image_size"] == 32
    spec["init_args"]["shell"] = "rm -rf /"
    with pytest.raises(ValueError, match=r"r\.json: .*takes no argument\(s\) shell"):
        build_datamodule(spec, "r.json")

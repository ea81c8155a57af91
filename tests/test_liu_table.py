"""Liu et al.'s Table 1: per-volume scores in 3D test records and the table built from them."""

from __future__ import annotations

import json
import re

import lightning as L
import pytest
from test_gan import tiny_module

from data_modules.hvsmr import HVSMRDataModule
from mvmic.evaluation.liu_table import liu_table, table_averages, write_liu_tables
from mvmic.modules.gan_seg import GanSegmentation

CLASSES = ["background", "myocardium", "blood_pool"]


def _tiny_3d(design: str, results: str) -> GanSegmentation:
    return tiny_module(design, 3, results_dir=results)  # the GAN training tests' tiny 3D net


def test_3d_test_writes_per_volume_scores_and_the_table_averages_equal_the_record(
    hvsmr_root, tmp_path
):
    results = tmp_path / "results"
    dm = HVSMRDataModule(root=str(hvsmr_root), crop_size=(16, 16, 16), test_fraction=0.5)
    for design in ("D1", "D2"):
        L.seed_everything(0)
        trainer = L.Trainer(
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=str(tmp_path),
        )
        trainer.test(_tiny_3d(design, str(results)), dm)
    records = {}
    for design in ("d1", "d2"):
        rec = json.loads((results / "hvsmr" / f"liu2020-{design}.json").read_text())
        records[f"liu2020-{design}"] = rec["results"]
        (pv,) = rec["results"]["per_volume"]
        assert len(pv["names"]) == 2 and pv["names"] == sorted(pv["names"], key=str)
        averages = table_averages(pv)
        for m in ("dice", "iou"):
            for c in CLASSES[1:]:
                assert averages[f"{m}_{c}"] == pytest.approx(rec["results"][f"{m}_{c}"][0])
        assert averages["bpp"] == pytest.approx(rec["results"]["bpp"][0])
    assert records["liu2020-d1"]["per_volume"][0]["bpp"] == [8.0, 8.0]

    text = liu_table(list(records.items()))
    lines = text.splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[0] == "volume" and len(header) == 1 + 2 * 2 * 2  # classes × metrics × methods
    assert header[1] == "myocardium Dice · liu2020-d1"
    rows = {r.split("|")[1].strip(): r for r in lines[2:] if r.startswith("|")}
    assert len(rows) == 3  # two volumes and the average
    avg = [float(v) for v in rows["**Average**"].strip("|").split("|")[1:]]
    expect = [
        records[name][f"{m}_{c}"][0]
        for c in CLASSES[1:]
        for m in ("dice", "iou")
        for name in ("liu2020-d1", "liu2020-d2")
    ]
    assert avg == pytest.approx(expect, abs=5e-4)  # printed with 3 decimals
    assert re.search(r"bpp .*liu2020-d1 \(8\)", text)
    (path,) = write_liu_tables(results, tmp_path / "tables")
    assert path.name == "liu_table_hvsmr.md" and "**Average**" in path.read_text()


def test_table_is_empty_without_3d_records_and_labels_several_points_by_bpp():
    assert liu_table([("jpeg", {"bpp": [0.1], "dice": [0.5]})]) == ""
    pv = {"names": ["pat1"], "dice_myo": [0.5], "iou_myo": [0.25], "bpp": [0.1]}
    text = liu_table([("h264", {"bpp": [0.1, 0.2], "per_volume": [pv, {**pv, "bpp": [0.2]}]})])
    assert "myo Dice · h264 @0.1" in text and "myo IoU · h264 @0.2" in text
    assert "| pat1 | 0.500 | 0.500 | 0.250 | 0.250 |" in text

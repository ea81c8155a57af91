"""Rate curves: PNGs, BD tables, W&B curve tables (mvmic.evaluation.curves)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from mvmic.evaluation import curves
from mvmic.evaluation.records import append_point, load_record

RATES = [0.1, 0.2, 0.4, 0.8]
PSNR = [30.0, 33.0, 36.0, 39.0]  # linear in log2(rate): halving the rate gains exactly 3 dB


# --- curves: PNGs, tables, W&B ---------------------------------------------------------------


@pytest.fixture
def results(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    for i, (r, p) in enumerate(zip(RATES, PSNR)):
        append_point(
            root, "colondb", "hevc", {"quality": i, "bpp": r, "psnr": p, "miou": 0.5 + i / 10}
        )
        append_point(root, "colondb", "jpeg", {"quality": i, "bpp": 2 * r, "psnr": p})
        pt = {"lmbda": r, "bpp": r / 2, "psnr": p, "miou": 0.6 + i / 10}
        append_point(root, "colondb", "MVMICNet stage 2", pt)
    append_point(root, "colondb", "tiny", {"lmbda": 1, "bpp": 0.3, "miou": 0.7})
    (root / "notes.json").write_text(json.dumps({"not": "a record"}))
    return root


def test_plot_has_one_line_per_method_and_anchors_dashed(results):
    methods = curves.load_methods(results)["colondb"]
    fig = curves.plot_metric("colondb", "psnr", methods)
    lines = {ln.get_label(): ln for ln in fig.axes[0].lines}
    assert sorted(lines) == ["MVMICNet stage 2", "hevc", "jpeg"]  # "tiny" has no PSNR
    assert lines["hevc"].get_linestyle() == "--" and lines["jpeg"].get_linestyle() == "--"
    assert lines["MVMICNet stage 2"].get_linestyle() == "-"
    assert len(fig.axes[0].lines) == 3
    fig = curves.plot_metric("colondb", "miou", methods)
    assert len(fig.axes[0].lines) == 3  # hevc, MVMICNet, tiny


def test_curves_cli_writes_pngs_and_bd_tables(results, capsys):
    assert curves.main([str(results), "--metrics", "psnr,miou"]) == 0
    out = results / "curves"
    for metric in ("psnr", "miou"):
        with Image.open(out / f"colondb_{metric}.png") as im:
            assert im.format == "PNG" and im.width > 300
    rows = list(csv.DictReader((out / "bd_rate.csv").open()))
    got = {(r["method"], r["metric"]): r for r in rows}
    assert {r["anchor"] for r in rows} == {"hevc"}  # default anchor
    assert float(got[("MVMICNet stage 2", "psnr")]["bd_rate_pct"]) == pytest.approx(-50, abs=0.1)
    assert float(got[("jpeg", "psnr")]["bd_rate_pct"]) == pytest.approx(100, abs=0.1)
    assert float(got[("MVMICNet stage 2", "miou")]["bd_metric"]) == pytest.approx(
        0.1 + 0.05, abs=0.05
    )
    assert got[("tiny", "miou")]["bd_rate_pct"] == ""
    assert "n/a (method has 1 points < 4)" in (out / "bd_rate.md").read_text()
    assert "| MVMICNet stage 2 | -50.00 % |" in capsys.readouterr().out


def test_curves_cli_reports_a_bad_anchor(results, capsys):
    assert curves.main([str(results), "--anchor", "nope"]) == 2
    assert "anchor 'nope' not among colondb's methods" in capsys.readouterr().err


def test_curves_cli_names_an_unknown_metric_and_lists_the_known(results, capsys):
    assert curves.main([str(results), "--metrics", "psnr,foo"]) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "notes.json" not in ln]
    assert len(lines) == 1, lines  # besides the note on the fixture's non-record file
    err = lines[0]
    assert err.startswith("mvmic curves: --metrics foo:")
    assert "choose from" in err and "miou" in err and "psnr" in err
    assert not (results / "curves").exists()


def test_records_with_scalar_values_are_read_as_one_point(tmp_path, capsys):
    root = tmp_path / "results"
    (root / "colondb").mkdir(parents=True)
    (root / "colondb" / "hand.json").write_text(
        json.dumps({"name": "hand", "results": {"bpp": 0.5, "miou": 0.7}})
    )
    assert load_record(root / "colondb" / "hand.json")["results"] == {"bpp": [0.5], "miou": [0.7]}
    assert curves.main([str(root), "--metrics", "miou"]) == 0
    assert (root / "curves" / "colondb_miou.png").is_file()
    (root / "colondb" / "bad.json").write_text(json.dumps({"results": {"bpp": {"a": 1}}}))
    assert curves.main([str(root)]) == 0
    assert "bad.json: results.bpp is an object" in capsys.readouterr().err


def test_wandb_offline_run_holds_the_curve_table(results, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    result = curves.draw_curves(results, metrics=["psnr"])
    run_dir = Path(curves.log_curves_to_wandb(result, wandb_dir=tmp_path / "wb"))
    assert run_dir.name.startswith("offline-run-")
    assert list(run_dir.glob("*.wandb"))
    tables = list(run_dir.rglob("curves/table_*.table.json"))
    assert tables, sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*"))
    table = json.loads(tables[0].read_text())
    assert table["columns"] == ["dataset", "method", "anchor", "metric", "bpp", "value"]
    assert {row[1] for row in table["data"]} == {"hevc", "jpeg", "MVMICNet stage 2"}
    assert len(table["data"]) == 12

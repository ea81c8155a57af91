"""Rate curves, BD-rate, standard-codec anchors, W&B curve tables, sweep planning, latency."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from mvmic import curves, latency, sweep
from mvmic.codecs.standard import STANDARD_CODECS, codec_available
from mvmic.results import append_point, load_record, record_path

RATES = [0.1, 0.2, 0.4, 0.8]
PSNR = [30.0, 33.0, 36.0, 39.0]  # linear in log2(rate): halving the rate gains exactly 3 dB


# --- BD-rate -------------------------------------------------------------------------------


def test_bd_rate_of_halved_rates_is_minus_50_percent():
    rate, rnote, metric, mnote = curves.bd_cell((RATES, PSNR), ([r / 2 for r in RATES], PSNR))
    assert rate == pytest.approx(-50.0, abs=0.1)
    assert rnote == ""  # the PSNR ranges coincide
    assert metric == pytest.approx(3.0, abs=1e-6)
    assert mnote == "rate overlap 50%"  # log-rate ranges overlap over half the span


def test_bd_rate_of_doubled_rates_is_plus_100_percent():
    rate, _, metric, _ = curves.bd_cell((RATES, PSNR), ([r * 2 for r in RATES], PSNR))
    assert rate == pytest.approx(100.0, abs=0.1)
    assert metric == pytest.approx(-3.0, abs=1e-6)


def test_bd_cells_are_na_with_a_reason():
    few = curves.bd_cell((RATES, PSNR), (RATES[:3], PSNR[:3]))
    assert few == (None, "method has 3 points < 4", None, "method has 3 points < 4")
    apart = curves.bd_cell((RATES, PSNR), ([r * 100 for r in RATES], [v + 50 for v in PSNR]))
    assert apart[0] is None and apart[1] == "metric ranges do not overlap"
    assert apart[2] is None and apart[3] == "rate ranges do not overlap"
    bumpy = curves.bd_cell((RATES, PSNR), (RATES, [30.0, 34.0, 33.0, 39.0]))
    assert bumpy[0] is None and bumpy[1] == "method metric not increasing with rate"
    # BD-metric is still defined: +1 dB at 0.2 bpp, -3 dB at 0.4 bpp; pchip mean is -0.75 dB
    assert bumpy[2] == pytest.approx(-0.75, abs=0.01)
    assert curves.bd_cell((RATES, PSNR), ([0.1, 0.1, 0.4, 0.8], PSNR))[1] == "repeated rates"
    # With the envelope option the dip is dropped: 3 points remain, still too few.
    env = curves.bd_cell((RATES, PSNR), (RATES, [30.0, 34.0, 33.0, 39.0]), envelope=True)
    assert env[0] is None and env[1] == "method envelope 3/4 points < 4"
    five = ([0.05, *RATES], [27.0, *PSNR])
    dip = ([0.05 / 2, *(r / 2 for r in RATES)], [27.0, 30.0, 29.0, 36.0, 39.0])
    env = curves.bd_cell(five, dip, envelope=True)
    assert env[1] == "method envelope 4/5 points"
    assert env[0] == pytest.approx(-50.0, abs=3.0)


def test_append_point_replaces_same_lambda_and_keeps_lambda_t_apart(tmp_path):
    append_point(tmp_path, "ds", "m", {"lmbda": 0.01, "lmbda_t": 1.0, "bpp": 0.1})
    append_point(tmp_path, "ds", "m", {"lmbda": 0.01, "lmbda_t": 2.0, "bpp": 0.2})
    append_point(tmp_path, "ds", "m", {"lmbda": 0.01, "lmbda_t": 1.0, "bpp": 0.3})
    path = append_point(tmp_path, "ds", "m", {"quality": 5, "bpp": 0.4}, fields={"anchor": True})
    rec = load_record(path)
    assert rec["results"]["bpp"] == [0.3, 0.2, 0.4]
    assert rec["anchor"] is True
    assert path == record_path(tmp_path, "ds", "m")


# --- standard codec anchors ------------------------------------------------------------------


def _image(kind: str) -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:48]
    g = (np.sin(xx / 5) + np.cos(yy / 7)) * 60 + 128 + rng.normal(0, 8, (48, 48))
    g = g.clip(0, 255)
    img = g if kind.startswith("grey") else np.stack([g, np.roll(g, 5, 0), 255 - g], -1)
    return (img * 257).astype(np.uint16) if kind.endswith("16") else img.astype(np.uint8)


@pytest.mark.parametrize("kind", ["rgb8", "grey8", "grey16", "rgb16"])
@pytest.mark.parametrize("name", sorted(STANDARD_CODECS))
def test_standard_codec_bpp_grows_with_quality(name, kind):
    reason = codec_available(name)
    if reason:
        pytest.skip(reason)
    codec = STANDARD_CODECS[name]
    img = _image(kind)
    if not codec.supports(img):
        with pytest.raises(ValueError, match=name):
            codec.encode(img, codec.qualities[0])
        return
    sizes, errors = [], []
    for q in codec.qualities:
        data = codec.encode(img, q)
        out = codec.decode(data, channels=1 if img.ndim == 2 else 3)
        assert out.shape == img.shape and out.dtype == img.dtype
        assert 0 < codec.payload_bytes(data) <= len(data)
        sizes.append(codec.payload_bytes(data))
        errors.append(float(np.mean((out.astype(float) - img) ** 2)))
    assert all(b >= a for a, b in zip(sizes, sizes[1:])), sizes
    assert sizes[-1] > 2 * sizes[0], sizes
    assert errors[-1] < errors[0], errors


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


# --- sweep planning --------------------------------------------------------------------------


def _config(tmp_path: Path, name: str) -> Path:
    cfg = {
        "trainer": {
            "default_root_dir": "runs/x",
            "logger": [
                {
                    "class_path": "lightning.pytorch.loggers.CSVLogger",
                    "init_args": {"save_dir": "runs/x", "name": "csv"},
                },
                {
                    "class_path": "lightning.pytorch.loggers.WandbLogger",
                    "init_args": {"save_dir": "runs/x", "project": "mvmic", "group": "colondb"},
                },
            ],
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {"dirpath": "runs/x/checkpoints", "monitor": "val_loss"},
                },
            ],
        },
        "model": {"class_path": "mvmic.modules.MVMICNet", "init_args": {"lmbda_d": 0.0067}},
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def _write_last(step) -> None:
    if not step.stage.startswith("test"):
        step.last_ckpt.parent.mkdir(parents=True, exist_ok=True)
        step.last_ckpt.write_bytes(b"")


def test_sweep_plan_skips_done_and_resumes_interrupted(tmp_path, monkeypatch):
    s1, s2 = _config(tmp_path, "seg.yaml"), _config(tmp_path, "seg_stage2.yaml")
    root = tmp_path / "sweep"
    for stage in ("stage1", "stage2", "test"):  # λ = 0.0018 finished
        (root / "lmbda_d_0.0018" / stage).mkdir(parents=True)
        (root / "lmbda_d_0.0018" / stage / "DONE").write_text("ok\n")
    for stage in ("stage2", "test"):  # λ = 0.025: stage 1 lost its marker -> all re-run
        (root / "lmbda_d_0.025" / stage).mkdir(parents=True)
        (root / "lmbda_d_0.025" / stage / "DONE").write_text("ok\n")
    ckpt = root / "lmbda_d_0.0067" / "stage1" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)  # λ = 0.0067 stage 1 interrupted
    ckpt.write_bytes(b"")
    assert sweep.default_stage2(str(s1)) == str(s2)
    steps = sweep.plan_sweep(
        str(s1),
        [0.0018, 0.0067, 0.025],
        root,
        stage2_config=str(s2),
        extra=["--trainer.max_steps", "2"],
    )
    status = [(s.value, s.stage, s.status) for s in steps]
    assert status == [
        (0.0018, "stage1", "done"),
        (0.0018, "stage2", "done"),
        (0.0018, "test", "done"),
        (0.0067, "stage1", "resume"),
        (0.0067, "stage2", "todo"),
        (0.0067, "test", "todo"),
        (0.025, "stage1", "todo"),
        (0.025, "stage2", "todo"),
        (0.025, "test", "todo"),
    ]
    s1_resume, s2_todo, test = steps[3:6]
    assert s1_resume.argv[:2] == ["fit", "--config"]
    assert s1_resume.argv[-2:] == ["--ckpt_path", str(ckpt)]
    assert s1_resume.argv[s1_resume.argv.index("--model.lmbda_d") + 1] == "0.0067"
    assert "--trainer.max_steps" in s2_todo.argv
    assert s2_todo.argv[s2_todo.argv.index("--model.init_from") + 1] == str(ckpt)
    loggers = json.loads(s2_todo.argv[s2_todo.argv.index("--trainer.logger") + 1])
    assert loggers[1]["init_args"]["group"] == "sweep"
    assert loggers[1]["init_args"]["save_dir"] == str(root / "lmbda_d_0.0067" / "stage2")
    cbs = json.loads(s2_todo.argv[s2_todo.argv.index("--trainer.callbacks") + 1])
    assert cbs[0]["init_args"]["dirpath"] == str(root / "lmbda_d_0.0067" / "stage2" / "checkpoints")
    assert test.argv[0] == "test" and test.argv[2] == str(s2)
    assert test.argv[-1] == str(root / "lmbda_d_0.0067" / "stage2" / "checkpoints" / "last.ckpt")

    ran = []

    def fake_run(step):  # as a real fit: it leaves last.ckpt behind
        ran.append((step.value, step.stage))
        _write_last(step)
        return 0

    monkeypatch.setattr(sweep, "run_step", fake_run)
    args = ["--config", str(s1), "--lmbda", "0.0018,0.0067", "--root", str(root), "--no_wandb"]
    assert sweep.main(args) == 0
    assert ran == [(0.0067, "stage1"), (0.0067, "stage2"), (0.0067, "test")]


def test_sweep_tests_every_stage_and_a_failed_test_blocks_nothing(tmp_path, monkeypatch):
    s1, s2 = _config(tmp_path, "seg.yaml"), _config(tmp_path, "seg_stage2.yaml")
    root = tmp_path / "sweep"
    (root / "lmbda_d_0.01" / "stage1" / "checkpoints").mkdir(parents=True)
    (root / "lmbda_d_0.01" / "stage1" / "checkpoints" / "last.ckpt").write_bytes(b"")
    (root / "lmbda_d_0.01" / "stage1" / "DONE").write_text("ok\n")
    steps = sweep.plan_sweep(str(s1), [0.01], root, stage2_config=str(s2), test_every_stage=True)
    assert [(s.stage, s.status) for s in steps] == [
        ("stage1", "done"),
        ("test_stage1", "todo"),
        ("stage2", "todo"),
        ("test", "todo"),
    ]
    t1 = steps[1]
    stage1_ckpt = str(root / "lmbda_d_0.01" / "stage1" / "checkpoints" / "last.ckpt")
    assert t1.argv[:3] == ["test", "--config", str(s1)]
    assert t1.argv[-2:] == ["--ckpt_path", stage1_ckpt]
    assert t1.run_dir == root / "lmbda_d_0.01" / "test_stage1"
    assert steps[2].argv[steps[2].argv.index("--model.init_from") + 1] == stage1_ckpt

    ran = []

    def fake_run(step):
        ran.append(step.stage)
        _write_last(step)
        return 1 if step.stage == "test_stage1" else 0

    monkeypatch.setattr(sweep, "run_step", fake_run)
    args = ["--config", str(s1), "--lmbda", "0.01", "--root", str(root), "--no_wandb"]
    assert sweep.main([*args, "--test_every_stage"]) == 1  # the failure is reported...
    assert ran == ["test_stage1", "stage2", "test"]  # ...but stage 2 still ran


def test_sweep_hands_on_the_chosen_checkpoint_and_says_when_it_is_missing(
    tmp_path, monkeypatch, capsys
):
    s1, s2 = _config(tmp_path, "seg.yaml"), _config(tmp_path, "seg_stage2.yaml")
    root = tmp_path / "sweep"
    steps = sweep.plan_sweep(
        str(s1), [0.01], root, stage2_config=str(s2), test_every_stage=True, ckpt="best"
    )
    best1 = root / "lmbda_d_0.01" / "stage1" / "checkpoints" / "best.ckpt"
    best2 = root / "lmbda_d_0.01" / "stage2" / "checkpoints" / "best.ckpt"
    test1, stage2, test2 = steps[1:]
    assert test1.argv[-2:] == ["--ckpt_path", str(best1)] and test1.input_ckpt == best1
    assert stage2.argv[stage2.argv.index("--model.init_from") + 1] == str(best1)
    assert test2.argv[-2:] == ["--ckpt_path", str(best2)]

    # stage 1 "trains" (last.ckpt) but its config has no `best` checkpoint
    monkeypatch.setattr(sweep, "run_step", lambda step: _write_last(step) or 0)
    args = ["--config", str(s1), "--lmbda", "0.01", "--root", str(root), "--no_wandb"]
    assert sweep.main([*args, "--ckpt", "best"]) == 1
    err = capsys.readouterr().err
    assert f"needs {best1}, which the previous stage did not write" in err
    with pytest.raises(ValueError, match="--ckpt must be one of"):
        sweep.plan_sweep(str(s1), [0.01], root, ckpt="first")


def test_sweep_rejects_bad_param(tmp_path):
    with pytest.raises(ValueError, match="--param must be one of"):
        sweep.plan_sweep(str(_config(tmp_path, "a.yaml")), [0.1], tmp_path, param="lmbda")


# --- latency ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "bps"),
    [("10Mbit", 1e7), ("10 Mbps", 1e7), ("100kbit/s", 1e5), ("1.5MB/s", 1.2e7), ("8b", 8)],
)
def test_parse_bandwidth(text, bps):
    assert latency.parse_bandwidth(text) == pytest.approx(bps)


def test_latency_table_is_bytes_over_bandwidth_plus_measured_times(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.fromarray(_image("rgb8")).save(images / f"{i}.png")
    root = tmp_path / "results"
    point = {
        "quality": 5,
        "bpp": 0.5,
        "bytes": 144.0,
        "pixels": 2304,
        "height": 48,
        "width": 48,
        "enc_ms": 2.0,
        "dec_ms": 1.0,
        "task_ms": 10.0,
    }
    append_point(root, "colondb", "jpeg", point)
    append_point(
        root,
        "colondb",
        "MVMICNet stage 2",
        {"lmbda": 0.01, "bpp": 0.25, "enc_ms": 5.0, "dec_ms": 4.0, "task_ms": 10.0},
    )
    rows, baselines = latency.latency_table(root, "10Mbit", images=str(images))
    jpeg = next(r for r in rows if r.method == "jpeg")
    assert jpeg.transfer_ms == pytest.approx(144 * 8 / 1e7 * 1e3)
    assert jpeg.total_ms == pytest.approx(2.0 + 1.0 + 10.0 + 0.1152)
    learned = next(r for r in rows if r.method == "MVMICNet stage 2")
    assert learned.bytes == pytest.approx(0.25 * 2304 / 8)  # from bpp × the records' pixels
    png = baselines["colondb"]["png"]
    assert png.task_ms == pytest.approx(10.0) and png.bytes > 144
    assert png.transfer_ms == pytest.approx(png.bytes * 8 / 1e7 * 1e3)
    values = latency.table_rows(rows, baselines)
    row = next(v for v in values if v[1] == "jpeg")
    assert row[10] == pytest.approx(png.total_ms / jpeg.total_ms)
    assert latency.main([str(root), "--bandwidth", "10Mbit", "--images", str(images)]) == 0
    md = (root / "latency" / "latency.md").read_text()
    assert "PNG (lossless)" in md and "JPEG q90" in md and "| jpeg | quality=5 |" in md
    assert not math.isnan(row[9])


# --- anchors through a task network ---------------------------------------------------------


def test_anchor_point_runs_the_task_net_on_decoded_images():
    import torch

    from mvmic.anchors import _parse_qualities, evaluate_codec
    from mvmic.tasks.segmentation import SegmentationNet

    torch.manual_seed(0)
    task = SegmentationNet(encoder="resnet18", in_channels=3, num_classes=2).eval()
    img = torch.from_numpy(_image("rgb8")[:32, :32]).permute(2, 0, 1).float() / 255
    batch = {
        "image": torch.stack([img, img.flip(-1)]),
        "mask": (img[0] > 0.5).long().expand(2, -1, -1),
        "name": ["a", "b"],
    }
    low = evaluate_codec("jpeg", 5, task, [batch])
    high = evaluate_codec("jpeg", 90, task, [batch])
    assert low["quality"] == 5.0 and low["pixels"] == 1024 and low["height"] == 32
    assert low["bpp"] == pytest.approx(8 * low["bytes"] / 1024)
    assert high["bpp"] > low["bpp"] and high["psnr"] > low["psnr"]
    assert {"miou", "dice", "ms-ssim", "enc_ms", "dec_ms", "task_ms"} <= set(low)
    assert 0 <= low["miou"] <= 1 and low["task_ms"] > 0
    assert _parse_qualities("jpeg=5,10;hevc=20", ["jpeg", "hevc"]) == {
        "jpeg": [5.0, 10.0],
        "hevc": [20.0],
    }
    with pytest.raises(ValueError, match="not in --codecs"):
        _parse_qualities("webp=5", ["jpeg"])

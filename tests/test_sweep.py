"""Sweep planning and running (mvmic.evaluation.sweep)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from mvmic.evaluation import runner, sweep

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


def test_sweep_init_codec_starts_each_lambdas_stage1_from_its_own_codec(tmp_path, capsys):
    s1, s2 = _config(tmp_path, "seg.yaml"), _config(tmp_path, "seg_stage2.yaml")
    root, bases = tmp_path / "sweep", [str(tmp_path / f"base{i}.ckpt") for i in range(2)]
    with pytest.raises(ValueError, match=f"--init_codec {bases[0]} is not a file"):
        sweep.plan_sweep(str(s1), [0.01, 0.02], root, init_codec=bases)
    for b in bases:
        Path(b).write_bytes(b"")
    steps = sweep.plan_sweep(str(s1), [0.01, 0.02], root, stage2_config=str(s2), init_codec=bases)
    fits = {(s.value, s.stage): s.argv for s in steps if s.argv[0] == "fit"}
    assert fits[(0.01, "stage1")][-2:] == ["--model.init_codec", bases[0]]
    assert fits[(0.02, "stage1")][-2:] == ["--model.init_codec", bases[1]]
    assert "--model.init_codec" not in fits[(0.01, "stage2")]  # it starts from its stage 1
    one = sweep.plan_sweep(str(s1), [0.01, 0.02], root, init_codec=bases[:1])
    assert [s.argv[-1] for s in one if s.argv[0] == "fit"] == [bases[0], bases[0]]
    with pytest.raises(ValueError, match=r"one checkpoint or one per λ \(3\), got 2"):
        sweep.plan_sweep(str(s1), [0.01, 0.02, 0.03], root, init_codec=bases)
    # from the command line: one per λ (a path may hold a comma), or one clear error
    args = ["--config", str(s1), "--lmbda", "0.01,0.02", "--root", str(root), "--no_wandb"]
    assert sweep.main([*args, "--init_codec", bases[0], f"{tmp_path}/no,ne.ckpt"]) == 2
    assert f"mvmic sweep: --init_codec {tmp_path}/no,ne.ckpt is not a file" in (
        capsys.readouterr().err
    )
    comma = tmp_path / "a,b.ckpt"
    comma.write_bytes(b"")
    assert sweep.main([*args, "--init_codec", bases[0], str(comma), "--dry_run"]) == 0
    assert f"--model.init_codec {comma}" in capsys.readouterr().out
    assert sweep.main([*args, "--init_codec", *bases, *bases]) == 2
    assert "one checkpoint or one per λ (2), got 4" in capsys.readouterr().err


def test_a_stage1_reruns_when_its_init_codec_changed(tmp_path, monkeypatch):
    s1, s2 = _config(tmp_path, "seg.yaml"), _config(tmp_path, "seg_stage2.yaml")
    root, base = tmp_path / "sweep", tmp_path / "base.ckpt"
    base.write_bytes(b"one")

    def fake_run(step, **kwargs):  # the real run_step with a fit that only writes last.ckpt
        monkeypatch.setattr(sweep, "run_mvmic", lambda *a, **k: _write_last(step) or 0)
        return real_run(step)

    real_run = sweep.run_step
    monkeypatch.setattr(sweep, "run_step", fake_run)
    args = ["--config", str(s1), "--stage2_config", str(s2), "--lmbda", "0.01", "--root",
            str(root), "--no_wandb", "--init_codec", str(base)]  # fmt: skip

    def plan():
        steps = sweep.plan_sweep(str(s1), [0.01], root, stage2_config=str(s2), init_codec=[base])
        return [s.status for s in steps]

    assert sweep.main(args) == 0
    assert plan() == ["done", "done", "done"]
    assert (
        (root / "lmbda_d_0.01" / "stage1" / "init_codec.txt")
        .read_text()
        .startswith(str(base.resolve()))
    )
    os.utime(base, ns=(0, 0))  # the same path, another codec: stage 1 and all after it again
    assert plan() == ["todo", "todo", "todo"]
    assert sweep.main(args) == 0 and plan() == ["done", "done", "done"]
    base.unlink()  # a finished sweep still plans without its bases
    assert plan() == ["done", "done", "done"]


def test_sweep_jobs_runs_the_lambdas_side_by_side_each_in_order(tmp_path, monkeypatch, capsys):
    import threading

    s1, s2 = _config(tmp_path, "seg.yaml"), _config(tmp_path, "seg_stage2.yaml")
    root = tmp_path / "sweep"
    both_stage1 = threading.Barrier(2, timeout=20)  # breaks unless two λ run at once
    ran, lock = [], threading.Lock()

    def fake_run(step, **kwargs):
        if step.stage == "stage1":
            both_stage1.wait()
        with lock:
            ran.append((step.value, step.stage, kwargs["env"]["OMP_NUM_THREADS"], kwargs["log"]))
        _write_last(step)
        return 1 if (step.value, step.stage) == (0.01, "stage1") else 0

    monkeypatch.setattr(sweep, "run_step", fake_run)
    monkeypatch.setattr(runner.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    args = ["--config", str(s1), "--stage2_config", str(s2), "--root", str(root), "--no_wandb"]
    assert sweep.main([*args, "--lmbda", "0.01,0.02", "--jobs", "2"]) == 1
    assert {r[2] for r in ran if r[1] == "stage1"} == {"2"}  # 4 cores, 2 runs: 2 threads each
    assert all(r[3] == root / f"lmbda_d_{r[0]:g}" / r[1] / "output.log" for r in ran)
    # 0.01's stage 1 failed: its stage 2 and test never ran; 0.02 ran all in order
    assert [r[1] for r in ran if r[0] == 0.01] == ["stage1"]
    assert [r[1] for r in ran if r[0] == 0.02] == ["stage1", "stage2", "test"]
    assert "2 λ at a time, 2 thread(s) each" in capsys.readouterr().out


def test_sweep_jobs_must_be_one_or_more(capsys):
    assert sweep.main(["--config", "a.yaml", "--lmbda", "0.1", "--jobs", "0"]) == 2
    assert "mvmic sweep: --jobs must be 1 or more, got 0" in capsys.readouterr().err


@pytest.mark.slow
def test_sweep_jobs_two_real_lambdas_side_by_side(colondb_root, tmp_path):
    """`mvmic sweep --jobs 2` as a user runs it: real processes, one record with both points."""
    import subprocess
    import sys

    root = tmp_path / "sweep"
    tiny = ["--model.N", "8", "--model.M", "12", "--model.init_codec", "null",
            "--model.init_task", "null", "--data.root", str(colondb_root),
            "--data.image_size", "64", "--data.batch_size", "4", "--trainer.max_epochs", "1",
            "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]  # fmt: skip
    cmd = [sys.executable, "-m", "mvmic.cli", "sweep", "--config", "demo.yaml", "--no_stage2",
           "--lmbda", "0.0018,0.0932", "--jobs", "2", "--root", str(root), "--no_wandb",
           *tiny]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "2 λ at a time" in run.stdout
    for lmbda in ("0.0018", "0.0932"):
        log = (root / f"lmbda_d_{lmbda}" / "test" / "output.log").read_text()
        assert "results:" in log  # each run's own output is in its own file
    (record,) = (root / "results").glob("*/MVMICNet*.json")
    assert sorted(json.loads(record.read_text())["results"]["lmbda"]) == [0.0018, 0.0932]

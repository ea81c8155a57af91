"""Sweep planning and running (mvmic.evaluation.sweep)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mvmic.evaluation import sweep

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

"""A normal `mvmic fit` prints our messages, Lightning's progress and results, and no
library noise (deprecations inside dependencies, logger advertisements)."""

import os
import subprocess
import sys

import pytest

NOISE = ("FutureWarning", "DeprecationWarning", "is deprecated", "litlogger", "anonymous setting")


@pytest.mark.slow
def test_fit_prints_no_library_noise(colondb_root, tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline"}  # as a user runs it: default warning filters
    env.pop("PYTHONWARNINGS", None)
    cmd = [sys.executable, "-m", "mvmic.cli", "fit", "--config", "demo.yaml"]
    cmd += ["--data.root", str(colondb_root), "--data.image_size", "32"]
    cmd += ["--model.init_task", "null", "--model.init_codec", "null", "--model.N", "8"]
    cmd += ["--model.M", "12", "--model.encoder", "resnet18", "--trainer.max_steps", "1"]
    cmd += ["--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false"]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout + out.stderr
    assert "max_steps=1` reached" in text  # Lightning's own messages still show
    assert not [n for n in NOISE if n in text], text[-3000:]

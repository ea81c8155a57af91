"""The one step runner behind sweep, bench and demo (mvmic.evaluation.runner)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from mvmic.evaluation import runner
from mvmic.evaluation.bench import Runner


def test_a_step_is_done_only_after_its_marker_is_written(tmp_path):
    marker = tmp_path / "step" / runner.DONE
    assert not runner.is_done(marker) and not runner.is_done(None)
    runner.mark_done(marker)
    assert runner.is_done(marker) and marker.read_text() == "ok\n"


def test_run_mvmic_returns_or_raises_the_exit_status(tmp_path):
    echo, false = shutil.which("echo"), shutil.which("false")
    assert runner.mvmic_argv(["fit", "--config", "a.yaml"], "py") == [
        "py", "-m", "mvmic.cli", "fit", "--config", "a.yaml",
    ]  # fmt: skip
    assert runner.run_mvmic(["x"], python=echo, cwd=tmp_path) == 0
    assert runner.run_mvmic(["x"], python=false) == 1
    with pytest.raises(subprocess.CalledProcessError):
        runner.run_mvmic(["x"], python=false, check=True)


def test_a_step_forked_from_the_preloaded_server_gets_the_callers_folder_and_env(tmp_path):
    """The default path: a forkserver child runs `mvmic ARGS` in ``cwd`` with ``env``."""
    args = ["synth", "colondb", "--out", "rel", "--num", "2", "--size", "32"]
    assert runner.run_mvmic(args, cwd=tmp_path) == 0
    assert len(list((tmp_path / "rel" / "images").iterdir())) == 2
    bad = ["fit", "--config", str(tmp_path / "missing.yaml")]
    assert runner.run_mvmic(bad, cwd=tmp_path) == 2  # mvmic's one-line error
    with pytest.raises(subprocess.CalledProcessError) as err:
        runner.run_mvmic(bad, check=True)
    assert err.value.returncode == 2 and err.value.cmd[1:3] == ["-m", "mvmic.cli"]
    # the caller's environment, not the server's: MVMIC_DEBUG turns the error into a traceback
    debug = {**runner.offline_env(), "MVMIC_DEBUG": "1"}
    assert runner.run_mvmic(bad, env=debug) == 1


def test_offline_env_keeps_a_chosen_wandb_mode(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert runner.offline_env()["WANDB_MODE"] == "offline"
    monkeypatch.setenv("WANDB_MODE", "online")
    assert runner.offline_env()["WANDB_MODE"] == "online"


def test_the_bench_skips_a_step_whose_marker_exists(tmp_path, capsys):
    marker = tmp_path / "task" / runner.DONE
    runner.mark_done(marker)
    Runner(tmp_path).mvmic("fit", "--config", "missing.yaml", done=marker)  # would fail if run
    assert "[  done] mvmic fit --config missing.yaml" in capsys.readouterr().out
    assert "missing.yaml" not in (tmp_path / "commands.sh").read_text()

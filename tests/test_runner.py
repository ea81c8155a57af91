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


@pytest.mark.parametrize("mode", ["fork", "subprocess"])
def test_a_step_with_a_log_writes_its_output_there(tmp_path, monkeypatch, capfd, mode):
    """Runs side by side (`mvmic sweep --jobs`) each keep their output in their own file."""
    env = {**runner.offline_env(), "MVMIC_STEPS": mode}
    log = tmp_path / "output.log"
    bad = ["fit", "--config", str(tmp_path / "missing.yaml")]
    assert runner.run_mvmic(bad, env=env, log=log) == 2
    assert "missing.yaml" in log.read_text()
    assert "missing.yaml" not in capfd.readouterr().err


def test_the_bench_runs_chains_side_by_side_each_in_order(tmp_path, monkeypatch):
    import threading

    first_steps = threading.Barrier(2, timeout=20)  # breaks unless both chains run at once
    ran, lock = [], threading.Lock()

    def fake_run(args, *, env, cwd, check, log):
        if args[-1] in ("a1", "b1"):
            first_steps.wait()
        with lock:
            ran.append((args[-1], env["OMP_NUM_THREADS"], log))
        if args[-1] == "b2" and check:
            raise subprocess.CalledProcessError(1, ["mvmic", *args])
        return 0

    monkeypatch.setattr(runner, "run_mvmic", fake_run)
    monkeypatch.setattr(runner.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    steps = {n: (("synth", n), tmp_path / n / runner.DONE) for n in ("a1", "a2", "b1", "b2")}
    bench_runner = Runner(tmp_path)
    with pytest.raises(subprocess.CalledProcessError):  # b2 failed: raised after a2 finished
        bench_runner.side_by_side([[steps["a1"], steps["a2"]], [steps["b1"], steps["b2"]]])
    assert [r[0] for r in ran if r[0][0] == "a"] == ["a1", "a2"]
    assert [r[0] for r in ran if r[0][0] == "b"] == ["b1", "b2"]
    assert all(log == tmp_path / n / "output.log" for n, _, log in ran)
    assert {t for n, t, _ in ran if n in ("a1", "b1")} == {"1"}  # 2 cores, 2 chains
    assert runner.is_done(steps["a2"][1]) and not runner.is_done(steps["b2"][1])
    assert "mvmic synth a2\n# 0 s: synth a2\n" in (tmp_path / "commands.sh").read_text()


def test_lanes_give_the_cores_to_the_chains_still_running(monkeypatch):
    monkeypatch.setattr(runner.os, "sched_getaffinity", lambda pid: set(range(8)))
    lanes = runner.Lanes(chains=5, jobs=2)  # `mvmic sweep --jobs 2` of 5 λ on 8 cores
    assert lanes.threads() == 4
    for left in (4, 3, 2):
        lanes.finished()
        assert lanes.threads() == 4, left  # still 2 at a time
    lanes.finished()
    assert lanes.threads() == 8  # the last λ runs alone
    assert runner.Lanes(chains=3, jobs=3).threads() == 2  # 8 // 3
    monkeypatch.setattr(runner.os, "sched_getaffinity", lambda pid: {0})
    assert runner.Lanes(chains=2, jobs=2).threads() == 1  # never below one thread

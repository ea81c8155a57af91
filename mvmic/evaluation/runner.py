"""One way to run ``mvmic`` steps (sweep, bench, demo) and to skip the finished ones.

Each step is its own process: a Lightning run leaves global state (seeds, loggers, the W&B run,
CUDA context) that the next step must not inherit. The processes come from a
:mod:`multiprocessing` forkserver that has imported torch, Lightning, CompressAI, smp and mvmic
once (``PRELOAD``), so a step starts in milliseconds instead of paying ~8 s of imports, and
still shares no state with the runner or the other steps. ``MVMIC_STEPS=subprocess`` (or another
``python``) runs ``python -m mvmic.cli …`` instead. A step is finished when its ``DONE`` marker
exists; the marker is written only after the step succeeded.
"""

from __future__ import annotations

import functools
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

DONE = "DONE"
_REPO = Path(__file__).resolve().parents[2]
# What every step imports; the forkserver imports it once. Nothing here runs a torch op or
# starts a thread at import, so forking after it is safe.
PRELOAD = (
    "torch",
    "torchvision",
    "lightning",
    "compressai.zoo",
    "segmentation_models_pytorch",
    "mvmic.cli",
    "mvmic.cli_lightning",
    "mvmic.modules",
    "data_modules",
)


def mvmic_argv(args: Sequence[str], python: str = sys.executable) -> list[str]:
    """The command line that runs ``mvmic ARGS`` with ``python``."""
    return [python, "-m", "mvmic.cli", *args]


def offline_env(threads: int | None = None) -> dict[str, str]:
    """This environment with W&B offline unless ``WANDB_MODE`` says otherwise (never blocks);
    with ``threads``, ``OMP_NUM_THREADS`` too unless the user set it (steps side by side)."""
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
    if threads is not None:
        env.setdefault("OMP_NUM_THREADS", str(threads))
    return env


def step_threads(jobs: int) -> int:
    """Threads per step when ``jobs`` steps share this machine's cores (at least 1)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // jobs)


class Lanes:
    """Chains of steps side by side, each step started on its share of the cores: with ``jobs``
    chains at a time, ``cores // jobs`` threads, and more once fewer chains are left (a chain
    that runs alone gets them all)."""

    def __init__(self, chains: int, jobs: int) -> None:
        self._left, self._jobs, self._lock = chains, jobs, threading.Lock()

    def threads(self) -> int:
        """Threads for a step that starts now."""
        with self._lock:
            return step_threads(max(1, min(self._jobs, self._left)))

    def finished(self) -> None:
        """One chain has run its last step."""
        with self._lock:
            self._left -= 1


def is_done(marker: Path | None) -> bool:
    """Whether the step with this ``DONE`` marker has finished (``None``: never skipped)."""
    return marker is not None and marker.is_file()


def mark_done(marker: Path) -> None:
    """Record that the step finished."""
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("ok\n")


def run_mvmic(
    args: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    check: bool = False,
    python: str = sys.executable,
    log: Path | None = None,
) -> int:
    """Run ``mvmic ARGS`` in its own process; return its exit status.

    With this interpreter (the default) the process is forked from the preloaded forkserver;
    with another ``python``, or ``MVMIC_STEPS=subprocess``, it is ``python -m mvmic.cli ARGS``.
    With ``log`` its standard output and error go to that file (steps run side by side).

    Raises:
        subprocess.CalledProcessError: with ``check``, when the step fails.
    """
    mode = (env or os.environ).get("MVMIC_STEPS", "fork")
    if python != sys.executable or mode == "subprocess":
        argv = mvmic_argv(args, python)
        if log is None:
            return subprocess.run(argv, env=env, cwd=cwd, check=check).returncode
        with open(log, "w") as out:
            run = subprocess.run(argv, env=env, cwd=cwd, check=check, stdout=out, stderr=out)
            return run.returncode
    where = (str(cwd) if cwd else None, str(log) if log else None)
    proc = _forkserver().Process(target=_step, args=(list(args), env, *where))
    proc.start()
    proc.join()
    code = proc.exitcode if proc.exitcode is not None else 1
    code = code if code >= 0 else 128 - code  # killed by a signal: as a shell reports it
    if check and code:
        raise subprocess.CalledProcessError(code, mvmic_argv(args, python))
    return code


@functools.cache
def _forkserver():  # noqa: ANN202 - a multiprocessing context
    import multiprocessing

    server = multiprocessing.get_context("forkserver")
    server.set_forkserver_preload(list(PRELOAD))
    return server


def _step(args: list[str], env: dict[str, str] | None, cwd: str | None, log: str | None) -> None:
    """A step's process: the caller's environment and folder (and log file), then
    ``mvmic ARGS``."""
    if log is not None:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    if env is not None:  # the forkserver's environment is the one it started with
        os.environ.clear()
        os.environ.update(env)
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:  # OpenMP read the server's value at its start
        import torch

        torch.set_num_threads(int(threads))
    if cwd is not None:
        os.chdir(cwd)
        sys.path.insert(0, cwd)  # as `python -m` puts its folder first
    from mvmic.cli import main

    sys.argv = ["mvmic", *args]
    sys.exit(main(args))


class Runner:
    """Runs ``mvmic`` commands, prints and logs them, and skips steps already done."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.log = out / "commands.sh"
        self._lock = threading.Lock()
        out.mkdir(parents=True, exist_ok=True)
        if not self.log.exists():
            self.log.write_text("#!/usr/bin/env bash\n# written by tools/bench_rate_accuracy.py\n")

    def mvmic(self, *args: str, done: Path | None = None, threads: int | None = None) -> None:
        """``mvmic ARGS`` in a subprocess; with ``done``: skip if that marker exists, else write
        it after success. ``threads``: one of several steps side by side, on that many threads
        (unless ``OMP_NUM_THREADS`` is set), its output in ``output.log`` beside ``done``."""
        line = "mvmic " + shlex.join(args)
        if is_done(done):
            print(f"[  done] {line}", flush=True)
            return
        env, log = offline_env(threads), None
        if threads is not None and done is not None:
            log = done.parent / "output.log"
            done.parent.mkdir(parents=True, exist_ok=True)
        print(f"\n$ {line}" + (f"   # output: {log}" if log else ""), flush=True)
        with self._lock, self.log.open("a") as f:
            f.write(line + "\n")
        t0 = time.perf_counter()
        run_mvmic(args, env=env, cwd=_REPO, check=True, log=log)
        with self._lock, self.log.open("a") as f:
            f.write(f"# {time.perf_counter() - t0:.0f} s: {shlex.join(args[:3])}\n")
        if done is not None:
            mark_done(done)

    def side_by_side(self, chains: Sequence[Sequence[tuple[tuple[str, ...], Path]]]) -> None:
        """Each chain's ``(args, done)`` steps in order, the chains at once (the cores split
        between those still running); the first failure is raised once every chain stopped."""
        lanes = Lanes(len(chains), len(chains))

        def run(chain: Sequence[tuple[tuple[str, ...], Path]]) -> None:
            try:
                for args, done in chain:
                    self.mvmic(*args, done=done, threads=lanes.threads())
            finally:
                lanes.finished()

        with ThreadPoolExecutor(max(1, len(chains))) as pool:
            for future in [pool.submit(run, chain) for chain in chains]:
                future.result()

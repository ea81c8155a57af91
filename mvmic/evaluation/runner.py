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
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

DONE = "DONE"
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


def offline_env() -> dict[str, str]:
    """This environment with W&B offline unless ``WANDB_MODE`` says otherwise (never blocks)."""
    return {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}


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
) -> int:
    """Run ``mvmic ARGS`` in its own process; return its exit status.

    With this interpreter (the default) the process is forked from the preloaded forkserver;
    with another ``python``, or ``MVMIC_STEPS=subprocess``, it is ``python -m mvmic.cli ARGS``.

    Raises:
        subprocess.CalledProcessError: with ``check``, when the step fails.
    """
    mode = (env or os.environ).get("MVMIC_STEPS", "fork")
    if python != sys.executable or mode == "subprocess":
        result = subprocess.run(mvmic_argv(args, python), env=env, cwd=cwd, check=check)
        return result.returncode
    proc = _forkserver().Process(target=_step, args=(list(args), env, str(cwd) if cwd else None))
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


def _step(args: list[str], env: dict[str, str] | None, cwd: str | None) -> None:
    """A step's process: the caller's environment and folder, then ``mvmic ARGS``."""
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

"""One way to run ``mvmic`` steps (sweep, bench, demo) and to skip the finished ones.

Each step is its own ``python -m mvmic.cli …`` process: a Lightning run leaves global state
(seeds, loggers, the W&B run) that the next step must not inherit. A step is finished when its
``DONE`` marker exists; the marker is written only after the step succeeded.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

DONE = "DONE"


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
    """Run ``mvmic ARGS`` in a subprocess; return its exit status.

    Raises:
        subprocess.CalledProcessError: with ``check``, when the step fails.
    """
    result = subprocess.run(mvmic_argv(args, python), env=env, cwd=cwd, check=check)
    return result.returncode

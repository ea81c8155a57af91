"""Session fixtures: tiny synthetic datasets generated once, in their public layouts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# Under pytest-xdist (`make test` runs two workers) each worker gets one thread, so the
# workers share the cores instead of oversubscribing them.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, torch.get_num_threads()) // _WORKERS))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item) -> None:
    """A test's checkpoints go when it ends, failed or not: pytest keeps a failed test's
    folder, and the resume tests' checkpoints alone are 1.5-2 GB; the folder's other files and
    the assertion say what went wrong."""
    tmp = getattr(item, "funcargs", {}).get("tmp_path")
    if tmp is not None:
        for ckpt in Path(tmp).rglob("*.ckpt"):
            ckpt.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def colondb_root(tmp_path_factory) -> Path:
    from data_modules.synthetic import generate

    return generate("colondb", tmp_path_factory.mktemp("colondb"), num=12, size=64, seed=0)


@pytest.fixture(scope="session")
def chestxdet_root(tmp_path_factory) -> Path:
    from data_modules.synthetic import generate

    return generate("chestxdet", tmp_path_factory.mktemp("chestxdet"), num=8, size=64, seed=0)


@pytest.fixture(scope="session")
def isic_root(tmp_path_factory) -> Path:
    from data_modules.synthetic import generate

    return generate("isic2017", tmp_path_factory.mktemp("isic"), num=8, size=64, seed=0)


@pytest.fixture(scope="session")
def hvsmr_root(tmp_path_factory) -> Path:
    from data_modules.synthetic import generate

    return generate("hvsmr", tmp_path_factory.mktemp("hvsmr"), num=4, size=32, seed=0)

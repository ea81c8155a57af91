"""Determinism and resume-after-kill: the same seed gives the same run, a killed run loses
nothing and ends where an uninterrupted run ends, from an epoch-end or a mid-epoch checkpoint."""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# Real processes killed and resumed (~90 s on 2 cores): CI runs them, the inner loop does not.
pytestmark = pytest.mark.slow

HELPERS = Path(__file__).parent / "helpers"


def _fit(tmp_path: Path, root: Path, name: str, *extra: str):
    args = [
        "fit",
        "--config",
        "colondb_seg.yaml",
        "--data.root",
        str(root),
        "--data.image_size",
        "32",
        "--data.batch_size",
        "2",
        "--data.num_workers",
        "0",
        "--model.N",
        "8",
        "--model.M",
        "12",
        "--model.encoder",
        "resnet18",
        "--trainer.max_epochs",
        "3",
        "--trainer.limit_train_batches",
        "3",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.num_sanity_val_steps",
        "1",
        "--trainer.deterministic",
        "true",
        "--trainer.logger",
        "false",
        "--trainer.default_root_dir",
        f"runs/{name}",
        # the config's ModelCheckpoint (the last callback in its list), moved per run
        "--trainer.callbacks.dirpath",
        f"runs/{name}/checkpoints",
        # and a mid-epoch checkpoint: global step 5 is the 2nd of the 3 batches of epoch 2
        "--trainer.callbacks+={"
        '"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {'
        f'"dirpath": "runs/{name}/mid", "filename": "mid", "every_n_train_steps": 5, '
        '"enable_version_counter": false}}',
        *extra,
    ]
    env = {**os.environ, "PYTHONPATH": f"{HELPERS}:{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run(
        [sys.executable, "-m", "mvmic.cli", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def _weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_killed_run_resumes_to_the_same_weights_and_same_seed_is_same_run(colondb_root, tmp_path):
    # Uninterrupted reference, and a second identical run: determinism.
    for name in ("ref", "ref2"):
        r = _fit(tmp_path, colondb_root, name)
        assert r.returncode == 0, r.stderr[-3000:]
    ref = _weights(tmp_path / "runs/ref/checkpoints/last.ckpt")
    ref2 = _weights(tmp_path / "runs/ref2/checkpoints/last.ckpt")
    assert all(torch.equal(ref[k], ref2[k]) for k in ref)

    # Killed mid-epoch 2 (global step 5; epoch 1 ended at step 3 and was checkpointed).
    kill = '{"class_path": "killer.KillAtStep", "init_args": {"step": 5}}'
    r = _fit(tmp_path, colondb_root, "killed", f"--trainer.callbacks+={kill}")
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr[-2000:])
    last = tmp_path / "runs/killed/checkpoints/last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 3

    mid = tmp_path / "runs/killed/mid/mid.ckpt"
    state = torch.load(mid, weights_only=True)
    assert state["global_step"] == 5
    # Lightning saved the training loader's place: 2 batches of epoch index 1 handed out.
    assert state["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
        {"epoch": 1, "batches": 2}
    ]
    shutil.copytree(tmp_path / "runs/killed", tmp_path / "runs/killed_mid")

    # Resumed from the epoch-end checkpoint.
    r = _fit(tmp_path, colondb_root, "killed", "--ckpt_path", "last")
    assert r.returncode == 0, r.stderr[-3000:]
    resumed = _weights(last)
    assert torch.load(last, weights_only=True)["global_step"] == 9
    different = [k for k in ref if not torch.equal(ref[k], resumed[k])]
    assert not different, different[:5]

    # Resumed mid-epoch: the loader skips the 2 batches already trained on (never loading
    # them), the RNG state restored at that batch gives the same augmentations and codec
    # noise, so the weights are again bit-identical.
    r = _fit(tmp_path, colondb_root, "killed_mid", "--ckpt_path", "runs/killed_mid/mid/mid.ckpt")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "not resumable" not in r.stderr  # Lightning's warning for plain DataLoaders
    last_mid = tmp_path / "runs/killed_mid/checkpoints/last.ckpt"
    assert torch.load(last_mid, weights_only=True)["global_step"] == 9
    resumed = _weights(last_mid)
    different = [k for k in ref if not torch.equal(ref[k], resumed[k])]
    assert not different, different[:5]


def test_resumable_loader_continues_where_its_state_left_off():
    from data_modules.base import train_loader

    data = list(range(10))
    torch.manual_seed(0)
    rng = torch.get_rng_state()
    loader = train_loader(data, batch_size=3, drop_last=False)
    loader.batch_sampler.sampler.set_epoch(4)
    it = iter(loader)
    seen = [next(it).tolist() for _ in range(2)]
    state = loader.state_dict()
    rest = [b.tolist() for b in it]
    assert state == {"epoch": 4, "batches": 2}
    assert sorted(sum(seen + rest, [])) == data  # one permutation, 4 batches
    assert torch.equal(torch.get_rng_state(), rng), "iterating drew from torch's global RNG"

    again = train_loader(data, batch_size=3, drop_last=False)
    again.load_state_dict(state)
    again.batch_sampler.sampler.set_epoch(4)
    assert [b.tolist() for b in again] == rest
    assert again.state_dict() == {"epoch": 4, "batches": 4}
    # A state from a closed epoch does not cut the next one short.
    again.load_state_dict(state)
    again.batch_sampler.sampler.set_epoch(5)
    fifth = [b.tolist() for b in again]
    assert len(fifth) == 4 and fifth != seen + rest
    # The order is a function of (seed, epoch) alone.
    other = train_loader(data, batch_size=3, drop_last=False)
    other.batch_sampler.sampler.set_epoch(4)
    assert [b.tolist() for b in other] == seen + rest

"""Fault tolerance: unsafe checkpoints, wrong checkpoints, non-finite losses."""

import pickle
import re

import pytest
import torch
from lightning import Trainer

from data_modules import SegmentationDataModule
from mvmic.cli import main
from mvmic.modules import MVMICNet, TaskModule, load_checkpoint

SMALL = dict(arch="Unet", encoder="resnet18", codec="bmshj2018-hyperprior", N=8, M=12)


class _Payload:
    def __reduce__(self):  # runs a command when unpickled without weights_only
        return (open, ("/tmp/mvmic_pwned_marker", "w"))


def _evil_checkpoint(path):
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {}, "hyper_parameters": {}, "x": _Payload()}, f)
    return path


def test_checkpoint_with_pickle_payload_is_refused(tmp_path):
    evil = _evil_checkpoint(tmp_path / "evil.ckpt")
    with pytest.raises(ValueError, match="refused to load"):
        load_checkpoint(evil)


def test_cli_refuses_pickle_payload_checkpoint(colondb_root, tmp_path, capsys, monkeypatch):
    import os

    monkeypatch.chdir(tmp_path)
    if os.path.exists("/tmp/mvmic_pwned_marker"):
        os.remove("/tmp/mvmic_pwned_marker")
    evil = _evil_checkpoint(tmp_path / "evil.ckpt")
    code = main(
        [
            "test",
            "--config",
            "colondb_seg.yaml",
            "--data.root",
            str(colondb_root),
            "--data.image_size",
            "32",
            "--model.N",
            "8",
            "--model.M",
            "12",
            "--model.encoder",
            "resnet18",
            "--trainer.logger",
            "false",
            "--ckpt_path",
            str(evil),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "refused to load the checkpoint" in err
    assert not os.path.exists("/tmp/mvmic_pwned_marker")


def test_wrong_module_checkpoint_names_both(colondb_root, tmp_path):
    dm = SegmentationDataModule(root=str(colondb_root), image_size=32, batch_size=2)
    task = TaskModule(arch="Unet", encoder="resnet18")
    trainer = Trainer(
        default_root_dir=tmp_path,
        max_steps=1,
        limit_val_batches=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(task, dm)
    trainer.save_checkpoint(tmp_path / "task.ckpt")
    ckpt = torch.load(tmp_path / "task.ckpt", weights_only=True)
    with pytest.raises(ValueError, match="it is a TaskModule checkpoint"):
        MVMICNet(**SMALL).on_load_checkpoint(ckpt)
    with pytest.raises(ValueError, match=r"encoder='resnet18' \(config has 'resnet34'\)"):
        TaskModule(arch="Unet", encoder="resnet34").on_load_checkpoint(ckpt)


def test_non_finite_loss_stops_with_step_and_term(colondb_root, tmp_path):
    dm = SegmentationDataModule(root=str(colondb_root), image_size=32, batch_size=2)
    model = MVMICNet(**SMALL)
    original = model.criterion.forward

    def poisoned(output, x, task_loss=None):
        terms = original(output, x, task_loss)
        if model.global_step == 1:
            terms["distortion"] = terms["distortion"] * float("nan")
            terms["loss"] = terms["loss"] + terms["distortion"]
        return terms

    model.criterion.forward = poisoned
    trainer = Trainer(
        default_root_dir=tmp_path,
        max_steps=3,
        limit_val_batches=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with pytest.raises(FloatingPointError, match="step 1 .*bad term\\(s\\): distortion, loss"):
        trainer.fit(model, dm)


def _plain_checkpoint(path, mvmic_class, hyper_parameters):
    # Only plain values: torch.load(weights_only=True) accepts this file.
    torch.save(
        {"state_dict": {}, "hyper_parameters": hyper_parameters, "mvmic_class": mvmic_class}, path
    )
    return path


def test_checkpoint_naming_a_foreign_class_runs_nothing(tmp_path, capsys):
    from PIL import Image

    marker = tmp_path / "pwned"
    crafted = _plain_checkpoint(
        tmp_path / "crafted.ckpt", "subprocess.Popen", {"args": ["touch", str(marker)]}
    )
    Image.new("L", (16, 16)).save(tmp_path / "in.png")
    code = main(["compress", "--ckpt", str(crafted), str(tmp_path / "in.png"), str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert (
        str(crafted) in err[0]
        and "'subprocess.Popen'" in err[0]
        and "not an mvmic module" in err[0]
    )
    assert not marker.exists()


@pytest.mark.parametrize(
    "mvmic_class, hparams, message",
    [
        ("os.system", {}, "'os.system', which is not an mvmic module"),
        (["mvmic.modules.task.TaskModule"], {}, "which is not an mvmic module"),
        ("mvmic.modules.task.TaskModule", {"cmd": "touch x"}, "takes no argument(s) cmd"),
        ("mvmic.modules.task.TaskModule", {"lr": {1: 2}}, "lr are not plain values"),
        ("mvmic.modules.task.TaskModule", ["lr"], "hyper_parameters is not a mapping"),
    ],
)
def test_load_module_refuses_what_is_not_an_mvmic_module(tmp_path, mvmic_class, hparams, message):
    from mvmic.modules import CheckpointError, load_module

    crafted = _plain_checkpoint(tmp_path / "crafted.ckpt", mvmic_class, hparams)
    with pytest.raises(CheckpointError, match=re.escape(message)):
        load_module(crafted)


def test_load_module_rebuilds_an_allowed_class(tmp_path):
    from mvmic.modules import load_module

    task = TaskModule(arch="Unet", encoder="resnet18", in_channels=1)
    path = tmp_path / "task.ckpt"
    torch.save(
        {
            "state_dict": task.state_dict(),
            "hyper_parameters": dict(task.hparams),
            "mvmic_class": "mvmic.modules.task.TaskModule",
        },
        path,
    )
    model = load_module(path)
    assert type(model) is TaskModule and not model.training
    assert model.hparams.in_channels == 1

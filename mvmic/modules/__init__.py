"""LightningModules: one per formulation, thin, composed of codecs and tasks."""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

import torch
from lightning import LightningModule

from mvmic.modules.base import BaseModule
from mvmic.modules.mvmicnet import MVMICNet
from mvmic.modules.task import TaskModule

__all__ = ["BaseModule", "MVMICNet", "TaskModule", "load_checkpoint", "load_module"]


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint safely (``weights_only=True``: no pickled code runs)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not safe/valid"
        raise ValueError(
            f"{path}: refused to load: not a plain-tensor checkpoint ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200]}). Only load checkpoints you trust."
        ) from None


def load_module(path: str | Path) -> LightningModule:
    """Rebuild the module saved in a checkpoint (class, hyperparameters, weights), in eval mode."""
    ckpt = load_checkpoint(path)
    if "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise ValueError(f"{path}: not a Lightning checkpoint of an mvmic module")
    class_path = ckpt.get("mvmic_class", "mvmic.modules.mvmicnet.MVMICNet")
    module_name, _, cls_name = class_path.rpartition(".")
    cls = getattr(import_module(module_name), cls_name)
    hparams = {k: v for k, v in ckpt["hyper_parameters"].items() if not k.startswith("_")}
    model = cls(**hparams)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()

"""The safe checkpoint loader: plain tensors only, and only mvmic's own module classes."""

from __future__ import annotations

import inspect
from importlib import import_module
from pathlib import Path
from typing import Any

import torch
from lightning import LightningModule

#: The only classes a checkpoint may ask to be rebuilt: saved name -> (module, class). A file
#: names a class; it never chooses what is imported.
MODULE_CLASSES = {
    "mvmic.modules.mvmicnet.MVMICNet": ("mvmic.modules.mvmicnet", "MVMICNet"),
    "mvmic.modules.task.TaskModule": ("mvmic.modules.task", "TaskModule"),
    "mvmic.modules.gan_seg.GanSegmentation": ("mvmic.modules.gan_seg", "GanSegmentation"),
}
#: Checkpoints written before mvmic recorded its class were MVMICNet's.
_LEGACY_CLASS = "mvmic.modules.mvmicnet.MVMICNet"
_PLAIN = (type(None), bool, int, float, str)


class CheckpointError(ValueError):
    """A checkpoint that mvmic refuses to load (unsafe, foreign or malformed)."""


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint safely (``weights_only=True``: no pickled code runs)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not safe/valid"
        raise CheckpointError(
            f"{path}: refused to load: not a plain-tensor checkpoint ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200]}). Only load checkpoints you trust."
        ) from None


def _is_plain(value: Any, depth: int = 0) -> bool:
    """Hyperparameters are plain values: None/bool/int/float/str, lists and str-keyed dicts."""
    if isinstance(value, _PLAIN):
        return True
    if depth > 8:
        return False
    if isinstance(value, list | tuple):
        return all(_is_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v, depth + 1) for k, v in value.items())
    return False


def module_class(path: str | Path, class_path: Any) -> type[LightningModule]:
    """The allow-listed mvmic module class a checkpoint names, or a :class:`CheckpointError`."""
    if not isinstance(class_path, str) or class_path not in MODULE_CLASSES:
        shown = repr(class_path)[:120]
        raise CheckpointError(
            f"{path}: refused to load: it asks for class {shown}, which is not an mvmic module "
            f"(allowed: {', '.join(name.rsplit('.', 1)[1] for name in MODULE_CLASSES)})"
        )
    module_name, cls_name = MODULE_CLASSES[class_path]
    cls = getattr(import_module(module_name), cls_name)
    if not (inspect.isclass(cls) and issubclass(cls, _base_module())):  # a broken allow-list entry
        raise CheckpointError(f"{path}: {class_path} is not an mvmic BaseModule")
    return cls


def checked_hparams(path: str | Path, cls: type, hparams: Any) -> dict[str, Any]:
    """The checkpoint's hyperparameters, refused unless plain and accepted by ``cls``."""
    if not isinstance(hparams, dict):
        raise CheckpointError(f"{path}: refused to load: hyper_parameters is not a mapping")
    hparams = {k: v for k, v in hparams.items() if not (isinstance(k, str) and k.startswith("_"))}
    params = inspect.signature(cls.__init__).parameters
    accepted = {n for n, p in params.items() if n != "self" and p.kind is p.POSITIONAL_OR_KEYWORD}
    accepted |= {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY}
    unknown = sorted(str(k) for k in hparams if k not in accepted)
    if unknown:
        raise CheckpointError(
            f"{path}: refused to load: {cls.__name__} takes no argument(s) {', '.join(unknown)}"
        )
    odd = sorted(k for k, v in hparams.items() if not _is_plain(v))
    if odd:
        raise CheckpointError(
            f"{path}: refused to load: hyperparameter(s) {', '.join(odd)} are not plain values"
        )
    return hparams


def load_module(path: str | Path) -> LightningModule:
    """Rebuild the module saved in a checkpoint (class, hyperparameters, weights), in eval mode.

    Only mvmic's own module classes (:data:`MODULE_CLASSES`) are rebuilt, with hyperparameters
    checked against the class's signature; anything else is a :class:`CheckpointError`.
    """
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise CheckpointError(f"{path}: not a Lightning checkpoint of an mvmic module")
    cls = module_class(path, ckpt.get("mvmic_class", _LEGACY_CLASS))
    hparams = checked_hparams(path, cls, ckpt["hyper_parameters"])
    model = cls(**hparams)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def _base_module() -> type:
    from mvmic.modules.base import BaseModule  # imported late: base imports tasks, not this

    return BaseModule

"""LightningModules: one per formulation, thin, composed of codecs and tasks."""

from __future__ import annotations

from mvmic.modules.base import BaseModule
from mvmic.modules.checkpoints import (
    MODULE_CLASSES,
    CheckpointError,
    load_checkpoint,
    load_module,
)
from mvmic.modules.mvmicnet import MVMICNet
from mvmic.modules.task import TaskModule

__all__ = [
    "MODULE_CLASSES",
    "BaseModule",
    "CheckpointError",
    "MVMICNet",
    "TaskModule",
    "load_checkpoint",
    "load_module",
]

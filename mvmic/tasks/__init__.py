"""Task networks (plain PyTorch): segmentation, detection, the GAN critic, Liu's segmentor."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from mvmic.tasks.base import TaskNet

#: task name -> "module:class"; imported lazily so detection does not load for segmentation.
TASKS = {
    "segmentation": "mvmic.tasks.segmentation:SegmentationNet",
    "detection": "mvmic.tasks.detection:DetectionNet",
}


def build_task(task: str, **kwargs: Any) -> TaskNet:
    """Build a task network by task name; ``kwargs`` go to its constructor."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {sorted(TASKS)}")
    module, cls = TASKS[task].split(":")
    return getattr(import_module(module), cls)(**kwargs)


__all__ = ["TASKS", "TaskNet", "build_task"]

"""Local weights files into any network (task nets, whole modules): no hub downloads."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def load_weights(module: nn.Module, path: str | Path, prefixes: tuple[str, ...] = ()) -> None:
    """Load a local weights file into ``module``.

    Accepts a plain state dict, a dict with ``state_dict``/``model`` inside (Lightning or
    torchvision-style checkpoints), and strips the first of ``prefixes`` that matches, so a
    Lightning checkpoint of a whole mvmic module can initialise just its task network.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    state = obj.get("state_dict", obj.get("model", obj)) if isinstance(obj, dict) else obj
    for prefix in prefixes:
        sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if sub:
            state = sub
            break
    # BatchNorm's num_batches_tracked is never reported missing, so count matches instead.
    if not set(state) & set(module.state_dict()):
        raise ValueError(
            f"{path}: none of its {len(state)} tensors match {type(module).__name__} "
            f"(first key {next(iter(state), None)!r}); is it a weights file for this network?"
        )
    module.load_state_dict(state, strict=False)

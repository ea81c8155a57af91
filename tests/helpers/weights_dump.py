"""A callback that saves each rank's weights at the start and end of training (DDP tests)."""

from pathlib import Path

import torch
from lightning import Callback, LightningModule, Trainer


def _weights(module: LightningModule) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


class DumpWeights(Callback):
    """Write ``<out>/<global rank>.pt``: the step, the initial and the final state dict."""

    def __init__(self, out: str) -> None:
        self.out = Path(out)
        self.initial: dict[str, torch.Tensor] = {}

    def on_train_start(self, trainer: Trainer, module: LightningModule) -> None:
        self.initial = _weights(module)

    def on_train_end(self, trainer: Trainer, module: LightningModule) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        torch.save(
            {"step": trainer.global_step, "initial": self.initial, "weights": _weights(module)},
            self.out / f"{trainer.global_rank}.pt",
        )

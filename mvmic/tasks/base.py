"""The contract every task network implements, so modules treat tasks as pluggable parts."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torchmetrics import MetricCollection


def inference_layout(x: Tensor) -> Tensor:
    """``x`` in the layout oneDNN's 2-D convolutions infer fastest in on CPU: channels_last
    (2 cores: U-Net/resnet18 on 8×256² 0.99 → 0.82 s, Faster R-CNN R50-FPN on 4×192² 0.53 →
    0.45 s). Only the activations change layout, never the weights, so a training run that
    validates stays bit-identical to one resumed from its checkpoint (weights converted in
    eval mode broke that)."""
    if x.dim() == 4 and x.device.type == "cpu":
        return x.contiguous(memory_format=torch.channels_last)
    return x


class TaskNet(nn.Module):
    """A task network (segmentation, detection, …) as MVMICNet and TaskModule see it.

    Batches are dicts with ``"image"`` (B×C×H×W floats in [0, 1]) and the task's target under
    ``target_key``. Subclasses implement the methods below; the modules never look inside.
    """

    task: ClassVar[str]
    #: batch key holding the targets ("mask" for segmentation, "target" for detection)
    target_key: ClassVar[str]
    #: metric that model selection and curves use by default ("miou", "map", …)
    primary_metric: ClassVar[str]

    def loss(self, x: Tensor, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        """Training loss on (possibly decoded) images ``x``: total and named terms."""
        raise NotImplementedError

    def predict(self, x: Tensor) -> Any:
        """Eval-mode predictions in the form :meth:`update_metrics` takes."""
        raise NotImplementedError

    def evaluate(self, x: Tensor, batch: dict[str, Any]) -> tuple[Tensor, Any]:
        """Eval-mode loss and predictions of one batch (validation, the uncompressed test).

        Two passes by default; a net whose loss and prediction share one forward pass (a
        segmentation's logits) overrides this to run it once."""
        loss, _ = self.loss(x, batch)
        return loss, self.predict(x)

    def build_metrics(self, sync: bool = True) -> MetricCollection:
        """A fresh collection of the task's metrics (modules clone it per stage).

        ``sync=False``: computed on this process alone (one image's metric for a panel, which
        DDP draws on rank 0 only, must not wait on a collective the other ranks never join).
        """
        raise NotImplementedError

    def update_metrics(self, metrics: MetricCollection, preds: Any, batch: dict[str, Any]) -> None:
        raise NotImplementedError

    def stats_header(self) -> dict[str, Any] | None:
        """What per-image statistics this task keeps (see :mod:`mvmic.evaluation.image_stats`):
        ``kind`` and how each record metric is reduced; None: none (no error bars)."""
        return None

    def image_stats(self, preds: Any, batch: dict[str, Any]) -> list[Any]:
        """One JSON-able entry of sufficient statistics per image of the batch."""
        return []

    def record(self, computed: dict[str, Tensor]) -> dict[str, float]:
        """Results-record fields from ``metrics.compute()`` (keys without a stage prefix)."""
        return {k: float(v) for k, v in computed.items() if v.numel() == 1}

    def render(self, preds: Any, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """RGB panels (B×3×H×W in [0, 1]) of the prediction and of the ground truth."""
        raise NotImplementedError

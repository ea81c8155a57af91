"""Segmentation networks from segmentation-models-pytorch, with cross-entropy + Dice."""

from __future__ import annotations

from typing import Any

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import JaccardIndex, MetricCollection
from torchmetrics.segmentation import DiceScore

from mvmic.padding import crop, pad_to_multiple
from mvmic.palette import PALETTE
from mvmic.tasks.base import TaskNet, inference_layout
from mvmic.weights import load_weights

SMP_ARCHITECTURES: dict[str, type[nn.Module]] = {
    name: getattr(smp, name)
    for name in (
        "Unet",
        "UnetPlusPlus",
        "FPN",
        "DeepLabV3",
        "DeepLabV3Plus",
        "Linknet",
        "MAnet",
        "PAN",
        "PSPNet",
        "UPerNet",
        "Segformer",
    )
    if hasattr(smp, name)
}


def freeze_unused(net: nn.Module, in_channels: int, size: int = 64) -> list[str]:
    """Freeze the parameters that ``net``'s forward pass never uses; return their names.

    smp keeps every encoder stage when ``encoder_depth`` < 5 but runs only the first ones. A
    trainable parameter that never gets a gradient stalls DDP's reducer (its bucket, and every
    gradient in it, is never all-reduced; the next step fails). Frozen, DDP ignores it, the
    optimizer skips it, and checkpoints keep their keys. The probe runs in eval mode on zeros,
    so it touches neither BatchNorm statistics nor any RNG.
    """
    was_training = net.training
    net.eval()
    named = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    out = net(torch.zeros(1, in_channels, size, size))
    grads = torch.autograd.grad(out.sum(), [p for _, p in named], allow_unused=True)
    net.train(was_training)
    unused = []
    for (name, p), g in zip(named, grads):
        if g is None:
            p.requires_grad_(False)
            unused.append(name)
    return unused


class SegmentationNet(TaskNet):
    """Any smp architecture and encoder, trained with cross-entropy + Dice.

    Args:
        arch: smp architecture name (``Unet``, ``UnetPlusPlus``, ``FPN``, ``DeepLabV3Plus``, …).
        encoder: smp encoder name (``resnet18``, ``resnet34``, ``efficientnet-b0``, …).
        in_channels: image channels.
        num_classes: classes including background.
        weights: optional local file to initialise from (never downloaded).
        ce_weight, dice_weight: weights of the two loss terms.
        encoder_depth: encoder depth; inputs are padded to ``2**encoder_depth`` internally.
        **kwargs: passed to the smp constructor (e.g. ``decoder_channels``).
    """

    task = "segmentation"
    target_key = "mask"
    primary_metric = "miou"

    def __init__(
        self,
        arch: str = "Unet",
        encoder: str = "resnet18",
        in_channels: int = 3,
        num_classes: int = 2,
        weights: str | None = None,
        ce_weight: float = 1.0,
        dice_weight: float = 1.0,
        encoder_depth: int = 5,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if arch not in SMP_ARCHITECTURES:
            raise ValueError(
                f"unknown segmentation architecture {arch!r}; choose one of "
                f"{sorted(SMP_ARCHITECTURES)}"
            )
        if encoder not in smp.encoders.get_encoder_names():
            raise ValueError(
                f"unknown encoder {encoder!r}; see smp.encoders.get_encoder_names() "
                "(e.g. resnet18, resnet34, efficientnet-b0, mobilenet_v2)"
            )
        if encoder_depth != 5:
            kwargs["encoder_depth"] = encoder_depth
            if arch in ("Unet", "UnetPlusPlus", "MAnet") and "decoder_channels" not in kwargs:
                kwargs["decoder_channels"] = (256, 128, 64, 32, 16)[:encoder_depth]
        self.net = SMP_ARCHITECTURES[arch](
            encoder_name=encoder,
            encoder_weights=None,
            in_channels=in_channels,
            classes=num_classes,
            **kwargs,
        )
        # Below depth 5 smp keeps the encoder's deeper stages, unused (see freeze_unused).
        self.unused = (
            [f"net.{n}" for n in freeze_unused(self.net, in_channels)] if encoder_depth < 5 else []
        )
        self.num_classes = num_classes
        self.stride = 2**encoder_depth
        self.ce_weight, self.dice_weight = ce_weight, dice_weight
        self.dice_loss = smp.losses.DiceLoss(mode="multiclass", from_logits=True)
        if weights:
            load_weights(self, weights, prefixes=("task.", "net.", "model."))

    def requires_grad_(self, requires_grad: bool = True) -> SegmentationNet:
        """As ``nn.Module.requires_grad_``, but parameters no forward pass uses stay frozen."""
        super().requires_grad_(requires_grad)
        params = dict(self.named_parameters())
        for name in getattr(self, "unused", ()):
            params[name].requires_grad_(False)
        return self

    def forward(self, x: Tensor) -> Tensor:
        """Logits B×K×H×W for any H×W (padded to the encoder's stride internally)."""
        x_pad, size = pad_to_multiple(x, self.stride)
        return crop(self.net(x_pad), size)

    def loss(self, x: Tensor, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        return self.logits_loss(self(x), batch)

    def logits_loss(
        self, logits: Tensor, batch: dict[str, Any]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss of logits B×K×H×W against ``batch["mask"]``: total and named terms."""
        mask = batch["mask"].long()
        ce = F.cross_entropy(logits, mask)
        dice = self.dice_loss(logits, mask)
        total = self.ce_weight * ce + self.dice_weight * dice
        return total, {"ce": ce.detach(), "dice_loss": dice.detach()}

    def predict(self, x: Tensor) -> Tensor:
        return self(inference_layout(x)).argmax(1)

    def evaluate(self, x: Tensor, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """Loss and predicted mask from one forward pass (the default runs the U-Net twice)."""
        logits = self(inference_layout(x))
        return self.logits_loss(logits, batch)[0], logits.argmax(1)

    def build_metrics(self, sync: bool = True) -> MetricCollection:
        return MetricCollection(
            {
                "miou": JaccardIndex(
                    task="multiclass",
                    num_classes=self.num_classes,
                    average="macro",
                    sync_on_compute=sync,
                ),
                "dice": DiceScore(
                    num_classes=self.num_classes,
                    include_background=False,
                    average="macro",
                    aggregation_level="global",
                    input_format="index",
                    sync_on_compute=sync,
                ),
            }
        )

    def update_metrics(
        self, metrics: MetricCollection, preds: Tensor, batch: dict[str, Any]
    ) -> None:
        metrics.update(preds, batch["mask"].long())

    def stats_header(self) -> dict[str, Any]:
        return {"kind": "confusion", "rules": {"miou": "jaccard_macro", "dice": "dice_global_fg"}}

    def image_stats(self, preds: Tensor, batch: dict[str, Any]) -> list[Any]:
        from mvmic.evaluation.image_stats import confusion_matrices

        return confusion_matrices(preds, batch["mask"], self.num_classes)

    def render(self, preds: Tensor, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        palette = PALETTE.to(preds.device)

        def paint(m: Tensor) -> Tensor:
            return palette[m.long().clamp(0, len(palette) - 1)].permute(0, 3, 1, 2)

        return paint(preds), paint(batch["mask"])

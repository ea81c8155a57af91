"""Liu et al. (MICCAI 2020) in plain PyTorch: the segmentor s, its builder, and the C → S path.

The LightningModule (:class:`mvmic.modules.gan_seg.GanSegmentation`) holds the parts (codec C,
segmentor S, critic D) and only computes losses from them and steps the optimizers; what C
hands S is read from the codec contract (``decodes_image``), never from the codec's class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.inferers import sliding_window_inference
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.segmentation import DiceScore, MeanIoU

from mvmic.codecs.base import Codec
from mvmic.losses import one_hot, segmentation_mse
from mvmic.metrics import likelihoods_bpp
from mvmic.palette import PALETTE
from mvmic.tasks.base import TaskNet, inference_layout
from mvmic.tasks.segmentation import SegmentationNet

MONAI_ARCHS = ("UNet", "BasicUNet")


class GanSegmentor(TaskNet):
    """The segmentor s (smp in 2D, MONAI in 3D) with per-class Dice/IoU metrics.

    ``forward`` returns logits B×K×H×W (or B×K×D×H×W); metrics are per class, averaged over
    images (volumes), as in Liu et al.'s Table 1.
    """

    task = "segmentation"
    target_key = "mask"
    primary_metric = "dice"

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        class_names: Sequence[str],
        window: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.net, self.num_classes, self.class_names = net, num_classes, list(class_names)
        #: MONAI sliding-window arguments for whole volumes (roi_size, sw_batch_size, overlap)
        self.window = window

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def logits(self, x: Tensor) -> Tensor:
        """Logits; whole volumes in eval mode run by MONAI sliding window."""
        if x.dim() == 5 and self.window and not self.training:
            return sliding_window_inference(x, predictor=self, **self.window)
        return self(x)

    def loss(self, x: Tensor, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        """``loss_seg`` (Liu et al.): MSE of the class probabilities to the one-hot mask."""
        prob = self(x).softmax(1)
        loss = segmentation_mse(prob, one_hot(batch["mask"], self.num_classes))
        return loss, {"loss_seg": loss.detach()}

    def predict(self, x: Tensor) -> Tensor:
        if x.dim() == 5 and self.window:  # a whole volume of any size, as evaluation runs it
            return sliding_window_inference(x, predictor=self, **self.window).argmax(1)
        return self(inference_layout(x)).argmax(1)

    def build_metrics(self, sync: bool = True) -> MetricCollection:
        k = self.num_classes
        return MetricCollection(
            {
                "dice": DiceScore(
                    num_classes=k,
                    average="none",
                    aggregation_level="samplewise",
                    input_format="index",
                    sync_on_compute=sync,
                ),
                "iou": MeanIoU(
                    num_classes=k, per_class=True, input_format="index", sync_on_compute=sync
                ),
            }
        )

    def update_metrics(
        self, metrics: MetricCollection, preds: Tensor, batch: dict[str, Any]
    ) -> None:
        metrics.update(preds, batch["mask"].long())

    def stats_header(self) -> dict[str, Any]:
        rules = {"dice": "dice_samplewise_fg", "iou": "iou_samplewise_fg"}
        return {"kind": "confusion", "rules": rules}

    def image_stats(self, preds: Tensor, batch: dict[str, Any]) -> list[Any]:
        from mvmic.evaluation.image_stats import confusion_matrices

        return confusion_matrices(preds, batch["mask"], self.num_classes)

    def record(self, computed: dict[str, Tensor]) -> dict[str, float]:
        """``dice``/``iou``: mean over foreground classes; ``dice_<class>``/``iou_<class>``."""
        out: dict[str, float] = {}
        for name in ("dice", "iou"):
            if name not in computed:
                continue
            per_class = computed[name].flatten().float()
            fg = per_class[1:] if per_class.numel() > 1 else per_class
            out[name] = float(fg.mean())
            for cls, value in zip(self.class_names[1:], per_class[1:].tolist()):
                out[f"{name}_{cls}"] = float(value)
        out.update({k: float(v) for k, v in computed.items() if k not in out and v.numel() == 1})
        return out

    def render(self, preds: Tensor, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        palette = PALETTE.to(preds.device)

        def paint(m: Tensor) -> Tensor:
            return palette[m.long().clamp(0, len(palette) - 1)].permute(0, 3, 1, 2)

        return paint(preds), paint(batch["mask"])


def build_segmentor(
    dims: int,
    arch: str,
    in_channels: int,
    num_classes: int,
    encoder: str = "resnet18",
    seg_args: dict[str, Any] | None = None,
) -> nn.Module:
    """The network inside s: an smp model in 2D, a MONAI network in 3D.

    Args:
        dims: 2 or 3.
        arch: an smp architecture (2D) or one of ``MONAI_ARCHS`` (3D).
        in_channels: channels s reads (g's feature channels, or the image's).
        num_classes: classes including background.
        encoder: smp encoder (2D only).
        seg_args: further keyword arguments of the network.

    Returns:
        The network, returning logits.
    """
    args = dict(seg_args or {})
    if dims == 2:
        return SegmentationNet(
            arch=arch, encoder=encoder, in_channels=in_channels, num_classes=num_classes, **args
        )
    from monai.networks import nets

    if arch not in MONAI_ARCHS:
        raise ValueError(f"3D segmentor arch must be one of {MONAI_ARCHS}, got {arch!r}")
    if arch == "UNet":
        args.setdefault("channels", (16, 32, 64, 128))
        args.setdefault("strides", (2, 2, 2))
        args.setdefault("num_res_units", 1)
    return getattr(nets, arch)(
        spatial_dims=3, in_channels=in_channels, out_channels=num_classes, **args
    )


def encode_features(codec: Codec | None, x: Tensor) -> tuple[Tensor, Tensor]:
    """C's differentiable pass: what s reads, and the bpp estimate.

    Args:
        codec: the codec, or None (Liu's D1: s reads the image itself).
        x: a batch B×C×H×W (or B×C×D×H×W) in [0, 1].

    Returns:
        The features for s (a decoded image clamped to [0, 1], g's feature map, or ``x``) and
        the bits per pixel (voxel) estimated from the likelihoods (8 per channel for D1).
    """
    if codec is None:
        return x, torch.full((), 8.0 * x.shape[1], device=x.device)
    out = codec(x)
    bpp = likelihoods_bpp(out.likelihoods, len(x) * int(torch.tensor(x.shape[2:]).prod()))
    return (out.x_hat.clamp(0, 1) if codec.decodes_image else out.x_hat), bpp

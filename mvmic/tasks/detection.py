"""Detection networks: torchvision Faster R-CNN / Mask R-CNN with mAP from pycocotools."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.detection import MeanAveragePrecision
from torchvision.models import detection as tvd
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from mvmic.tasks.base import TaskNet, inference_layout
from mvmic.weights import load_weights

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "fasterrcnn_resnet50_fpn": tvd.fasterrcnn_resnet50_fpn,
    "fasterrcnn_resnet50_fpn_v2": tvd.fasterrcnn_resnet50_fpn_v2,
    "fasterrcnn_mobilenet_v3_large_fpn": tvd.fasterrcnn_mobilenet_v3_large_fpn,
    "maskrcnn_resnet50_fpn": tvd.maskrcnn_resnet50_fpn,
    "maskrcnn_resnet50_fpn_v2": tvd.maskrcnn_resnet50_fpn_v2,
}

BOX_LOSSES = ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg")

# ImageNet statistics (the torchvision defaults); grey images use their channel mean.
_MEAN, _STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]

#: Record fields taken from MeanAveragePrecision (bbox keys plain, segm keys "segm_"-prefixed).
RECORD_KEYS = ("map", "map_50", "map_75", "mar_100")

_COLOURS = [
    "#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6",
    "#bcf60c", "#fabebe", "#008080", "#e6beff", "#9a6324", "#fffac8", "#800000",
]  # fmt: skip


class CocoMAP(MeanAveragePrecision):
    """torchmetrics' MeanAveragePrecision with the same keys for Faster and Mask R-CNN.

    Box metrics are always ``map``, ``map_50``… (torchmetrics says ``bbox_map``… when segm is
    computed too), mask metrics ``segm_map``…, so ``val_map`` exists for every architecture.
    ``classes`` (an int tensor) and the per-class placeholders (-1 unless ``class_metrics``)
    are dropped: no metric a module should log.
    """

    def compute(self) -> dict[str, Tensor]:
        out = {k.removeprefix("bbox_"): v for k, v in super().compute().items()}
        out.pop("classes", None)
        if not self.class_metrics:
            for key in [k for k in out if k.endswith("_per_class")]:
                out.pop(key)
        return out


def _adapt_first_conv(backbone: nn.Module, in_channels: int) -> None:
    """Replace the backbone's first 3-channel conv by one taking ``in_channels``."""
    for parent in backbone.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Conv2d) and child.in_channels == 3:
                setattr(
                    parent,
                    name,
                    nn.Conv2d(
                        in_channels, child.out_channels, child.kernel_size, child.stride,
                        child.padding, child.dilation, child.groups, child.bias is not None,
                    ),
                )  # fmt: skip
                return
    raise RuntimeError("no 3-channel input convolution found in the detector backbone")


class DetectionNet(TaskNet):
    """A torchvision R-CNN detector (never downloads weights) behind the TaskNet contract.

    Args:
        arch: one of :data:`ARCHITECTURES`.
        in_channels: image channels (1 for grey chest films: the first conv is adapted).
        num_classes: classes including background (ChestX-Det: 13 + 1).
        weights: optional local weights file (torchvision state dict or an mvmic checkpoint).
        min_size, max_size: the detector's internal resize (GeneralizedRCNNTransform).
        train_resize: also resize training images to ``min_size`` (torchvision's default).
            ``False`` when the data module trains on crops (``data.train_crop``): the crops
            then keep the scale of the whole evaluation images and cost only their own pixels.
        loss_weights: weight per torchvision loss term (``loss_classifier``, ``loss_box_reg``,
            ``loss_objectness``, ``loss_rpn_box_reg``, and ``loss_mask`` for Mask R-CNN);
            missing terms weigh 1.
        trainable_backbone_layers: passed to torchvision (all layers train without weights).
        anchor_sizes: one anchor size per feature level (default torchvision's 32…512), e.g.
            ``[16, 32, 64, 128, 256]`` for small lesions on small images.
        score_threshold: boxes drawn by :meth:`render` need at least this score.
        **kwargs: passed to the torchvision constructor (``box_detections_per_img``, …).
    """

    task = "detection"
    target_key = "target"
    primary_metric = "map"

    def __init__(
        self,
        arch: str = "fasterrcnn_resnet50_fpn",
        in_channels: int = 1,
        num_classes: int = 14,
        weights: str | Path | None = None,
        min_size: int = 256,
        max_size: int = 256,
        loss_weights: dict[str, float] | None = None,
        trainable_backbone_layers: int | None = None,
        anchor_sizes: list[int] | None = None,
        score_threshold: float = 0.3,
        train_resize: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if arch not in ARCHITECTURES:
            raise ValueError(
                f"unknown detection architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}"
            )
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
        if num_classes < 2:
            raise ValueError(f"num_classes counts the background too; got {num_classes} (< 2)")
        self.arch = arch
        self.with_masks = arch.startswith("maskrcnn")
        self.loss_names = BOX_LOSSES + (("loss_mask",) if self.with_masks else ())
        self.loss_weights = dict(loss_weights or {})
        unknown = set(self.loss_weights) - set(self.loss_names)
        if unknown:
            raise ValueError(
                f"unknown loss_weights keys {sorted(unknown)} for {arch}; "
                f"valid: {list(self.loss_names)}"
            )
        if anchor_sizes is not None and len(anchor_sizes) != 5:
            raise ValueError(f"anchor_sizes needs 5 sizes (one per FPN level), got {anchor_sizes}")
        mean = _MEAN if in_channels == 3 else [sum(_MEAN) / 3]
        std = _STD if in_channels == 3 else [sum(_STD) / 3]
        self.model = ARCHITECTURES[arch](
            weights=None,
            weights_backbone=None,
            num_classes=num_classes,
            min_size=min_size,
            max_size=max_size,
            image_mean=mean,
            image_std=std,
            trainable_backbone_layers=trainable_backbone_layers,
            **kwargs,
        )
        # torchvision's own switch (its reference scripts' large-scale jitter resizes in data).
        self.model.transform._skip_resize = not train_resize
        # torchvision batches the images into a new tensor: its layout is set at the backbone
        self.model.backbone.register_forward_pre_hook(_backbone_inference_layout)
        if in_channels != 3:
            _adapt_first_conv(self.model.backbone, in_channels)
        if anchor_sizes is not None:
            # Same number of anchors per location as torchvision's default, so the RPN head fits:
            # one size per level on the ResNet FPN, all five sizes on each MobileNet level.
            levels = len(self.model.rpn.anchor_generator.sizes)
            sizes = (
                tuple((int(a),) for a in anchor_sizes)
                if levels == 5
                else (tuple(int(a) for a in anchor_sizes),) * levels
            )
            self.model.rpn.anchor_generator = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * levels)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.score_threshold = score_threshold
        if weights:
            self._load_local(Path(weights))

    def _load_local(self, path: Path) -> None:
        """An mvmic checkpoint / DetectionNet state dict (``task.model.…``, ``model.…``) or a
        plain torchvision detector state dict (``backbone.…``)."""
        if not path.is_file():
            raise FileNotFoundError(f"detector weights file {path} does not exist")
        obj = torch.load(path, map_location="cpu", weights_only=True)
        state = obj.get("state_dict", obj.get("model", obj)) if isinstance(obj, dict) else obj
        ours = any(k.startswith(("model.", "task.model.")) for k in state)
        if ours:
            load_weights(self, path, prefixes=("task.",))
        else:
            load_weights(self.model, path)

    # ------------------------------------------------------------------ forward passes
    def forward(self, x: Tensor, targets: list[dict[str, Tensor]] | None = None) -> Any:
        return self.model(list(x), targets)

    def loss(self, x: Tensor, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        """Weighted sum of the R-CNN loss dict on images ``x``.

        torchvision detectors return losses only in training mode, but MVMICNet may hold the
        detector frozen in eval mode: the detector is switched to training mode for this call
        with every BatchNorm layer kept in the mode it had, then all modes are restored.
        """
        targets = batch[self.target_key]
        if self.with_masks and any("masks" not in t for t in targets):
            raise ValueError(
                f"{self.arch} needs instance masks in the targets: set data.with_masks true"
            )
        modes = {m: m.training for m in self.model.modules()}
        self.model.train()
        for m, was in modes.items():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.train(was)
        try:
            terms = self.model(list(x), [self._target(t) for t in targets])
        finally:
            for m, was in modes.items():
                m.training = was
        total = sum(self.loss_weights.get(k, 1.0) * v for k, v in terms.items())
        return total, {k: v.detach() for k, v in terms.items()}

    def _target(self, t: dict[str, Tensor]) -> dict[str, Tensor]:
        out = {"boxes": t["boxes"].float(), "labels": t["labels"].long()}
        if self.with_masks:
            out["masks"] = t["masks"].to(torch.uint8)
        return out

    @torch.no_grad()
    def predict(self, x: Tensor) -> list[dict[str, Tensor]]:
        """Eval-mode detections: list of ``{boxes, labels, scores[, masks N×1×H×W]}``."""
        modes = {m: m.training for m in self.model.modules()}
        self.model.eval()
        try:
            return self.model(list(x))
        finally:
            for m, was in modes.items():
                m.training = was

    # ------------------------------------------------------------------ metrics
    def build_metrics(self, sync: bool = True) -> MetricCollection:
        iou_type = ("bbox", "segm") if self.with_masks else "bbox"
        # COCO's own thresholds in float64: torchmetrics' defaults come from a float32
        # linspace (0.30000001 instead of 0.3), which shifts mAP by ~1e-3 against cocoeval
        # whenever a recall lands exactly on a threshold.
        iou_thrs = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1).tolist()
        rec_thrs = np.linspace(0.0, 1.0, int(np.round(1.0 / 0.01)) + 1).tolist()
        return MetricCollection(
            {
                "map": CocoMAP(
                    backend="pycocotools",
                    iou_type=iou_type,
                    iou_thresholds=iou_thrs,
                    rec_thresholds=rec_thrs,
                    sync_on_compute=sync,
                )
            }
        )

    def update_metrics(
        self, metrics: MetricCollection, preds: list[dict[str, Tensor]], batch: dict[str, Any]
    ) -> None:
        metrics.update(*self._metric_inputs(preds, batch))

    def stats_header(self) -> dict[str, Any]:
        m = self.build_metrics()["map"]
        thrs = {"iou_thrs": list(m.iou_thresholds), "rec_thrs": list(m.rec_thresholds)}
        return {"kind": "coco", **thrs, "max_dets": int(m.max_detection_thresholds[-1])}

    def image_stats(self, preds: list[dict[str, Tensor]], batch: dict[str, Any]) -> list[Any]:
        """Box matches per image (pycocotools, as the record's mAP matches them)."""
        from mvmic.evaluation.image_stats import coco_image_stats

        if not hasattr(self, "_stats_metric"):
            self._stats_metric = self.build_metrics(sync=False)["map"]
        return [
            coco_image_stats(self._stats_metric, p, t)
            for p, t in zip(*self._metric_inputs(preds, batch))
        ]

    def _metric_inputs(
        self, preds: list[dict[str, Tensor]], batch: dict[str, Any]
    ) -> tuple[list[dict[str, Tensor]], list[dict[str, Tensor]]]:
        p_list, t_list = [], []
        for p, t in zip(preds, batch[self.target_key]):
            pd = {"boxes": p["boxes"], "scores": p["scores"], "labels": p["labels"]}
            td = {"boxes": t["boxes"].float(), "labels": t["labels"].long()}
            if self.with_masks:
                pd["masks"] = (
                    (p["masks"][:, 0] > 0.5) if p["masks"].ndim == 4 else p["masks"].bool()
                )
                td["masks"] = t["masks"].bool()
            p_list.append(pd)
            t_list.append(td)
        return p_list, t_list

    def record(self, computed: dict[str, Tensor]) -> dict[str, float]:
        """``map``, ``map_50``, ``map_75``, ``mar_100`` (+ ``segm_*`` for Mask R-CNN).

        MetricCollection flattens MeanAveragePrecision's dict into its own keys (``map``…), or
        with two IoU types into ``bbox_map``… and ``segm_map``…; a stage prefix such as
        ``val/`` may precede them. All these spellings are accepted.
        """
        flat = {k.rsplit("/", 1)[-1]: v for k, v in computed.items()}
        out: dict[str, float] = {}
        pairs = [(k, k) for k in RECORD_KEYS] + [(f"bbox_{k}", k) for k in RECORD_KEYS]
        pairs += [(f"segm_{k}", f"segm_{k}") for k in RECORD_KEYS]
        for src, dst in pairs:
            v = flat.get(src)
            if isinstance(v, Tensor) and v.numel() == 1:
                out[dst] = float(v)
        if "map" not in out:
            raise KeyError(f"no 'map' among the computed metrics {sorted(flat)}")
        return out

    # ------------------------------------------------------------------ panels
    def render(
        self, preds: list[dict[str, Tensor]], batch: dict[str, Any]
    ) -> tuple[Tensor, Tensor]:
        """Grey image with predicted (score ≥ ``score_threshold``) and ground-truth boxes."""
        images = batch["image"].detach().float().clamp(0, 1).cpu()
        pred_panels, gt_panels = [], []
        for img, p, t in zip(images, preds, batch[self.target_key]):
            base = (img.expand(3, -1, -1) if img.shape[0] == 1 else img[:3]) * 255
            base = base.round().to(torch.uint8)
            keep = p["scores"].detach().cpu() >= self.score_threshold
            pm = p.get("masks")
            pm = pm.detach().cpu()[keep][:, 0] > 0.5 if pm is not None and pm.ndim == 4 else None
            pred_panels.append(
                self._draw(base, p["boxes"].detach().cpu()[keep], p["labels"].cpu()[keep], pm)
            )
            tm = t.get("masks")
            tm = tm.detach().cpu().bool() if tm is not None and self.with_masks else None
            gt_panels.append(self._draw(base, t["boxes"].cpu(), t["labels"].cpu(), tm))
        return torch.stack(pred_panels), torch.stack(gt_panels)

    @staticmethod
    def _draw(base: Tensor, boxes: Tensor, labels: Tensor, masks: Tensor | None) -> Tensor:
        colours = [_COLOURS[int(c) % len(_COLOURS)] for c in labels]
        img = base
        if masks is not None and len(masks):
            img = draw_segmentation_masks(img, masks, alpha=0.35, colors=colours)
        if len(boxes):
            img = draw_bounding_boxes(img, boxes.float(), colors=colours, width=1)
        return img.float() / 255.0


def _backbone_inference_layout(backbone: nn.Module, args: tuple[Any, ...]) -> Any:
    """Eval-mode backbone input in :func:`inference_layout` (training keeps the default layout:
    the detector's training step is slower in channels_last, 3.3 → 3.7 s)."""
    if backbone.training:
        return None
    return (inference_layout(args[0]), *args[1:])

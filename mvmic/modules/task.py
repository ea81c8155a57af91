"""The task network on uncompressed images: the reference point and a possible initialiser."""

from __future__ import annotations

import math
from typing import Any

import torch

from mvmic import validation as check
from mvmic.evaluation.image_stats import StatsCollector
from mvmic.modules.base import BaseModule


class TaskModule(BaseModule):
    """Train and test a task network (segmentation, detection) on uncompressed images.

    Args:
        task: ``"segmentation"`` or ``"detection"``.
        arch: architecture name (smp for segmentation, torchvision for detection).
        encoder: smp encoder (segmentation only).
        num_classes: classes including background.
        in_channels: image channels.
        task_weights: optional local weights file for the task network.
        task_args: further keyword arguments of the task network.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        lr_schedule: ``"constant"``, or ``"cosine"`` (annealed to 0 over the run's optimizer
            steps, so a short run ends on small steps instead of wherever its last large one
            left the weights and BatchNorm statistics).
        method: name of the results record (default ``"uncompressed"``).
        results_dir: where ``mvmic test`` writes its record.
    """

    #: the record fields that identify this module's operating point (mvmic.evaluation.records):
    #: none, uncompressed is one point, so a re-run test replaces it
    POINT_KEY: tuple[str, ...] = ()

    def __init__(
        self,
        task: str = "segmentation",
        arch: str = "Unet",
        encoder: str | None = None,
        num_classes: int = 2,
        in_channels: int = 3,
        task_weights: str | None = None,
        task_args: dict[str, Any] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        lr_schedule: str = "constant",
        method: str | None = None,
        results_dir: str = "runs/results",
    ) -> None:
        check.task_network(task, arch, encoder, num_classes, in_channels, task_weights)
        check.positive("--model.lr", lr)
        check.non_negative("--model.weight_decay", weight_decay)
        check.one_of("--model.lr_schedule", lr_schedule, ("constant", "cosine"))
        check.record(method, results_dir)
        super().__init__()

    def configure_models(self) -> None:
        self.task = self.build_task_net()

    def configure_optimizers(self):
        opt = torch.optim.Adam(
            self.task.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )
        if self.hparams.lr_schedule == "constant":
            return opt
        steps = self.trainer.estimated_stepping_batches
        if not math.isfinite(steps):
            raise check.ConfigError(
                "--model.lr_schedule",
                "cosine needs a run of known length: set "
                "--trainer.max_steps or --trainer.max_epochs",
            )
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, int(steps)))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": cosine, "interval": "step"}}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self.task_training_step(batch["image"], batch)

    def _eval_step(self, batch: dict[str, Any], batch_idx: int, metrics, prefix: str) -> None:
        x = batch["image"]
        loss, preds = self.task.evaluate(x, batch)
        self.task.update_metrics(metrics, preds, batch)
        if prefix == "test":
            self._stats.update(preds, batch)
        self.log(f"{prefix}_loss", loss, prog_bar=True, batch_size=len(x))
        if batch_idx == 0:
            self.panel = {"image": x, "prediction": preds, "batch": batch}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, self.val_metrics, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, self.test_metrics, "test")

    def on_test_epoch_start(self) -> None:
        # per-image sufficient statistics: the record's error bars (mvmic.evaluation.bootstrap)
        self._stats = StatsCollector(self.task)

    def on_validation_epoch_end(self) -> None:
        self.log_stage_metrics("val")

    def on_test_epoch_end(self) -> None:
        record = self.log_stage_metrics("test")
        # Uncompressed: 8 bits per sample per channel; no reconstruction error to report.
        self.test_point = {"bpp": 8.0 * self.hparams.in_channels, **record, "stage": 0}
        stats = self._stats.result()
        if stats is not None:
            self.test_point["per_image"] = stats

    @property
    def method_name(self) -> str:
        return self.hparams.method or "uncompressed"

"""The task side of one anchor operating point, shared by the image and volume anchors: the
task net reads each decoded batch, and the point gets the task's record fields, its time and
the per-image (per-volume) statistics."""

from __future__ import annotations

import time
from typing import Any

import torch

from mvmic.evaluation.image_stats import StatsCollector
from mvmic.evaluation.liu_table import VolumeScores


class TaskReadout:
    """Accumulates what ``task`` makes of the decoded batches of one operating point."""

    def __init__(self, task: torch.nn.Module, volumes: bool = False) -> None:
        self.task = task
        self.metrics = task.build_metrics()
        self.stats = StatsCollector(task)
        self.volumes = VolumeScores(task) if volumes else None
        self.task_ms = 0.0
        self.n = 0

    def read(self, x_hat: torch.Tensor, batch: dict[str, Any], nbytes: list[int]) -> None:
        t0 = time.perf_counter()
        preds = self.task.predict(x_hat)
        self.task_ms += 1e3 * (time.perf_counter() - t0)
        self.task.update_metrics(self.metrics, preds, batch)
        self.stats.update(preds, batch, nbytes)
        if self.volumes is not None:
            self.volumes.update(preds, batch, nbytes)
        self.n += len(x_hat)

    def check_nonempty(self) -> int:
        if self.n == 0:
            raise ValueError("the test split is empty; check data.root and the split fractions")
        return self.n

    def record(self) -> dict[str, Any]:
        """The task's record fields (mIoU, Dice, mAP …) over every batch read."""
        return self.task.record(self.metrics.compute())

    def statistics(self) -> dict[str, Any]:
        """``per_image`` (the error bars) and, for volumes, ``per_volume`` (Liu's Table 1)."""
        out: dict[str, Any] = {}
        stats = self.stats.result()
        if stats is not None:
            out["per_image"] = stats
        if self.volumes is not None:
            out["per_volume"] = self.volumes.result()
        return out

    def point(
        self, shared: dict[str, Any], sums: dict[str, float], times: dict[str, float]
    ) -> dict[str, Any]:
        """This net's operating point: ``shared`` as given (what every net reading these
        images has in common: quality, PSNR), ``sums`` and ``times`` (the codec's) as per-image
        means with this net's ``task_ms``, its record fields and per-image statistics."""
        n = self.check_nonempty()
        point = {**shared, **{k: v / n for k, v in sums.items()}}
        point.update(self.record())
        point.update({k: v / n for k, v in {**times, "task_ms": self.task_ms}.items()})
        point.update(self.statistics())
        return point

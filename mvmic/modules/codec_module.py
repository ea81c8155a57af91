"""The base of every module whose images reach the task through a learned codec.

The real-bits test loop (compress → bytes → decompress → task, one image at a time, as a
deployed encoder sends them), its timings and byte counts, the panels and the entropy tables
saved with the weights are written here once; MVMICNet and GanSegmentation fill in small hooks.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import Tensor

from mvmic.evaluation.image_stats import StatsCollector
from mvmic.evaluation.liu_table import VolumeScores
from mvmic.metrics import likelihoods_bpp
from mvmic.modules.base import BaseModule

#: per-image sums of the test loop; their means go into the record (mvmic latency reads them)
PER_IMAGE = ("enc_ms", "dec_ms", "task_ms", "bytes", "file_bytes")


class CodecModule(BaseModule):
    """A :class:`BaseModule` with ``self.codec`` (or None: the uncompressed reference).

    Subclasses set ``self.codec`` and ``self.task`` in ``configure_models`` and may override
    :meth:`prepare_test_codec`, :meth:`bpp_estimates`, :meth:`update_quality`,
    :meth:`log_record` and :meth:`operating_point`. Test metrics must include ``bpp``,
    ``bpp_est`` and ``bpp_container`` (see :func:`mvmic.metrics.rate_metrics`).
    """

    @property
    def codec_frozen(self) -> bool:
        """Whether the codec's weights are fixed in this run (its saved tables are then kept)."""
        return False

    # -- hooks ----------------------------------------------------------------------------
    def prepare_test_codec(self) -> None:
        """Entropy tables that match the weights, before the first test image is coded."""
        self.codec.update(force=True)

    def bpp_estimates(self, x: Tensor) -> list[Tensor]:
        """Per-image bpp estimated from the likelihoods (the value ``bpp_est`` reports)."""
        npix = math.prod(x.shape[2:])
        with torch.no_grad():
            return [
                likelihoods_bpp(self.codec(x[i : i + 1]).likelihoods, npix).detach().cpu()
                for i in range(len(x))
            ]

    def update_quality(self, stage: str, x: Tensor, decoded: Tensor) -> None:
        """Update image-quality metrics of ``stage`` (none by default)."""

    def log_record(self, stage: str) -> dict[str, float]:
        """Compute and log the stage's metrics; return them as record fields."""
        return self.log_stage_metrics(stage)

    def operating_point(self) -> dict[str, Any]:
        """The record fields that identify this run's point (``POINT_KEY`` and the like)."""
        return {}

    # -- panels -----------------------------------------------------------------------------
    def set_panel(self, x: Tensor, decoded: Tensor, preds: Tensor, batch: dict[str, Any]) -> None:
        """Image | reconstruction (or the feature map, min–max scaled) | prediction | truth.

        Volumes show their middle slice.
        """
        if x.dim() == 5:
            mid = x.shape[2] // 2
            x, decoded, preds = x[:, :, mid], decoded[:, :, mid], preds[:, mid]
            batch = {"mask": batch["mask"][:, mid]}
        panel: dict[str, Any] = {"image": x.detach(), "prediction": preds, "batch": batch}
        testing = self._trainer is None or self.trainer.testing  # validation stays cheap
        if self.codec is not None and self.codec.spatial_dims == 2 and testing:
            from mvmic.codecs.bit_map import bit_map

            # where the bits go, for the panel's first images only (one extra codec pass)
            panel["bits"] = bit_map(self.codec, x[:4].detach())
        if self.codec is not None and self.codec.decodes_image:
            panel["reconstruction"] = decoded.detach()
        elif self.codec is not None:
            f = decoded[:, :1].detach().float()
            lo = f.amin(dim=(1, 2, 3), keepdim=True)
            hi = f.amax(dim=(1, 2, 3), keepdim=True)
            panel["features"] = (f - lo) / (hi - lo).clamp_min(1e-8)
        self.panel = panel

    # -- the real-bits test loop --------------------------------------------------------------
    def on_test_epoch_start(self) -> None:
        if self.codec is not None:
            self.prepare_test_codec()
        self._per_image = dict.fromkeys(PER_IMAGE, 0.0)
        self._n_images = 0
        self._size: tuple[int, ...] = ()
        # per-image sufficient statistics: the record's error bars (mvmic.evaluation.bootstrap)
        self._stats = StatsCollector(self.task)
        self._volumes = VolumeScores(self.task)  # 3D: per-volume Dice/IoU (Liu's Table 1)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Real bits: every image (volume) goes compress → bytes → decompress → task."""
        x = batch["image"]
        npix = math.prod(x.shape[2:])
        nbytes = None
        if not self.transmits:  # the raw samples are what would be sent
            decoded = x
            raw = torch.tensor(8.0 * x.shape[1])
            for _ in range(len(x)):
                for key in ("bpp", "bpp_est", "bpp_container"):
                    self.test_extra[key].update(raw)
        else:
            parts, nbytes = [], []
            for xi, est in zip(x.split(1), self.bpp_estimates(x)):
                out, bitstream, file_bytes = self.transmit(xi, times=self._per_image)
                parts.append(out)
                nbytes.append(bitstream.payload_bytes)
                self._per_image["bytes"] += bitstream.payload_bytes
                self._per_image["file_bytes"] += file_bytes
                self.test_extra["bpp"].update(torch.tensor(8.0 * bitstream.payload_bytes / npix))
                self.test_extra["bpp_container"].update(torch.tensor(8.0 * file_bytes / npix))
                self.test_extra["bpp_est"].update(est)
            decoded = torch.cat(parts)
        t0 = time.perf_counter()
        preds = self.task_output(decoded)
        self._per_image["task_ms"] += 1e3 * (time.perf_counter() - t0)
        self._n_images += len(x)
        self._size = tuple(x.shape[2:])
        self.task.update_metrics(self.test_metrics, preds, batch)
        self._stats.update(preds, batch, nbytes)
        self._volumes.update(preds, batch, nbytes)
        self.update_quality("test", x, decoded)
        if batch_idx == 0:
            self.set_panel(x, decoded, preds, batch)

    def on_test_epoch_end(self) -> None:
        record = self.log_record("test")
        n = max(self._n_images, 1)
        times = {k: v / n for k, v in self._per_image.items()}
        if not self.transmits:  # the uncompressed reference: no codec bytes or times
            times = {"task_ms": times["task_ms"]}
        self.test_point = {
            **record,
            # per-image means: payload and .mvmic file bytes, timings
            **times,
            **dict(zip(("depth", "height", "width")[-len(self._size) :], self._size)),
            "pixels": math.prod(self._size),
            **self.operating_point(),
        }
        stats = self._stats.result()
        if stats is not None:
            self.test_point["per_image"] = stats
        volumes = self._volumes.result()
        if volumes is not None:
            self.test_point["per_volume"] = volumes

    # -- checkpoints ------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        codec = self.codec
        if codec is not None and codec.stores_entropy_tables and not self.codec_frozen:
            # Entropy tables that match the weights being saved, so any later encoder or
            # decoder loading this file uses identical, current tables.
            codec.update(force=True)
            for key, value in codec.state_dict().items():
                checkpoint["state_dict"][f"codec.{key}"] = value

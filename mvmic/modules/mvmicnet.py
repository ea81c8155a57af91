"""MVMICNet (Yao et al. 2026): a learned codec trained for the task network that reads it."""

from __future__ import annotations

import time
from typing import Any

import torch
from torchmetrics import MetricCollection

from mvmic.codecs import build_codec
from mvmic.codecs.hyperprior import likelihoods_bpp
from mvmic.losses import RateDistortionAccuracyLoss
from mvmic.metrics import image_quality_metrics, rate_metrics
from mvmic.modules.base import BaseModule
from mvmic.tasks.segmentation import load_weights


class MVMICNet(BaseModule):
    """Stage 1 trains the codec (and the task net unless frozen) on ``R + λ_d·D + λ_t·L_task``;
    stage 2 is a separate run that loads a stage-1 checkpoint, freezes the codec and fine-tunes
    the task network on decoded images. ``lmbda_t = 0`` is the plain rate–distortion codec.

    Args:
        task, arch, encoder, num_classes, in_channels, task_weights, task_args: the task
            network (see :class:`~mvmic.modules.task.TaskModule`).
        codec: ``bmshj2018-hyperprior``, ``mbt2018-mean`` or ``cheng2020-anchor``.
        N, M: codec widths (cheng2020-anchor uses N only).
        stage: 1 (joint training) or 2 (task fine-tuning on decoded images, codec frozen).
        lmbda_d, lmbda_t, distortion: the loss (see ``RateDistortionAccuracyLoss``).
        freeze_task: stage 1 only: keep the task network fixed (eval mode, no gradients).
        init_codec: checkpoint (MVMICNet or plain codec state dict) to start the codec from,
            e.g. the MSE-trained codec, which avoids rate collapse.
        init_task: checkpoint (TaskModule or state dict) to start the task network from.
        init_from: a stage-1 checkpoint to start both from; required for stage 2.
        lr: codec learning rate; task_lr: task network learning rate (default: lr);
        aux_lr: learning rate of the entropy bottleneck's quantiles.
        method: results-record name (default: ``MVMICNet stage N``, or the codec's name when
            ``lmbda_t = 0``).
        results_dir: where ``mvmic test`` writes its record.
    """

    def __init__(
        self,
        task: str = "segmentation",
        arch: str = "Unet",
        encoder: str | None = None,
        num_classes: int = 2,
        in_channels: int = 3,
        task_weights: str | None = None,
        task_args: dict[str, Any] | None = None,
        codec: str = "bmshj2018-hyperprior",
        N: int = 128,
        M: int = 192,
        stage: int = 1,
        lmbda_d: float = 0.0067,
        lmbda_t: float = 1.0,
        distortion: str = "mse",
        freeze_task: bool = False,
        init_codec: str | None = None,
        init_task: str | None = None,
        init_from: str | None = None,
        lr: float = 1e-4,
        task_lr: float | None = None,
        aux_lr: float = 1e-3,
        method: str | None = None,
        results_dir: str = "runs/results",
    ) -> None:
        if stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {stage}")
        super().__init__()
        self._apply_freezing()

    # -- building ---------------------------------------------------------------------
    def configure_models(self) -> None:
        hp = self.hparams
        codec_kwargs = {"N": hp.N, "in_channels": hp.in_channels}
        if hp.codec != "cheng2020-anchor":
            codec_kwargs["M"] = hp.M
        self.codec = build_codec(hp.codec, **codec_kwargs)
        self.task = self.build_task_net()

    def configure_losses(self) -> None:
        hp = self.hparams
        self.criterion = RateDistortionAccuracyLoss(hp.lmbda_d, hp.lmbda_t, hp.distortion)

    def extra_metrics(self, stage: str) -> MetricCollection:
        metrics = image_quality_metrics()
        # Real bytes exist only in test, where every image is compressed for real.
        rates = ("bpp", "bpp_est", "bpp_container") if stage == "test" else ("bpp_est",)
        metrics.add_metrics(dict(rate_metrics(*rates).items()))
        return metrics

    @property
    def codec_frozen(self) -> bool:
        return self.hparams.stage == 2

    @property
    def task_frozen(self) -> bool:
        return self.hparams.stage == 1 and self.hparams.freeze_task

    def _apply_freezing(self) -> None:
        self.codec.requires_grad_(not self.codec_frozen)
        self.task.requires_grad_(not self.task_frozen)

    def train(self, mode: bool = True) -> MVMICNet:
        # Frozen parts stay in eval mode: BatchNorm statistics and the codec's quantisation
        # must not change while the other part trains.
        super().train(mode)
        if self.codec_frozen:
            self.codec.eval()
        if self.task_frozen:
            self.task.eval()
        return self

    # -- initialisation from other runs ------------------------------------------------
    def setup(self, stage: str) -> None:
        if stage != "fit":
            return
        hp = self.hparams
        if hp.init_from:
            load_weights(self, hp.init_from)
        if hp.init_codec:
            load_weights(self.codec, hp.init_codec, prefixes=("codec.",))
        if hp.init_task:
            load_weights(self.task, hp.init_task, prefixes=("task.",))
        self.codec.update(force=True)

    def on_fit_start(self) -> None:
        # Checked here, not in __init__, because a resumed run restores weights from its own
        # checkpoint and `mvmic test` never needs the stage-1 file.
        if self.codec_frozen and not self.hparams.init_from and not self.trainer.ckpt_path:
            raise ValueError(
                "stage 2 needs a stage-1 checkpoint: pass --model.init_from "
                "runs/<stage-1 run>/checkpoints/last.ckpt"
            )

    # -- steps ------------------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        task_lr = hp.task_lr if hp.task_lr is not None else hp.lr
        if self.codec_frozen:
            return torch.optim.Adam(self.task.parameters(), lr=task_lr)
        # One Adam with per-group learning rates is CompressAI's two-optimizer recipe
        # (Adam is per-parameter) and keeps Lightning's automatic optimisation, DDP and
        # gradient clipping working unchanged. The aux loss only reaches the quantiles.
        groups = [
            {"params": self.codec.main_parameters(), "lr": hp.lr, "name": "codec"},
            {"params": self.codec.aux_parameters(), "lr": hp.aux_lr, "name": "aux"},
        ]
        if not self.task_frozen:
            groups.append({"params": list(self.task.parameters()), "lr": task_lr, "name": "task"})
        return torch.optim.Adam(groups)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        x = batch["image"]
        bs = len(x)
        if self.codec_frozen:
            with torch.no_grad():
                x_hat = self.codec(x).x_hat.clamp(0, 1)
            loss, terms = self.task.loss(x_hat, batch)
            self.check_finite(loss, terms)
            self.log("train_loss", loss, prog_bar=True, batch_size=bs)
            self.log_dict({f"train_{k}": v for k, v in terms.items()}, batch_size=bs)
            return loss
        out = self.codec(x)
        task_loss = None
        if self.hparams.lmbda_t > 0:
            task_loss, task_terms = self.task.loss(out.x_hat, batch)
            self.log_dict({f"train_{k}": v for k, v in task_terms.items()}, batch_size=bs)
        terms = self.criterion(out, x, task_loss)
        aux = self.codec.aux_loss()
        self.check_finite(terms["loss"] + aux, {**terms, "aux": aux})
        self.log_dict({f"train_{k}": v.detach() for k, v in terms.items()}, batch_size=bs)
        self.log("train_aux_loss", aux.detach(), batch_size=bs)
        self.log("train_bpp_est", terms["bpp"].detach(), prog_bar=True, batch_size=bs)
        return terms["loss"] + aux

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        x = batch["image"]
        out = self.codec(x)
        x_hat = out.x_hat.clamp(0, 1)
        task_loss, _ = self.task.loss(x_hat, batch)
        terms = self.criterion(out, x, task_loss)
        val_loss = task_loss if self.codec_frozen else terms["loss"]
        self.log("val_loss", val_loss, prog_bar=True, batch_size=len(x))
        preds = self.task.predict(x_hat)
        self.task.update_metrics(self.val_metrics, preds, batch)
        self.val_extra["psnr"].update(x_hat, x)
        self.val_extra["ms-ssim"].update(x_hat, x)
        self.val_extra["bpp_est"].update(terms["bpp"].detach())
        if batch_idx == 0:
            self.panel = {"image": x, "reconstruction": x_hat, "prediction": preds, "batch": batch}

    def on_validation_epoch_start(self) -> None:
        if not self.codec_frozen:
            self.codec.update(force=True)

    def on_validation_epoch_end(self) -> None:
        self.log_stage_metrics("val")

    def on_test_epoch_start(self) -> None:
        self.codec.update()
        self._per_image = {"enc_ms": 0.0, "dec_ms": 0.0, "task_ms": 0.0, "bytes": 0.0, "n": 0}

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Real bits: every image goes through compress → bytes → decompress → task."""
        x = batch["image"]
        h, w = x.shape[-2:]
        est = self.codec(x)
        decoded = []
        for i in range(len(x)):
            t0 = time.perf_counter()
            bitstream = self.codec.compress(x[i : i + 1])
            data = bitstream.to_bytes()
            t1 = time.perf_counter()
            decoded.append(self.codec.decompress(data))
            t2 = time.perf_counter()
            payload = bitstream.payload_bytes
            self.test_extra["bpp"].update(torch.tensor(8.0 * payload / (h * w)))
            self.test_extra["bpp_container"].update(torch.tensor(8.0 * len(data) / (h * w)))
            self._per_image["bytes"] += payload
            self._per_image["enc_ms"] += 1e3 * (t1 - t0)
            self._per_image["dec_ms"] += 1e3 * (t2 - t1)
        x_hat = torch.cat(decoded).to(x.device)
        t0 = time.perf_counter()
        preds = self.task.predict(x_hat)
        self._per_image["task_ms"] += 1e3 * (time.perf_counter() - t0)
        self._per_image["n"] += len(x)
        self._size = (h, w)
        self.task.update_metrics(self.test_metrics, preds, batch)
        self.test_extra["psnr"].update(x_hat, x)
        self.test_extra["ms-ssim"].update(x_hat, x)
        for i in range(len(x)):
            lk = {k: v[i : i + 1] for k, v in est.likelihoods.items()}
            self.test_extra["bpp_est"].update(likelihoods_bpp(lk, h * w).detach())
        if batch_idx == 0:
            self.panel = {"image": x, "reconstruction": x_hat, "prediction": preds, "batch": batch}

    def on_test_epoch_end(self) -> None:
        record = self.log_stage_metrics("test")
        n = max(self._per_image.pop("n"), 1)
        hp = self.hparams
        self.test_point = {
            **record,
            # per-image means: payload bytes and timings (mvmic latency reads these)
            **{k: v / n for k, v in self._per_image.items()},
            "height": self._size[0],
            "width": self._size[1],
            "pixels": self._size[0] * self._size[1],
            "lmbda": hp.lmbda_d,
            "lmbda_t": hp.lmbda_t,
            "stage": hp.stage,
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if not self.codec_frozen:
            # Store entropy tables that match the weights being saved, so any later
            # encoder/decoder loading this file uses identical, current tables.
            self.codec.update(force=True)
            for key, value in self.codec.state_dict().items():
                checkpoint["state_dict"][f"codec.{key}"] = value

    @property
    def method_name(self) -> str:
        hp = self.hparams
        if hp.method:
            return hp.method
        if hp.lmbda_t == 0:
            return hp.codec
        return f"MVMICNet stage {hp.stage}"

"""MVMICNet (Yao et al. 2026): a learned codec trained for the task network that reads it."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics import MetricCollection

from mvmic import validation as check
from mvmic.codecs import HYPERPRIOR_MODELS, build_codec
from mvmic.codecs.light import ANALYSES
from mvmic.losses import DISTORTIONS, RateDistortionAccuracyLoss
from mvmic.metrics import image_quality_metrics, likelihoods_bpp, rate_metrics
from mvmic.modules.checkpoints import load_checkpoint
from mvmic.modules.codec_module import CodecModule
from mvmic.weights import load_weights


class MVMICNet(CodecModule):
    """Stage 1 trains the codec (and the task net unless frozen) on ``R + λ_d·D + λ_t·L_task``;
    stage 2 is a separate run that loads a stage-1 checkpoint, freezes the codec and fine-tunes
    the task network on decoded images. ``lmbda_t = 0`` is the plain rate–distortion codec.

    Args:
        task, arch, encoder, num_classes, in_channels, task_weights, task_args: the task
            network (see :class:`~mvmic.modules.task.TaskModule`).
        codec: ``bmshj2018-hyperprior``, ``mbt2018-mean`` or ``cheng2020-anchor``.
        N, M: codec widths (cheng2020-anchor uses N only).
        codec_analysis: the codec's encoder side: ``full`` (CompressAI's) or ``light``, an
            asymmetric codec whose analysis costs ~35× fewer operations on the edge device,
            with the same decoder and file format (see ``mvmic.codecs.light``). A light codec
            started from a full codec's ``init_codec`` takes its decoder side only.
        stage: 1 (joint training) or 2 (task fine-tuning on decoded images, codec frozen).
        lmbda_d, lmbda_t, distortion: the loss (see ``RateDistortionAccuracyLoss``).
        freeze_task: stage 1 only: keep the task network fixed (eval mode, no gradients).
        init_codec: checkpoint (MVMICNet or plain codec state dict) to start the codec from,
            e.g. the MSE-trained codec, which avoids rate collapse; or a CompressAI model
            file (zoo ``*.pth.tar``, ``examples/train.py`` checkpoint), see
            ``HyperpriorCodec.load_weights``.
        init_task: checkpoint (TaskModule or state dict) to start the task network from.
        init_from: a stage-1 checkpoint to start both from; required for stage 2.
        lr: codec learning rate; task_lr: task network learning rate (default: lr);
        aux_lr: learning rate of the entropy bottleneck's quantiles.
        method: results-record name (default: ``MVMICNet stage N``, or the codec's name when
            ``lmbda_t = 0``).
        results_dir: where ``mvmic test`` writes its record.
    """

    #: checkpoints `mvmic fit` reads (checked before fitting; `mvmic test` never needs them)
    FIT_FILES = ("init_codec", "init_task", "init_from")
    #: the record fields that identify this module's operating point (mvmic.evaluation.records)
    POINT_KEY = ("lmbda", "lmbda_t", "stage")

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
        codec_analysis: str = "full",
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
        check.task_network(task, arch, encoder, num_classes, in_channels, task_weights)
        check.one_of("--model.codec", codec, HYPERPRIOR_MODELS, "a codec")
        check.each(check.positive_int, "--model", N=N, M=M)
        check.one_of("--model.codec_analysis", codec_analysis, ANALYSES, "an analysis")
        check.one_of("--model.stage", stage, (1, 2), "a stage")
        check.each(check.non_negative, "--model", lmbda_d=lmbda_d, lmbda_t=lmbda_t)
        check.one_of("--model.distortion", distortion, DISTORTIONS, "a distortion")
        check.each(check.positive, "--model", lr=lr, task_lr=task_lr, aux_lr=aux_lr)
        check.record(method, results_dir)
        self._task_trained = False
        super().__init__()
        self._apply_freezing()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self._task_trained = bool(checkpoint.get("mvmic_task_trained", True))
        self._adopt_codec_lambdas(checkpoint.get("hyper_parameters", {}), "its checkpoint")

    # -- building ---------------------------------------------------------------------
    def configure_models(self) -> None:
        hp = self.hparams
        codec_kwargs = {"N": hp.N, "in_channels": hp.in_channels, "analysis": hp.codec_analysis}
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
            saved = load_checkpoint(hp.init_from)
            self._task_trained = bool(saved.get("mvmic_task_trained", True))
            if self.codec_frozen:
                # Stage 2's operating point is its codec's: λ comes with the frozen codec.
                self._adopt_codec_lambdas(saved.get("hyper_parameters", {}), hp.init_from)
        if hp.init_codec:
            self.codec.load_weights(hp.init_codec)  # mvmic or CompressAI weights
        if hp.init_task:
            load_weights(self.task, hp.init_task, prefixes=("task.",))
            self._task_trained = True
        self.codec.update(force=True)

    #: hyperparameters that say which rate–distortion–accuracy trade-off the codec was trained for
    CODEC_LAMBDAS = ("lmbda_d", "lmbda_t", "distortion")

    def _adopt_codec_lambdas(self, saved: dict[str, Any], source: str) -> None:
        """Take λ from the checkpoint whose codec this module runs, so records key on it."""
        changed = {
            k: saved[k] for k in self.CODEC_LAMBDAS if k in saved and saved[k] != self.hparams[k]
        }
        if not changed:
            return
        given = ", ".join(f"{k}={self.hparams[k]!r}" for k in changed)
        taken = ", ".join(f"{k}={v!r}" for k, v in changed.items())
        rank_zero_info(f"mvmic: the codec was trained with {taken} ({source}); not {given}")
        self.hparams.update(changed)
        self.configure_losses()

    @property
    def task_trained(self) -> bool:
        """Whether the task network learned anything: initialised from a trained net, or given
        task gradients (stage 2, or stage 1 with λ_t > 0 and the task net not frozen)."""
        hp = self.hparams
        learns = self.hparams.stage == 2 or (hp.lmbda_t > 0 and not self.task_frozen)
        return self._task_trained or (learns and self.global_step > 0)

    def on_test_start(self) -> None:
        if not self.task_trained:
            raise ValueError(
                f"the task network of this {self.method_name} run was never trained (it was "
                "frozen or unused, λ_t = 0, and not initialised): its task metrics would be a "
                "random network's. Fit it with --model.init_task runs/<task run>/checkpoints/"
                "best.ckpt (a TaskModule trained on uncompressed images)"
            )

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
            # exactly what decoding the bitstream returns
            return self.task_training_step(self.codec.reconstruct(x), batch)
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
        out = self.codec(x)  # eval mode: x_hat is what decoding returns (Codec contract)
        x_hat = out.x_hat.clamp(0, 1)
        task_loss, preds = self.task.evaluate(x_hat, batch)
        terms = self.criterion(out, x, task_loss)
        val_loss = task_loss if self.codec_frozen else terms["loss"]
        self.log("val_loss", val_loss, prog_bar=True, batch_size=len(x))
        self.task.update_metrics(self.val_metrics, preds, batch)
        self.update_quality("val", x, x_hat)
        self.val_extra["bpp_est"].update(terms["bpp"].detach())
        if batch_idx == 0:
            self.set_panel(x, x_hat, preds, batch)

    def on_validation_epoch_start(self) -> None:
        if not self.codec_frozen:
            self.codec.update(force=True)

    def on_validation_epoch_end(self) -> None:
        self.log_stage_metrics("val")

    # -- the real-bits test loop (CodecModule) ------------------------------------------------
    def prepare_test_codec(self) -> None:
        self.codec.update()  # the tables saved with the weights

    def bpp_estimates(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, w = x.shape[-2:]
        est = self.codec(x)
        return [
            likelihoods_bpp({k: v[i : i + 1] for k, v in est.likelihoods.items()}, h * w).detach()
            for i in range(len(x))
        ]

    def update_quality(self, stage: str, x: torch.Tensor, decoded: torch.Tensor) -> None:
        extra = getattr(self, f"{stage}_extra")
        extra["psnr"].update(decoded, x)
        extra["ms-ssim"].update(decoded, x)

    def operating_point(self) -> dict[str, Any]:
        hp = self.hparams
        return {"lmbda": hp.lmbda_d, "lmbda_t": hp.lmbda_t, "stage": hp.stage}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)  # with entropy tables unless the codec is frozen
        checkpoint["mvmic_task_trained"] = self.task_trained

    @property
    def method_name(self) -> str:
        hp = self.hparams
        if hp.method:
            return hp.method
        if hp.lmbda_t == 0:
            return hp.codec
        return f"MVMICNet stage {hp.stage}"

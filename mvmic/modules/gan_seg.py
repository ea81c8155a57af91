"""Liu et al. (MICCAI 2020): compression network C, segmentation network S = g + s and critic D.

Designs (Liu et al., Sect. 3.1):

- **D1** = S + D: no compression, s segments the image itself (the uncompressed reference).
- **D2** = C + S: no critic.
- **D3** = C + S + D, without the rate loss.
- **D4** = D3 + λ·loss_cr: the encoder also minimizes the bits of its code.

Training is alternating (Lightning manual optimization): per batch one C+S step on
``loss_seg + loss_dis (+ λ·loss_cr)`` with D fixed, then one D step maximizing ``loss_dis`` with
C and S fixed, followed by weight clipping of D (SegAN). Both steps come from one backward pass
(each loss treats the other player's parameters as constants), which gives the gradients of two
alternating passes and trains under DDP without ``find_unused_parameters``. The bit model of
the binary codec always learns the statistics of the code (its rate estimate does not reach the
encoder unless the design is D4), so the measured bpp of D2/D3 is that of a fitted entropy
coder too.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import MetricCollection

from mvmic import validation as check
from mvmic.codecs import HYPERPRIOR_MODELS, build_codec
from mvmic.losses import critic_step_loss, multiscale_l1, one_hot, rate_weight, segmentation_mse
from mvmic.metrics import rate_metrics
from mvmic.modules.codec_module import CodecModule
from mvmic.tasks.critic import CRITIC_INPUTS, Critic
from mvmic.tasks.gan import MONAI_ARCHS, GanSegmentor, build_segmentor, encode_features
from mvmic.tasks.segmentation import SMP_ARCHITECTURES
from mvmic.weights import load_weights

DESIGNS = ("D1", "D2", "D3", "D4")


def _check_options(o: dict[str, Any]) -> None:
    """GanSegmentation's options, each named as the user types it (``--model.<name>``)."""
    two_d = o["dims"] == 2
    binary = o["codec"] == "liu2020-binary"
    check.one_of("--model.codec", o["codec"], ["liu2020-binary", *HYPERPRIOR_MODELS], "a codec")
    if not binary and not two_d:
        raise check.ConfigError(
            "--model.codec", f"{o['codec']!r} is 2D only; use liu2020-binary with --model.dims 3"
        )
    check.channels("--model.in_channels", o["in_channels"])
    check.num_classes("--model.num_classes", o["num_classes"])
    names = o["class_names"]
    if names is not None and len(names) != o["num_classes"]:
        raise check.ConfigError(
            "--model.class_names",
            f"has {len(names)} names but --model.num_classes is {o['num_classes']}; give one "
            "name per class, background first",
        )
    check.each(
        check.positive_int,
        "--model",
        code_channels=o["code_channels"],
        feature_channels=o["feature_channels"],
        codec_width=o["codec_width"],
        sw_batch_size=o["sw_batch_size"],
    )
    if binary:
        check.one_of("--model.codec_stride", o["codec_stride"], (8, 16), "a codec stride")
    if two_d:
        check.one_of("--model.arch", o["arch"], sorted(SMP_ARCHITECTURES), "a 2D architecture")
        check.smp_encoder("--model.encoder", o["encoder"])
    else:
        check.one_of("--model.arch", o["arch"], MONAI_ARCHS, "a 3D architecture")
    check.non_negative("--model.lmbda_cr", o["lmbda_cr"])
    check.non_negative("--model.lmbda_dis", o["lmbda_dis"])
    check.each(check.positive, "--model", lr=o["lr"], bit_lr=o["bit_lr"], aux_lr=o["aux_lr"])
    check.positive("--model.clip_critic", o["clip_critic"])
    for beta in o["betas"] or ():
        check.fraction("--model.betas", beta)
    check.one_of("--model.critic_input", o["critic_input"], CRITIC_INPUTS, "a critic input")
    check.sizes("--model.critic_channels", o["critic_channels"], scalar=False)
    check.sizes("--model.roi_size", o["roi_size"], length=3, scalar=False)
    check.fraction("--model.sw_overlap", o["sw_overlap"])
    check.record(o["method"], o["results_dir"])


class GanSegmentation(CodecModule):
    """Liu et al.'s designs D1–D4 in 2D (images) and 3D (volumes).

    Args:
        design: ``"D1"`` (S + D), ``"D2"`` (C + S), ``"D3"`` (C + S + D), ``"D4"`` (D3 + rate).
        dims: 2 (B×C×H×W images, smp segmentor) or 3 (B×C×D×H×W volumes, MONAI segmentor).
        in_channels: image channels.
        num_classes: classes including background.
        class_names: names for per-class records (default ``class1`` …; index 0 is background).
        codec: ``"liu2020-binary"`` (default) or a hyperprior codec name (2D only).
        code_channels, feature_channels, codec_width, codec_stride: the binary codec
            (``codec_width`` is its N; None = its default, ≈1.5 M encoder parameters).
        codec_args: further codec keyword arguments (e.g. ``{"N": 128, "M": 192}`` for a
            hyperprior codec, or ``{"bit_init_logit": -2.0}``).
        arch: segmentor architecture: an smp name in 2D (``Unet``, ``FPN``, …) or a MONAI name
            in 3D (``UNet``, ``BasicUNet``).
        encoder: smp encoder (2D only).
        seg_args: further segmentor keyword arguments (smp: ``encoder_depth``,
            ``decoder_channels``; MONAI UNet: ``channels``, ``strides``, ``num_res_units``).
        lmbda_cr: weight λ of the rate loss ``loss_cr`` (bits per pixel) in D4.
        lmbda_dis: weight of the critic term ``loss_dis`` in C+S's loss (Liu et al.: 1). Its
            multi-scale L1 is ~100× ``loss_seg`` (an MSE of probabilities); a smaller weight
            lets ``loss_seg`` steer S early (3D: docs/gan.md). D's own loss is unweighted.
        init_from: a checkpoint of another design (e.g. D2 for D4) whose C and S start this
            run; D starts fresh. Lets D4's rate loss and critic begin from a working segmentor
            instead of a random one (from scratch, the critic can outrun S for hundreds of steps).
        lr, betas: Adam for C+S and for D (SegAN: 2e-4, (0.5, 0.999)).
        bit_lr: learning rate of an entropy model fitted by the rate itself (the binary
            codec's per-channel Bernoulli logits).
        aux_lr: learning rate of a hyperprior codec's entropy-bottleneck quantiles (its
            ``aux_loss``), as MVMICNet's.
        clip_critic: clip D's weights to ±this after each D step (None = off).
        critic_input: ``"label"`` (Liu et al.) or ``"masked_image"`` (SegAN).
        critic_channels: channels of D's layers (one scale each).
        roi_size, sw_batch_size, sw_overlap: MONAI sliding-window inference in 3D val/test.
        method: results-record name (default ``liu2020-<design>`` [+ ``-<codec>``]).
        results_dir: where ``mvmic test`` writes its record.
    """

    #: checkpoints `mvmic fit` reads (checked before fitting; `mvmic test` never needs them)
    FIT_FILES = ("init_from",)
    #: the record fields that identify this module's operating point (mvmic.evaluation.records)
    POINT_KEY = ("design", "lmbda")

    def __init__(
        self,
        design: str = "D4",
        dims: int = 2,
        in_channels: int = 3,
        num_classes: int = 2,
        class_names: list[str] | None = None,
        codec: str = "liu2020-binary",
        code_channels: int = 32,
        feature_channels: int = 1,
        codec_width: int | None = None,
        codec_stride: int = 8,
        codec_args: dict[str, Any] | None = None,
        arch: str = "Unet",
        encoder: str = "resnet18",
        seg_args: dict[str, Any] | None = None,
        lmbda_cr: float = 0.1,
        lmbda_dis: float = 1.0,
        init_from: str | None = None,
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        bit_lr: float = 1e-2,
        aux_lr: float = 1e-3,
        clip_critic: float | None = 0.05,
        critic_input: str = "label",
        critic_channels: list[int] | None = None,
        roi_size: list[int] | None = None,
        sw_batch_size: int = 2,
        sw_overlap: float = 0.25,
        method: str | None = None,
        results_dir: str = "runs/results",
    ) -> None:
        design = str(design).upper()
        check.one_of("--model.design", design, DESIGNS, "a design")
        check.one_of("--model.dims", dims, (2, 3), "2D or 3D")
        _check_options(locals())  # every other option (defined above the class)
        super().__init__()
        self.hparams["design"] = design
        self.automatic_optimization = False

    # -- building ---------------------------------------------------------------------
    @property
    def design(self) -> str:
        return self.hparams.design

    @property
    def uses_codec(self) -> bool:
        return self.design != "D1"

    @property
    def uses_critic(self) -> bool:
        return self.design != "D2"

    def setup(self, stage: str) -> None:
        # Before Lightning restores a resumed run's own checkpoint, which then wins.
        if stage == "fit" and self.hparams.init_from:
            self._init_from(self.hparams.init_from)

    def _init_from(self, path: str) -> None:
        parts = [("task.", self.task)] + ([("codec.", self.codec)] if self.codec else [])
        for prefix, module in parts:
            try:
                load_weights(module, path, prefixes=(prefix,))
            except (ValueError, RuntimeError) as err:
                raise ValueError(
                    f"init_from {path}: its {prefix.rstrip('.')} weights do not fit design "
                    f"{self.design} with codec={self.hparams.codec!r}, "
                    f"feature_channels={self.hparams.feature_channels} "
                    f"({str(err).splitlines()[0][:200]}); start from a checkpoint of a design "
                    "with the same codec and segmentor (D2, D3 or D4)"
                ) from None

    def configure_models(self) -> None:
        hp = self.hparams
        design = str(hp.design).upper()
        self.codec = None
        s_in = hp.in_channels
        if design != "D1":
            kwargs = dict(hp.codec_args or {})
            if hp.codec == "liu2020-binary":
                kwargs.update(
                    in_channels=hp.in_channels,
                    code_channels=hp.code_channels,
                    feature_channels=hp.feature_channels,
                    N=hp.codec_width,
                    stride=hp.codec_stride,
                    dims=hp.dims,
                )
                s_in = hp.feature_channels
            else:
                kwargs["in_channels"] = hp.in_channels
            self.codec = build_codec(hp.codec, **kwargs)
        names = hp.class_names or ["background"] + [f"class{i}" for i in range(1, hp.num_classes)]
        window = None
        if hp.dims == 3:  # as segment() runs whole volumes
            roi = tuple(hp.roi_size or (64, 64, 64))
            window = {"roi_size": roi, "sw_batch_size": hp.sw_batch_size, "overlap": hp.sw_overlap}
        net = build_segmentor(
            hp.dims, hp.arch, s_in, hp.num_classes, encoder=hp.encoder, seg_args=hp.seg_args
        )
        self.task = GanSegmentor(net, hp.num_classes, names, window)
        self.critic = None
        if design != "D2":
            self.critic = Critic(
                hp.num_classes,
                image_channels=hp.in_channels,
                dims=hp.dims,
                channels=tuple(hp.critic_channels or (32, 64, 128)),
                critic_input=hp.critic_input,
            )

    def extra_metrics(self, stage: str) -> MetricCollection:
        if stage == "val":
            return rate_metrics("bpp_est")
        return rate_metrics("bpp", "bpp_est", "bpp_container")

    @property
    def method_name(self) -> str:
        hp = self.hparams
        if hp.method:
            return hp.method
        name = f"liu2020-{self.design.lower()}"
        return name if hp.codec == "liu2020-binary" or self.design == "D1" else f"{name}-{hp.codec}"

    # -- pieces -----------------------------------------------------------------------
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Features for s (g's map, a decoded image, or x itself for D1) and bpp estimate."""
        if self.codec is not None and self.codec.rate_fits_entropy_model:
            # The rate reaches C only in D4; otherwise only the entropy model fits the code.
            self.codec.rate_to_encoder = self.design == "D4"
        return encode_features(self.codec, x)

    def segment(self, feats: Tensor) -> Tensor:
        """Logits; whole-volume 3D eval runs by MONAI sliding window."""
        return self.task.logits(feats)

    # -- optimization -----------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        betas = tuple(hp.betas)
        main = list(self.task.parameters())
        groups = []
        if self.codec is not None:
            entropy = self.codec.entropy_parameters()
            ids = {id(p) for p in entropy}
            main += [p for p in self.codec.parameters() if id(p) not in ids]
            lr = hp.bit_lr if self.codec.rate_fits_entropy_model else hp.aux_lr
            groups.append({"params": entropy, "lr": lr, "name": "entropy"})
        opt_cs = torch.optim.Adam(
            [{"params": main, "lr": hp.lr, "name": "cs"}, *groups], lr=hp.lr, betas=betas
        )
        if self.critic is None:
            return opt_cs
        opt_d = torch.optim.Adam(self.critic.parameters(), lr=hp.lr, betas=betas)
        return [opt_cs, opt_d]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        hp = self.hparams
        x, bs = batch["image"], len(batch["image"])
        target = one_hot(batch["mask"], hp.num_classes)
        opts = self.optimizers()
        opt_cs, opt_d = (opts[0], opts[1]) if isinstance(opts, list) else (opts, None)

        # C+S minimize loss_seg + loss_dis (+ rate) with D fixed; D maximizes loss_dis on the
        # same prediction, detached. Neither loss depends on the other player's parameters, so
        # one backward of their sum gives each optimizer exactly the gradients of alternating
        # steps (D's loss does not see C or S, so stepping them first changes nothing for D).
        # One backward per forward is also what DDP's reducer needs: two backward passes, each
        # leaving the other player's parameters without a gradient, stall it ("parameters that
        # were not used in producing the loss").
        if opt_d is not None:
            self.toggle_optimizer(opt_cs)  # D's weights are constants in the C+S loss
        feats, bpp = self.encode(x)
        prob = self.task(feats).softmax(1)
        loss_seg = segmentation_mse(prob, target)
        loss = loss_seg
        logs = {"train_loss_seg": loss_seg.detach(), "train_bpp_est": bpp.detach()}
        if self.critic is not None:
            loss_dis = multiscale_l1(self.critic, prob, target, x)
            loss = loss + hp.lmbda_dis * loss_dis
            logs["train_loss_dis"] = loss_dis.detach()
        if self.codec is not None:
            w = rate_weight(hp.lmbda_cr, self.design == "D4", self.codec.rate_fits_entropy_model)
            loss = loss + self.codec.aux_loss()
            if w:
                loss = loss + w * bpp
        logs["train_loss"] = loss.detach()
        total = loss
        if opt_d is not None:
            self.untoggle_optimizer(opt_cs)
            loss_d = critic_step_loss(self.critic, prob, target, x)
            total = total + loss_d
            logs["train_loss_d"] = loss_d.detach()
            opt_d.zero_grad()
        opt_cs.zero_grad()
        self.manual_backward(total)
        opt_cs.step()
        if opt_d is not None:
            opt_d.step()
            if hp.clip_critic is not None:  # SegAN's weight clipping of D
                with torch.no_grad():
                    for p in self.critic.parameters():
                        p.clamp_(-hp.clip_critic, hp.clip_critic)
        self.log("train_loss_seg", logs.pop("train_loss_seg"), prog_bar=True, batch_size=bs)
        self.log_dict(logs, batch_size=bs)
        return loss.detach()

    # -- evaluation -------------------------------------------------------------------
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        x = batch["image"]
        feats, bpp = self.encode(x)
        logits = self.segment(feats)
        loss_seg = segmentation_mse(
            logits.softmax(1), one_hot(batch["mask"], self.hparams.num_classes)
        )
        preds = logits.argmax(1)
        self.task.update_metrics(self.val_metrics, preds, batch)
        self.val_extra["bpp_est"].update(bpp.detach())
        self.log("val_loss", loss_seg, prog_bar=True, batch_size=len(x))
        if batch_idx == 0:
            self.set_panel(x, feats, preds, batch)

    def on_validation_epoch_end(self) -> None:
        self.log_record("val")

    def task_output(self, decoded: Tensor) -> Tensor:
        """Class indices from g's feature map (or the image for D1); 3D by sliding window."""
        return self.segment(decoded).argmax(1)

    def operating_point(self) -> dict[str, Any]:
        return {
            "lmbda": self.hparams.lmbda_cr if self.design == "D4" else 0.0,
            "design": self.design,
        }

    def log_record(self, stage: str) -> dict[str, float]:
        record = self.log_stage_metrics(stage)
        # The base logs scalar metrics; Dice/IoU are per-class vectors, logged from the record.
        self.log_dict(
            {f"{stage}_{k}": v for k, v in record.items() if k.startswith(("dice", "iou"))}
        )
        return record

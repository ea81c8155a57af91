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

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.segmentation import DiceScore, MeanIoU

from mvmic.codecs import HYPERPRIOR_MODELS, build_codec
from mvmic.codecs.binary import BinaryCodec
from mvmic.codecs.hyperprior import likelihoods_bpp
from mvmic.metrics import rate_metrics
from mvmic.modules.base import BaseModule
from mvmic.tasks.base import TaskNet
from mvmic.tasks.critic import Critic, multiscale_l1
from mvmic.tasks.segmentation import PALETTE, SegmentationNet, load_weights

DESIGNS = ("D1", "D2", "D3", "D4")
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
    ) -> None:
        super().__init__()
        self.net, self.num_classes, self.class_names = net, num_classes, list(class_names)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def predict(self, x: Tensor) -> Tensor:
        return self(x).argmax(1)

    def build_metrics(self) -> MetricCollection:
        k = self.num_classes
        return MetricCollection(
            {
                "dice": DiceScore(
                    num_classes=k,
                    average="none",
                    aggregation_level="samplewise",
                    input_format="index",
                ),
                "iou": MeanIoU(num_classes=k, per_class=True, input_format="index"),
            }
        )

    def update_metrics(
        self, metrics: MetricCollection, preds: Tensor, batch: dict[str, Any]
    ) -> None:
        metrics.update(preds, batch["mask"].long())

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


class GanSegmentation(BaseModule):
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
        init_from: a checkpoint of another design (e.g. D2 for D4) whose C and S start this
            run; D starts fresh. Lets D4's rate loss and critic begin from a working segmentor
            instead of a random one (from scratch, the critic can outrun S for hundreds of steps).
        lr, betas: Adam for C+S and for D (SegAN: 2e-4, (0.5, 0.999)).
        bit_lr: learning rate of the bit model (the per-channel Bernoulli logits).
        clip_critic: clip D's weights to ±this after each D step (None = off).
        critic_input: ``"label"`` (Liu et al.) or ``"masked_image"`` (SegAN).
        critic_channels: channels of D's layers (one scale each).
        roi_size, sw_batch_size, sw_overlap: MONAI sliding-window inference in 3D val/test.
        method: results-record name (default ``liu2020-<design>`` [+ ``-<codec>``]).
        results_dir: where ``mvmic test`` writes its record.
    """

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
        init_from: str | None = None,
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        bit_lr: float = 1e-2,
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
        if design not in DESIGNS:
            raise ValueError(f"design must be one of {DESIGNS}, got {design!r}")
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims}")
        if codec != "liu2020-binary" and codec not in HYPERPRIOR_MODELS:
            raise ValueError(
                f"unknown codec {codec!r}; choose liu2020-binary or one of "
                f"{sorted(HYPERPRIOR_MODELS)}"
            )
        if codec != "liu2020-binary" and dims == 3:
            raise ValueError(f"codec {codec!r} is 2D only; use codec=liu2020-binary with dims=3")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(
                f"class_names has {len(class_names)} names but num_classes={num_classes}"
            )
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
        self.task = GanSegmentor(self._build_segmentor(s_in), hp.num_classes, names)
        self.critic = None
        if design != "D2":
            self.critic = Critic(
                hp.num_classes,
                image_channels=hp.in_channels,
                dims=hp.dims,
                channels=tuple(hp.critic_channels or (32, 64, 128)),
                critic_input=hp.critic_input,
            )

    def _build_segmentor(self, in_channels: int) -> nn.Module:
        hp = self.hparams
        args = dict(hp.seg_args or {})
        if hp.dims == 2:
            return SegmentationNet(
                arch=hp.arch,
                encoder=hp.encoder,
                in_channels=in_channels,
                num_classes=hp.num_classes,
                **args,
            )
        from monai.networks import nets

        if hp.arch not in MONAI_ARCHS:
            raise ValueError(f"3D segmentor arch must be one of {MONAI_ARCHS}, got {hp.arch!r}")
        if hp.arch == "UNet":
            args.setdefault("channels", (16, 32, 64, 128))
            args.setdefault("strides", (2, 2, 2))
            args.setdefault("num_res_units", 1)
        return getattr(nets, hp.arch)(
            spatial_dims=3, in_channels=in_channels, out_channels=hp.num_classes, **args
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
    def _num_pixels(self, x: Tensor) -> int:
        return int(torch.tensor(x.shape[2:]).prod())

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Features for s (g's map, a decoded image, or x itself for D1) and bpp estimate."""
        if self.codec is None:
            return x, torch.full((), 8.0 * x.shape[1], device=x.device)
        if isinstance(self.codec, BinaryCodec):
            # The rate reaches C only in D4; otherwise only the bit model fits the code.
            self.codec.rate_to_encoder = self.design == "D4"
        out = self.codec(x)
        bpp = likelihoods_bpp(out.likelihoods, len(x) * self._num_pixels(x))
        feats = out.x_hat if isinstance(self.codec, BinaryCodec) else out.x_hat.clamp(0, 1)
        return feats, bpp

    def segment(self, feats: Tensor) -> Tensor:
        """Logits; whole-volume 3D eval runs by MONAI sliding window."""
        if self.hparams.dims == 3 and not self.training:
            roi = tuple(self.hparams.roi_size or (64, 64, 64))
            return sliding_window_inference(
                feats,
                roi,
                self.hparams.sw_batch_size,
                self.task,
                overlap=self.hparams.sw_overlap,
            )
        return self.task(feats)

    def _one_hot(self, mask: Tensor) -> Tensor:
        return F.one_hot(mask.long(), self.hparams.num_classes).movedim(-1, 1).float()

    # -- optimization -----------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        betas = tuple(hp.betas)
        main = list(self.task.parameters())
        groups = []
        if self.codec is not None:
            special = (
                self.codec.bit_model_parameters()
                if isinstance(self.codec, BinaryCodec)
                else self.codec.aux_parameters()
            )
            ids = {id(p) for p in special}
            main += [p for p in self.codec.parameters() if id(p) not in ids]
            lr_special = hp.bit_lr if isinstance(self.codec, BinaryCodec) else 1e-3
            groups.append({"params": special, "lr": lr_special, "name": "entropy"})
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
        target = self._one_hot(batch["mask"])
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
        loss_seg = F.mse_loss(prob, target)
        loss = loss_seg
        logs = {"train_loss_seg": loss_seg.detach(), "train_bpp_est": bpp.detach()}
        if self.critic is not None:
            loss_dis = multiscale_l1(self.critic, prob, target, x)
            loss = loss + loss_dis
            logs["train_loss_dis"] = loss_dis.detach()
        if self.codec is not None:
            if isinstance(self.codec, BinaryCodec):
                loss = loss + (hp.lmbda_cr if self.design == "D4" else 1.0) * bpp
            else:
                loss = loss + self.codec.aux_loss()
                if self.design == "D4":
                    loss = loss + hp.lmbda_cr * bpp
        logs["train_loss"] = loss.detach()
        total = loss
        if opt_d is not None:
            self.untoggle_optimizer(opt_cs)
            loss_d = -multiscale_l1(self.critic, prob.detach(), target, x)
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
        loss_seg = F.mse_loss(logits.softmax(1), self._one_hot(batch["mask"]))
        preds = logits.argmax(1)
        self.task.update_metrics(self.val_metrics, preds, batch)
        self.val_extra["bpp_est"].update(bpp.detach())
        self.log("val_loss", loss_seg, prog_bar=True, batch_size=len(x))
        if batch_idx == 0:
            self._set_panel(x, feats, preds, batch)

    def on_validation_epoch_end(self) -> None:
        self._log_record("val")

    def on_test_epoch_start(self) -> None:
        if self.codec is not None:
            self.codec.update(force=True)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Real bits: each image/volume goes compress → bytes → decompress → s."""
        x = batch["image"]
        npix = self._num_pixels(x)
        if self.codec is None:
            feats = x
            raw = torch.tensor(8.0 * x.shape[1])
            for _ in range(len(x)):
                for key in ("bpp", "bpp_est", "bpp_container"):
                    self.test_extra[key].update(raw)
        else:
            decoded = []
            for i in range(len(x)):
                xi = x[i : i + 1]
                _, est = self.encode(xi)
                bitstream = self.codec.compress(xi)
                data = bitstream.to_bytes()
                decoded.append(self.codec.decompress(data).to(x.device))
                self.test_extra["bpp"].update(torch.tensor(8.0 * bitstream.payload_bytes / npix))
                self.test_extra["bpp_container"].update(torch.tensor(8.0 * len(data) / npix))
                self.test_extra["bpp_est"].update(est.detach().cpu())
            feats = torch.cat(decoded)
        preds = self.segment(feats).argmax(1)
        self.task.update_metrics(self.test_metrics, preds, batch)
        if batch_idx == 0:
            self._set_panel(x, feats, preds, batch)

    def on_test_epoch_end(self) -> None:
        record = self._log_record("test")
        hp = self.hparams
        self.test_point = {
            **record,
            "lmbda": hp.lmbda_cr if self.design == "D4" else 0.0,
            "design": self.design,
        }

    def _log_record(self, stage: str) -> dict[str, float]:
        record = self.log_stage_metrics(stage)
        # The base logs scalar metrics; Dice/IoU are per-class vectors, logged from the record.
        self.log_dict(
            {f"{stage}_{k}": v for k, v in record.items() if k.startswith(("dice", "iou"))}
        )
        return record

    def _set_panel(self, x: Tensor, feats: Tensor, preds: Tensor, batch: dict[str, Any]) -> None:
        """Fig. 4: image | g's feature map | prediction | ground truth (3D: middle slice)."""
        mask = batch["mask"]
        if self.hparams.dims == 3:
            mid = x.shape[2] // 2
            x, feats, preds, mask = x[:, :, mid], feats[:, :, mid], preds[:, mid], mask[:, mid]
        f = feats[:, :1].detach().float()
        lo = f.amin(dim=(1, 2, 3), keepdim=True)
        hi = f.amax(dim=(1, 2, 3), keepdim=True)
        f = (f - lo) / (hi - lo).clamp_min(1e-8)
        panel = {"image": x.detach(), "prediction": preds, "batch": {"mask": mask}}
        if self.codec is not None:
            panel["features"] = f
        self.panel = panel

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.codec is not None and not isinstance(self.codec, BinaryCodec):
            # Hyperprior tables that match the saved weights (the binary codec's tables are
            # rebuilt from its bit logits on load, so they need no storing).
            self.codec.update(force=True)
            for key, value in self.codec.state_dict().items():
                checkpoint["state_dict"][f"codec.{key}"] = value

"""Base LightningModule: torchgeo-style configure_models/losses/metrics, shared test records."""

from __future__ import annotations

import math
import random
import time
from typing import Any

import numpy as np
import torch
from lightning import LightningModule
from torchmetrics import MetricCollection

from mvmic.codecs.bitstream import Bitstream
from mvmic.tasks import TaskNet, build_task


def rng_state() -> dict[str, Any]:
    """torch, numpy and Python RNG states as plain tensors/ints (weights_only-loadable)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


class BaseModule(LightningModule):
    """Builds its parts in ``configure_*`` hooks and clones metrics per stage.

    Subclasses set ``self.task`` in ``configure_models``; the base gives every stage a copy of
    the task's metrics plus the module's own (``extra_metrics``), prefixed ``train_``/``val_``/
    ``test_`` as torchgeo does.
    """

    def __init__(self) -> None:
        super().__init__()
        # Hyperparameters must be plain values so a checkpoint alone rebuilds the module
        # (see mvmic.modules.load_module).
        self.save_hyperparameters()
        self.configure_models()
        self.configure_losses()
        self.configure_metrics()
        self.panel: dict[str, torch.Tensor] | None = None
        self.test_point: dict[str, Any] = {}

    def configure_models(self) -> None:
        raise NotImplementedError

    def configure_losses(self) -> None:
        pass

    def extra_metrics(self, stage: str) -> MetricCollection | None:
        """Module metrics beside the task's (image quality, rates) for ``val``/``test``."""
        return None

    def configure_metrics(self) -> None:
        # Task metrics take (preds, target); image/rate metrics take other inputs, so they
        # live in a second collection per stage.
        metrics = self.task.build_metrics()
        self.val_metrics = metrics.clone(prefix="val_")
        self.test_metrics = metrics.clone(prefix="test_")
        self.val_extra = (self.extra_metrics("val") or MetricCollection({})).clone(prefix="val_")
        self.test_extra = (self.extra_metrics("test") or MetricCollection({})).clone(prefix="test_")

    def build_task_net(self) -> TaskNet:
        hp = self.hparams
        kwargs = dict(hp.get("task_args") or {})
        if hp.get("encoder"):
            kwargs["encoder"] = hp["encoder"]
        return build_task(
            hp["task"],
            arch=hp["arch"],
            in_channels=hp["in_channels"],
            num_classes=hp["num_classes"],
            weights=hp.get("task_weights"),
            **kwargs,
        )

    @property
    def dataset_name(self) -> str:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        return getattr(dm, "dataset_name", "dataset")

    def configure_callbacks(self):
        from mvmic.callbacks import DataChannels, ImagePanels, ResultsWriter

        return [DataChannels(), ImagePanels(), ResultsWriter()]

    @property
    def description(self) -> str:
        """One line for results records: the module and its hyperparameters."""
        hp = {k: v for k, v in self.hparams.items() if not k.startswith("_") and v is not None}
        return f"{type(self).__name__}(" + ", ".join(f"{k}={v}" for k, v in hp.items()) + ")"

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lets mvmic.modules.load_module rebuild the right class from the file alone.
        checkpoint["mvmic_class"] = f"{type(self).__module__}.{type(self).__qualname__}"
        checkpoint["mvmic_rng"] = rng_state()

    #: hyperparameters that must agree between a checkpoint and the module loading it
    IDENTITY_KEYS = (
        "task",
        "arch",
        "encoder",
        "num_classes",
        "in_channels",
        "codec",
        "N",
        "M",
        "design",
        "dims",
    )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint of another module or architecture with one clear message."""
        mine = f"{type(self).__module__}.{type(self).__qualname__}"
        theirs = checkpoint.get("mvmic_class")
        saved = checkpoint.get("hyper_parameters", {})
        diffs = [
            f"{k}={saved[k]!r} (config has {self.hparams[k]!r})"
            for k in self.IDENTITY_KEYS
            if k in saved and k in self.hparams and saved[k] != self.hparams[k]
        ]
        if theirs and theirs.rsplit(".", 1)[-1] != mine.rsplit(".", 1)[-1]:
            diffs.insert(0, f"it is a {theirs.rsplit('.', 1)[-1]} checkpoint")
        if diffs:
            raise ValueError(
                f"checkpoint does not fit this {type(self).__name__} config: "
                + "; ".join(diffs)
                + ". Use the config the checkpoint was trained with."
            )
        if "mvmic_rng" in checkpoint:
            # A resumed run continues the random streams (codec noise, shuffling,
            # augmentation) of the run that saved the checkpoint. Lightning isolates the
            # sanity check's RNG, so nothing consumes them before training resumes.
            set_rng_state(checkpoint["mvmic_rng"])

    def check_finite(self, loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> None:
        """Stop at the first non-finite loss, naming the step and the term that went bad."""
        if torch.isfinite(loss).all():
            return
        bad = [k for k, v in terms.items() if not torch.isfinite(v).all()] or ["loss"]
        raise FloatingPointError(
            f"non-finite training loss at step {self.global_step} (epoch {self.current_epoch}): "
            f"bad term(s): {', '.join(bad)}; values: "
            + ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
            + ". The last checkpoint saved before this step is intact; lower the learning "
            "rate or enable gradient clipping (--trainer.gradient_clip_val)."
        )

    def task_training_step(self, images: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """One training step of the task network alone, on ``images``: the uncompressed
        batch (TaskModule) or what a frozen codec decodes (MVMICNet stage 2).

        The loss is checked finite and logged as ``train_loss`` and ``train_<term>``.
        """
        loss, terms = self.task.loss(images, batch)
        self.check_finite(loss, terms)
        bs = len(images)
        self.log("train_loss", loss, prog_bar=True, batch_size=bs)
        self.log_dict({f"train_{k}": v for k, v in terms.items()}, batch_size=bs)
        return loss

    def log_stage_metrics(self, stage: str) -> dict[str, float]:
        """Compute, log and reset the stage's metrics; return them as record fields."""
        record: dict[str, float] = {}
        for metrics, is_task in (
            (getattr(self, f"{stage}_metrics"), True),
            (getattr(self, f"{stage}_extra"), False),
        ):
            if not len(metrics):
                continue
            computed = metrics.compute()
            metrics.reset()
            self.log_dict({k: v for k, v in computed.items() if v.numel() == 1})
            plain = {k[len(stage) + 1 :]: v for k, v in computed.items()}
            if is_task:
                record.update(self.task.record(plain))
            else:
                record.update({k: float(v) for k, v in plain.items() if v.numel() == 1})
        return record

    # -- prediction: the deployment path, one image (or volume) at a time -------------------
    @property
    def transmits(self) -> bool:
        """Whether images reach the task as a real bitstream (a codec), not as raw pixels."""
        return getattr(self, "codec", None) is not None

    def transmit(
        self, x: torch.Tensor, bit_depth: int = 8, times: dict[str, float] | None = None
    ) -> tuple[torch.Tensor, Bitstream, int]:
        """Send one image through the real bitstream: compress → bytes → decompress.

        Args:
            x: one image 1×C×H×W (or one volume 1×C×D×H×W for a 3D codec) in [0, 1].
            bit_depth: the source bit depth the container records.
            times: when given, ``enc_ms`` (compress and serialise) and ``dec_ms`` (decode)
                are added to it.

        Returns:
            What the server decodes (an image, or g's feature map), the bitstream, and the
            size of the container in bytes (what ``mvmic compress`` writes).
        """
        t0 = time.perf_counter()
        bitstream = self.codec.compress(x, bit_depth=bit_depth)
        data = bitstream.to_bytes()
        t1 = time.perf_counter()
        decoded = self.codec.decompress(data).to(x.device)
        if times is not None:
            times["enc_ms"] = times.get("enc_ms", 0.0) + 1e3 * (t1 - t0)
            times["dec_ms"] = times.get("dec_ms", 0.0) + 1e3 * (time.perf_counter() - t1)
        return decoded, bitstream, len(data)

    def task_output(self, decoded: torch.Tensor) -> Any:
        """The task's prediction on what the server decoded (as ``mvmic decompress --task``)."""
        return self.task.predict(decoded)

    @torch.no_grad()
    def predict_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> list[dict[str, Any]]:
        """Per image: compress → bytes → decompress → task (raw pixels without a codec).

        Images are sent one at a time, as a deployed encoder sends them, and the task runs on
        each decoded image alone, so the output equals ``mvmic decompress --task`` on the file.

        Returns:
            One dict per image: ``name``, ``source`` (its file, when the batch names one),
            ``prediction`` (a mask H×W / D×H×W of class indices, or a detection dict, on the
            CPU), ``shape`` (spatial size), ``bytes`` (the container, or the raw image without
            a codec) and ``bpp`` (bits per pixel or voxel), plus ``affine`` for volumes read
            from NIfTI.
        """
        x = batch["image"]
        names = batch.get("name")
        paths = batch.get("path")
        depths = batch.get("bit_depth")
        affines = batch.get("affine")
        results = []
        for i in range(len(x)):
            xi = x[i : i + 1]
            bits = int(depths[i]) if depths is not None else 8
            if self.transmits:
                decoded, _, nbytes = self.transmit(xi, bits)
            else:  # the uncompressed reference: the raw samples are what would be sent
                decoded, nbytes = xi, math.ceil(xi.numel() * bits / 8)
            pred = self.task_output(decoded)[0]
            if isinstance(pred, dict):
                pred = {k: v.detach().cpu() for k, v in pred.items()}
            else:
                pred = pred.detach().cpu()
            shape = tuple(int(s) for s in xi.shape[2:])
            item = {
                "name": str(names[i]) if names is not None else f"{batch_idx:06d}_{i:03d}",
                "source": str(paths[i]) if paths is not None else None,
                "prediction": pred,
                "shape": shape,
                "bytes": nbytes,
                "bpp": 8.0 * nbytes / math.prod(shape),
            }
            if affines is not None:
                item["affine"] = affines[i].detach().cpu().double()
            results.append(item)
        return results

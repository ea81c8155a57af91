"""Callbacks: the data/model channel check, image panels and the results writer (modules attach
them themselves)."""

from __future__ import annotations

from pathlib import Path

from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger

from mvmic.evaluation.provenance import datamodule_spec
from mvmic.evaluation.records import append_point


class DataChannels(Callback):
    """Stop a run whose data and model disagree on image channels, with one line naming both.

    A data module's ``in_channels: auto`` reads grey datasets (CT, X-ray, MR) as 1 channel;
    a config written for RGB data then needs ``--model.in_channels 1``. ``predict`` converts
    to the model's channels instead, so it is not checked.
    """

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        dm = trainer.datamodule
        data = getattr(dm, "in_channels", None) if dm is not None else None
        model = pl_module.hparams.get("in_channels")
        if stage == "predict" or data is None or model is None or data == model:
            return
        from mvmic.validation import ConfigError

        root = dm.hparams.get("root", "the data")
        kind = "grey (1 channel)" if data == 1 else f"{data}-channel"
        raise ConfigError(
            "--model.in_channels",
            f"is {model} but the images of {root} are {kind}: set --model.in_channels {data} "
            f"(or --data.in_channels {model} to convert them)",
        )


class ImagePanels(Callback):
    """original | reconstruction | bits | prediction | ground truth, one row per image.

    Saved as PNG under ``<log_dir>/images/`` (works with any logger or none) and sent to
    Weights & Biases when a ``WandbLogger`` is attached.
    """

    def __init__(self, max_images: int = 4) -> None:
        self.max_images = max_images

    def _draw(self, trainer: Trainer, module: LightningModule, tag: str) -> None:
        panel, module.panel = getattr(module, "panel", None), None
        if trainer.sanity_checking:
            return
        # trainer.log_dir is a collective (broadcast) under DDP: every rank must ask for it.
        log_dir = trainer.log_dir or trainer.default_root_dir
        if not panel or not trainer.is_global_zero:
            return
        n = min(self.max_images, len(panel["image"]))
        batch = {k: (v[:n] if hasattr(v, "__getitem__") else v) for k, v in panel["batch"].items()}
        from mvmic.evaluation.panels import module_panel

        grid = module_panel(module.task, panel, batch, n)
        out_dir = Path(log_dir) / "images"
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{tag}_epoch{trainer.current_epoch:03d}.png"
        grid.savefig(path)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key=f"{tag}_panel", images=[str(path)], step=trainer.global_step)

    def on_validation_epoch_end(self, trainer: Trainer, module: LightningModule) -> None:
        self._draw(trainer, module, "val")

    def on_test_epoch_end(self, trainer: Trainer, module: LightningModule) -> None:
        self._draw(trainer, module, "test")


class ResultsWriter(Callback):
    """After ``mvmic test``: append the module's operating point to its results record,
    redraw the rate curves of the results folder, and log both to W&B when attached.

    Only rank 0 writes, so a multi-GPU test adds one point, not one per process.
    """

    def __init__(self, draw_curves: bool = True) -> None:
        self.draw_curves = draw_curves

    def on_test_end(self, trainer: Trainer, module: LightningModule) -> None:
        point = getattr(module, "test_point", None)
        if not point or not trainer.is_global_zero:
            return
        dm = trainer.datamodule
        root = dm.hparams.get("root") if dm is not None else None
        results_dir = module.hparams.results_dir
        fields: dict = {"data_root": str(Path(root).resolve())} if root else {}
        # What `mvmic compare` needs to decode this point again (mvmic.evaluation.provenance).
        if trainer.ckpt_path:
            point = {**point, "ckpt_path": str(Path(trainer.ckpt_path).resolve())}
        if (spec := datamodule_spec(dm)) is not None:
            fields["data"] = spec
        path = append_point(
            results_dir,
            module.dataset_name,
            module.method_name,
            point,
            description=module.description,
            key=getattr(module, "POINT_KEY", None),
            # Absolute, so `mvmic latency` finds the images from any working directory.
            fields=fields or None,
        )
        module.results_path = path
        print(f"results: {path}")
        wandb_loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        for logger in wandb_loggers:
            logger.experiment.summary.update(
                {f"record/{k}": v for k, v in point.items() if k not in ("per_image", "per_volume")}
            )
        if self.draw_curves:
            from mvmic.evaluation.curves import draw_curves, log_curves_to_wandb
            from mvmic.evaluation.records import locked

            # a quick redraw after each test; `mvmic curves` adds the bootstrap intervals
            with locked(Path(results_dir)):  # tests side by side draw the same figures
                curves = draw_curves(results_dir, draws=0)
            for logger in wandb_loggers:
                log_curves_to_wandb(curves, run=logger.experiment)

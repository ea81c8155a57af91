"""Callbacks: image panels and the results writer (modules attach them themselves)."""

from __future__ import annotations

from pathlib import Path

import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from torchvision.utils import make_grid, save_image

from mvmic.evaluation.records import append_point


def _rgb(x: torch.Tensor) -> torch.Tensor:
    x = x.detach().float().cpu()
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x[:, :3]


class ImagePanels(Callback):
    """original | reconstruction | prediction | ground truth, one row per image.

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
        pred_rgb, target_rgb = module.task.render(panel["prediction"][:n], batch)
        columns = [_rgb(panel["image"][:n])]
        for key in ("reconstruction", "features"):
            if key in panel:
                columns.append(_rgb(panel[key][:n]))
        columns += [pred_rgb.float().cpu(), target_rgb.float().cpu()]
        rows = torch.stack(columns, 1).flatten(0, 1)
        grid = make_grid(rows, nrow=len(columns), padding=2, pad_value=1.0)
        out_dir = Path(log_dir) / "images"
        out_dir.mkdir(parents=True, exist_ok=True)
        save_image(grid, out_dir / f"{tag}_epoch{trainer.current_epoch:03d}.png")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key=f"{tag}_panel", images=[grid], step=trainer.global_step)

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
        path = append_point(
            results_dir,
            module.dataset_name,
            module.method_name,
            point,
            description=module.description,
            key=getattr(module, "POINT_KEY", None),
            # Absolute, so `mvmic latency` finds the images from any working directory.
            fields={"data_root": str(Path(root).resolve())} if root else None,
        )
        module.results_path = path
        print(f"results: {path}")
        wandb_loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        for logger in wandb_loggers:
            logger.experiment.summary.update({f"record/{k}": v for k, v in point.items()})
        if self.draw_curves:
            from mvmic.evaluation.curves import draw_curves, log_curves_to_wandb

            curves = draw_curves(results_dir)
            for logger in wandb_loggers:
                log_curves_to_wandb(curves, run=logger.experiment)

"""The LightningCLI subclass behind ``mvmic fit/validate/test/predict`` (torchgeo-style)."""

from __future__ import annotations

from lightning import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI


class MvmicLightningCLI(LightningCLI):
    """Plain LightningCLI in subclass mode: configs name ``class_path``/``init_args``."""

    def __init__(self, args: list[str] | None = None, **kwargs) -> None:
        # --ckpt_path last resumes from <ModelCheckpoint dirpath>/last.ckpt (Lightning).
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("parser_kwargs", {"default_env": False})
        super().__init__(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=args,
            **kwargs,
        )

    def _parse_ckpt_path(self) -> None:
        # Lightning would replace the config's (and the command line's) model arguments with
        # the checkpoint's hyperparameters, so `--model.results_dir` and the like would be
        # silently ignored in `mvmic test --ckpt_path`. mvmic keeps the config in charge;
        # a checkpoint that does not fit it is refused by BaseModule.on_load_checkpoint with
        # a message naming both.
        return

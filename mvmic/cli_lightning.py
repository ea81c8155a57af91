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

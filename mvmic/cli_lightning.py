"""The LightningCLI subclass behind ``mvmic fit/validate/test/predict`` (torchgeo-style)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from lightning import LightningDataModule, LightningModule, Trainer
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info

from mvmic.validation import ConfigError, existing_file


class MvmicLightningCLI(LightningCLI):
    """Plain LightningCLI in subclass mode: configs name ``class_path``/``init_args``."""

    def __init__(self, args: list[str] | None = None, **kwargs) -> None:
        self._asked = args[0] if isinstance(args, list) and args else None
        # --ckpt_path last resumes from <ModelCheckpoint dirpath>/last.ckpt (Lightning).
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        # Parse errors raise (mvmic.cli prints them as one line) instead of printing usage.
        kwargs.setdefault(
            "parser_kwargs", {"default_env": False, "exit_on_error": False, "prog": "mvmic"}
        )
        super().__init__(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=args,
            **kwargs,
        )

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs):
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand == "predict":
            parser.add_argument(
                "--predict_dir",
                type=str | None,
                default=None,
                help="folder for one prediction file per image (mask .png/.nii.gz, boxes "
                ".json) and predictions.csv (bytes, bpp per image); default "
                "<trainer.default_root_dir>/predict",
            )
            # The writer streams every batch to disk; keeping all outputs too would grow memory.
            parser.set_defaults(return_predictions=False)
        return parser

    def before_predict(self) -> None:
        """Attach the writer of ``--predict_dir`` (see :mod:`mvmic.prediction`)."""
        from mvmic.prediction import PredictionWriter

        out = self.config_init[self.subcommand].get("predict_dir")
        out = out or str(Path(self.trainer.default_root_dir) / "predict")
        self.trainer.callbacks.append(PredictionWriter(out))

    def _parse_ckpt_path(self) -> None:
        # Lightning would replace the config's (and the command line's) model arguments with
        # the checkpoint's hyperparameters, so `--model.results_dir` and the like would be
        # silently ignored in `mvmic test --ckpt_path`. mvmic keeps the config in charge;
        # a checkpoint that does not fit it is refused by BaseModule.on_load_checkpoint with
        # a message naming both. A path that is not there stops here, before anything is built.
        subcommand = self.config.get("subcommand")
        ckpt = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not isinstance(ckpt, str) or ckpt in CKPT_KEYWORDS or ckpt.startswith("registry"):
            return
        if "://" not in ckpt and not Path(ckpt).is_file():
            why = "is a folder" if Path(ckpt).is_dir() else "does not exist"
            raise ConfigError(
                "--ckpt_path",
                f"{ckpt} {why}; give a checkpoint file (e.g. runs/<run>/checkpoints/last.ckpt), "
                "or `last` to resume from the run's last.ckpt",
            )

    def subcommands(self) -> dict[str, set[str]]:  # type: ignore[override]
        """The subcommand asked for only (all four when none is): each parser costs ~0.1 s
        of start-up. ``mvmic --help`` is mvmic.cli's own."""
        every = LightningCLI.subcommands()
        asked = getattr(self, "_asked", None)
        return {asked: every[asked]} if asked in every else every

    # -- arguments and the errors they cause (mvmic.cli prints ConfigError as one line) ---
    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """Parse ``args`` into ``self.config`` (jsonargparse raises on a bad one)."""
        # mvmic.cli.main always passes the arguments, and sys.argv holds the same ones, so
        # LightningCLI's warning about getting both does not apply.
        if isinstance(args, (dict, Namespace)):
            self.config = parser.parse_object(args)
        else:
            self.config = parser.parse_args(args)

    def _set_seed(self) -> None:
        # Quiet here, so an error found while the classes are built is the only line on
        # stderr; the seed is reported once they are (instantiate_classes).
        seed_log = logging.getLogger("lightning.fabric.utilities.seed")
        level = seed_log.level
        seed_log.setLevel(logging.WARNING)
        try:
            super()._set_seed()
        finally:
            seed_log.setLevel(level)

    def instantiate_classes(self) -> None:
        """Build the config's classes; a failure caused by a config value is a ConfigError.

        A ConfigError of ours stays as it is, whatever jsonargparse wrapped around it; an input
        error a library raised (``ValueError``, ``TypeError``, …) becomes one naming the class
        being built. Anything else (a bug) keeps its traceback.
        """
        try:
            super().instantiate_classes()
        except Exception as err:
            chain = list(exception_chain(err))
            if any(isinstance(e, ConfigError) for e in chain):
                raise
            root = chain[-1]
            if not isinstance(root, _INPUT_ERRORS):
                raise
            found = (re.search(r"class_path='([\w.]+)'", str(e)) for e in chain)
            where = next((m.group(1) for m in found if m), "--trainer")
            message = " ".join(line.strip() for line in str(root).splitlines() if line.strip())
            if message.startswith("--"):  # it names its option already
                raise ConfigError(*message.split(" ", 1)) from err
            raise ConfigError(where, f"could not be built: {message[:400]}") from err
        seed = self._get(self.config, "seed_everything")
        if seed is not False:
            rank_zero_info(f"Seed set to {seed}")

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Check the files only ``fit`` reads (a module's ``FIT_FILES``) before the trainer
        is built: `mvmic test` never needs them."""
        if self.subcommand == "fit":
            for name in getattr(self.model, "FIT_FILES", ()):
                existing_file(f"--model.{name}", self.model.hparams.get(name))
        return super().instantiate_trainer(**kwargs)


#: --ckpt_path values Lightning resolves itself
CKPT_KEYWORDS = ("last", "best", "hpc")

#: what a library raises for a bad value while a config's class is built
_INPUT_ERRORS = (
    ValueError,
    TypeError,
    LookupError,
    OSError,
    ImportError,
    MisconfigurationException,
)


def exception_chain(err: BaseException) -> Iterator[BaseException]:
    """``err``, then what caused it (``__cause__``, else an unsuppressed ``__context__``)."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        cause = current.__cause__
        if cause is None and not current.__suppress_context__:
            cause = current.__context__
        current = cause

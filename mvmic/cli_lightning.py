"""The LightningCLI subclass behind ``mvmic fit/validate/test/predict`` (torchgeo-style)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
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

    def __init__(self, args: list[str] | None = None, parse_only: bool = False, **kwargs) -> None:
        self._asked = args[0] if isinstance(args, list) and args else None
        # parse_only (with run=False): the config as a run would see it, nothing built or seeded
        self._parse_only = parse_only
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
        subcommand = self.config.get("subcommand")
        section = self.config[subcommand] if subcommand else self.config
        if isinstance(section.get("trainer"), Namespace):
            place_in_run_folder(section["trainer"])

    def setup_parser(
        self, add_subcommands: bool, main_kwargs: dict[str, Any], subparser_kwargs: dict[str, Any]
    ) -> None:
        """Every parser (one per subcommand, or the one of ``run=False``) starts from
        :data:`DEFAULTS`, the shared trainer, logger and checkpoint settings."""
        if add_subcommands:
            for name in self.subcommands():
                subparser_kwargs[name] = {"default_config_files": [str(DEFAULTS)],
                                          **subparser_kwargs.get(name, {})}  # fmt: skip
        else:
            main_kwargs = {"default_config_files": [str(DEFAULTS)], **main_kwargs}
        super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)

    def add_core_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        if not self._parse_only:
            return super().add_core_arguments_to_parser(parser)
        # Lightning's own sections, none required: a tool may read part of a config (mvmic
        # anchors reads a config that has only its data: section).
        parser.add_lightning_class_args(self.trainer_class, "trainer")
        for key, klass in (("model", self._model_class), ("data", self._datamodule_class)):
            parser.add_lightning_class_args(klass, key, subclass_mode=True, required=False)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        keep_integer_batch_limits(parser)

    def _set_seed(self) -> None:
        if self._parse_only:
            return
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
        if self._parse_only:
            return
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


#: the settings every config builds on (see docs/configs.md)
DEFAULTS = Path(__file__).resolve().parents[1] / "configs" / "base" / "defaults.yaml"

#: Trainer arguments where an int counts batches and a float is a fraction of the epoch
BATCH_LIMITS = (
    "limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches",
    "overfit_batches",
)  # fmt: skip


def keep_integer_batch_limits(parser: LightningArgumentParser) -> None:
    """Make ``--trainer.limit_val_batches 1`` one batch, as ``Trainer(limit_val_batches=1)`` is.

    Lightning annotates these ``Union[int, float]``, but typing caches unions by equality, so
    the annotation can come back as ``Union[float, int]`` (whichever order was built first), and
    jsonargparse, trying float first, turned 1 into 1.0: the whole epoch. An int-first
    ``int | float`` (a ``types.UnionType``, built anew in its own order) keeps integers
    integers and 0.25 a fraction.
    """
    from jsonargparse._typehints import ActionTypeHint

    for action in parser._actions:
        name = action.dest.rpartition(".")[2]
        if action.dest.startswith("trainer.") and name in BATCH_LIMITS:
            if isinstance(action, ActionTypeHint):
                nullable = type(None) in getattr(action._typehint, "__args__", ())
                action._typehint = int | float | None if nullable else int | float


def place_in_run_folder(trainer: Namespace) -> None:
    """Put the loggers and checkpoints that name no folder in the run folder.

    The run folder is ``trainer.default_root_dir`` (the working directory when unset): a
    logger's ``save_dir`` of ``"."`` (the defaults', and W&B's own default) becomes it; a W&B
    run without a name is named after it and grouped by that name's part before the first
    ``_`` (the dataset, in ``configs/``); a ``ModelCheckpoint`` without ``dirpath`` writes to
    ``<run folder>/checkpoints``. So a config names its run once, and
    ``--trainer.default_root_dir`` moves all of it. ``enable_checkpointing: false`` drops the
    ``ModelCheckpoint`` callbacks (Lightning refuses the two together).
    """
    root = trainer.get("default_root_dir") or "."
    loggers = trainer.get("logger")
    loggers = [loggers] if isinstance(loggers, Namespace) else loggers
    for lg in loggers if isinstance(loggers, list) else []:
        args = lg.get("init_args") if isinstance(lg, Namespace) else None
        if not isinstance(args, Namespace):
            continue
        if "save_dir" in args and str(args.get("save_dir")) in ("None", "."):
            args["save_dir"] = str(root)
        if str(lg.get("class_path", "")).endswith("WandbLogger") and args.get("name") is None:
            args["name"] = Path(root).resolve().name
            if "group" in args and args.get("group") is None:
                args["group"] = args["name"].split("_")[0]
    callbacks = trainer.get("callbacks") or []
    checkpoints = [
        cb for cb in callbacks
        if isinstance(cb, Namespace) and str(cb.get("class_path", "")).endswith("ModelCheckpoint")
    ]  # fmt: skip
    if trainer.get("enable_checkpointing") is False:  # no checkpoints: not the defaults' either
        trainer["callbacks"] = [cb for cb in callbacks if cb not in checkpoints] or None
        return
    for cb in checkpoints:
        args = cb.get("init_args")
        if isinstance(args, Namespace) and args.get("dirpath") is None:
            args["dirpath"] = str(Path(root) / "checkpoints")


def load_config(
    config: str | Path | Sequence[str | Path], overrides: Sequence[str] = ()
) -> dict[str, Any]:
    """A config as ``mvmic fit --config CONFIG OVERRIDES`` sees it, as plain YAML values.

    The one way mvmic's tools read a config: through LightningCLI (``run=False``), so the
    shared defaults, sub-config files (``callbacks: base/best_val_dice.yaml``) and the run
    folder placement apply exactly as in a run. Nothing is built, seeded or written.

    Args:
        config: a YAML path, or a path in ``configs/``; or several, merged in order as
            repeated ``--config`` (a dataset file, then a design overlay:
            ``["isic_gan.yaml", "isic_gan/d2.yaml"]``).
        overrides: further ``--section.key value`` arguments.
    """
    import yaml

    from mvmic.cli import resolve_config

    configs = [config] if isinstance(config, (str, Path)) else list(config)
    if not configs:
        raise ValueError("load_config needs at least one config")
    args: list[str] = []
    for one in configs:
        path = Path(resolve_config(str(one)))
        if not path.is_file():
            raise FileNotFoundError(f"config {one} not found (looked at {path} and in configs/)")
        args += ["--config", str(path)]
    cli = MvmicLightningCLI(args=[*args, *overrides], run=False, parse_only=True)
    cfg = cli.parser.dump(cli.config, format="yaml", skip_none=False, skip_validation=True)
    out = yaml.safe_load(cfg)
    out.pop("config", None)
    return out


def instantiate_data(section: dict[str, Any]) -> LightningDataModule:
    """The data module of a config's ``data:`` section, built by jsonargparse as ``mvmic fit``
    builds it (no trainer: nothing is written)."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False, default_env=False)
    parser.add_subclass_arguments(LightningDataModule, "data", required=True)
    cfg = parser.parse_object({"data": section})
    return parser.instantiate_classes(cfg).data


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

"""A config's trainer section pointed at one run's folder: its loggers, checkpoints and default
root there, its W&B run named and grouped (``mvmic sweep`` and the benchmark)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def retarget_trainer(
    cfg: dict[str, Any], run_dir: Path, run_name: str, group: str
) -> dict[str, Any]:
    """A copy of ``cfg``'s trainer section with its loggers, checkpoints and default root in
    ``run_dir`` and its W&B run named ``run_name`` in ``group`` (offline unless set)."""
    trainer = json.loads(json.dumps(cfg.get("trainer") or {}))
    loggers = trainer.get("logger")
    if isinstance(loggers, dict):
        loggers = [loggers]
    new_loggers = []
    for lg in loggers if isinstance(loggers, list) else []:
        args = lg.setdefault("init_args", {})
        if "save_dir" in args or "WandbLogger" in lg.get("class_path", ""):
            args["save_dir"] = str(run_dir)
        if "WandbLogger" in lg.get("class_path", ""):
            args.update(name=run_name, group=group)
            args.setdefault("offline", True)
        new_loggers.append(lg)
    callbacks = []
    has_ckpt = False
    for cb in trainer.get("callbacks") or []:
        if "ModelCheckpoint" in cb.get("class_path", ""):
            cb.setdefault("init_args", {}).update(dirpath=str(run_dir / "checkpoints"))
            cb["init_args"]["save_last"] = True
            has_ckpt = True
        callbacks.append(cb)
    if not has_ckpt:
        callbacks.append(
            {
                "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                "init_args": {"dirpath": str(run_dir / "checkpoints"), "save_last": True},
            }
        )
    trainer["default_root_dir"] = str(run_dir)
    if loggers is not None:
        trainer["logger"] = new_loggers or False
    trainer["callbacks"] = callbacks
    return trainer


def trainer_overrides(cfg: dict[str, Any], run_dir: Path, run_name: str, group: str) -> list[str]:
    """``--trainer.*`` options that apply :func:`retarget_trainer` to a run of ``cfg``."""
    trainer = retarget_trainer(cfg, run_dir, run_name, group)
    out = ["--trainer.default_root_dir", trainer["default_root_dir"]]
    if "logger" in trainer:
        logger = trainer["logger"]
        out += ["--trainer.logger", json.dumps(logger) if logger else "false"]
    out += ["--trainer.callbacks", json.dumps(trainer["callbacks"])]
    return out

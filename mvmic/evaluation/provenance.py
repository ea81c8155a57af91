"""What a record needs so its points can be decoded again: the checkpoint and the data module.

``mvmic test`` and ``mvmic anchors`` write, beside each point, the checkpoint that produced it
(``ckpt_path`` for a learned codec or task net, ``task_ckpt`` for a standard codec's task net)
and, once per record, the data module (``data``: its class and plain init arguments), so that
``mvmic compare`` can re-run the decode on the same test split. Reading ``data`` back never
imports a name from the file: the class must be one of :mod:`data_modules`' own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def datamodule_spec(dm: Any) -> dict[str, Any] | None:
    """``{"class_path", "init_args"}`` of a data module (paths made absolute), or None."""
    if dm is None:
        return None
    args: dict[str, Any] = {}
    for key, value in dict(getattr(dm, "hparams", {}) or {}).items():
        if key.startswith("_"):  # LightningCLI's own entries (_class_path), not init arguments
            continue
        if key in ("root", "predict_root", "split_file") and isinstance(value, str) and value:
            value = str(Path(value).resolve())
        try:
            json.dumps(value)
        except TypeError:  # a non-plain argument cannot be written, so it is not rebuilt
            continue
        args[key] = value
    cls = type(dm)
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": args}


def build_datamodule(spec: Any, source: str) -> Any:
    """The data module a record's ``data`` field names (only :mod:`data_modules` classes).

    Raises:
        ValueError: the field is malformed or names a class that is not a data module of mvmic.
    """
    import data_modules

    if not isinstance(spec, dict) or not isinstance(spec.get("class_path"), str):
        raise ValueError(f"{source}: its 'data' field is not {{class_path, init_args}}")
    allowed = {
        f"{cls.__module__}.{cls.__qualname__}": cls
        for cls in (getattr(data_modules, name) for name in data_modules.__all__)
    }
    cls = allowed.get(spec["class_path"])
    if cls is None:
        raise ValueError(
            f"{source}: data class {spec['class_path']!r} is not one of mvmic's data modules "
            f"({', '.join(sorted(c.__name__ for c in allowed.values()))})"
        )
    args = spec.get("init_args") or {}
    if not isinstance(args, dict):
        raise ValueError(f"{source}: data.init_args is not a mapping")
    from mvmic.modules.checkpoints import checked_hparams

    # the same rule as a checkpoint's hyperparameters: plain values the class's signature takes
    return cls(**checked_hparams(source, cls, args))

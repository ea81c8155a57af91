"""Checks of the values a user gives in a config or on the command line.

Every module and data module calls these at the top of its ``__init__``, so a bad value stops
before anything is built, with one line that names the option as the user types it
(``--model.lmbda_t``, ``--data.image_size``) and says what would be valid, instead of a
library's validator speaking from deep inside. ``None`` passes every check: whether an option
may be ``None`` is its type hint's business, which jsonargparse enforces.
"""

from __future__ import annotations

import difflib
import numbers
from collections.abc import Callable, Iterable, Sequence
from importlib import import_module
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A config value that cannot work; the message names the option and the fix.

    Args:
        option: the option as a user types it, e.g. ``--model.lmbda_t``.
        message: what is wrong and what would be valid.
    """

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option} {message}")
        self.option, self.message = option, message

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        # Rebuilt from both parts, so the error survives a trip between processes.
        return type(self), (self.option, self.message)


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def number(name: str, value: Any, integer: bool = False) -> Any:
    """``value`` must be a number (an integer if ``integer``); bools are refused."""
    if value is None:
        return value
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ConfigError(
            name, f"must be {'an integer' if integer else 'a number'}, got {_show(value)}"
        )
    return value


def positive(name: str, value: Any, integer: bool = False) -> Any:
    """``value`` must be > 0 (and an integer if ``integer``)."""
    if number(name, value, integer) is not None and not value > 0:
        raise ConfigError(
            name, f"must be {'a positive integer' if integer else '> 0'}, got {_show(value)}"
        )
    return value


def non_negative(name: str, value: Any, integer: bool = False) -> Any:
    """``value`` must be >= 0 (and an integer if ``integer``); 0 usually turns a term off."""
    if number(name, value, integer) is not None and not value >= 0:
        raise ConfigError(name, f"must be >= 0, got {_show(value)}")
    return value


def fraction(name: str, value: Any, zero: bool = True, one: bool = False) -> Any:
    """``value`` must be a fraction in [0, 1) (``zero``/``one`` say whether 0/1 are allowed)."""
    if number(name, value) is None:
        return value
    low_ok = value > 0 or (zero and value == 0)
    high_ok = value < 1 or (one and value == 1)
    if not (low_ok and high_ok):
        interval = f"{'[' if zero else '('}0, 1{']' if one else ')'}"
        raise ConfigError(name, f"must be a fraction in {interval}, got {_show(value)}")
    return value


def one_of(name: str, value: Any, choices: Iterable[Any], what: str | None = None) -> Any:
    """``value`` must be one of ``choices``; the message lists them.

    Args:
        name: the option.
        value: its value.
        choices: the valid values.
        what: what a valid value is, for the message (e.g. ``"a codec"``).
    """
    if value is None:
        return value
    choices = list(choices)
    if value not in choices:
        listed = ", ".join(str(c) for c in choices)
        raise ConfigError(name, f"{_show(value)} is not {what or 'valid'}; choose one of {listed}")
    return value


def channels(name: str, value: Any, allowed: Sequence[int] = (1, 3)) -> Any:
    """Image channels: one of ``allowed`` (grey or RGB by default)."""
    if number(name, value, integer=True) is not None and value not in allowed:
        listed = " or ".join(str(a) for a in allowed)
        raise ConfigError(name, f"must be {listed} (image channels), got {value}")
    return value


def num_classes(name: str, value: Any) -> Any:
    """A class count that includes the background: an integer >= 2."""
    if number(name, value, integer=True) is not None and value < 2:
        raise ConfigError(name, f"must be >= 2 (it counts the background too), got {value}")
    return value


def sizes(
    name: str, value: Any, length: int | Sequence[int] | None = None, scalar: bool = True
) -> Any:
    """A side (an integer) or a list of sides, each > 0.

    Args:
        name: the option.
        value: an int (if ``scalar``) or a sequence of ints.
        length: the allowed length(s) of a sequence (None: any non-empty one).
        scalar: whether a single int is accepted.
    """
    if value is None:
        return value
    lengths = (length,) if isinstance(length, int) else tuple(length or ())
    want = " or ".join(str(n) for n in lengths) or "one or more"
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and scalar:
        return positive_int(name, value)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ConfigError(name, f"must be a list of {want} positive integers, got {_show(value)}")
    if (lengths and len(value) not in lengths) or not len(value):
        raise ConfigError(name, f"must be a list of {want} positive integers, got {list(value)}")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0:
            raise ConfigError(name, f"must be a list of positive integers, got {list(value)}")
    return value


def text(name: str, value: Any) -> Any:
    """A name: a non-empty string."""
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ConfigError(name, f"must be a non-empty name, got {_show(value)}")
    return value


def existing_file(name: str, value: Any) -> Any:
    """A file that must exist now."""
    if value is None:
        return value
    path = Path(value)
    if not path.is_file():
        why = "is a folder" if path.is_dir() else "does not exist"
        raise ConfigError(name, f"{value} {why}; give the path of an existing file")
    return value


def file_to_write(name: str, value: Any) -> Any:
    """A file that is read if it exists and written otherwise: it must not be a folder."""
    if value is not None and Path(value).is_dir():
        raise ConfigError(name, f"{value} is a folder; give a file path")
    return value


def folder(name: str, value: Any) -> Any:
    """A folder to write into: it may not exist yet, but it must not be a file."""
    if value is not None and Path(value).is_file():
        raise ConfigError(name, f"{value} is a file; give a folder (it is created if missing)")
    return value


def positive_int(name: str, value: Any) -> Any:
    """``value`` must be an integer > 0 (sizes, counts, widths, steps)."""
    return positive(name, value, integer=True)


def non_negative_int(name: str, value: Any) -> Any:
    """``value`` must be an integer >= 0 (e.g. loader workers)."""
    return non_negative(name, value, integer=True)


def each(rule: Callable[[str, Any], Any], prefix: str, **values: Any) -> None:
    """Apply ``rule`` to every ``option=value``, naming each ``<prefix>.<option>``.

    Example: ``each(positive, "--model", lr=lr, aux_lr=aux_lr)``.
    """
    for key, value in values.items():
        rule(f"{prefix}.{key}", value)


def fractions_sum(prefix: str, **values: float) -> None:
    """Split fractions (``val_fraction``, ``test_fraction``): each in [0, 1), sum < 1."""
    each(fraction, prefix, **values)
    if sum(v for v in values.values() if v is not None) >= 1:
        names = " + ".join(f"{prefix}.{k}" for k in values)
        shown = " + ".join(str(v) for v in values.values())
        raise ConfigError(names, f"= {shown}; they must sum to less than 1 (the rest trains)")


def file_under(name: str, root: Any, value: Any) -> Any:
    """A file named relative to ``root``; checked only once ``root`` exists (the data
    module's own setup names a missing root)."""
    if value is not None and root is not None and Path(root).is_dir():
        existing_file(name, Path(root) / value)
    return value


def loader(prefix: str = "--data", **values: Any) -> None:
    """Data loader options: ``num_workers`` >= 0, every other (batch sizes) > 0."""
    for key, value in values.items():
        rule = non_negative_int if key == "num_workers" else positive_int
        rule(f"{prefix}.{key}", value)


#: Architecture tables of the task networks: task name -> (module, table). Fixed here, in
#: code; the table is imported only for the task a config names.
_ARCHITECTURES = {
    "segmentation": ("mvmic.tasks.segmentation", "SMP_ARCHITECTURES"),
    "detection": ("mvmic.tasks.detection", "ARCHITECTURES"),
}


def smp_encoder(name: str, value: Any) -> Any:
    """An encoder of segmentation-models-pytorch, with the closest names as the fix."""
    if value is None:
        return value
    import segmentation_models_pytorch as smp

    names = smp.encoders.get_encoder_names()
    if value not in names:
        near = difflib.get_close_matches(str(value), names, n=4, cutoff=0.5)
        hint = f"did you mean {', '.join(near)}? " if near else ""
        raise ConfigError(
            name,
            f"{_show(value)} is not an smp encoder; {hint}(e.g. resnet18, resnet34, "
            "efficientnet-b0, mobilenet_v2; all: segmentation_models_pytorch.encoders."
            "get_encoder_names())",
        )
    return value


def task_network(
    task: Any,
    arch: Any,
    encoder: Any,
    num_classes_: Any,
    in_channels: Any,
    task_weights: Any,
    prefix: str = "--model",
) -> None:
    """The task-network options shared by the modules (``task``, ``arch``, ``encoder``,
    ``num_classes``, ``in_channels``, ``task_weights``)."""
    from mvmic.tasks import TASKS

    one_of(f"{prefix}.task", task, TASKS, "a task")
    if task in _ARCHITECTURES:
        module, table = _ARCHITECTURES[task]
        archs = sorted(getattr(import_module(module), table))
        one_of(f"{prefix}.arch", arch, archs, f"a {task} architecture")
    if task == "segmentation":
        smp_encoder(f"{prefix}.encoder", encoder)
    num_classes(f"{prefix}.num_classes", num_classes_)
    channels(f"{prefix}.in_channels", in_channels)
    existing_file(f"{prefix}.task_weights", task_weights)


def record(method: Any, results_dir: Any, prefix: str = "--model") -> None:
    """Where ``mvmic test`` writes its record: a non-empty method name, a folder."""
    text(f"{prefix}.method", method)
    folder(f"{prefix}.results_dir", results_dir)

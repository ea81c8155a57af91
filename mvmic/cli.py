"""``mvmic``: LightningCLI (fit/validate/test/predict) plus mvmic's own subcommands.

``mvmic fit --config colondb_seg.yaml`` — a config path that does not exist as given resolves to
the configs/ folder (``--config isic_gan.yaml --config isic_gan/d2.yaml`` from any directory).
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import sys
import traceback
from importlib import import_module
from pathlib import Path

#: extra subcommands: name -> "module:function(argv) -> exit code"
SUBCOMMANDS = {
    "synth": ("data_modules.synthetic:main", "write a synthetic twin of a dataset"),
    "compress": ("mvmic.coding_cli:compress_main", "image/DICOM/NIfTI file(s) -> .mvmic bitstream"),
    "decompress": ("mvmic.coding_cli:decompress_main", ".mvmic -> reconstruction or task output"),
    "curves": (
        "mvmic.evaluation.curves:main",
        "rate curves (PNG) and BD-rate tables from results",
    ),
    "anchors": (
        "mvmic.evaluation.anchors:main",
        "JPEG/JPEG 2000/WebP/AVIF/HEVC anchors through a task net",
    ),
    "sweep": (
        "mvmic.evaluation.sweep:main",
        "stage 1 -> stage 2 -> test for each lambda, then curves",
    ),
    "latency": (
        "mvmic.evaluation.latency:main",
        "encode + transfer + decode + task time per method",
    ),
    "compare": (
        "mvmic.evaluation.compare:main",
        "the same test images through every method: panels, bit maps",
    ),
    "report": ("mvmic.evaluation.report:main", "one self-contained HTML page of a results folder"),
    "serve": ("mvmic.serve.server:serve_main", "HTTP service: .mvmic in, task output out"),
    "send": ("mvmic.serve.send:send_main", "compress here, get the task output from a server"),
}
LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
_OUR_CODE = (str(Path(__file__).resolve().parent), str(CONFIG_DIR.parent / "data_modules"))


def resolve_config(value: str) -> str:
    """A config path as given if it exists, else the same path inside configs/ if that exists
    (``isic_gan.yaml``, a design overlay ``isic_gan/d2.yaml``), else as given."""
    if Path(value).exists():
        return value
    candidate = CONFIG_DIR / value
    return str(candidate) if candidate.exists() else value


def _resolve_configs(argv: list[str]) -> list[str]:
    out = []
    take_next = False
    for arg in argv:
        if take_next:
            out.append(resolve_config(arg))
            take_next = False
        elif arg in ("--config", "-c"):
            out.append(arg)
            take_next = True
        elif arg.startswith("--config="):
            out.append("--config=" + resolve_config(arg.split("=", 1)[1]))
        else:
            out.append(arg)
    return out


def _quiet_defaults() -> None:
    # W&B never waits on the network unless the user asks for it.
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_DISABLE_GIT", "true")
    # Lightning advertises its cloud logger on every run; users see only what matters.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: "litlogger" not in record.getMessage()
    )


def _is_user_error(err: BaseException) -> bool:
    """Errors that mvmic itself raised about the user's input: print them, no traceback."""
    if isinstance(err, pickle.UnpicklingError):
        return True  # torch.load(weights_only=True) refused a checkpoint carrying code
    if not isinstance(err, (ValueError, FileNotFoundError, KeyError, FloatingPointError)):
        return False
    frames = traceback.extract_tb(err.__traceback__)
    return bool(frames) and frames[-1].filename.startswith(_OUR_CODE)


def run_lightning(argv: list[str]) -> int:
    from mvmic.cli_lightning import MvmicLightningCLI

    argv = _resolve_configs(argv)
    if argv[0] in LIGHTNING_SUBCOMMANDS and not any(a.startswith("--weights_only") for a in argv):
        # Checkpoints are data, not code: refuse pickled objects unless the user opts out.
        argv.append("--weights_only=true")
    MvmicLightningCLI(args=argv)
    return 0


def _plain_types(text: str) -> str:
    """jsonargparse's ``<class 'float'>`` as ``float``, ``NoneType`` as ``None``."""
    text = re.sub(r"<class '(?:[\w]+\.)*(\w+)'>", r"\1", text)
    return text.replace("NoneType", "None")


def _argument_error_line(err: BaseException) -> str:
    """jsonargparse's nested parse error as one line: the option as typed, and why."""
    from mvmic.cli_lightning import exception_chain

    chain = [str(e) for e in exception_chain(err)]
    keys: list[str] = []
    for message in chain:
        found = re.match(r'\s*Parser key "([^"]+)":', message)
        if found and (not keys or keys[-1] != found.group(1)):
            keys.append(found.group(1))
    option = "--" + ".".join(keys) if keys else ""
    root = chain[-1].strip()
    class_path = next(
        (m.group(1) for c in chain if (m := re.search(r"given class_path '([\w.]+)'", c))), None
    )
    if found := re.fullmatch(r"Option '([^']+)' is not accepted", root):
        option = f"{option}.{found.group(1)}" if option else f"--{found.group(1)}"
        owner = class_path or "this command"
        helper = f"; `--{keys[0]}.help {class_path}` lists its options" if class_path else ""
        return f"{option} is not an option of {owner}{helper}"
    if found := re.fullmatch(r"Expected a (.+)\. Got value: (.*)", root, flags=re.S):
        expected, given = found.groups()
        # A union (int | list[int] | None) lists every type it accepts, not just the first.
        inner = next((c for c in reversed(chain) if c.lstrip().startswith("Parser key")), "")
        if subtypes := re.search(r"Subtypes: \[(.+)\]", inner):
            expected = " | ".join(t.strip() for t in subtypes.group(1).split(", "))
        return f"{option} got {given.strip()!r}; expected {_plain_types(expected)}".strip()
    if class_path and not root.startswith("Parser key"):
        return f"{option} {class_path}: {root.splitlines()[0]}".strip()
    lines = [ln.strip() for ln in root.splitlines() if ln.strip()]
    if lines and lines[0].startswith("Parser key"):
        lines = lines[1:]
    reason = _plain_types(" ".join(lines))[:300]
    if reason.startswith("unrecognized arguments"):
        reason += "; `mvmic fit --help` lists the options"
    return f"{option} {reason}".strip()


def user_error_line(err: BaseException) -> str | None:
    """The one line to print for an error the user's input caused; None for anything else.

    That is a :class:`~mvmic.validation.ConfigError` anywhere in the chain of causes (however
    LightningCLI/jsonargparse wrapped it), a parse error jsonargparse found, a checkpoint
    refused for carrying code, or an input error raised in mvmic's own code.
    """
    from argparse import ArgumentError

    from mvmic.cli_lightning import exception_chain
    from mvmic.validation import ConfigError

    for e in exception_chain(err):
        if isinstance(e, ConfigError):
            return " ".join(str(e).split())
    if isinstance(err, ArgumentError):
        return _argument_error_line(err)
    if isinstance(err, pickle.UnpicklingError):
        return (
            "refused to load the checkpoint: it holds pickled objects beyond plain tensors "
            f"({str(err).splitlines()[0][:160]}). Only if you trust its source, pass "
            "--weights_only=false."
        )
    if _is_user_error(err):
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        return " ".join(str(message).split())
    return None


def _usage() -> str:
    lines = [
        "usage: mvmic {fit,validate,test,predict} --config CONFIG [options]",
        "       mvmic SUBCOMMAND [options]",
        "",
        "subcommands:",
    ]
    lines += [f"  {name:<11} {desc}" for name, (_, desc) in SUBCOMMANDS.items()]
    lines += ["", f"configs ({CONFIG_DIR}):"]
    for p in sorted(CONFIG_DIR.glob("*.yaml")):
        overlays = sorted(o.name for o in (CONFIG_DIR / p.stem).glob("*.yaml"))
        after = f"  [--config {p.stem}/{{{','.join(overlays)}}}]" if overlays else ""
        lines.append(f"  {p.name}{after}")
    lines += ["", "`mvmic fit --help` lists every Lightning option."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _quiet_defaults()
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    try:
        if argv[0] in SUBCOMMANDS:
            module, fn = SUBCOMMANDS[argv[0]][0].split(":")
            return int(getattr(import_module(module), fn)(argv[1:]) or 0)
        return run_lightning(argv)
    except Exception as err:  # noqa: BLE001
        # MVMIC_DEBUG=1 shows the full traceback of any error.
        line = None if os.environ.get("MVMIC_DEBUG") else user_error_line(err)
        if line is None:
            raise
        print(f"mvmic: error: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

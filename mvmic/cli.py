"""``mvmic``: LightningCLI (fit/validate/test/predict) plus mvmic's own subcommands.

``mvmic fit --config colondb_seg.yaml`` — a bare config name resolves to the configs/ folder.
"""

from __future__ import annotations

import os
import pickle
import sys
import traceback
from importlib import import_module
from pathlib import Path

#: extra subcommands: name -> "module:function(argv) -> exit code"
SUBCOMMANDS = {
    "synth": ("data_modules.synthetic:main", "write a synthetic twin of a dataset"),
    "compress": ("mvmic.coding:compress_main", "image/DICOM/NIfTI file(s) -> .mvmic bitstream"),
    "decompress": ("mvmic.coding:decompress_main", ".mvmic -> reconstruction or task output"),
    "curves": ("mvmic.curves:main", "rate curves (PNG) and BD-rate tables from results"),
    "anchors": ("mvmic.anchors:main", "JPEG/JPEG 2000/WebP/AVIF/HEVC anchors through a task net"),
    "sweep": ("mvmic.sweep:main", "stage 1 -> stage 2 -> test for each lambda, then curves"),
    "latency": ("mvmic.latency:main", "encode + transfer + decode + task time per method"),
}
LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
_OUR_CODE = (str(Path(__file__).resolve().parent), str(CONFIG_DIR.parent / "data_modules"))


def resolve_config(value: str) -> str:
    """A config path as given if it exists, else the same name inside configs/."""
    if Path(value).exists() or os.sep in value:
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

    # LightningCLI reads sys.argv itself; hand it the resolved arguments that way.
    argv = _resolve_configs(argv)
    if argv[0] in LIGHTNING_SUBCOMMANDS and not any(a.startswith("--weights_only") for a in argv):
        # Checkpoints are data, not code: refuse pickled objects unless the user opts out.
        argv.append("--weights_only=true")
    saved = sys.argv
    sys.argv = [saved[0] if saved else "mvmic", *argv]
    try:
        MvmicLightningCLI()
    finally:
        sys.argv = saved
    return 0


def _usage() -> str:
    lines = [
        "usage: mvmic {fit,validate,test,predict} --config CONFIG [options]",
        "       mvmic SUBCOMMAND [options]",
        "",
        "subcommands:",
    ]
    lines += [f"  {name:<11} {desc}" for name, (_, desc) in SUBCOMMANDS.items()]
    lines += ["", f"configs ({CONFIG_DIR}):"]
    lines += [f"  {p.name}" for p in sorted(CONFIG_DIR.glob("*.yaml"))]
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
        if os.environ.get("MVMIC_DEBUG") or not _is_user_error(err):
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        if isinstance(err, pickle.UnpicklingError):
            message = (
                "refused to load the checkpoint: it holds pickled objects beyond plain tensors "
                f"({str(err).splitlines()[0][:160]}). Only if you trust its source, pass "
                "--weights_only=false."
            )
        print(f"mvmic: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

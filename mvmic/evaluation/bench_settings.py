"""The rate–accuracy benchmark's settings per part (seg, det, gan), its ``--set`` overrides and
the configs it writes from them."""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from mvmic.evaluation.sweep import retarget_trainer

REPO = Path(__file__).resolve().parents[2]

PARTS = ("seg", "det", "gan")
# The step budgets below are for 45 minutes on 2 CPU cores. Measured 2026-11-23: budgets
# 1.0x / 0.88x of seg 400-400-200, det 200-60-30, gan 400 (task, stage 1, stage 2) took
# 46.9 / 45.0 min, mostly in fits that scale with steps; these (about 0.75x) took 37.6 min,
# leaving room for a slower machine.
REFERENCE_MINUTES = 45.0


@dataclass
class Part:
    """One dataset family's benchmark settings, at the reference budget."""

    name: str
    synth: str  # `mvmic synth` family
    synth_args: list[str]
    task_config: str
    mse_config: str
    codec_config: str  # MVMICNet stage 1 (its `_stage2.yaml` beside it is stage 2)
    metric: str  # the task metric the goals are judged on
    data: dict[str, Any]
    task_model: dict[str, Any]
    codec_model: dict[str, Any]
    steps: dict[str, int]  # task, base, mse, stage1, stage2
    mse_lmbdas: list[float]
    lmbdas: list[float]  # MVMICNet's λ_d grid (λ_t from `stage1`)
    anchors: str
    anchor_qualities: str | None = None
    base_lmbda: float = 0.0067  # the MSE base codec every learned codec starts from
    mse: dict[str, Any] = field(default_factory=dict)  # MSE-codec model overrides
    stage1: dict[str, Any] = field(default_factory=dict)
    stage2: dict[str, Any] = field(default_factory=dict)


SEG = Part(
    name="seg",
    synth="colondb",
    synth_args=["--num", "240", "--size", "64"],
    task_config="colondb_task.yaml",
    mse_config="colondb_codec_mse.yaml",
    codec_config="colondb_seg.yaml",
    metric="miou",
    data={"image_size": 64, "batch_size": 8},
    task_model={"encoder": "resnet18", "lr": 0.001},
    codec_model={"encoder": "resnet18", "N": 32, "M": 48},
    steps={"task": 320, "base": 1100, "mse": 300, "stage1": 300, "stage2": 150},
    mse_lmbdas=[0.0018, 0.0067, 0.025, 0.0932],
    lmbdas=[0.0002, 0.0006, 0.002, 0.006],
    anchors="jpeg,jpeg2000,webp,avif,hevc",
    mse={"lr": 0.001},
    stage1={"lr": 0.0005, "task_lr": 0.0002, "lmbda_t": 1.0},
    stage2={"lr": 0.0001},
)

# The paper's ResNet-50-FPN Faster R-CNN at 96 px. Fewer sampled RoIs/proposals than
# torchvision's defaults (512/2000), which sized for 800-px images and dominate a CPU step here;
# MobileNet is no faster on CPU (its depthwise-convolution backward is slow there).
_DETECTOR = {
    "arch": "fasterrcnn_resnet50_fpn",
    "task_args": {
        "min_size": 96,
        "max_size": 96,
        "anchor_sizes": [8, 16, 32, 64, 128],
        "box_batch_size_per_image": 64,
        "rpn_pre_nms_top_n_train": 300,
        "rpn_post_nms_top_n_train": 300,
        "rpn_pre_nms_top_n_test": 150,
        "rpn_post_nms_top_n_test": 150,
    },
}
DET = Part(
    name="det",
    synth="chestxdet",
    synth_args=["--num", "100", "--size", "96"],
    task_config="chestxdet_task.yaml",
    mse_config="chestxdet_det.yaml",
    codec_config="chestxdet_det.yaml",
    metric="map",
    data={"image_size": 96, "batch_size": 4},
    task_model={**_DETECTOR, "lr": 0.0005},
    codec_model={**_DETECTOR, "N": 32, "M": 48},
    steps={"task": 150, "base": 450, "mse": 45, "stage1": 45, "stage2": 22},
    mse_lmbdas=[0.0018, 0.0067, 0.025, 0.0932],
    lmbdas=[0.0002, 0.0006, 0.002, 0.006],
    anchors="jpeg,jpeg2000,webp,avif,hevc",
    anchor_qualities="jpeg=5,20,50,90;jpeg2000=22,28,34,40;webp=1,15,50,90;avif=5,30,60,75;"
    "hevc=5,20,40,60",
    mse={"lr": 0.001, "lmbda_t": 0.0, "freeze_task": True},
    stage1={"lr": 0.0005, "task_lr": 0.0001, "lmbda_t": 1.0},
    stage2={"lr": 0.0001},
)


@dataclass
class GanPart:
    """Liu et al.'s designs on the ISIC layout, and JPEG 2000 through D1's segmentor."""

    name: str = "gan"
    synth: str = "isic2017"
    synth_args: list[str] = field(default_factory=lambda: ["--num", "160", "--size", "64"])
    designs: tuple[str, ...] = ("D1", "D2", "D4")
    metric: str = "dice"
    data: dict[str, Any] = field(default_factory=lambda: {"image_size": 64, "batch_size": 8})
    model: dict[str, Any] = field(default_factory=lambda: {"encoder": "resnet18"})
    steps: int = 350  # D2's S leaves the trivial mask after ~250 batches: keep well above
    anchors: str = "jpeg2000,jpeg"
    # D4 fine-tunes D2's C and S (`init_from`): from scratch its critic outran S and D4 stayed
    # at the trivial Dice ~0.6 for all 400 steps. From D2, λ_cr = 1 / 5 / 10 measured
    # 0.093 / 0.059 / 0.050 bpp at Dice 0.956 / 0.950 / 0.941 (2026-11-23).
    init_from: dict[str, str] = field(default_factory=lambda: {"D4": "D2"})
    design_model: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {"D4": {"lmbda_cr": 10.0}}
    )


PART_SETTINGS: dict[str, Part | GanPart] = {"seg": SEG, "det": DET, "gan": GanPart()}


def with_overrides(
    settings: dict[str, Part | GanPart], items: Sequence[str]
) -> dict[str, Part | GanPart]:
    """Copies of ``settings`` with each ``PART.FIELD[.KEY...]=VALUE`` (VALUE read as YAML) set,
    e.g. ``seg.stage1.freeze_task=true``, ``gan.steps=500``, ``det.lmbdas=[0.001,0.01]``."""
    settings = {name: copy.deepcopy(part) for name, part in settings.items()}
    for item in items:
        path, sep, raw = item.partition("=")
        keys = path.split(".")
        if not sep or len(keys) < 2:
            raise ValueError(f"--set {item!r}: expected PART.FIELD[.KEY]=VALUE")
        part = settings.get(keys[0])
        if part is None:
            raise ValueError(f"--set {item!r}: unknown part {keys[0]!r}; choose from {PARTS}")
        names = [f.name for f in fields(part)]
        if keys[1] not in names:
            raise ValueError(f"--set {item!r}: {keys[0]} has no field {keys[1]!r}; one of {names}")
        value = yaml.safe_load(raw)
        if len(keys) == 2:
            setattr(part, keys[1], value)
            continue
        target = getattr(part, keys[1])
        for key in keys[2:-1]:
            target = target.setdefault(key, {})
        if not isinstance(target, dict):
            raise ValueError(f"--set {item!r}: {'.'.join(keys[:-1])} is not a mapping")
        target[keys[-1]] = value
    return settings


def scaled_steps(steps: int, scale: float) -> int:
    """A step budget scaled to the time budget (at least 2 steps)."""
    return max(2, round(steps * scale))


def write_config(
    base: str,
    path: Path,
    *,
    model: dict[str, Any],
    data: dict[str, Any],
    max_steps: int,
    run_dir: Path | None,
    group: str,
) -> Path:
    """``configs/<base>`` with the benchmark's model/data settings and step budget.

    With ``run_dir`` the loggers and checkpoints go there (single runs); without it ``mvmic sweep``
    places them per λ itself.
    """
    cfg = yaml.safe_load((REPO / "configs" / base).read_text())
    cfg["model"]["init_args"].update(model)
    cfg["data"]["init_args"].update(data)
    if run_dir is not None:
        cfg["trainer"] = retarget_trainer(cfg, run_dir, path.stem, group)
    # Whole epochs, validated (and so checkpointed) about 4 times a run: checkpoints with Adam
    # state are 0.2 GB here, and the configs would write two after every short epoch.
    epochs = max(1, round(max_steps / steps_per_epoch(cfg["data"])))
    every = max(1, round(epochs / 4))
    cfg["trainer"].update(
        max_epochs=every * max(1, round(epochs / every)),
        check_val_every_n_epoch=every,
        enable_progress_bar=False,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {base} for tools/bench_rate_accuracy.py\n" + yaml.safe_dump(cfg))
    return path


_STEPS_PER_EPOCH: dict[str, int] = {}


def steps_per_epoch(data: dict[str, Any]) -> int:
    """Training batches per epoch of a config's ``data:`` section (set up without a trainer, so
    nothing is written)."""
    key = json.dumps(data, sort_keys=True)
    if key not in _STEPS_PER_EPOCH:
        from importlib import import_module

        module, _, name = data["class_path"].rpartition(".")
        dm = getattr(import_module(module), name)(**data.get("init_args", {}))
        dm.setup("fit")
        _STEPS_PER_EPOCH[key] = max(1, len(dm.train_dataloader()))
    return _STEPS_PER_EPOCH[key]

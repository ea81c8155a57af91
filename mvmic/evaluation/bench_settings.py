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

from mvmic.evaluation.run_dirs import retarget_trainer

REPO = Path(__file__).resolve().parents[2]

PARTS = ("seg", "det", "gan", "gan3d")
# The step budgets below are those of `--minutes 60` (scaled linearly for another budget).
# Only training scales: the test passes, anchors and their fine-tunes are fixed (2026-12-03,
# 2 cores: a pass of ~100 whole images ~45 s on one thread beside another). Per training step,
# wall: seg U-Net 0.97 s, seg sweep (two 1-thread runs) 0.35 s (MSE) and 0.53 s (MVMICNet),
# seg base 0.18 s (two side by side), det Faster R-CNN 1.4 s, det sweep 0.92 s and 2.2 s, gan
# D1 / D2 / D4 0.74 / 1.4 / 1.4 s, gan3d 0.24 s.
REFERENCE_MINUTES = 60.0


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
    # one base per MSE-grid λ, point i of both sweeps from base i (bench_bases.py)
    base_ladder: bool = False
    # pick the λ grids (MSE codec, MVMICNet) by short calibration runs that reach the knee
    # (mvmic.evaluation.calibration); --set seg.calibrate=true
    calibrate: bool = False
    # λ of a sweep run side by side, the cores split between them (`mvmic sweep --jobs`): on 2
    # cores two 1-thread runs train 1.43× and evaluate 1.10× as fast as one 2-thread run
    sweep_jobs: int = 2
    # validations of each run after the task net: 0 tests its last checkpoint; 2: the best of
    # two (`--ckpt best`), on 2026-12-03 2 × 9 s (seg) and 2 × 24 s (det) a run, one thread.
    stage_validations: int = 0
    mse: dict[str, Any] = field(default_factory=dict)  # MSE-codec model overrides
    stage1: dict[str, Any] = field(default_factory=dict)
    stage2: dict[str, Any] = field(default_factory=dict)


# Sizes (issue 16): evaluated on whole images of >= 256 px (seg, gan) and 192 px (det), with
# >= 100 test images, and trained on 128-px crops of them (a multiple of the hyperprior's
# stride 64, so the codec pads nothing): a training step costs the crop's pixels.
SEG = Part(
    name="seg",
    synth="colondb",
    # 300 images, a third of them the test split (102), 30 val, 168 train.
    synth_args=["--num", "300", "--size", "256"],
    task_config="colondb_task.yaml",
    mse_config="colondb_codec_mse.yaml",
    codec_config="colondb_seg.yaml",
    metric="miou",
    data={"image_size": 256, "train_crop": 128, "test_fraction": 0.34, "batch_size": 8},
    # constant lr 1e-3: test mIoU 0.918 (2026-12-03) and 0.589 (12-04, the last epoch's val
    # 0.12); 3e-4 0.663; cosine from 1e-3 0.929 (120 steps each, one seed)
    task_model={"encoder": "resnet18", "lr": 0.001, "lr_schedule": "cosine"},
    codec_model={"encoder": "resnet18", "N": 32, "M": 48},
    # One base per MSE λ (bench_bases.py; 2026-12-06, stage 2 mIoU at bpp): one shared base of
    # 300 steps put MVMICNet at 0.069-0.073 bpp, 0.889-0.897; a ladder of 600-step bases at MSE
    # λ 0.0005/0.0045/0.04/0.36 at 0.032-0.123, 0.891-0.917; of 1200-step bases at these λ at
    # 0.028-0.151, 0.840-0.934 (uncompressed 0.931). The λ 0.04 base after 600/1200/1800/2400
    # steps: 0.17/0.22/0.24/0.25 bpp at PSNR 21.8/28.9/29.0/31.2 dB.
    steps={"task": 120, "base": 1200, "mse": 40, "stage1": 40, "stage2": 36},
    mse_lmbdas=[0.0001, 0.0005, 0.0045, 0.04],
    lmbdas=[0.0001, 0.0002, 0.0006, 0.002],  # point i starts from the base at mse_lmbdas[i]
    base_ladder=True,
    # HEVC-intra, the goals' anchor, at 4 qualities (BD's minimum); each codec adds a fine-tune
    # and 4 passes (AVIF, -31 % BD-rate against HEVC on 2026-12-02: --set seg.anchors=avif,hevc
    # --set 'seg.anchor_qualities=avif=5,15,30,45;hevc=5,15,30,45'; or jpeg,jpeg2000,webp)
    anchors="hevc",
    anchor_qualities="hevc=5,15,30,45",
    mse={"lr": 0.001},
    # λ_t at λ_d 0.002, one shared base (2026-12-02; stage 2 mIoU at bpp, its bits against
    # HEVC and HEVC+ft): λ_t 1: 0.886 at 0.065 (0.70×, 0.89×); 4: 0.911 at 0.060 (0.36×,
    # 0.48×); 16: 0.918 at 0.062 (0.28×, 0.42×). At λ_t 1, stage-1 U-Net frozen: 0.899 at
    # 0.056 (0.45×, 0.61×); λ_d 0: 0.875 at 0.038 (0.49×, 0.58×). Hence λ_t 16.
    stage1={"lr": 0.0005, "task_lr": 0.0002, "lmbda_t": 16.0},
    # Stage 2 first loses mIoU, then wins it back (a fresh Adam on the U-Net; its last
    # checkpoint is tested). From the 24-step stage 1 at λ_d 0.0002 (test mIoU 0.881,
    # 2026-12-03): lr 1e-4 0.717 / 0.815 / 0.832 after 12 / 24 / 36 steps; 3e-5 0.794 / 0.877
    # after 12 / 24; 1e-5 0.856 / 0.874. The anchors' fine-tune takes this lr too.
    stage2={"lr": 0.00003},
)

# The paper's ResNet-50-FPN Faster R-CNN on 192-px films, trained on 128-px crops at the same
# scale (train_resize false: torchvision would scale them up to min_size). Fewer RoIs/proposals
# than torchvision's 512/2000 (sized for 800 px; they dominate a CPU step). MobileNet: no faster.
_DETECTOR = {
    "arch": "fasterrcnn_resnet50_fpn",
    "task_args": {
        "min_size": 192,
        "max_size": 192,
        "train_resize": False,
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
    synth_args=["--num", "500", "--size", "192"],  # 100 test films, 400 train (40 val)
    task_config="chestxdet_task.yaml",
    mse_config="chestxdet_det.yaml",
    codec_config="chestxdet_det.yaml",
    metric="map",
    data={"image_size": 192, "train_crop": 128, "batch_size": 4},
    # 100 task steps: test mAP 0.020; 300 (best of 6 validations): 0.219 (2026-12-06)
    task_model={**_DETECTOR, "lr": 0.0005},
    codec_model={**_DETECTOR, "N": 32, "M": 48},
    steps={"task": 300, "base": 200, "mse": 18, "stage1": 18, "stage2": 12},
    mse_lmbdas=[0.0018, 0.0067, 0.025, 0.0932],
    lmbdas=[0.0002, 0.0006, 0.002, 0.006],
    anchors="hevc",  # the goals' anchor (--set det.anchors=... for more)
    anchor_qualities="hevc=5,20,40,60",
    mse={"lr": 0.001, "lmbda_t": 0.0, "freeze_task": True},
    stage1={"lr": 0.0005, "task_lr": 0.0001, "lmbda_t": 1.0},
    stage2={"lr": 0.0001},
)


@dataclass
class GanPart:
    """Liu et al.'s designs on the ISIC layout, and JPEG 2000 through D1's segmentor."""

    name: str = "gan"
    synth: str = "isic2017"
    # 400 training images, 100 validation, 100 test (the twin writes num // 4 of each)
    synth_args: list[str] = field(default_factory=lambda: ["--num", "400", "--size", "256"])
    designs: tuple[str, ...] = ("D1", "D2", "D4")
    metric: str = "dice"
    data: dict[str, Any] = field(
        default_factory=lambda: {"image_size": 256, "train_crop": 128, "batch_size": 8}
    )
    model: dict[str, Any] = field(default_factory=lambda: {"encoder": "resnet18"})
    # D2's S left the trivial mask after ~250 batches of 64-px crops (2026-11-23); these are
    # 128-px crops, 4× the pixels a batch
    steps: int = 100
    anchors: str = "jpeg2000"
    # D4 fine-tunes D2's C and S (`init_from`): from scratch its critic outran S and D4 stayed
    # at the trivial Dice ~0.6 for all 400 steps. From D2, λ_cr = 1 / 5 / 10 measured
    # 0.093 / 0.059 / 0.050 bpp at Dice 0.956 / 0.950 / 0.941 (2026-11-23).
    init_from: dict[str, str] = field(default_factory=lambda: {"D4": "D2"})
    design_model: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {"D4": {"lmbda_cr": 10.0}}
    )
    config: str = "isic_gan.yaml"  # configs/<config>; each design's overlay: overlay(design)
    anchor: str = "jpeg2000"  # the anchor the bit goal and the BD table are against
    anchor_qualities: str | None = "jpeg2000=22,26,30,34,38"  # `mvmic anchors --qualities`
    bit_factor: float | None = None  # D4's bits ≤ this × the anchor's (None: goals.GAN_FACTOR)
    channels: int | None = None  # image channels (None: detected from the files, 1 or 3)
    # D4's fine-tuning budget from D2 (None: ``steps``). From D2 after 100 steps (Dice 0.981,
    # 2026-12-03), D4 at λ_cr 10 scored Dice 0.140 after 40 steps and 0.826 after 100: the rate
    # loss first wipes the code out, then S learns to read what is left
    d4_steps: int | None = 100
    # D1 (then the anchors through it) and D2 (then D4 from it) side by side, each on its share
    # of the cores (as `mvmic sweep --jobs`). Off: measured on the gan part (2026-12-02), D1's
    # 250 batches took 677 s on one thread beside D2, and D2 alone on one thread took > 25 min
    # (the whole part had taken 21 min one step at a time on 2 threads).
    side_by_side: bool = False
    # the designs are tested from their last checkpoints, so a validation pass (100 whole
    # images) would only log; 2: validate mid-run and at the end
    validations: int = 0

    def overlay(self, design: str) -> str:
        """The design's overlay in ``configs/`` (``isic_gan/d2.yaml``), read after ``config``."""
        return f"{Path(self.config).stem}/{design.lower()}.yaml"


# Liu et al. in 3D (issue 18): HVSMR layout, whole-volume test by sliding window, against H.264 /
# HEVC videos of the slices and JPEG 2000 per slice through D1's segmentor. 12 synthetic 48³
# volumes: 5 train, 2 val, 5 test (Liu's Table 1 has 5 test volumes); 32³ training crops, 20
# batches an epoch. Chance: the classes fill 4.9 % and 3.2 % of the voxels, so a prior-matched
# random mask scores Dice ~0.05 / 0.03 and a uniform one ~0.09 / 0.06. Val Dice of short runs
# (2026-12-02, one thread each, two runs at a time; lmbda_dis 0.05, under which loss_seg and
# not the critic's ~25 steers C+S early):
# - D1: 0.65 after 320 batches at lr 1e-3, 0.56 at 2e-4 (0.43 test Dice after 160 at 1e-3);
# - D2 at lr 1e-3 collapses to the empty mask (0.045 after 40 batches, 0.0002 after 160, 0.012
#   after 400; also with 32 code channels), its code's estimated rate falling without any rate
#   loss; at lr 2e-4 it learns: 0.15 / 0.24 / 0.40 / 0.59 / 0.77 after 40 / 80 / 120 / 160 / 320;
# - D4 fine-tuned from that D2 (after 160) at λ_cr 10, lr 2e-4: 0.47 → 0.50 in 80 batches.
# D2 is 59 s per 160 batches on 2 idle threads, D1 55 s.
GAN3D = GanPart(
    name="gan3d",
    synth="hvsmr",
    synth_args=["--num", "12", "--size", "48"],
    data={
        "crop_size": [32, 32, 32],
        "crops_per_volume": 8,
        "batch_size": 2,
        "val_fraction": 0.17,
        "test_fraction": 0.42,
    },
    model={"roi_size": [32, 32, 32], "lr": 0.001, "lmbda_dis": 0.05},
    steps=320,
    anchors="h264,hevc,jpeg2000",
    config="hvsmr_gan3d.yaml",
    anchor="h264",
    anchor_qualities="h264=0,6,12,18;hevc=0,8,16;jpeg2000=22,28,34",
    bit_factor=0.1,
    channels=1,
    d4_steps=160,  # at 160 / 80 (2026-12-03) D2 and D4 stayed at the empty mask (0.056, 0.013)
    # C+S at the configs' lr 2e-4 (D1's S alone learns faster at the part's 1e-3)
    design_model={"D2": {"lr": 0.0002}, "D4": {"lmbda_cr": 10.0, "lr": 0.0002}},
)


PART_SETTINGS: dict[str, Part | GanPart] = {
    "seg": SEG,
    "det": DET,
    "gan": GanPart(),
    "gan3d": GAN3D,
}


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
    overlays: Sequence[str] = (),
    model: dict[str, Any],
    data: dict[str, Any],
    max_steps: int,
    run_dir: Path | None,
    group: str,
    validations: int = 2,
) -> Path:
    """``configs/<base>`` (then ``configs/<overlay>`` for each of ``overlays``, merged as
    repeated ``--config``) with the benchmark's model/data settings and step budget.

    With ``run_dir`` the loggers and checkpoints go there (single runs); without it ``mvmic sweep``
    places them per λ itself. ``validations``: see :func:`epoch_plan`; with 0 the checkpoints
    that monitor a validation metric are dropped (only ``last.ckpt`` is written).
    """
    from mvmic.cli_lightning import load_config

    # composed as a run composes it (shared defaults, data file), written out whole
    cfg = load_config([REPO / "configs" / name for name in (base, *overlays)])
    cfg["model"]["init_args"].update(model)
    cfg["data"]["init_args"].update(data)
    if run_dir is not None:
        cfg["trainer"] = retarget_trainer(cfg, run_dir, path.stem, group)
    cfg["trainer"].update(epoch_plan(max_steps, steps_per_epoch(cfg["data"]), validations))
    if validations == 0:
        cfg["trainer"]["callbacks"] = [
            cb for cb in cfg["trainer"].get("callbacks") or []
            if not (cb.get("init_args") or {}).get("monitor")
        ]  # fmt: skip
    cfg["trainer"]["enable_progress_bar"] = False
    # Lightning's 2 sanity batches at every fit start are a third validation pass of each
    # short run; the configs' own runs keep them (they catch a broken val loop early)
    cfg["trainer"]["num_sanity_val_steps"] = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    source = " + ".join((base, *overlays))
    path.write_text(f"# {source} for tools/bench_rate_accuracy.py\n" + yaml.safe_dump(cfg))
    return path


_STEPS_PER_EPOCH: dict[str, int] = {}


def _datamodule(data: dict[str, Any]) -> Any:
    """The data module of a config's ``data:`` section (no trainer: nothing is written)."""
    from mvmic.cli_lightning import instantiate_data

    return instantiate_data(copy.deepcopy(data))


def write_mse_stage2(
    part: Part, mse_cfg: Path, common: dict[str, Any], data: dict[str, Any], scale: float,
    group: str,
) -> str:  # fmt: skip
    """The MSE codec's stage 2 config beside ``mse_cfg`` (where `mvmic sweep` finds it): codec
    frozen, task net fine-tuned on its decoded images with stage 2's budget, the fair
    counterpart of MVMICNet's, recorded as ``<codec>+ft``. Returns the codec's name."""
    from mvmic.evaluation.methods import FT_SUFFIX

    codec = yaml.safe_load(mse_cfg.read_text())["model"]["init_args"]["codec"]
    write_config(
        part.codec_config.replace(".yaml", "_stage2.yaml"),
        mse_cfg.with_name(f"{mse_cfg.stem}_stage2.yaml"),
        model={**part.codec_model, **common, **part.stage2, "codec": codec,
               "method": f"{codec}{FT_SUFFIX}"},
        data=data,
        max_steps=scaled_steps(part.steps["stage2"], scale),
        run_dir=None,
        group=group,
        validations=part.stage_validations,
    )  # fmt: skip
    return codec


def epoch_plan(max_steps: int, per_epoch: int, validations: int = 2) -> dict[str, int]:
    """Trainer settings that train ``max_steps`` batches and validate ``validations`` times,
    the last time at the end, so a stage hands on the best of those checkpoints; with
    ``validations=0`` never (the run hands on its last checkpoint and its test measures it).

    A validation pass costs about a third of a test pass here (a detector's two: its loss
    and its boxes), and a checkpoint with Adam state 0.2-0.5 GB: more of them make a short
    run slower, not better. The run is a multiple of ``validations`` epochs of
    ``limit_train_batches`` batches each (a fresh shuffle every epoch; whole epochs when the
    budget is), as few as fit, so the budget is what it says.
    """
    epochs = max(1, -(-max_steps // per_epoch))
    if validations == 0:
        return {
            "max_epochs": epochs,
            "limit_train_batches": max(1, -(-max_steps // epochs)),
            "limit_val_batches": 0,
        }
    epochs = validations * -(-epochs // validations)
    return {
        "max_epochs": epochs,
        "check_val_every_n_epoch": epochs // validations,
        "limit_train_batches": max(1, -(-max_steps // epochs)),
    }


def steps_per_epoch(data: dict[str, Any]) -> int:
    """Training batches per epoch of a config's ``data:`` section (set up without a trainer, so
    nothing is written)."""
    key = json.dumps(data, sort_keys=True)
    if key not in _STEPS_PER_EPOCH:
        dm = _datamodule(data)
        dm.setup("fit")
        _STEPS_PER_EPOCH[key] = max(1, len(dm.train_dataloader()))
    return _STEPS_PER_EPOCH[key]


def data_channels(base: str, data: dict[str, Any]) -> int:
    """Image channels of the dataset ``configs/<base>`` reads with ``data`` (its root): 1 when
    every image is single-channel (CT, X-ray, MR: the data module's ``in_channels: auto``),
    else 3. The benchmark then builds 1- or 3-channel codecs and task nets to match."""
    from mvmic.cli_lightning import load_config

    section = load_config(REPO / "configs" / base)["data"]
    section.setdefault("init_args", {}).update({**data, "in_channels": "auto"})
    return int(_datamodule(section).in_channels)

"""Rate–accuracy benchmark: fewer bits at the same task accuracy, measured end to end.

One run trains and evaluates, on the synthetic twins by default (or a dataset folder you pass):

* ``seg`` (CVC-ColonDB layout): the U-Net on uncompressed images; the MSE codec (λ_t = 0,
  mbt2018-mean) at 4 λ; MVMICNet stage 1 and stage 2 at 4 λ; JPEG, JPEG 2000, WebP, AVIF and
  HEVC-intra through the same U-Net. Goals: at equal mIoU stage 2 needs ≤ 0.1× the bits of
  HEVC-intra and ≤ 0.5× those of the MSE codec; stage 2 ≥ stage 1 at every λ; at its lowest rate
  stage 2 is within 1 mIoU point of the uncompressed U-Net.
* ``det`` (ChestX-Det layout): the same with Faster R-CNN and mAP@[.5:.95].
* ``gan`` (ISIC 2017 layout): Liu et al.'s D1 (no compression), D4 (binary code + rate loss)
  and D2 (binary code, no rate loss), and JPEG 2000 through D1's segmentor (Dice).

Every step is a plain ``mvmic`` command on a config written under ``OUT/<part>/configs/`` (a copy
of ``configs/<name>.yaml`` with the benchmark's sizes and step budgets), printed before it runs and
saved to ``OUT/commands.sh``. Re-running the same command skips finished steps (``DONE``
markers; ``mvmic sweep`` resumes its own). At the end it prints and writes
``OUT/summary.md`` / ``summary.json``: per method the measured points, BD-rates at equal task
accuracy, the bit ratio at equal accuracy per point, and each goal as met, not met, or
undetermined (a point beyond the anchor's measured range leaves its ratio open).

    python tools/bench_rate_accuracy.py                       # all parts, ~45 min on 2 cores
    python tools/bench_rate_accuracy.py --parts seg --minutes 20
    python tools/bench_rate_accuracy.py --parts seg --data /data/CVC-ColonDB
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mvmic.curves import bd_cell, load_methods, upper_envelope  # noqa: E402
from mvmic.sweep import retarget_trainer  # noqa: E402

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


# -- running ------------------------------------------------------------------------------------
class Runner:
    """Runs ``mvmic`` commands, prints and logs them, and skips steps already done."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.log = out / "commands.sh"
        out.mkdir(parents=True, exist_ok=True)
        if not self.log.exists():
            self.log.write_text("#!/usr/bin/env bash\n# written by tools/bench_rate_accuracy.py\n")

    def mvmic(self, *args: str, done: Path | None = None) -> None:
        """``mvmic ARGS`` in a subprocess; with ``done``: skip if that marker exists, else write
        it after success."""
        line = "mvmic " + shlex.join(args)
        if done is not None and done.is_file():
            print(f"[  done] {line}", flush=True)
            return
        print(f"\n$ {line}", flush=True)
        with self.log.open("a") as f:
            f.write(line + "\n")
        env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mvmic.cli", *args], check=True, env=env, cwd=REPO)
        with self.log.open("a") as f:
            f.write(f"# {time.perf_counter() - t0:.0f} s\n")
        if done is not None:
            done.parent.mkdir(parents=True, exist_ok=True)
            done.write_text("ok\n")


def _scaled(steps: int, scale: float) -> int:
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


# -- the learned-vs-standard pipeline (seg, det) ------------------------------------------------
def run_codec_part(part: Part, runner: Runner, root: Path, out: Path, scale: float) -> Path:
    """Task net → MSE codecs → MVMICNet stages 1+2 → anchors → curves. Returns the results dir."""
    results = out / "results"
    cfgs = out / "configs"
    group = f"bench-{part.name}"
    data = {**part.data, "root": str(root)}
    common = {"results_dir": str(results)}

    def sweep(config: Path, lmbdas: Sequence[float], root: Path, *flags: str) -> None:
        values = ",".join(f"{v:g}" for v in lmbdas)
        runner.mvmic(
            "sweep", "--config", str(config), *flags, "--lmbda", values, "--root", str(root),
            "--results_dir", str(results), "--group", group, "--no_wandb", "--ckpt", "best",
        )  # fmt: skip

    task_dir = out / "task"
    task_cfg = write_config(
        part.task_config,
        cfgs / "task.yaml",
        model={**part.task_model, **common},
        data=data,
        max_steps=_scaled(part.steps["task"], scale),
        run_dir=task_dir,
        group=group,
    )
    task_ckpt = task_dir / "checkpoints" / "best.ckpt"
    runner.mvmic("fit", "--config", str(task_cfg), done=task_dir / "DONE")
    runner.mvmic(
        "test",
        "--config",
        str(task_cfg),
        "--ckpt_path",
        str(task_ckpt),
        done=out / "task_test" / "DONE",
    )

    # Each stage hands on (and is tested with) its best checkpoint on the validation set: the
    # validation curves of these short runs swing by several points from epoch to epoch.
    # One MSE codec trained long (codec-only steps are cheap); every learned codec below starts
    # from it and gets the same number of steps, so MSE and MVMICNet are compared fairly.
    base_dir = out / "codec_base"
    mse_model = {**part.codec_model, **common, **part.mse, "init_task": str(task_ckpt)}
    base_cfg = write_config(
        part.mse_config,
        cfgs / "codec_base.yaml",
        model={**mse_model, "lmbda_d": part.base_lmbda},
        data=data,
        max_steps=_scaled(part.steps["base"], scale),
        run_dir=base_dir,
        group=group,
    )
    runner.mvmic("fit", "--config", str(base_cfg), done=base_dir / "DONE")
    init_codec = base_dir / "checkpoints" / "last.ckpt"

    mse_cfg = write_config(
        part.mse_config,
        cfgs / "codec_mse.yaml",
        model={**mse_model, "init_codec": str(init_codec)},
        data=data,
        max_steps=_scaled(part.steps["mse"], scale),
        run_dir=None,
        group=group,
    )
    sweep(mse_cfg, part.mse_lmbdas, out / "mse", "--no_stage2")

    s1_cfg = write_config(
        part.codec_config,
        cfgs / "mvmicnet.yaml",
        model={
            **part.codec_model,
            **common,
            **part.stage1,
            "init_codec": str(init_codec),
            "init_task": str(task_ckpt),
        },
        data=data,
        max_steps=_scaled(part.steps["stage1"], scale),
        run_dir=None,
        group=group,
    )
    s2_base = part.codec_config.replace(".yaml", "_stage2.yaml")
    s2_model = {k: v for k, v in part.stage1.items() if k not in ("lr", "task_lr")}
    write_config(
        s2_base,
        cfgs / "mvmicnet_stage2.yaml",  # found by `mvmic sweep` beside mvmicnet.yaml
        model={**part.codec_model, **common, **s2_model, **part.stage2},
        data=data,
        max_steps=_scaled(part.steps["stage2"], scale),
        run_dir=None,
        group=group,
    )
    sweep(s1_cfg, part.lmbdas, out / "mvmicnet", "--test_every_stage")

    anchor_args = ["--qualities", part.anchor_qualities] if part.anchor_qualities else []
    runner.mvmic(
        "anchors", "--config", str(task_cfg), "--ckpt_path", str(task_ckpt),
        "--codecs", part.anchors, *anchor_args, "--results_dir", str(results), "--no_curves",
        done=out / "anchors" / "DONE",
    )  # fmt: skip
    runner.mvmic(
        "curves", str(results), "--anchor", "hevc", "--envelope", "--wandb",
        "--wandb_group", group, "--wandb_dir", str(out),
    )  # fmt: skip
    return results


def run_gan_part(part: GanPart, runner: Runner, root: Path, out: Path, scale: float) -> Path:
    """D1, D2, D4: fit + test each; JPEG 2000/JPEG through D1's segmentor; curves."""
    results = out / "results"
    group = f"bench-{part.name}"
    cfgs = {}
    last = {d: out / d.lower() / "checkpoints" / "last.ckpt" for d in part.designs}
    for design in part.designs:
        run_dir = out / design.lower()
        init = {"init_from": str(last[part.init_from[design]])} if design in part.init_from else {}
        cfgs[design] = write_config(
            f"isic_gan_{design.lower()}.yaml",
            out / "configs" / f"{design.lower()}.yaml",
            model={
                **part.model,
                **part.design_model.get(design, {}),
                **init,
                "results_dir": str(results),
            },
            data={**part.data, "root": str(root)},
            max_steps=_scaled(part.steps, scale),
            run_dir=run_dir,
            group=group,
        )
        runner.mvmic("fit", "--config", str(cfgs[design]), done=run_dir / "DONE")
        runner.mvmic(
            "test", "--config", str(cfgs[design]), "--ckpt_path", str(last[design]),
            done=out / f"{design.lower()}_test" / "DONE",
        )  # fmt: skip
    ref = part.designs[0]
    runner.mvmic(
        "anchors", "--config", str(cfgs[ref]),
        "--ckpt_path", str(last[ref]),
        "--codecs", part.anchors, "--results_dir", str(results), "--no_curves",
        done=out / "anchors" / "DONE",
    )  # fmt: skip
    runner.mvmic(
        "curves", str(results), "--anchor", "jpeg2000", "--envelope", "--wandb",
        "--wandb_group", group, "--wandb_dir", str(out),
    )  # fmt: skip
    return results


# -- goals --------------------------------------------------------------------------------------
def rate_at(rates: Sequence[float], values: Sequence[float], target: float) -> tuple[float, str]:
    """The rate a method needs for ``target``: log-rate interpolation on its upper envelope.

    Returns ``(rate, bound)``: bound is ``""`` for an interpolated rate, ``">"`` when the method
    never reaches ``target`` (the rate is its highest measured one: the true need is above), and
    ``"<"`` when its cheapest point already beats ``target`` (its cheapest rate: the need is below).
    """
    r, v = upper_envelope(np.asarray(rates, float), np.asarray(values, float))
    if target > v[-1]:
        return float(r[-1]), ">"
    if target <= v[0]:
        return float(r[0]), "<"
    return float(10 ** np.interp(target, v, np.log10(r))), ""


def bit_ratios(method: tuple[list, list], anchor: tuple[list, list]) -> list[dict[str, Any]]:
    """Per point of ``method``: its rate over the anchor's rate at the same metric value."""
    rows = []
    for r, v in zip(*method):
        ar, bound = rate_at(*anchor, v)
        # anchor needs more than ar (">") -> our ratio is below r/ar, and the reverse
        flip = {">": "<", "<": ">", "": ""}[bound]
        rows.append({"bpp": r, "value": v, "anchor_bpp": ar, "ratio": r / ar, "bound": flip})
    return rows


def _fmt_ratio(row: dict[str, Any]) -> str:
    return f"{row['bound']}{row['ratio']:.3f}×"


def ratio_verdict(row: dict[str, Any], factor: float) -> bool | None:
    """Is this point's bit ratio ≤ ``factor``? ``None`` when its bound leaves it open (the
    anchor's measured range ends before the point's metric value)."""
    below = row["ratio"] <= factor
    if row["bound"] == "<":  # true ratio is below the printed one
        return True if below else None
    if row["bound"] == ">":  # true ratio is above the printed one
        return None if below else False
    return below


def all_verdicts(verdicts: Sequence[bool | None]) -> bool | str:
    """``False`` if any point fails, ``True`` if all pass, else ``"undetermined"``."""
    if any(v is False for v in verdicts):
        return False
    return True if all(v is True for v in verdicts) else "undetermined"


def summarize(part: Part, results: Path) -> dict[str, Any]:
    """Measured points, BD-rates and per-point bit ratios at equal task metric; goal verdicts."""
    methods = {m.name: m for ms in load_methods(results).values() for m in ms}
    metric = part.metric
    pts = {name: m.points(metric) for name, m in methods.items()}
    s1, s2 = pts.get("MVMICNet stage 1"), pts.get("MVMICNet stage 2")
    mse_name = next((n for n in methods if n.startswith(("mbt2018", "cheng2020", "bmshj"))), None)
    summary: dict[str, Any] = {"metric": metric, "methods": {}, "goals": []}
    for name, m in sorted(methods.items()):
        cols = ("bpp", "psnr", "ms-ssim", metric, "lmbda", "quality")
        rows = sorted(
            zip(*(m.results.get(k) or [None] * len(m.results["bpp"]) for k in cols)),
            key=lambda r: r[0],
        )
        summary["methods"][name] = {k: [r[i] for r in rows] for i, k in enumerate(cols)}

    def versus(anchor_name: str, factor: float) -> dict[str, Any]:
        goal: dict[str, Any] = {
            "goal": f"stage 2 needs ≤ {factor}× the bits of {anchor_name} at equal {metric}"
        }
        if s2 is None or anchor_name not in pts or not pts[anchor_name][0]:
            return {**goal, "met": None, "why": f"missing {anchor_name} or stage 2 points"}
        bd, note, _, _ = bd_cell(pts[anchor_name], s2, envelope=True)
        ratios = bit_ratios(s2, pts[anchor_name])
        goal.update(bd_rate=bd, bd_note=note, ratios=ratios)
        if bd is not None:
            goal["met"] = bd <= (factor - 1) * 100
            goal["why"] = f"BD-rate {bd:+.1f} % ({note or 'full overlap'})"
        else:  # no Bjøntegaard delta: every point's ratio (with its bound) decides
            goal["met"] = all_verdicts([ratio_verdict(r, factor) for r in ratios])
            goal["why"] = f"BD-rate n/a ({note}); per-point ratios decide"
        goal["why"] += "; per point: " + ", ".join(_fmt_ratio(r) for r in ratios)
        return goal

    summary["goals"].append(versus("hevc", 0.1))
    if mse_name:
        summary["goals"].append(versus(mse_name, 0.5))
    if s1 and s2:
        by_l1, by_l2 = (
            {lm: v for lm, v in zip(methods[n].results["lmbda"], methods[n].results[metric])}
            for n in ("MVMICNet stage 1", "MVMICNet stage 2")
        )
        pairs = [(lm, by_l1[lm], by_l2[lm]) for lm in sorted(by_l2) if lm in by_l1]
        summary["goals"].append(
            {
                "goal": f"stage 2 ≥ stage 1 in {metric} at every λ",
                "met": bool(pairs) and all(b >= a for _, a, b in pairs),
                "why": ", ".join(f"λ={lm:g}: {a:.4f} → {b:.4f}" for lm, a, b in pairs),
            }
        )
    if s2 and "uncompressed" in pts and pts["uncompressed"][1]:
        ref = pts["uncompressed"][1][0]
        low = s2[1][0]
        summary["goals"].append(
            {
                "goal": f"stage 2 at its lowest rate within 1 point of uncompressed {metric}",
                "met": low >= ref - 0.01,
                "why": f"{low:.4f} at {s2[0][0]:.4f} bpp vs uncompressed {ref:.4f}",
            }
        )
    return summary


def summarize_gan(part: GanPart, results: Path) -> dict[str, Any]:
    """D4 against D1 (no compression) and against JPEG 2000 at equal Dice."""
    methods = {m.name: m for ms in load_methods(results).values() for m in ms}
    metric = part.metric
    summary: dict[str, Any] = {"metric": metric, "methods": {}, "goals": []}
    for name, m in sorted(methods.items()):
        summary["methods"][name] = {k: m.results.get(k) for k in ("bpp", "psnr", metric)}
    pts = {name: m.points(metric) for name, m in methods.items()}
    d1, d4, j2k = (
        methods.get("liu2020-d1"),
        pts.get("liu2020-d4"),
        pts.get("jpeg2000"),
    )
    if d4 and d4[0] and d1 is not None:
        ref = d1.results[metric][0]
        summary["goals"].append(
            {
                "goal": f"D4 {metric} at least that of D1 (no compression) − 1 point",
                "met": d4[1][0] >= ref - 0.01,
                "why": f"D4 {d4[1][0]:.4f} at {d4[0][0]:.4f} bpp vs D1 {ref:.4f}",
            }
        )
    if d4 and d4[0] and j2k and j2k[0]:
        (row,) = bit_ratios(d4, j2k)
        summary["goals"].append(
            {
                "goal": f"D4 needs ≤ 0.1× the bits of JPEG 2000 at equal {metric}",
                "met": all_verdicts([ratio_verdict(row, 0.1)]),
                "why": f"D4 {row['bpp']:.4f} bpp vs JPEG 2000 {row['anchor_bpp']:.4f} bpp at "
                f"{metric} {row['value']:.4f}: {_fmt_ratio(row)}",
                "ratios": [row],
            }
        )
    return summary


def bd_rows(results: Path, metrics: Sequence[str]) -> list[dict[str, str]]:
    """The rows of ``mvmic curves``' BD table (``curves/bd_rate.csv``) for ``metrics``."""
    import csv

    path = results / "curves" / "bd_rate.csv"
    if not path.is_file():
        return []
    with path.open() as f:
        return [row for row in csv.DictReader(f) if row["metric"] in metrics]


def format_summary(part: Part | GanPart, summary: dict[str, Any]) -> str:
    metric = summary["metric"]
    lines = [f"### {part.name}: {metric} against bpp (bpp measured from real bitstreams)", ""]
    lines += [f"| method | bpp | {metric} | PSNR |", "|---|---|---|---|"]
    for name, cols in summary["methods"].items():
        bpp = cols.get("bpp") or []
        rows = zip(bpp, cols.get(metric) or [], cols.get("psnr") or [None] * len(bpp))
        cells = [
            (f"{b:.4f}", f"{v:.4f}", "–" if p is None or not math.isfinite(p) else f"{p:.2f}")
            for b, v, p in rows
        ]
        for b, v, p in cells:
            lines.append(f"| {name} | {b} | {v} | {p} |")
    if summary.get("bd"):
        anchor = summary["bd"][0]["anchor"]
        lines += ["", f"BD against `{anchor}` (`mvmic curves --envelope`, pchip):", ""]
        lines += [
            "| method | metric | points | BD-rate | BD-metric | note |",
            "|---|---|---|---|---|---|",
        ]
        for row in summary["bd"]:
            rate = f"{float(row['bd_rate_pct']):+.1f} %" if row["bd_rate_pct"] else "n/a"
            value = f"{float(row['bd_metric']):+.4f}" if row["bd_metric"] else "n/a"
            lines.append(
                f"| {row['method']} | {row['metric']} | {row['n_points']} | {rate} | {value} "
                f"| {row['note']} |"
            )
    lines += ["", "| goal | met | measured |", "|---|---|---|"]
    for g in summary["goals"]:
        met = {True: "yes", False: "**no**", None: "n/a"}.get(g["met"], g["met"])
        lines.append(f"| {g['goal']} | {met} | {g['why']} |")
    return "\n".join(lines) + "\n"


def machine() -> str:
    """One line: CPU model and cores, torch build, date."""
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} cores, {gpu}; torch {torch.__version__}, "
        f"Python {platform.python_version()}; {time.strftime('%Y-%m-%d')}"
    )


README_BEGIN = "<!-- bench_rate_accuracy:begin (written by the tool; do not edit) -->"
README_END = "<!-- bench_rate_accuracy:end -->"


def update_readme(readme: Path, summary_md: str, figures: Path | None) -> None:
    """Replace the marked region of ``readme`` with the summary and the copied figures."""
    text = readme.read_text()
    if README_BEGIN not in text or README_END not in text:
        raise SystemExit(f"bench: {readme} has no {README_BEGIN} … {README_END} region")
    body = summary_md
    if figures is not None:
        rel = os.path.relpath(figures, readme.parent)
        body += "\n" + "\n".join(
            f"![{png.stem}]({rel}/{png.name})" for png in sorted(figures.glob("*.png"))
        )
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    readme.write_text(f"{head}{README_BEGIN}\n{body}\n{README_END}{tail}")


# -- main ---------------------------------------------------------------------------------------
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="dataset folder (default: a synthetic twin)")
    p.add_argument("--minutes", type=float, default=REFERENCE_MINUTES, help="time budget")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated: {PARTS}")
    p.add_argument("--out", default="runs/bench", help="output folder")
    p.add_argument("--fresh", action="store_true", help="delete --out first")
    p.add_argument(
        "--figures",
        default=None,
        help="also copy each part's rate–metric PNGs and summary.md here (e.g. docs/bench)",
    )
    p.add_argument(
        "--readme",
        default=None,
        help=f"rewrite the region between {README_BEGIN!r} and {README_END!r} of this file "
        "with the summary (and the --figures PNGs)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="PART.FIELD[.KEY]=VALUE",
        help="override a setting, repeatable: seg.stage1.freeze_task=true, gan.steps=500",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PART_SETTINGS]
    if unknown:
        print(f"bench: unknown parts {unknown}; choose from {list(PART_SETTINGS)}", file=sys.stderr)
        return 2
    try:
        settings = with_overrides(PART_SETTINGS, args.set)
    except ValueError as err:
        print(f"bench: {err}", file=sys.stderr)
        return 2
    if args.data and len(parts) != 1:
        print("bench: --data needs exactly one --parts (the dataset's family)", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    if args.fresh and out.exists():
        shutil.rmtree(out)
    runner = Runner(out)
    scale = args.minutes / REFERENCE_MINUTES
    t0 = time.perf_counter()
    report, blob = [], {"minutes": args.minutes, "parts": {}}
    for name in parts:
        part = settings[name]
        tp = time.perf_counter()
        part_out = out / name
        root = Path(args.data).resolve() if args.data else out / "data" / name
        if not args.data:
            runner.mvmic(
                "synth", part.synth, "--out", str(root), *part.synth_args,
                done=root / "DONE",
            )  # fmt: skip
        if isinstance(part, GanPart):
            results = run_gan_part(part, runner, root, part_out, scale)
            summary = summarize_gan(part, results)
        else:
            results = run_codec_part(part, runner, root, part_out, scale)
            summary = summarize(part, results)
        summary["bd"] = bd_rows(results, [part.metric])
        summary["wall_s"] = round(time.perf_counter() - tp, 1)
        blob["parts"][name] = summary
        if args.figures:
            figures = Path(args.figures)
            figures.mkdir(parents=True, exist_ok=True)
            for png in sorted((results / "curves").glob(f"*_{part.metric}.png")):
                shutil.copy(png, figures / f"{name}_{png.name}")
        report.append(format_summary(part, summary) + f"\nwall time: {summary['wall_s']:.0f} s\n")
    wall = time.perf_counter() - t0
    blob["wall_s"] = round(wall, 1)
    command = "python tools/bench_rate_accuracy.py " + shlex.join(argv or sys.argv[1:])
    header = f"command: `{command.strip()}`  \nmachine: {machine()}\n\n"
    text = header + "\n".join(report)
    text += f"\ntotal wall time: {wall:.0f} s ({wall / 60:.1f} min)\n"
    (out / "summary.md").write_text(text)
    (out / "summary.json").write_text(json.dumps(blob, indent=1, default=float))
    if args.figures:
        shutil.copy(out / "summary.md", Path(args.figures) / "summary.md")
    if args.readme:
        update_readme(Path(args.readme), text, Path(args.figures) if args.figures else None)
    print("\n" + text)
    print(f"curves: {out}/<part>/results/curves/   summary: {out}/summary.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

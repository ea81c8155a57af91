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
* ``gan3d`` (HVSMR 2016 layout): D1, D2, D4 in 3D, and H.264 / HEVC videos of the slices and
  JPEG 2000 per slice through D1's segmentor; Liu et al.'s Table 1 per test volume.

Every step is a plain ``mvmic`` command on a config written under ``OUT/<part>/configs/`` (a copy
of ``configs/<name>.yaml`` with the benchmark's sizes and step budgets), printed before it runs and
saved to ``OUT/commands.sh``. Re-running the same command skips finished steps (``DONE``
markers; ``mvmic sweep`` resumes its own). At the end it prints and writes
``OUT/summary.md`` / ``summary.json``: per method the measured points, BD-rates at equal task
accuracy, the bit ratio at equal accuracy per point, and each goal as met, not met, or
undetermined (a point beyond the anchor's measured range leaves its ratio open).

    python tools/bench_rate_accuracy.py                       # all parts: <= 60 min on 2 cores
    python tools/bench_rate_accuracy.py --parts seg --minutes 20
    python tools/bench_rate_accuracy.py --parts seg --data /data/CVC-ColonDB
"""

import argparse
import json
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mvmic.evaluation.bench_bases import base_lmbdas, train_base_codecs
from mvmic.evaluation.bench_report import (
    BENCHMARKS_PAGE,
    README_BEGIN,
    README_END,
    format_summary,
    joined_summary,
    machine,
    part_sections,
    readme_region,
    update_readme,
    with_provenance,
)
from mvmic.evaluation.bench_settings import (
    DET,
    PART_SETTINGS,
    PARTS,
    REFERENCE_MINUTES,
    SEG,
    GanPart,
    Part,
    data_channels,
    scaled_steps,
    with_overrides,
    write_config,
    write_mse_stage2,
)
from mvmic.evaluation.calibration import bench_grid
from mvmic.evaluation.goals import (
    all_verdicts,
    bd_rows,
    bit_ratios,
    rate_at,
    ratio_verdict,
    summarize,
    summarize_gan,
)
from mvmic.evaluation.liu_table import write_liu_tables
from mvmic.evaluation.runner import Runner

REPO = Path(__file__).resolve().parents[2]
# The bench's parts re-exported: tests and callers use ``bench.SEG``, ``bench.summarize``, ...
__all__ = [
    "BENCHMARKS_PAGE", "DET", "PARTS", "PART_SETTINGS", "README_BEGIN", "README_END", "SEG",
    "GanPart", "Part", "Runner", "all_verdicts", "bit_ratios", "build_parser", "format_summary",
    "main", "rate_at", "ratio_verdict", "summarize", "summarize_gan", "update_readme",
    "with_overrides", "write_config",
]  # fmt: skip


# -- the learned-vs-standard pipeline (seg, det) ------------------------------------------------
def run_codec_part(part: Part, runner: Runner, root: Path, out: Path, scale: float) -> Path:
    """Task net → MSE codecs → MVMICNet stages 1+2 → anchors → curves. Returns the results dir."""
    results = out / "results"
    cfgs = out / "configs"
    group = f"bench-{part.name}"
    data = {**part.data, "root": str(root)}
    # Grey data (CT, X-ray, MR) gets 1-channel codecs and task nets, RGB data 3-channel ones.
    channels = data_channels(part.task_config, data)
    data["in_channels"] = channels
    common = {"results_dir": str(results), "in_channels": channels}

    def sweep(config: Path, lmbdas: Sequence[float], root: Path, *flags: str) -> None:
        values = ",".join(f"{v:g}" for v in lmbdas)
        runner.mvmic(
            "sweep", "--config", str(config), *flags, "--lmbda", values, "--root", str(root),
            "--results_dir", str(results), "--group", group, "--no_wandb",
            "--ckpt", "best" if part.stage_validations else "last",
            "--jobs", str(part.sweep_jobs),
        )  # fmt: skip

    task_dir = out / "task"
    task_cfg = write_config(
        part.task_config,
        cfgs / "task.yaml",
        model={**part.task_model, **common},
        data=data,
        max_steps=scaled_steps(part.steps["task"], scale),
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

    # Each stage hands on (and is tested with) its last checkpoint; with stage_validations 2,
    # its best of two on the validation set (short runs swing by points from epoch to epoch).
    # MSE base codec(s) trained long (codec-only steps are cheap; mvmic.evaluation.bench_bases):
    # every learned codec below starts from one and gets the same number of steps, so MSE and
    # MVMICNet are compared fairly.
    mse_model = {**part.codec_model, **common, **part.mse, "init_task": str(task_ckpt)}
    bases = train_base_codecs(part, runner, cfgs, out, mse_model, data, scale, group)
    init_codec = bases[len(bases) // 2]  # the configs' own; a ladder's sweeps pass one per λ
    per_lmbda = ("--init_codec", *map(str, bases)) if part.base_ladder else ()

    mse_cfg = write_config(
        part.mse_config,
        cfgs / "codec_mse.yaml",
        model={**mse_model, "init_codec": str(init_codec)},
        data=data,
        max_steps=scaled_steps(part.steps["mse"], scale),
        run_dir=None,
        group=group,
        validations=part.stage_validations,
    )
    mse_codec = write_mse_stage2(part, mse_cfg, common, data, scale, group)
    mse_lmbdas, lmbdas = part.mse_lmbdas, part.lmbdas
    if part.calibrate:  # short runs pick grids that reach the knee (printed with why)
        mse_lmbdas = bench_grid(runner, mse_cfg, mse_codec, mse_lmbdas, part.metric, out, group)
    sweep(mse_cfg, mse_lmbdas, out / "mse", "--test_every_stage", *per_lmbda)

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
        max_steps=scaled_steps(part.steps["stage1"], scale),
        run_dir=None,
        group=group,
        validations=part.stage_validations,
    )
    s2_base = part.codec_config.replace(".yaml", "_stage2.yaml")
    s2_model = {k: v for k, v in part.stage1.items() if k not in ("lr", "task_lr")}
    write_config(
        s2_base,
        cfgs / "mvmicnet_stage2.yaml",  # found by `mvmic sweep` beside mvmicnet.yaml
        model={**part.codec_model, **common, **s2_model, **part.stage2},
        data=data,
        max_steps=scaled_steps(part.steps["stage2"], scale),
        run_dir=None,
        group=group,
        validations=part.stage_validations,
    )
    if part.calibrate:
        lmbdas = bench_grid(runner, s1_cfg, "MVMICNet stage 1", lmbdas, part.metric, out, group)
    sweep(s1_cfg, lmbdas, out / "mvmicnet", "--test_every_stage", *per_lmbda)

    anchor_args = ["--qualities", part.anchor_qualities] if part.anchor_qualities else []
    runner.mvmic(
        "anchors", "--config", str(task_cfg), "--ckpt_path", str(task_ckpt),
        "--codecs", part.anchors, *anchor_args, "--results_dir", str(results), "--no_curves",
        # fair anchors: each codec also gets a task net fine-tuned with stage 2's budget
        "--finetune", str(scaled_steps(part.steps["stage2"], scale)),
        "--finetune_lr", f"{part.stage2.get('lr', 1e-4):g}",
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
    data = {**part.data, "root": str(root)}
    channels = part.channels or data_channels(part.config, data)
    if part.channels is None:  # 2D modules read grey or RGB as detected
        data["in_channels"] = channels
    plan: dict[str, list[tuple[tuple[str, ...], Path]]] = {}  # each design's fit and test
    for design in part.designs:
        run_dir = out / design.lower()
        init = {"init_from": str(last[part.init_from[design]])} if design in part.init_from else {}
        steps = part.d4_steps if design == "D4" and part.d4_steps else part.steps
        cfgs[design] = write_config(
            part.config,
            out / "configs" / f"{design.lower()}.yaml",
            overlays=[part.overlay(design)],
            model={
                **part.model,
                **part.design_model.get(design, {}),
                **init,
                "results_dir": str(results),
                "in_channels": channels,
            },
            data=data,
            max_steps=scaled_steps(steps, scale),
            run_dir=run_dir,
            group=group,
            validations=part.validations,
        )
        test = ("test", "--config", str(cfgs[design]), "--ckpt_path", str(last[design]))
        plan[design] = [
            (("fit", "--config", str(cfgs[design])), run_dir / "DONE"),
            (test, out / f"{design.lower()}_test" / "DONE"),
        ]
    ref = part.designs[0]
    qualities = ("--qualities", part.anchor_qualities) if part.anchor_qualities else ()
    anchors = (
        "anchors", "--config", str(cfgs[ref]), "--ckpt_path", str(last[ref]),
        "--codecs", part.anchors, *qualities, "--results_dir", str(results), "--no_curves",
    )  # fmt: skip
    plan[ref].append((anchors, out / "anchors" / "DONE"))
    # A design that starts from another (D4 from D2) runs after it, in its chain; the chains
    # (D1 then the anchors through it; D2 then D4) run side by side.
    chains: dict[str, list[tuple[tuple[str, ...], Path]]] = {}
    for design in part.designs:
        head = design
        while head in part.init_from:
            head = part.init_from[head]
        chains.setdefault(head, []).extend(plan[design])
    if part.side_by_side:
        runner.side_by_side(list(chains.values()))
    else:
        for chain in chains.values():
            for args, done in chain:
                runner.mvmic(*args, done=done)
    runner.mvmic(
        "curves", str(results), "--anchor", part.anchor, "--envelope", "--wandb",
        "--wandb_group", group, "--wandb_dir", str(out),
    )  # fmt: skip
    return results


def part_wall(part_out: Path, elapsed: float) -> float:
    """A part's wall time over every run of this command on ``part_out``: a run that resumes
    after an interruption adds its own time to what ``part_out/wall_s`` holds."""
    path = part_out / "wall_s"
    total = (float(path.read_text()) if path.is_file() else 0.0) + elapsed
    path.write_text(f"{total:.1f}\n")
    return total


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
        nargs="?",
        const=str(BENCHMARKS_PAGE),
        default=None,
        help=f"rewrite the region between {README_BEGIN!r} and {README_END!r} of this file "
        "(default docs/benchmarks.md) with the summary (and the --figures PNGs)",
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
        for name in parts:  # a ladder that cannot pair its grids is said before anything runs
            if isinstance(settings[name], Part):
                base_lmbdas(settings[name])
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
    command = "python tools/bench_rate_accuracy.py " + shlex.join(argv or sys.argv[1:])
    command, machine_line = command.strip(), machine()
    report: dict[str, str] = {}
    blob: dict[str, Any] = {"minutes": args.minutes, "parts": {}}
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
            # 3D: Liu et al.'s Table 1 (per test volume) of the designs and the anchor
            names = [f"liu2020-{d.lower()}" for d in part.designs] + [part.anchor]
            for path in write_liu_tables(results, part_out / "liu_table", names):
                summary["liu_table"] = path.read_text().split("\n", 2)[-1]
        else:
            results = run_codec_part(part, runner, root, part_out, scale)
            summary = summarize(part, results)
        summary["bd"] = bd_rows(results, [part.metric])
        summary["wall_s"] = round(part_wall(part_out, time.perf_counter() - tp), 1)
        blob["parts"][name] = summary
        if args.figures:
            figures = Path(args.figures)
            figures.mkdir(parents=True, exist_ok=True)
            for png in sorted((results / "curves").glob(f"*_{part.metric}.png")):
                shutil.copy(png, figures / f"{name}_{png.name}")
        table = ""
        if "liu_table" in summary:
            table = f"\nper test volume (Liu et al.'s Table 1 layout):\n\n{summary['liu_table']}"
        wall = f"\nwall time: {summary['wall_s']:.0f} s\n"
        section = format_summary(part, summary) + table + wall
        report[name] = with_provenance(section, command, machine_line)
    # a resumed run adds to the parts' earlier time (part_wall), so the total is theirs
    blob["wall_s"] = round(sum(p["wall_s"] for p in blob["parts"].values()), 1)
    text = joined_summary(report, PARTS)
    (out / "summary.md").write_text(text)
    (out / "summary.json").write_text(json.dumps(blob, indent=1, default=float))
    if args.readme:
        # the parts run now replace theirs; the page keeps the other parts' sections as they were
        page = joined_summary({**part_sections(readme_region(Path(args.readme))), **report}, PARTS)
        update_readme(Path(args.readme), page, Path(args.figures) if args.figures else None)
        text = page
    if args.figures:
        (Path(args.figures) / "summary.md").write_text(text)
    print("\n" + text)
    print(f"curves: {out}/<part>/results/curves/   summary: {out}/summary.md")
    return 0

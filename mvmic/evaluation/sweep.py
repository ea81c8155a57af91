"""``mvmic sweep``: stage 1 → stage 2 → test for each λ, then the curves.

Each step is its own Lightning run in a subprocess (``python -m mvmic.cli fit|test …``), so every
run starts clean. Layout under ``--root`` (default ``runs/sweep``)::

    <root>/<param>_<value>/stage1/   checkpoints/last.ckpt, csv/, wandb/, DONE
    <root>/<param>_<value>/stage2/   (init_from stage1/checkpoints/last.ckpt)
    <root>/<param>_<value>/test/     DONE; the point goes to <root>/results/<dataset>/<method>.json
    <root>/<param>_<value>/test_stage1/   only with ``--test_every_stage``: stage 1's own point
    <root>/results/curves/           PNGs + BD tables (mvmic curves)

A step with a ``DONE`` marker is skipped (a stage 1 started from an ``--init_codec`` file only
while that file is the one it started from: its path and mtime are in ``init_codec.txt``); a
step with a ``checkpoints/last.ckpt`` but no marker was interrupted and is resumed with
``--ckpt_path <that file>``; anything else starts fresh (old checkpoints in its folder are
deleted first). When a stage of a λ has to run, every later stage of that λ runs again too.

Which λ: ``--param lmbda_d`` (default) varies λ_d of ``L = R + λ_d·255²·MSE + λ_t·L_task``, as
CompressAI's grid (0.0018 … 0.0932) means it; ``--param lmbda_t`` the task weight instead.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mvmic.evaluation.run_dirs import trainer_overrides
from mvmic.evaluation.runner import (
    DONE,
    Lanes,
    is_done,
    mark_done,
    mvmic_argv,
    offline_env,
    run_mvmic,
)

PARAMS = ("lmbda_d", "lmbda_t")
CKPTS = ("last", "best")


@dataclass
class Step:
    """One Lightning run of the sweep."""

    value: float
    stage: str  # "stage1" | "stage2" | "test_stage1" | "test"
    run_dir: Path
    status: str  # "done" | "resume" | "todo"
    argv: list[str] = field(default_factory=list)
    input_ckpt: Path | None = None  # the upstream checkpoint it starts from or tests
    init_stamp: str | None = None  # the --init_codec file it starts from (path, mtime)

    @property
    def marker(self) -> Path:
        return self.run_dir / DONE

    @property
    def last_ckpt(self) -> Path:
        return self.run_dir / "checkpoints" / "last.ckpt"


def value_tag(param: str, value: float) -> str:
    """Folder name for one λ, e.g. ``lmbda_d_0.0067``."""
    return f"{param}_{value:g}"


INIT_STAMP = "init_codec.txt"  # in a stage-1 folder: the --init_codec file it started from


def _init_stamp(path: str) -> str | None:
    p = Path(path)
    return f"{p.resolve()} {p.stat().st_mtime_ns}" if p.is_file() else None


def _read(path: Path) -> str | None:
    return path.read_text() if path.is_file() else None


def step_status(run_dir: Path, stage: str) -> str:
    """``done`` (its marker exists), ``resume`` (a fit with a last checkpoint) or ``todo``."""
    if is_done(run_dir / DONE):
        return "done"
    if not stage.startswith("test") and (run_dir / "checkpoints" / "last.ckpt").is_file():
        return "resume"
    return "todo"


def _load_yaml(config: str) -> tuple[Path, dict[str, Any]]:
    """The config's path and its composed content (defaults and sub-files applied)."""
    from mvmic.cli import resolve_config
    from mvmic.cli_lightning import load_config

    return Path(resolve_config(config)), load_config(config)


def plan_sweep(
    config: str,
    values: Sequence[float],
    root: str | Path = "runs/sweep",
    param: str = "lmbda_d",
    stage2_config: str | None = None,
    results_dir: str | Path | None = None,
    group: str | None = None,
    extra: Sequence[str] = (),
    test_every_stage: bool = False,
    ckpt: str = "last",
    init_codec: Sequence[str] = (),
) -> list[Step]:
    """Every step of the sweep with its status and its ``mvmic`` argv (without the program).

    Args:
        config: stage-1 config (name in configs/ or path).
        values: the λ values.
        root: sweep folder.
        param: ``lmbda_d`` or ``lmbda_t``.
        stage2_config: stage-2 config; None runs stage 1 → test only (e.g. λ_t = 0 codecs).
        results_dir: results store (default ``<root>/results``).
        group: W&B group of every run (default: the root folder's name).
        extra: further ``--key value`` overrides for every run (e.g. ``--data.root …``).
        test_every_stage: also test each earlier stage's checkpoint (``test_stage1/``), so
            stage 1 and stage 2 of every λ land on the curves side by side.
        ckpt: which checkpoint of a stage is handed on, to the next stage and to its test:
            ``last`` or ``best`` (the config's ``ModelCheckpoint(filename="best", monitor=…)``,
            i.e. chosen on the validation set).
        init_codec: the codec checkpoint stage 1 starts from (``--model.init_codec``): one for
            every λ, or one per λ in ``values``' order (CompressAI's one model per quality, so
            each λ starts at its own rate); empty: the config's own. A stage 1 done or begun
            from another file (or an older copy of it) starts afresh.
    """
    if ckpt not in CKPTS:
        raise ValueError(f"--ckpt must be one of {CKPTS}, got {ckpt!r}")
    if param not in PARAMS:
        raise ValueError(f"--param must be one of {PARAMS}, got {param!r}")
    if not values:
        raise ValueError("give at least one λ value, e.g. --lmbda 0.0018,0.0067")
    if len(init_codec) not in (0, 1, len(values)):
        got = len(init_codec)
        raise ValueError(
            f"--init_codec: give one checkpoint or one per λ ({len(values)}), got {got}"
        )
    inits = list(init_codec) * len(values) if len(init_codec) == 1 else list(init_codec)
    root = Path(root)
    results_dir = Path(results_dir) if results_dir else root / "results"
    group = group or root.resolve().name
    s1_path, s1_cfg = _load_yaml(config)
    stages = [("stage1", s1_path, s1_cfg)]
    if stage2_config:
        s2_path, s2_cfg = _load_yaml(stage2_config)
        stages.append(("stage2", s2_path, s2_cfg))
    steps = []
    for n, value in enumerate(values):
        tag = value_tag(param, value)
        prev_ckpt: Path | None = None
        common = [f"--model.{param}", repr(float(value)), "--model.results_dir", str(results_dir)]
        upstream_done = True
        for i, (stage, path, cfg) in enumerate(stages):
            run_dir = root / tag / stage
            status = step_status(run_dir, stage)
            if not upstream_done:
                status = "todo"  # its input checkpoint is about to change: start it afresh
            stamp = None
            if inits and prev_ckpt is None:  # stage 1, from its own codec file
                stamp = _init_stamp(inits[n])
                if stamp is None and status != "done":
                    raise ValueError(f"--init_codec {inits[n]} is not a file")
                if stamp and status != "todo" and _read(run_dir / INIT_STAMP) != stamp:
                    status = "todo"  # it started from another codec (or an older copy of it)
            upstream_done = status == "done"
            argv = ["fit", "--config", str(path), *common]
            argv += trainer_overrides(cfg, run_dir, f"{tag}_{stage}", group)
            if prev_ckpt is not None:
                argv += ["--model.init_from", str(prev_ckpt)]
            elif inits:
                argv += ["--model.init_codec", str(inits[n])]
            argv += list(extra)
            if status == "resume":
                argv += ["--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt")]
            steps.append(Step(value, stage, run_dir, status, argv, prev_ckpt, stamp))
            prev_ckpt = run_dir / "checkpoints" / f"{ckpt}.ckpt"
            last = i == len(stages) - 1
            if last or test_every_stage:
                test_dir = root / tag / ("test" if last else f"test_{stage}")
                test_status = step_status(test_dir, "test") if upstream_done else "todo"
                argv = ["test", "--config", str(path), *common]
                argv += trainer_overrides(cfg, test_dir, f"{tag}_{test_dir.name}", group)
                argv += list(extra) + ["--ckpt_path", str(prev_ckpt)]
                steps.append(Step(value, test_dir.name, test_dir, test_status, argv, prev_ckpt))
    return steps


def run_step(
    step: Step,
    python: str = sys.executable,
    *,
    env: dict[str, str] | None = None,
    log: Path | None = None,
) -> int:
    """Run one step as ``python -m mvmic.cli …``; write its DONE marker if it succeeded.

    ``env``: its environment (default: this one, W&B offline); ``log``: where its output goes
    (default: this process's output)."""
    step.run_dir.mkdir(parents=True, exist_ok=True)
    step.marker.unlink(missing_ok=True)  # stale after an upstream stage re-ran
    if step.status == "todo":
        # A fresh start must not pick up checkpoints of an earlier, different run.
        for old in (step.run_dir / "checkpoints").glob("*.ckpt"):
            old.unlink()
    cmd = mvmic_argv(step.argv, python)
    (step.run_dir / "command.txt").write_text(" ".join(shlex.quote(a) for a in cmd) + "\n")
    rc = run_mvmic(step.argv, env=env or offline_env(), python=python, log=log)
    if rc == 0 and (step.stage.startswith("test") or step.last_ckpt.is_file()):
        if step.init_stamp is not None:
            (step.run_dir / INIT_STAMP).write_text(step.init_stamp)
        mark_done(step.marker)
    return rc


LOG = "output.log"  # a run's output in its folder when runs go side by side (``--jobs``)


def _run_chain(chain: list[Step], param: str, lanes: Lanes | None) -> bool:
    """One λ's steps in order; True if one failed. A training stage that fails blocks the
    stages after it (a failed test blocks nothing). With ``lanes`` it is one of several λ at
    once: each run on its share of the cores, its output in its folder's ``output.log``."""
    failed = False
    try:
        for step in chain:
            if step.status == "done":
                continue
            where = f" -> {step.run_dir / LOG}" if lanes else ""
            print(f"== {param}={step.value:g} {step.stage} ({step.status}){where}", flush=True)
            if step.input_ckpt is not None and not step.input_ckpt.is_file():
                print(
                    f"mvmic sweep: {step.stage} for {param}={step.value:g} needs "
                    f"{step.input_ckpt}, which the previous stage did not write; with --ckpt "
                    f"best its config needs a ModelCheckpoint(filename=best, monitor=...), or "
                    f"use --ckpt last",
                    file=sys.stderr,
                )
                rc = 1
            elif lanes:
                step.run_dir.mkdir(parents=True, exist_ok=True)
                env = offline_env(lanes.threads())
                rc = run_step(step, env=env, log=step.run_dir / LOG)
            else:
                rc = run_step(step)
            if rc == 0:
                continue
            print(
                f"mvmic sweep: {step.stage} for {param}={step.value:g} failed (exit {rc}); "
                f"see {step.run_dir}; re-run the same command to resume",
                file=sys.stderr,
            )
            if not step.stage.startswith("test"):
                return True  # the later stages of this λ need this one's checkpoint
            failed = True
        return failed
    finally:
        if lanes:
            lanes.finished()


def default_stage2(config: str) -> str | None:
    """``<name>_stage2.yaml`` beside the stage-1 config, if there is one."""
    from mvmic.cli import resolve_config

    path = Path(resolve_config(config))
    candidate = path.with_name(f"{path.stem}_stage2{path.suffix}")
    return str(candidate) if candidate.is_file() else None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mvmic sweep",
        description="Stage 1 -> stage 2 -> test for each λ (separate Lightning runs), then "
        "the curves. Unknown --key value options pass through to every run.",
    )
    add = p.add_argument
    # fmt: off
    add("--config", required=True, help="stage-1 config (e.g. colondb_seg.yaml)")
    add("--lmbda", required=True, help="comma-separated λ values")
    add("--param", choices=PARAMS, default="lmbda_d", help="which λ to vary")
    add("--stage2_config", default=None,
        help="stage-2 config (default: <config>_stage2.yaml if it exists)")
    add("--no_stage2", action="store_true", help="stage 1 -> test only")
    add("--test_every_stage", action="store_true",
        help="also test stage 1's checkpoint of every λ (stage 1 and 2 on the same curves)")
    add("--ckpt", choices=CKPTS, default="last",
        help="which checkpoint of each stage goes on to the next stage and to its test "
        "(best: chosen on the validation set by the config's monitored ModelCheckpoint)")
    add("--init_codec", nargs="+", default=[], metavar="CKPT",
        help="codec checkpoint(s) stage 1 starts from: one for all λ, or one per λ in --lmbda's "
        "order (e.g. a codec trained at each λ, as CompressAI's qualities)")
    add("--root", default="runs/sweep", help="sweep folder")
    add("--results_dir", default=None, help="results store (default ROOT/results)")
    add("--group", default=None, help="W&B group (default: ROOT's name)")
    add("--anchor", default=None, help="BD-rate anchor for the final curves")
    add("--no_wandb", action="store_true", help="do not log the final curves to W&B")
    add("--jobs", type=int, default=1,
        help="run this many λ at a time, the cores split between them (OMP_NUM_THREADS, "
        "unless set), each run's output in its folder's output.log")
    add("--dry_run", action="store_true", help="print the plan and the commands")
    # fmt: on
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``mvmic sweep``: see :func:`build_parser`."""
    args, extra = build_parser().parse_known_args(argv)
    if args.jobs < 1:
        print(f"mvmic sweep: --jobs must be 1 or more, got {args.jobs}", file=sys.stderr)
        return 2
    try:
        values = [float(v) for v in args.lmbda.split(",") if v.strip()]
    except ValueError:
        print(
            f"mvmic sweep: --lmbda must be numbers like 0.0018,0.0067, got {args.lmbda!r}",
            file=sys.stderr,
        )
        return 2
    stage2 = None if args.no_stage2 else (args.stage2_config or default_stage2(args.config))
    try:
        steps = plan_sweep(
            args.config, values, args.root, args.param, stage2, args.results_dir,
            args.group, extra, args.test_every_stage, args.ckpt, args.init_codec,
        )  # fmt: skip
    except ValueError as e:
        print(f"mvmic sweep: {e}", file=sys.stderr)
        return 2
    for step in steps:
        print(f"[{step.status:>6}] {args.param}={step.value:g} {step.stage}: {step.run_dir}")
    if args.dry_run:
        for step in steps:
            if step.status != "done":
                print("mvmic " + " ".join(shlex.quote(a) for a in step.argv))
        return 0
    chains: dict[float, list[Step]] = {}
    for step in steps:  # each λ's stages in order; the λ are independent of each other
        chains.setdefault(step.value, []).append(step)
    if args.jobs > 1:
        lanes = Lanes(len(chains), args.jobs)
        print(f"mvmic sweep: {args.jobs} λ at a time, {lanes.threads()} thread(s) each; each "
              f"run's output in its folder's {LOG}", flush=True)  # fmt: skip
        with ThreadPoolExecutor(args.jobs) as pool:
            runs = [pool.submit(_run_chain, chain, args.param, lanes) for chain in chains.values()]
            failed = any([run.result() for run in runs])
    else:
        failed = any([_run_chain(chain, args.param, None) for chain in chains.values()])
    results_dir = Path(args.results_dir) if args.results_dir else Path(args.root) / "results"
    if results_dir.is_dir():
        from mvmic.evaluation.curves import main as curves_main

        curves_args = [str(results_dir)] + (["--anchor", args.anchor] if args.anchor else [])
        curves_args += ["--draws", "0"]  # a quick redraw; `mvmic curves` adds the intervals
        if not args.no_wandb:
            group = args.group or Path(args.root).resolve().name
            curves_args += ["--wandb", "--wandb_group", group, "--wandb_dir", str(args.root)]
        curves_main(curves_args)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

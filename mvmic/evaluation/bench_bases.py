"""The benchmark's MSE base codecs: every learned codec of a part starts from one.

One shared base (``Part.base_lmbda``) leaves every λ of a short sweep near that base's rate:
on the seg part, 40 steps from it moved the MSE codec only over 0.05–0.10 bpp for λ from
0.0018 to 0.0932, and MVMICNet over 0.069–0.073 bpp. A ladder (``Part.base_ladder``) trains one
base per point of the MSE grid, as CompressAI ships one model per quality, and point i of the
MSE codec's and of MVMICNet's sweeps starts from base i (``mvmic sweep --init_codec``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mvmic.evaluation.bench_settings import Part, scaled_steps, write_config
from mvmic.evaluation.runner import DONE, Runner
from mvmic.evaluation.sweep import step_status, value_tag


def base_lmbdas(part: Part) -> list[float]:
    """The λ of each base codec: the MSE grid for a ladder, else the one ``base_lmbda``."""
    if not part.base_ladder:
        return [part.base_lmbda]
    if len(part.lmbdas) != len(part.mse_lmbdas):
        raise ValueError(
            f"{part.name}.base_ladder: point i of MVMICNet's grid starts from the base at the MSE "
            f"grid's point i, so both need as many points (lmbdas {part.lmbdas}, mse_lmbdas "
            f"{part.mse_lmbdas}); or set {part.name}.base_ladder=false"
        )
    tags = [value_tag("lmbda_d", v) for v in part.mse_lmbdas]
    if len(set(tags)) < len(tags):
        raise ValueError(f"{part.name}.mse_lmbdas {part.mse_lmbdas}: a λ repeats; give each once")
    if part.calibrate:
        raise ValueError(
            f"{part.name}.calibrate picks grids around one shared base codec; set "
            f"{part.name}.base_ladder=false with it"
        )
    return list(part.mse_lmbdas)


def train_base_codecs(
    part: Part,
    runner: Runner,
    cfgs: Path,
    out: Path,
    model: dict[str, Any],
    data: dict[str, Any],
    scale: float,
    group: str,
) -> list[Path]:
    """Fit the part's base codec(s) (``model`` at each base λ, ``part.steps["base"]`` steps)
    and return their last checkpoints, in the order of :func:`base_lmbdas`. A ladder's bases
    train ``part.sweep_jobs`` at a time, the cores split between them."""
    lmbdas = base_lmbdas(part)
    ladder = part.base_ladder
    runs: list[tuple[tuple[str, ...], Path]] = []
    ckpts = []
    for lmbda in lmbdas:
        tag = value_tag("lmbda_d", lmbda)
        run_dir = out / "codec_base" / tag if ladder else out / "codec_base"
        cfg = write_config(
            part.mse_config,
            cfgs / (f"codec_base_{tag}.yaml" if ladder else "codec_base.yaml"),
            model={**model, "lmbda_d": lmbda},
            data=data,
            max_steps=scaled_steps(part.steps["base"], scale),
            run_dir=run_dir,
            group=group,
            validations=part.stage_validations,
        )
        last = run_dir / "checkpoints" / "last.ckpt"
        # an interrupted base resumes (a fresh fit would write last-v1.ckpt beside the old one)
        resume = ("--ckpt_path", str(last)) if step_status(run_dir, "fit") == "resume" else ()
        runs.append((("fit", "--config", str(cfg), *resume), run_dir / DONE))
        ckpts.append(last)
    jobs = max(1, min(part.sweep_jobs, len(runs)))
    if jobs == 1:
        for args, done in runs:
            runner.mvmic(*args, done=done)
    else:
        runner.side_by_side([runs[i::jobs] for i in range(jobs)])
    return ckpts

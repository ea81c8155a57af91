"""Rate curves and the BD table logged to Weights & Biases (offline unless told otherwise)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from mvmic.evaluation.methods import DEFAULT_METRICS, METRIC_LABELS
from mvmic.evaluation.plots import CurvesResult


def log_curves_to_wandb(
    result: CurvesResult,
    run: Any = None,
    project: str = "mvmic",
    group: str | None = None,
    wandb_dir: str | Path | None = None,
) -> str | None:
    """Log the curves as ``wandb.Table`` s with line plots, and the BD table.

    Uses the active run (or ``run``); otherwise starts a ``job_type="curves"`` run in offline
    mode unless ``WANDB_MODE`` says otherwise, so it never blocks on the network. Upload later
    with ``wandb sync <wandb_dir>/wandb/offline-run-*``.

    Returns:
        The run's local directory (where the offline files are), or None if wandb is missing.
    """
    try:
        import wandb
    except ImportError:
        print("wandb not installed; skipping the W&B curves", file=sys.stderr)
        return None
    own = False
    run = run or wandb.run
    if run is None:
        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ.setdefault("WANDB_SILENT", "true")
        run = wandb.init(
            project=project,
            group=group or os.environ.get("WANDB_RUN_GROUP"),
            job_type="curves",
            dir=str(wandb_dir) if wandb_dir else None,
            settings=wandb.Settings(console="off"),
        )
        own = True
    rows = []
    logs: dict[str, Any] = {}
    for dataset, methods in result.methods.items():
        metrics = sorted({c.metric for c in result.cells if c.dataset == dataset})
        metrics = metrics or [k for k in DEFAULT_METRICS if any(k in m.results for m in methods)]
        for metric in metrics:
            xs, ys, keys = [], [], []
            for m in methods:
                rates, values = m.points(metric)
                if not rates:
                    continue
                xs.append(rates)
                ys.append(values)
                keys.append(m.name)
                rows += [[dataset, m.name, m.anchor, metric, r, v] for r, v in zip(rates, values)]
            if keys:
                logs[f"curves/{dataset}/{metric}"] = wandb.plot.line_series(
                    xs=xs,
                    ys=ys,
                    keys=keys,
                    title=f"{dataset}: {METRIC_LABELS.get(metric, metric)} vs bpp",
                    xname="bpp",
                )
    logs["curves/table"] = wandb.Table(
        columns=["dataset", "method", "anchor", "metric", "bpp", "value"], data=rows
    )
    logs["curves/bd_rate"] = wandb.Table(
        columns=[
            "dataset",
            "anchor",
            "method",
            "metric",
            "n_points",
            "bd_rate_pct",
            "bd_metric",
            "note",
        ],
        data=[
            [c.dataset, c.anchor, c.method, c.metric, c.n_points, c.bd_rate, c.bd_metric, c.note]
            for c in result.cells
        ],
    )
    run.log(logs)
    run_dir = str(Path(run.dir).parent)
    if own:
        run.finish()
    return run_dir


def log_images_to_wandb(
    images: dict[str, Path],
    project: str = "mvmic",
    wandb_dir: str | Path | None = None,
    job_type: str = "figures",
) -> str | None:
    """Log PNG files as ``wandb.Image`` media under their keys, in a run of their own
    (offline unless ``WANDB_MODE`` says otherwise). Returns the run's local directory."""
    try:
        import wandb
    except ImportError:
        print("wandb not installed; skipping the W&B images", file=sys.stderr)
        return None
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    run = wandb.init(
        project=project,
        job_type=job_type,
        dir=str(wandb_dir) if wandb_dir else None,
        settings=wandb.Settings(console="off"),
    )
    run.log({key: wandb.Image(str(path)) for key, path in images.items()})
    run_dir = str(Path(run.dir).parent)
    run.finish()
    return run_dir

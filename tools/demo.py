"""The end-to-end demo behind `make demo`: synthetic data -> stage 1 -> stage 2 -> test.

Runs, each as its own `mvmic` command (printed before it runs, so you can repeat any step):
  1. mvmic synth colondb            the synthetic CVC-ColonDB twin (PraNet layout)
  2. mvmic fit  demo_task.yaml      U-Net on uncompressed images (reference + initialiser)
  3. mvmic fit  demo_codec_mse.yaml the plain MSE codec (lambda_t = 0)
  4. mvmic fit  demo.yaml           MVMICNet stage 1 (from 2 and 3)
  5. mvmic fit  demo_stage2.yaml    MVMICNet stage 2 (from 4)
  6. mvmic test                     each of them, with bpp from real bitstreams
  7. mvmic anchors                  JPEG, JPEG 2000, WebP, HEVC through the same U-Net
  8. mvmic curves                   rate curves (learned and standard codecs) + BD-rate table
  9. mvmic report                   one HTML page: curves, BD tables, comparison panels, bit maps
and prints the results table and where the records, curves and image panels are.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from mvmic.evaluation.runner import run_mvmic

RUNS = Path("runs/demo")
DATA = Path("data/demo/CVC-ColonDB-synth")
STEPS = [
    ("demo_task", "best.ckpt"),
    ("demo_codec_mse", "last.ckpt"),
    ("demo", "last.ckpt"),
    ("demo_stage2", "best.ckpt"),
]


def mvmic(*args: str) -> None:
    print("\n$ mvmic " + shlex.join(args), flush=True)
    run_mvmic(args, check=True)


def _cell(results: dict, key: str, fmt: str) -> str:
    value = results.get(key, [None])[-1]
    width = int(fmt.split(".")[0])
    return format(value, fmt) if isinstance(value, (int, float)) else "-".rjust(width)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=240, help="synthetic images")
    parser.add_argument("--quick", action="store_true", help="one short epoch per stage")
    args = parser.parse_args()
    t0 = time.perf_counter()
    extra = []
    if args.quick:
        extra = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3"]
    if not DATA.is_dir():
        mvmic("synth", "colondb", "--out", str(DATA), "--num", str(args.num), "--size", "64")
    for name, _ in STEPS:
        mvmic("fit", "--config", f"{name}.yaml", *extra)
    for name, ckpt in STEPS:
        mvmic(
            "test",
            "--config",
            f"{name}.yaml",
            "--ckpt_path",
            str(RUNS / name / "checkpoints" / ckpt),
        )
    results = RUNS / "results" / "colondb"
    rows = []
    for path in sorted(results.glob("*.json")):
        record = json.loads(path.read_text())
        rows.append((record["name"], record["results"]))
    print("\nmethod                bpp (real)  bpp (est)   PSNR   MS-SSIM   mIoU    Dice")
    for name, r in rows:
        cells = [
            _cell(r, key, fmt)
            for key, fmt in (
                ("bpp", "10.4f"),
                ("bpp_est", "10.4f"),
                ("psnr", "6.2f"),
                ("ms-ssim", "9.4f"),
                ("miou", "7.4f"),
                ("dice", "7.4f"),
            )
        ]
        print(f"{name:<20} " + " ".join(cells))
    mvmic("anchors", "--config", "demo_task.yaml",
          "--ckpt_path", str(RUNS / "demo_task" / "checkpoints" / "best.ckpt"),
          "--codecs", "jpeg,jpeg2000,webp,hevc", "--results_dir", str(results.parent),
          "--no_curves")  # fmt: skip
    mvmic("curves", str(results.parent), "--anchor", "hevc")
    report = RUNS / "report.html"
    mvmic("report", str(results.parent), "--out", str(report), "--anchor", "hevc")
    by_name = dict(rows)
    s1 = by_name.get("MVMICNet stage 1", {}).get("miou", [None])[-1]
    s2 = by_name.get("MVMICNet stage 2", {}).get("miou", [None])[-1]
    if s1 is not None and s2 is not None:
        verdict = "≥" if s2 >= s1 else "<"
        print(f"\nstage 2 mIoU {s2:.4f} {verdict} stage 1 mIoU {s1:.4f}")
    print(
        f"\nrecords:  {results}/\npanels:   {RUNS}/*/csv/version_*/images/\n"
        f"report:   {report.resolve()} (one HTML page: curves, BD tables, panels, bit maps)\n"
        f"W&B:      {RUNS}/*/wandb/ (offline; `wandb sync <run dir>` uploads)\n"
        f"wall time: {time.perf_counter() - t0:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Synthetic twins: small generated datasets in the real datasets' public layouts.

``mvmic synth FAMILY --out DIR [--num N] [--size S] [--seed K]``.
"""

from __future__ import annotations

import argparse
import time
from importlib import import_module
from pathlib import Path

#: family -> "module:function"; each writes the public layout of its dataset.
GENERATORS = {
    "colondb": "data_modules.synthetic.colondb:generate",
    "chestxdet": "data_modules.synthetic.chestxdet:generate",
    "isic2017": "data_modules.synthetic.isic:generate",
    "hvsmr": "data_modules.synthetic.hvsmr:generate",
}
DEFAULTS = {"colondb": (380, 256), "chestxdet": (60, 256), "isic2017": (60, 128), "hvsmr": (6, 64)}


def generate(
    family: str, out: str | Path, num: int | None = None, size: int | None = None, seed: int = 0
) -> Path:
    if family not in GENERATORS:
        raise ValueError(f"unknown dataset family {family!r}; choose one of {sorted(GENERATORS)}")
    module, fn = GENERATORS[family].split(":")
    d_num, d_size = DEFAULTS[family]
    out = Path(out)
    getattr(import_module(module), fn)(out, num or d_num, size or d_size, seed)
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="mvmic synth", description="Write a synthetic twin of a dataset in its public layout."
    )
    parser.add_argument("family", choices=sorted(GENERATORS))
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--num", type=int, default=None, help="number of images/volumes")
    parser.add_argument("--size", type=int, default=None, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    out = generate(args.family, args.out, args.num, args.size, args.seed)
    print(f"wrote synthetic {args.family} to {out} in {time.perf_counter() - t0:.1f}s")
    return 0

"""Synthetic twins: small generated datasets in the real datasets' public layouts.

``mvmic synth FAMILY --out DIR [--num N] [--size S] [--seed K] [--bit_depth 8|16]``.
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
#: families whose twin can be written at 16 bits (ISIC is JPEG, HVSMR float NIfTI)
BIT_DEPTHS = {"colondb": (8, 16), "chestxdet": (8, 16), "isic2017": (8,), "hvsmr": (8,)}


def generate(
    family: str,
    out: str | Path,
    num: int | None = None,
    size: int | None = None,
    seed: int = 0,
    bit_depth: int = 8,
) -> Path:
    """Write the synthetic twin of ``family`` into ``out``.

    Args:
        family: one of :data:`GENERATORS`.
        out: output folder.
        num: images (volumes for hvsmr); None: the family's default.
        size: image side in pixels; None: the family's default.
        seed: random seed (>= 0).
        bit_depth: 8, or 16 for colondb and chestxdet.

    Returns:
        ``out`` as a Path.

    Raises:
        ValueError: for an unknown family or a value out of range, naming it.
    """
    if family not in GENERATORS:
        raise ValueError(f"unknown dataset family {family!r}; choose one of {sorted(GENERATORS)}")
    d_num, d_size = DEFAULTS[family]
    # None means "default"; 0 is a value like any other (and refused below).
    num = d_num if num is None else num
    size = d_size if size is None else size
    for name, value, least in (("num", num, 1), ("size", size, 8), ("seed", seed, 0)):
        if value < least:
            raise ValueError(f"--{name} must be at least {least} ({family} twin), got {value}")
    if bit_depth not in BIT_DEPTHS[family]:
        raise ValueError(
            f"--bit_depth {bit_depth} is not available for the {family} twin; "
            f"it is written at {' or '.join(map(str, BIT_DEPTHS[family]))} bits"
        )
    module, fn = GENERATORS[family].split(":")
    out = Path(out)
    extra = {"bit_depth": bit_depth} if len(BIT_DEPTHS[family]) > 1 else {}
    getattr(import_module(module), fn)(out, num, size, seed, **extra)
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
    parser.add_argument(
        "--bit_depth", type=int, default=8, help="8, or 16 for colondb and chestxdet PNGs"
    )
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    out = generate(args.family, args.out, args.num, args.size, args.seed, args.bit_depth)
    print(f"wrote synthetic {args.family} to {out} in {time.perf_counter() - t0:.1f}s")
    return 0

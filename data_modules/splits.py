"""Seeded, saved train/val/test splits for datasets without an official one."""

from __future__ import annotations

import json
import random
from pathlib import Path


def make_split(
    names: list[str], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[str]]:
    """Shuffle ``names`` with ``seed`` and cut them into train/val/test (val, test ≥ 1 each)."""
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ValueError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} must be in [0, 1) "
            "and sum to less than 1"
        )
    order = sorted(names)
    random.Random(seed).shuffle(order)
    n = len(order)
    n_test = max(1, round(n * test_fraction)) if test_fraction > 0 else 0
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
    if n_test + n_val >= n:
        raise ValueError(f"{n} samples are too few for a train/val/test split")
    return {
        "train": sorted(order[n_test + n_val :]),
        "val": sorted(order[n_test : n_test + n_val]),
        "test": sorted(order[:n_test]),
    }


def load_split(path: str | Path, names: list[str]) -> dict[str, list[str]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file {path} does not exist")
    split = json.loads(path.read_text())
    known = set(names)
    for part in ("train", "val", "test"):
        missing = [n for n in split.get(part, []) if n not in known]
        if missing:
            raise ValueError(f"{path}: {part} names not in the dataset: {missing[:5]}")
    return split


def save_split(split: dict[str, list[str]], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(split, indent=1))

"""Reproducible albumentations: each sample's augmentation seed comes from torch's RNG."""

from __future__ import annotations

from typing import Any

import albumentations as A
import torch


def apply_seeded(transform: A.Compose, **data: Any) -> dict[str, Any]:
    """Run ``transform`` with a seed drawn from torch's global RNG.

    albumentations ≥ 2 keeps its own random state and ignores global seeds, so two runs with the
    same ``seed_everything`` would augment differently. Drawing the seed from torch makes the
    augmentations follow Lightning's seeding, DataLoader workers' per-worker seeds, and an RNG
    state restored from a checkpoint.
    """
    transform.set_random_seed(int(torch.randint(0, 2**31 - 1, ()).item()))
    return transform(**data)

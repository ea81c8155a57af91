"""Pad to a network's stride and crop back: shared by codecs and task networks."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def pad_to_multiple(x: Tensor, stride: int) -> tuple[Tensor, tuple[int, int]]:
    """Pad ``x`` (…×H×W) on the bottom/right to a multiple of ``stride``.

    Replicate padding keeps the border flat, which costs fewer bits than zeros and gives a
    segmentor no false edge. Returns the padded tensor and the original (H, W).
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % stride, (-w) % stride
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, (h, w)


def crop(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Undo :func:`pad_to_multiple`."""
    return x[..., : size[0], : size[1]]

"""A light analysis side (g_a, h_a) for an asymmetric hyperprior codec.

The edge device runs only the analysis transforms; the server runs the synthesis. CompressAI's
g_a spends ~42 k multiply-adds per pixel (four 5×5 convolutions with GDN at N = 128) where the
decoder-side hyperprior h_s that the encoder also needs costs ~6 k. This g_a reaches the same
stride-16 latent ``y`` (M channels) with non-overlapping strided convolutions and depthwise 3×3
refinements, about 1 k multiply-adds per pixel at N = 128, M = 192, and h_a reaches ``z`` at
stride 64 the same way. Both are plain Conv2d + ReLU, so int8 static quantization applies to
them as a whole. The synthesis (g_s, h_s) and the entropy models are CompressAI's, unchanged:
the file format and the decoder are those of the full codec of the same name and widths.
"""

from __future__ import annotations

from torch import nn

#: analysis transforms a hyperprior codec can be built with
ANALYSES = ("full", "light")


def _refine(channels: int) -> nn.Module:
    """A depthwise 3×3 convolution: spatial context for ~9 multiply-adds per channel."""
    return nn.Conv2d(channels, channels, 3, padding=1, groups=channels)


def light_g_a(in_channels: int, N: int, M: int) -> nn.Sequential:
    """Image (C×H×W) -> ``y`` (M×H/16×W/16): a 4×4 patch stem, then two 2×2 stride-2 steps."""
    stem = max(N // 2, 16)
    return nn.Sequential(
        nn.Conv2d(in_channels, stem, 4, stride=4),
        nn.ReLU(inplace=True),
        _refine(stem),
        nn.ReLU(inplace=True),
        nn.Conv2d(stem, N, 2, stride=2),
        nn.ReLU(inplace=True),
        _refine(N),
        nn.ReLU(inplace=True),
        nn.Conv2d(N, M, 2, stride=2),
    )


def light_h_a(N: int, M: int) -> nn.Sequential:
    """``y`` (M×h×w) -> ``z`` (N×h/4×w/4), the stride of CompressAI's h_a."""
    return nn.Sequential(
        nn.Conv2d(M, N, 2, stride=2),
        nn.ReLU(inplace=True),
        nn.Conv2d(N, N, 2, stride=2),
    )

"""The SegAN-style multi-scale critic D (Xue et al. 2018; Liu et al. 2020), 2D and 3D.

D embeds a label map — the segmentor's class probabilities or the one-hot ground truth — with
a few strided convolutions and returns the features of *every* layer, flattened and
concatenated. The multi-scale L1 distance between the embeddings of prediction and ground truth
is ``loss_dis`` (:func:`mvmic.losses.multiscale_l1`): the segmentor minimizes it, D
maximizes it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

CRITIC_INPUTS = ("label", "masked_image")


class Critic(nn.Module):
    """Multi-scale critic.

    Args:
        num_classes: K, channels of the label map.
        image_channels: image channels (used when ``critic_input="masked_image"``).
        dims: 2 (B×K×H×W) or 3 (B×K×D×H×W).
        channels: output channels of the strided 4×4 (4×4×4) convolutions, one per scale.
        critic_input: ``"label"`` (Liu et al., Eq. 1: the label map itself) or
            ``"masked_image"`` (SegAN: the image multiplied by each class's map, K·C channels).
        norm: ``None`` (default; plays well with weight clipping), ``"batch"`` or ``"instance"``.
    """

    def __init__(
        self,
        num_classes: int,
        image_channels: int = 3,
        dims: int = 2,
        channels: Sequence[int] = (32, 64, 128),
        critic_input: str = "label",
        norm: str | None = None,
    ) -> None:
        super().__init__()
        if critic_input not in CRITIC_INPUTS:
            raise ValueError(f"critic_input must be one of {CRITIC_INPUTS}, got {critic_input!r}")
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims}")
        if norm not in (None, "batch", "instance"):
            raise ValueError(f"norm must be None, 'batch' or 'instance', got {norm!r}")
        self.critic_input, self.dims = critic_input, dims
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        norms = {
            "batch": nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d,
            "instance": nn.InstanceNorm2d if dims == 2 else nn.InstanceNorm3d,
        }
        c = num_classes * (image_channels if critic_input == "masked_image" else 1)
        self.layers = nn.ModuleList()
        for i, out in enumerate(channels):
            block: list[nn.Module] = [conv(c, out, 4, stride=2, padding=1, bias=norm is None)]
            if norm is not None and i > 0:  # SegAN: no normalization on the first layer
                block.append(norms[norm](out))
            block.append(nn.LeakyReLU(0.2, inplace=True))
            self.layers.append(nn.Sequential(*block))
            c = out

    def embed_input(self, label: Tensor, image: Tensor | None = None) -> Tensor:
        if self.critic_input == "label":
            return label
        if image is None:
            raise ValueError("critic_input='masked_image' needs the image")
        # (B, K, 1, ...) * (B, 1, C, ...) -> B × K·C × ...
        return (label.unsqueeze(2) * image.unsqueeze(1)).flatten(1, 2)

    def features(self, label: Tensor, image: Tensor | None = None) -> list[Tensor]:
        """Per-layer feature maps (one per scale)."""
        h = self.embed_input(label, image)
        out = []
        for layer in self.layers:
            h = layer(h)
            out.append(h)
        return out

    def forward(self, label: Tensor, image: Tensor | None = None) -> Tensor:
        """B×F: every layer's features, flattened and concatenated."""
        return torch.cat([f.flatten(1) for f in self.features(label, image)], dim=1)

"""Where the bits go: a per-pixel map of a learned codec's estimated bits.

Every latent tensor ``ℓ`` (``y`` and ``z`` of a hyperprior, Liu's binary code ``b``) sits on a
grid whose cells cover ``s×s`` pixels of the padded image. A cell costs ``−Σ_c log₂ p(ℓ_c)``
bits (summed over channels); the map spreads that cost evenly over the cell's pixels and adds
the maps of all latents. Bits of cells in the padding (the codec pads to its stride at the far
end) are folded onto the last row and column of the image, so **the map sums exactly to the
model's estimated bits** (:func:`mvmic.metrics.likelihoods_bpp` times the pixel count).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mvmic.codecs.base import Codec, eval_mode, pad_nd


@torch.no_grad()
def bit_map(codec: Codec, x: Tensor) -> Tensor:
    """Estimated bits per pixel position of each image, B×H×W (float64).

    Args:
        codec: a 2D learned codec; in eval mode its likelihoods are those of the coded symbols.
        x: images B×C×H×W in [0, 1].

    Returns:
        ``map[b].sum()`` equals the estimated bits of image ``b`` (to float rounding).
    """
    if codec.spatial_dims != 2 or x.dim() != 4:
        raise ValueError(f"bit maps are drawn for 2D images; got {codec.name} on {tuple(x.shape)}")
    h, w = x.shape[-2:]
    padded, _ = pad_nd(x, codec.stride)
    hp, wp = padded.shape[-2:]
    with eval_mode(codec):
        likelihoods = codec(x.float().clamp(0, 1)).likelihoods
    total = torch.zeros(x.shape[0], 1, hp, wp, dtype=torch.float64, device=x.device)
    for name, lk in likelihoods.items():
        bits = -torch.log2(lk.double()).sum(1, keepdim=True)  # B×1×h×w
        sy, sx = hp // bits.shape[-2], wp // bits.shape[-1]
        if sy * bits.shape[-2] != hp or sx * bits.shape[-1] != wp:
            raise ValueError(
                f"{codec.name}: latent {name!r} of {tuple(bits.shape[-2:])} does not tile the "
                f"padded image {hp}×{wp}"
            )
        # nearest upsampling repeats a cell's bits over its pixels: divide by the cell area
        total += F.interpolate(bits, scale_factor=(sy, sx), mode="nearest") / (sy * sx)
    total = total[:, 0]
    # Padding cells' bits go onto the image's far edge (they code replicated edge pixels).
    out = total[:, :h, :w].clone()
    out[:, -1, :] += total[:, h:, :w].sum(1)
    out[:, :, -1] += total[:, :h, w:].sum(2)
    out[:, -1, -1] += total[:, h:, w:].sum((1, 2))
    return out

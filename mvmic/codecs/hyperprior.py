"""CompressAI hyperprior codecs (Ballé 2018, Minnen 2018 mean-scale, Cheng 2020 anchor)."""

from __future__ import annotations

import torch
from compressai.layers import ResidualBlockWithStride, subpel_conv3x3
from compressai.models import Cheng2020Anchor, MeanScaleHyperprior, ScaleHyperprior
from compressai.models.utils import conv, deconv
from torch import Tensor, nn

from mvmic.codecs.base import Codec, CodecOutput
from mvmic.codecs.bitstream import BitstreamError

HYPERPRIOR_MODELS = {
    "bmshj2018-hyperprior": ScaleHyperprior,
    "mbt2018-mean": MeanScaleHyperprior,
    "cheng2020-anchor": Cheng2020Anchor,
}


class HyperpriorCodec(Codec):
    """A CompressAI hyperprior model behind mvmic's codec contract.

    Args:
        name: one of ``HYPERPRIOR_MODELS``.
        N: channels of the transforms.
        M: channels of the latent ``y`` (cheng2020-anchor uses ``M = N``).
        in_channels: 1 for grey (CT, X-ray) or 3 for RGB (endoscopy, dermoscopy).
    """

    stride = 64

    def __init__(
        self, name: str = "bmshj2018-hyperprior", N: int = 128, M: int = 192, in_channels: int = 3
    ) -> None:
        super().__init__()
        if name not in HYPERPRIOR_MODELS:
            raise ValueError(f"unknown codec {name!r}; choose one of {sorted(HYPERPRIOR_MODELS)}")
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
        self.name, self.in_channels = name, in_channels
        if name == "cheng2020-anchor":
            model = Cheng2020Anchor(N=N)
            if in_channels != 3:
                model.g_a[0] = ResidualBlockWithStride(in_channels, N, stride=2)
                model.g_s[-1] = subpel_conv3x3(N, in_channels, 2)
        else:
            model = HYPERPRIOR_MODELS[name](N=N, M=M)
            if in_channels != 3:
                model.g_a[0] = conv(in_channels, N)
                model.g_s[-1] = deconv(N, in_channels)
        self.model = model

    def _forward_padded(self, x: Tensor) -> CodecOutput:
        out = self.model(x)
        return CodecOutput(out["x_hat"], out["likelihoods"])

    def _compress_padded(self, x: Tensor) -> list[list[bytes]]:
        out = self.model.compress(x)
        return [[s[b] for s in out["strings"]] for b in range(x.shape[0])]

    def _decompress_padded(self, frames: list[list[bytes]], padded: tuple[int, int]) -> Tensor:
        shape = (padded[0] // self.stride, padded[1] // self.stride)
        if any(len(frame) != 2 for frame in frames):
            raise BitstreamError(
                f"corrupted: a {self.name} frame has {[len(f) for f in frames]} strings, expected 2"
            )
        strings = [[frame[i] for frame in frames] for i in range(2)]
        return self.model.decompress(self._guard(strings, padded), shape)["x_hat"]

    def _guard(self, strings: list[list[bytes]], padded: tuple[int, int]) -> list[list[bytes]]:
        """Check the rANS strings and pad them so the C++ decoder cannot read past them.

        CompressAI's ``RansDecoder`` reads 32-bit words without a bounds check. A valid string
        is never read past its end, so zero padding leaves valid files bit-exact; for a
        crafted one (valid CRC, garbage payload) it keeps the unchecked reads inside our
        buffer: at most one word per symbol plus the bypass-coded escapes, which cannot
        consume more than ~15 bytes per byte of real data.
        """
        y_ch = next(
            m.in_channels
            for m in self.model.g_s.modules()
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)
        )
        z_ch = self.model.entropy_bottleneck.channels
        pixels = padded[0] * padded[1]
        symbols = (y_ch * pixels // 16**2, z_ch * pixels // 64**2)
        guarded = []
        for name, group, n_sym in zip(("y", "z"), strings, symbols):
            for s in group:
                if len(s) < 8 or len(s) % 4:
                    raise BitstreamError(
                        f"corrupted: {name} string of {len(s)} bytes is not a rANS stream "
                        "(whole 32-bit words, at least 8 bytes)"
                    )
            guarded.append([s + bytes(16 * len(s) + 8 * n_sym + 4096) for s in group])
        return guarded

    def decoder_state_keys(self) -> list[str]:
        return [k for k in self.state_dict() if not k.startswith(("model.g_a.", "model.h_a."))]

    def weights_hash(self) -> bytes:
        if self._hash is None and hasattr(self.model, "context_prediction"):
            # MaskedConv2d masks its weight in place on its first forward; do it now so the
            # hash does not depend on whether a forward pass has happened yet.
            cp = self.model.context_prediction
            cp.weight.data *= cp.mask
        return super().weights_hash()

    def update(self, force: bool = False) -> bool:
        eb = self.model.entropy_bottleneck
        if not force and eb._offset.numel() > 0:
            return False
        self._invalidate_hash()
        return bool(self.model.update(force=True))

    def aux_loss(self) -> Tensor:
        return self.model.aux_loss()


def likelihoods_bpp(likelihoods: dict[str, Tensor], num_pixels: int) -> Tensor:
    """Estimated bits per pixel: −Σ log₂ p over all latents, divided by pixels."""
    total = sum(torch.log(lk).sum() for lk in likelihoods.values())
    return -total / (torch.log(torch.tensor(2.0)) * num_pixels)

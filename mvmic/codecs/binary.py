"""Liu et al. (MICCAI 2020): a light binary compression network C and its feature decoder g.

The encoder C maps an image (2D) or a volume (3D) to ``tanh`` latents ``z`` at stride 8 (or 16),
which are binarized: stochastically in training (Toderici et al. 2016: +1 with probability
``(1 + z) / 2``, else −1, straight-through gradient) and by their sign in eval. A learned
per-channel Bernoulli model gives ``p(b)`` for every bit, so ``−Σ log₂ p(b)`` is the rate
estimate ``loss_cr`` and the same probabilities, quantized to CDFs, drive CompressAI's rANS
coder for real bits. g ("feature reconstruction layers") turns the code into a feature map at
input resolution with ``feature_channels`` channels for the segmentor — not an image for eyes.
"""

from __future__ import annotations

import math

import torch
from compressai.ans import RansDecoder, RansEncoder
from compressai.entropy_models.entropy_models import pmf_to_quantized_cdf
from torch import Tensor, nn

from mvmic.codecs.base import Codec, CodecOutput, guard_rans, pad_nd
from mvmic.codecs.bitstream import BitstreamError

#: probability mass given to rANS's escape symbol (never used: bits are always 0 or 1)
_TAIL = 1e-9
_PRECISION = 16


def binarize(z: Tensor, stochastic: bool) -> Tensor:
    """Binarize ``z`` ∈ [−1, 1] to ±1 with a straight-through gradient.

    Stochastic (training): +1 with probability ``(1 + z) / 2``, so ``E[b] = z`` (unbiased).
    Deterministic (eval): the sign, with ``z = 0`` mapped to +1.
    """
    if stochastic:
        b = torch.where(torch.rand_like(z) < (1 + z) / 2, 1.0, -1.0).to(z.dtype)
    else:
        b = torch.where(z >= 0, 1.0, -1.0).to(z.dtype)
    # b + (z − z.detach()) is exactly ±1 in value (z + (b − z) can round) with gradient 1.
    return b + (z - z.detach())


class BinaryCodec(Codec):
    """Liu et al.'s compression network C, bit model and feature reconstruction layers g.

    Args:
        in_channels: image channels (3 for dermoscopy, 1 for MR).
        code_channels: channels of the binary code (bits per code position).
        feature_channels: channels of g's output feature map (1 as in the paper).
        N: base width of C; the default (64 in 2D, 32 in 3D) gives ≈1.4–1.5 M parameters,
            the paper's "light" 1.3 M range. See :meth:`encoder_parameters`.
        stride: 8 or 16 (code positions per pixel along each axis).
        dims: 2 for images (B×C×H×W), 3 for volumes (B×C×D×H×W).
        bit_init_logit: initial logit of ``p(b = 1)`` for every channel. A value below 0 makes
            −1 the cheap symbol from the first step, so a rate loss has a gradient at once
            (at ``p = 0.5`` the gradient of ``−log₂ p(b)`` with respect to ``b`` is zero).
    """

    name = "liu2020-binary"
    decodes_image = False
    rate_fits_entropy_model = True
    stores_entropy_tables = False

    def __init__(
        self,
        in_channels: int = 3,
        code_channels: int = 32,
        feature_channels: int = 1,
        N: int | None = None,
        stride: int = 8,
        dims: int = 2,
        bit_init_logit: float = -2.0,
    ) -> None:
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims}")
        if stride not in (8, 16):
            raise ValueError(f"stride must be 8 or 16, got {stride}")
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
        N = N or (64 if dims == 2 else 32)
        self.in_channels, self.code_channels = in_channels, code_channels
        #: whether the rate estimate's gradient reaches C (Liu's D4) or only the bit model
        self.rate_to_encoder = True
        self.feature_channels, self.dims, self.stride, self.N = feature_channels, dims, stride, N
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        deconv = nn.ConvTranspose2d if dims == 2 else nn.ConvTranspose3d
        n_down = int(math.log2(stride))

        def act() -> nn.Module:
            return nn.LeakyReLU(0.2, inplace=True)

        # C: a 3×3 stem, then (4×4 stride-2 down, 3×3) blocks; the last down gives the code.
        widths = [min(N * 2**i, 4 * N) for i in range(n_down)]
        layers: list[nn.Module] = [conv(in_channels, widths[0], 3, padding=1), act()]
        c = widths[0]
        for i in range(n_down - 1):
            nxt = widths[i + 1]
            layers += [
                conv(c, nxt, 4, stride=2, padding=1),
                act(),
                conv(nxt, nxt, 3, padding=1),
                act(),
            ]
            c = nxt
        layers += [conv(c, code_channels, 4, stride=2, padding=1)]
        self.encoder = nn.Sequential(*layers)

        # g: code (±1) -> feature map at input resolution, squashed to [0, 1] by a sigmoid so
        # the container's [0, 1] contract holds and the map can be shown as a grey image.
        g_widths = [max(2 * N // 2**i, 16) for i in range(n_down + 1)]
        g: list[nn.Module] = [conv(code_channels, g_widths[0], 3, padding=1), act()]
        for i in range(n_down):
            g += [deconv(g_widths[i], g_widths[i + 1], 4, stride=2, padding=1), act()]
        g += [conv(g_widths[-1], feature_channels, 3, padding=1), nn.Sigmoid()]
        self.g = nn.Sequential(*g)

        # Bit model: one learned Bernoulli per code channel.
        self.bit_logits = nn.Parameter(torch.full((code_channels,), float(bit_init_logit)))
        # rANS tables, rebuilt from bit_logits on CPU in float64 (deterministic on any device),
        # so they are not saved: the logits are the state, the tables a cache.
        self.register_buffer("_quantized_cdf", torch.empty(0, dtype=torch.int32), persistent=False)
        self.register_buffer("_table_logits", torch.empty(0), persistent=False)

    @property
    def spatial_dims(self) -> int:
        return self.dims

    # -- parameters -------------------------------------------------------------------------
    def encoder_parameters(self) -> int:
        """Number of parameters of C (the part that runs on the local device)."""
        return sum(p.numel() for p in self.encoder.parameters())

    def bit_model_parameters(self) -> list[nn.Parameter]:
        return [self.bit_logits]

    def entropy_parameters(self) -> list[nn.Parameter]:
        return self.bit_model_parameters()

    def decoder_state_keys(self) -> list[str]:
        return [k for k in self.state_dict() if k.startswith("g.") or k == "bit_logits"]

    # -- forward ----------------------------------------------------------------------------
    def latents(self, x: Tensor) -> Tensor:
        """tanh latents ``z`` ∈ (−1, 1) of a padded input."""
        return torch.tanh(self.encoder(x))

    def bit_probs(self) -> Tensor:
        """``p(b = 1)`` per channel, broadcastable over a B×C×… code."""
        p1 = torch.sigmoid(self.bit_logits)
        return p1.view(1, -1, *([1] * self.dims))

    def _forward_padded(self, x: Tensor) -> CodecOutput:
        b = binarize(self.latents(x), stochastic=self.training)  # ±1
        bits = (b + 1) / 2
        if not self.rate_to_encoder:
            bits = bits.detach()  # the rate trains the bit model only
        p1 = self.bit_probs()
        likelihood = (bits * p1 + (1 - bits) * (1 - p1)).clamp_min(1e-9)
        return CodecOutput(self.g(b), {"b": likelihood})

    def code(self, x: Tensor) -> Tensor:
        """Eval-mode bits (0/1, uint8) of an input, padded as compress() pads it."""
        x_pad, _ = pad_nd(x.float().clamp(0, 1), self.stride, self.dims)
        return (self.latents(x_pad) >= 0).to(torch.uint8)

    def decode_code(self, bits: Tensor) -> Tensor:
        """g applied to a 0/1 code: the feature map at the padded size."""
        return self.g(bits.to(self.g[0].weight.dtype) * 2 - 1)

    # -- entropy coding ---------------------------------------------------------------------
    def update(self, force: bool = False) -> bool:
        """Rebuild the rANS tables when the bit model changed (or when ``force``)."""
        logits = self.bit_logits.detach().cpu().double()
        if not force and torch.equal(self._table_logits.cpu().double(), logits):
            return False
        p1 = torch.sigmoid(logits).clamp(1e-6, 1 - 1e-6)
        cdfs = [
            pmf_to_quantized_cdf(
                torch.stack([1 - p, p, torch.tensor(_TAIL, dtype=p.dtype)]), _PRECISION
            )
            for p in p1
        ]
        self._quantized_cdf = torch.stack(cdfs).to(self.bit_logits.device)
        self._table_logits = logits.to(self.bit_logits.device)
        self._invalidate_hash()
        return True

    def _tables(self) -> tuple[list[list[int]], list[int], list[int]]:
        self.update()
        cdf = self._quantized_cdf.cpu()
        return cdf.tolist(), [cdf.shape[1]] * cdf.shape[0], [0] * cdf.shape[0]

    def _compress_padded(self, x: Tensor) -> list[list[bytes]]:
        cdfs, lengths, offsets = self._tables()
        bits = (self.latents(x) >= 0).to(torch.int32).cpu()
        index = self._channel_index(bits.shape[1:])
        encoder = RansEncoder()
        return [
            [encoder.encode_with_indexes(b.flatten().tolist(), index, cdfs, lengths, offsets)]
            for b in bits
        ]

    def _decompress_padded(self, frames: list[list[bytes]], padded: tuple[int, ...]) -> Tensor:
        cdfs, lengths, offsets = self._tables()
        shape = (self.code_channels, *(s // self.stride for s in padded))
        index = self._channel_index(shape)
        decoder = RansDecoder()
        codes = []
        for frame in frames:
            if len(frame) != 1:
                raise BitstreamError(
                    f"corrupted: a {self.name} frame has {len(frame)} strings, expected 1"
                )
            (string,) = guard_rans(frame, len(index), "code")
            values = torch.tensor(
                decoder.decode_with_indexes(string, index, cdfs, lengths, offsets)
            )
            # Only a crafted stream decodes the escape symbol (or what it escapes to).
            if values.numel() and not 0 <= int(values.min()) <= int(values.max()) <= 1:
                raise BitstreamError("corrupted: the code holds symbols other than 0 and 1")
            codes.append(values.to(torch.uint8).view(shape))
        device = self.bit_logits.device
        return self.decode_code(torch.stack(codes).to(device))

    @staticmethod
    def _channel_index(shape: tuple[int, ...]) -> list[int]:
        c, rest = shape[0], math.prod(shape[1:])
        return torch.arange(c, dtype=torch.int32).repeat_interleave(rest).tolist()

    def weights_hash(self) -> bytes:
        self.update()  # the hash covers bit_logits; tables follow them
        return super().weights_hash()

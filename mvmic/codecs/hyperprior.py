"""CompressAI hyperprior codecs (Ballé 2018, Minnen 2018 mean-scale, Cheng 2020 anchor)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from compressai.layers import ResidualBlockWithStride, subpel_conv3x3
from compressai.models import Cheng2020Anchor, MeanScaleHyperprior, ScaleHyperprior
from compressai.models.utils import conv, deconv, remap_old_keys
from compressai.zoo import load_state_dict as compressai_rename_keys
from torch import Tensor

from mvmic.codecs.base import Codec, CodecOutput, guard_rans, read_state_dict
from mvmic.codecs.bitstream import BitstreamError
from mvmic.codecs.light import ANALYSES, light_g_a, light_h_a

HYPERPRIOR_MODELS = {
    "bmshj2018-hyperprior": ScaleHyperprior,
    "mbt2018-mean": MeanScaleHyperprior,
    "cheng2020-anchor": Cheng2020Anchor,
}

#: state-dict prefixes of the analysis side (run by the encoder only)
_ANALYSIS = ("g_a.", "h_a.")
#: entropy-coder tables, resized on load (CompressAI's load_state_dict)
_ENTROPY_TABLES = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")

#: BT.601 luma, as mvmic.io converts RGB to grey (and Pillow's ``convert("L")``).
_LUMA = (0.299, 0.587, 0.114)


class HyperpriorCodec(Codec):
    """A CompressAI hyperprior model behind mvmic's codec contract.

    Args:
        name: one of ``HYPERPRIOR_MODELS``.
        N: channels of the transforms.
        M: channels of the latent ``y`` (cheng2020-anchor uses ``M = N``).
        in_channels: 1 for grey (CT, X-ray) or 3 for RGB (endoscopy, dermoscopy).
        analysis: ``full`` (CompressAI's g_a, h_a) or ``light`` (:mod:`mvmic.codecs.light`:
            ~35× fewer analysis operations, same synthesis, entropy models and file format;
            not for cheng2020-anchor, whose encoder runs the context model serially anyway).
    """

    stride = 64

    def __init__(
        self,
        name: str = "bmshj2018-hyperprior",
        N: int = 128,
        M: int = 192,
        in_channels: int = 3,
        analysis: str = "full",
    ) -> None:
        super().__init__()
        if name not in HYPERPRIOR_MODELS:
            raise ValueError(f"unknown codec {name!r}; choose one of {sorted(HYPERPRIOR_MODELS)}")
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
        if analysis not in ANALYSES:
            raise ValueError(f"unknown analysis {analysis!r}; choose one of {list(ANALYSES)}")
        if analysis == "light" and name == "cheng2020-anchor":
            raise ValueError(
                "analysis='light' needs a codec without a context model: use "
                "bmshj2018-hyperprior or mbt2018-mean"
            )
        self.name, self.in_channels, self.analysis = name, in_channels, analysis
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
        if analysis == "light":
            model.g_a, model.h_a = light_g_a(in_channels, N, M), light_h_a(N, M)
        self.model = model

    @property
    def N(self) -> int:
        """Channels of the transforms."""
        return int(self.model.N)

    @property
    def M(self) -> int:
        """Channels of the latent ``y`` (N for cheng2020-anchor)."""
        return int(self.model.M)

    @property
    def autoregressive(self) -> bool:
        """Whether ``y`` is coded with a causal context model (cheng2020-anchor)."""
        return hasattr(self.model, "context_prediction")

    def _forward_padded(self, x: Tensor) -> CodecOutput:
        if self.autoregressive and not self.training:
            return self._forward_autoregressive(x)
        out = self.model(x)
        return CodecOutput(out["x_hat"], out["likelihoods"])

    # -- the coded path of the context model ---------------------------------------------
    def _forward_autoregressive(self, x: Tensor) -> CodecOutput:
        """The eval pass of cheng2020-anchor as ``compress`` codes it.

        CompressAI's ``forward`` rounds ``y`` alone and predicts the means from that, while
        ``compress`` rounds ``y − μ`` with each ``μ`` predicted from the latents already
        coded. This pass does the latter, so ``x_hat`` is the decoded image and the
        likelihoods are those of the coded symbols.
        """
        m = self.model
        y = m.g_a(x)
        z_hat, z_likelihoods = m.entropy_bottleneck(m.h_a(y), training=False)
        scales, means = self._causal_gaussian_params(y, m.h_s(z_hat))
        y_hat, y_likelihoods = m.gaussian_conditional(y, scales, means, training=False)
        return CodecOutput(m.g_s(y_hat), {"y": y_likelihoods, "z": z_likelihoods})

    def _causal_gaussian_params(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """Scales and means of ``y`` in the context model's causal order (see ``_compress_ar``).

        Latent (i, j) sees the rows above it (columns j − p … j + p) and the two latents to its
        left, so every position with the same ``(p + 1)·i + j`` depends only on earlier
        ones: each such wavefront is one batched step (3·h + w steps instead of h·w).
        """
        m = self.model
        cp = m.context_prediction
        k = cp.kernel_size[0]
        p = k // 2
        b, c, h, w = y.shape
        weight = cp.weight * cp.mask
        y_hat = F.pad(torch.zeros_like(y), (p, p, p, p))
        scales, means = torch.empty_like(y), torch.empty_like(y)
        offsets = torch.arange(k, device=y.device)
        for t in range((p + 1) * (h - 1) + w):
            rows = torch.arange(max(0, -(-(t - w + 1) // (p + 1))), min(h - 1, t // (p + 1)) + 1)
            if not len(rows):
                continue
            rows = rows.to(y.device)
            cols = t - (p + 1) * rows
            # k×k neighbourhoods of every position on the wavefront: P×B×C×k×k -> (P·B)×C×k×k
            r = (rows[:, None, None] + offsets[None, :, None]).expand(-1, k, k)
            q = (cols[:, None, None] + offsets[None, None, :]).expand(-1, k, k)
            crops = y_hat[:, :, r, q].permute(2, 0, 1, 3, 4).reshape(-1, c, k, k)
            ctx = F.conv2d(crops, weight, cp.bias)
            hyper = params[:, :, rows, cols].permute(2, 0, 1).reshape(-1, params.shape[1], 1, 1)
            gaussian = m.entropy_parameters(torch.cat((hyper, ctx), dim=1)).flatten(1)
            s, mu = (g.view(len(rows), b, c).permute(1, 2, 0) for g in gaussian.chunk(2, 1))
            scales[:, :, rows, cols], means[:, :, rows, cols] = s, mu
            # As compress: the symbol is round(y − μ), the latent symbol + μ.
            y_hat[:, :, rows + p, cols + p] = torch.round(y[:, :, rows, cols] - mu) + mu
        return scales, means

    # -- real bits ------------------------------------------------------------------------
    def _compress_padded(self, x: Tensor) -> list[list[bytes]]:
        out = self.model.compress(x)
        return [[s[b] for s in out["strings"]] for b in range(x.shape[0])]

    def _decompress_padded(self, frames: list[list[bytes]], padded: tuple[int, ...]) -> Tensor:
        shape = (padded[0] // self.stride, padded[1] // self.stride)
        if any(len(frame) != 2 for frame in frames):
            raise BitstreamError(
                f"corrupted: a {self.name} frame has {[len(f) for f in frames]} strings, expected 2"
            )
        strings = [[frame[i] for frame in frames] for i in range(2)]
        return self.model.decompress(self._guard(strings, padded), shape)["x_hat"]

    def _guard(self, strings: list[list[bytes]], padded: tuple[int, ...]) -> list[list[bytes]]:
        """Check the ``y`` and ``z`` rANS strings and pad them (see :func:`guard_rans`)."""
        pixels = padded[0] * padded[1]
        symbols = (
            self.M * pixels // 16**2,
            self.model.entropy_bottleneck.channels * pixels // 64**2,
        )
        return [guard_rans(g, n, name) for name, g, n in zip(("y", "z"), strings, symbols)]

    def decoder_state_keys(self) -> list[str]:
        return [
            k for k in self.state_dict() if not k.startswith(tuple(f"model.{p}" for p in _ANALYSIS))
        ]

    def weights_hash(self) -> bytes:
        if self._hash is None and self.autoregressive:
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

    # -- weights ----------------------------------------------------------------------------
    def load_weights(self, path: str | Path) -> None:
        """Start from a local weights file: mvmic's or CompressAI's own.

        Accepts an mvmic checkpoint (a module's ``codec.model.*`` keys, or a codec state dict
        with ``model.*`` keys), a CompressAI state dict (the zoo's ``*.pth.tar``, with old or
        new entropy-bottleneck key names, or a ``module.``-prefixed DataParallel one) and a
        CompressAI ``examples/train.py`` checkpoint (``{"state_dict": …}``). CompressAI keys
        are converted with CompressAI's own ``compressai.zoo.load_state_dict``. An RGB model
        loads into a 1-channel codec by folding its first layer over R = G = B and taking the
        BT.601 luma of its last; anything else that does not fit (another architecture, N, M
        or a grey model for an RGB codec) is a ``ValueError`` naming what the file holds.
        """
        state = read_state_dict(path)
        for prefix in ("codec.model.", "model."):
            sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            if sub:
                state = sub
                break
        self.load_compressai(compressai_rename_keys(state), source=str(path))

    def load_compressai(self, state: dict[str, Tensor], source: str = "state dict") -> None:
        """Load a CompressAI model's state dict (current key names) into ``self.model``."""
        if self.analysis == "light" and self._holds_light_analysis(state):
            self._load_light(state, source)
            return
        found = describe_compressai(state)
        arch, n, m, channels = found["arch"], found["N"], found["M"], found["in_channels"]
        want = f"{self.name} with N={self.N}" + ("" if self.autoregressive else f", M={self.M}")
        if arch is None:
            raise ValueError(
                f"{source}: holds no CompressAI image model (first key "
                f"{next(iter(state), None)!r}); pass a CompressAI or mvmic weights file"
            )
        held = f"{arch} with N={n}" + ("" if arch.startswith("cheng2020") else f", M={m}")
        if arch not in HYPERPRIOR_MODELS:
            raise ValueError(
                f"{source}: holds a CompressAI {held}, which mvmic does not provide; "
                f"its codecs are {', '.join(HYPERPRIOR_MODELS)}"
            )
        if arch != self.name or n != self.N or m != self.M:
            flags = f"--model.codec {arch} --model.N {n}" + (
                "" if arch.startswith("cheng2020") else f" --model.M {m}"
            )
            raise ValueError(
                f"{source}: holds a {channels}-channel {held}, but the config asks for {want}; "
                f"set {flags} to use it"
            )
        if channels != self.in_channels:
            if channels != 3:
                raise ValueError(
                    f"{source}: holds a {channels}-channel {held}, the config asks for "
                    f"in_channels={self.in_channels}; set --model.in_channels {channels}"
                )
            state = self._rgb_to_grey(state)
        # CompressAI's own renaming of the entropy bottleneck's old names (_bias0 -> biases.0),
        # which its load_state_dict applies too.
        state = remap_old_keys("entropy_bottleneck", state)
        params = {k for k, _ in self.model.named_parameters()}
        if self.analysis == "light":
            # A full model's g_a/h_a do not fit the light ones, which keep their
            # initialisation (or the file's light weights) and are trained by stage 1.
            state = {k: v for k, v in state.items() if not k.startswith(_ANALYSIS)}
            params = {k for k in params if not k.startswith(_ANALYSIS)}
        missing = sorted(params - set(state))
        unexpected = sorted(set(state) - set(self.model.state_dict()))
        if missing or unexpected:
            what = f"lacks {missing[0]!r}" if missing else f"has a key {unexpected[0]!r}"
            raise ValueError(
                f"{source}: the {held} {what} that this codec "
                + ("needs" if missing else "does not have")
                + f" ({len(missing)} missing, {len(unexpected)} unexpected)"
            )
        # CompressAI's load_state_dict resizes the entropy tables to the file's.
        self.model.load_state_dict(state, strict=False)
        self._invalidate_hash()

    def _holds_light_analysis(self, state: dict[str, Tensor]) -> bool:
        """Whether ``state``'s g_a/h_a are a light analysis (by key names), not a full one."""
        own = {k for k in self.model.state_dict() if k.startswith(_ANALYSIS)}
        return {k for k in state if k.startswith(_ANALYSIS)} == own

    def _load_light(self, state: dict[str, Tensor], source: str) -> None:
        """Load the weights of a light-analysis codec, checking every tensor's shape."""
        own = self.model.state_dict()
        params = {k for k, _ in self.model.named_parameters()}
        for key in sorted(params | set(state)):
            if key not in own or key not in state:
                what, verb = ("lacks", "needs") if key in params else ("has a key", "lacks")
                raise ValueError(
                    f"{source}: the file's light-analysis {self.name} {what} {key!r} that the "
                    f"config's codec (N={self.N}, M={self.M}) {verb}"
                )
            if own[key].shape != state[key].shape and not key.endswith(_ENTROPY_TABLES):
                raise ValueError(
                    f"{source}: {key} is {tuple(state[key].shape)}, the config's light "
                    f"{self.name} (N={self.N}, M={self.M}, in_channels={self.in_channels}) "
                    f"has {tuple(own[key].shape)}; set --model.N/--model.M/--model.in_channels "
                    "to the file's"
                )
        self.model.load_state_dict(state, strict=False)
        self._invalidate_hash()

    def _rgb_to_grey(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """An RGB model's weights for grey input and output.

        The first layer sums its weights over R, G, B: a grey image then gives exactly the
        latents the RGB model gives for that image repeated to RGB. The last layer gives
        the BT.601 luma of the RGB reconstruction (a linear combination of its outputs).
        """
        state = dict(state)
        first = ("g_a.0.conv1", "g_a.0.skip") if self.autoregressive else ("g_a.0",)
        for name in first:
            state[f"{name}.weight"] = state[f"{name}.weight"].sum(1, keepdim=True)
        luma = torch.tensor(_LUMA)
        last = f"g_s.{len(self.model.g_s) - 1}" + (".0" if self.autoregressive else "")
        w, b = state[f"{last}.weight"], state[f"{last}.bias"]
        if self.autoregressive:  # conv to 3·r² channels, then PixelShuffle(r)
            w = torch.einsum("c,cr...->r...", luma.to(w.dtype), w.view(3, -1, *w.shape[1:]))
            b = (luma.to(b.dtype)[:, None] * b.view(3, -1)).sum(0)
        else:  # ConvTranspose2d weight: in × out × k × k
            w = torch.einsum("c,ic...->i...", luma.to(w.dtype), w).unsqueeze(1)
            b = (luma.to(b.dtype) * b).sum().view(1)
        state[f"{last}.weight"], state[f"{last}.bias"] = w, b
        return state


def describe_compressai(state: dict[str, Tensor]) -> dict[str, int | str | None]:
    """Architecture, N, M and input channels of a CompressAI state dict, read from its keys.

    Returns ``arch`` None when the keys are not those of a CompressAI image model.
    """
    arch = n = m = channels = None
    if "g_a.0.conv1.weight" in state:  # residual blocks: Cheng et al. 2020
        attention = any(".conv_a." in k for k in state)
        arch = "cheng2020-attn" if attention else "cheng2020-anchor"
        n, channels = state["g_a.0.conv1.weight"].shape[:2]
        m = (
            state["context_prediction.weight"].shape[1]
            if "context_prediction.weight" in state
            else n
        )
    elif "g_a.0.weight" in state and "g_a.6.weight" in state:
        n, channels = state["g_a.0.weight"].shape[:2]
        m = state["g_a.6.weight"].shape[0]
        if "context_prediction.weight" in state:
            arch = "mbt2018"
        elif "h_s.4.weight" in state:
            # h_s ends in M channels (scales) or 2·M (scales and means)
            arch = (
                "mbt2018-mean"
                if state["h_s.4.weight"].shape[0] == 2 * m
                else "bmshj2018-hyperprior"
            )
        elif "h_a.0.weight" not in state:
            arch = "bmshj2018-factorized"
    return {
        "arch": arch,
        "N": None if n is None else int(n),
        "M": None if m is None else int(m),
        "in_channels": None if channels is None else int(channels),
    }

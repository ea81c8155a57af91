"""The codec contract shared by every learned codec in mvmic."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mvmic.codecs.bitstream import Bitstream, BitstreamError

#: Largest padded frame (pixels, or voxels of a 3D code) and largest frames×pixels that
#: ``decompress`` will decode.
MAX_FRAME_PIXELS = 1 << 26
MAX_TOTAL_PIXELS = 1 << 30
#: Threads that ``compress``/``decompress`` run on (None: leave PyTorch's setting). oneDNN's
#: 1×1 convolutions (the inverse GDN of g_s, the entropy parameters) sum in an order that
#: depends on the thread count, so the float reconstruction would differ in the last bits
#: between a 1- and a 2-thread decode; a fixed count makes decoding bit-exact across processes.
CODING_THREADS: int | None = 1


@contextmanager
def pinned_threads() -> Iterator[None]:
    """Run the block on ``CODING_THREADS`` intra-op threads, then restore the setting."""
    old = torch.get_num_threads()
    if CODING_THREADS is None or CODING_THREADS == old:
        yield
        return
    torch.set_num_threads(CODING_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def pad_nd(x: Tensor, stride: int, dims: int = 2) -> tuple[Tensor, tuple[int, ...]]:
    """Pad the last ``dims`` axes of ``x`` at their far end to a multiple of ``stride``.

    Replicate padding (as :func:`mvmic.padding.pad_to_multiple`, which this equals for
    ``dims=2``) keeps the border flat. Returns the padded tensor and the original sizes.
    """
    size = tuple(x.shape[-dims:])
    pads = [(-s) % stride for s in size]
    if any(pads):
        # F.pad lists the last axis first: (0, pad_W, 0, pad_H[, 0, pad_D]).
        x = F.pad(x, [p for pad in reversed(pads) for p in (0, pad)], mode="replicate")
    return x, size


def crop_nd(x: Tensor, size: tuple[int, ...]) -> Tensor:
    """Undo :func:`pad_nd`: keep the first ``size[i]`` entries of each of the last axes."""
    return x[(..., *(slice(0, s) for s in size))]


def guard_rans(strings: list[bytes], n_symbols: int, what: str) -> list[bytes]:
    """Check rANS strings and pad them so CompressAI's C++ decoder cannot read past them.

    CompressAI's ``RansDecoder`` reads 32-bit words without a bounds check. A valid string
    is never read past its end, so zero padding leaves valid files bit-exact; for a crafted
    one (valid CRC, garbage payload) it keeps the unchecked reads inside our buffer: at most
    one word per symbol plus the bypass-coded escapes, which cannot consume more than ~15
    bytes per byte of real data.
    """
    for s in strings:
        if len(s) < 8 or len(s) % 4:
            raise BitstreamError(
                f"corrupted: {what} string of {len(s)} bytes is not a rANS stream "
                "(whole 32-bit words, at least 8 bytes)"
            )
    return [s + bytes(16 * len(s) + 8 * n_symbols + 4096) for s in strings]


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Run the block with ``module`` in eval mode, then restore its mode."""
    was_training = module.training
    if was_training:
        module.eval()
    try:
        yield
    finally:
        if was_training:
            module.train()


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a local weights file, read with ``weights_only=True`` (no code runs).

    Accepts a plain state dict and a dict holding one under ``state_dict`` (Lightning,
    CompressAI's ``examples/train.py``) or ``model``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure: not a plain weights file
        raise ValueError(
            f"{path}: not a plain-tensor weights file ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:160]})"
        ) from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()
    ):
        raise ValueError(f"{path}: holds no state dict of tensors")
    return obj


@dataclass
class CodecOutput:
    """What a differentiable codec pass returns: the reconstruction and latent likelihoods."""

    x_hat: Tensor
    likelihoods: dict[str, Tensor]


class Codec(nn.Module):
    """Base class: ``forward`` for training, ``compress``/``decompress`` for real bits.

    Subclasses implement ``_forward_padded``, ``_compress_padded`` and ``_decompress_padded``
    on inputs whose size is a multiple of ``stride`` along each of the ``spatial_dims`` axes
    (H×W, or D×H×W for a volumetric codec); padding, cropping, the container, the decoder's
    checks and budget, the coding threads and the weights hash live here once.

    In eval mode ``forward`` returns what decoding really returns (``x_hat``, before the
    final clamp to [0, 1]) and the likelihoods of the symbols that ``compress`` codes;
    :meth:`reconstruct` is that image, clamped, without any entropy coding.
    """

    name: str = "codec"
    stride: int = 64
    in_channels: int = 3

    def __init__(self) -> None:
        super().__init__()
        self._hash: bytes | None = None
        # Lightning loads a codec as a submodule, which bypasses CompressAI's own
        # load_state_dict: resize the entropy tables here so any checkpoint loads.
        self._register_load_state_dict_pre_hook(_resize_entropy_buffers, with_module=True)
        self.register_load_state_dict_post_hook(lambda module, _: module._invalidate_hash())

    #: whether ``x_hat`` is an image of the input's kind (clamp it to [0, 1] for a task net),
    #: or a learned feature map for a segmentor (Liu et al.'s g)
    decodes_image: bool = True
    #: whether the rate estimate itself trains the entropy model (Liu's bit model), so the
    #: rate term always belongs in the loss (``rate_to_encoder`` then says whether its gradient
    #: also reaches the encoder); otherwise the entropy model learns from ``aux_loss()``
    rate_fits_entropy_model: bool = False
    #: whether the entropy-coder tables are state worth saving beside the weights (CompressAI's
    #: CDF buffers); False where ``update()`` rebuilds them from the weights alone
    stores_entropy_tables: bool = True

    @property
    def spatial_dims(self) -> int:
        """2 for images (B×C×H×W), 3 for volumes (B×C×D×H×W)."""
        return 2

    def entropy_parameters(self) -> list[nn.Parameter]:
        """Parameters of the entropy model, trained in their own group at their own rate."""
        return self.aux_parameters()

    # -- to implement -------------------------------------------------------------------
    def _forward_padded(self, x: Tensor) -> CodecOutput:
        raise NotImplementedError

    def _compress_padded(self, x: Tensor) -> list[list[bytes]]:
        """Return one list of strings per batch element."""
        raise NotImplementedError

    def _decompress_padded(self, frames: list[list[bytes]], padded: tuple[int, ...]) -> Tensor:
        raise NotImplementedError

    def decoder_state_keys(self) -> list[str]:
        """Names of the state-dict entries that decoding depends on (hashed into files)."""
        return list(self.state_dict())

    def update(self, force: bool = False) -> bool:
        """Refresh entropy-coder tables; return whether anything changed."""
        return False

    def aux_loss(self) -> Tensor:
        return torch.zeros((), device=next(self.parameters()).device)

    def aux_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if n.endswith("quantiles")]

    def main_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if not n.endswith("quantiles")]

    def load_weights(self, path: str | Path) -> None:
        """Load a local weights file: a codec state dict or a checkpoint of an mvmic module.

        Keys under ``codec.`` (a Lightning checkpoint of a whole module) are taken when there.
        """
        state = read_state_dict(path)
        sub = {k[len("codec.") :]: v for k, v in state.items() if k.startswith("codec.")}
        state = sub or state
        if not set(state) & set(self.state_dict()):
            raise ValueError(
                f"{path}: none of its {len(state)} tensors match {type(self).__name__} "
                f"{self.name!r} (first key {next(iter(state), None)!r}); is it a weights file "
                "for this codec?"
            )
        self.load_state_dict(state, strict=False)

    # -- shared -------------------------------------------------------------------------
    def forward(self, x: Tensor) -> CodecOutput:
        self._check_input(x)
        x_pad, size = pad_nd(x, self.stride, self.spatial_dims)
        out = self._forward_padded(x_pad)
        return CodecOutput(crop_nd(out.x_hat, size), out.likelihoods)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """What ``decompress(compress(x))`` returns, computed without entropy coding.

        Args:
            x: a batch (B×C×H×W, or B×C×D×H×W for a volumetric codec) in [0, 1].

        Returns:
            The decoded batch in [0, 1], equal to decoding each element's bitstream up to
            float rounding (decoding runs frame by frame on ``CODING_THREADS`` threads). The
            codec's mode is irrelevant: the pass always quantises as ``compress`` does.
        """
        with eval_mode(self):
            x_hat = self(x.float().clamp(0, 1)).x_hat
        return x_hat.nan_to_num(0.0).clamp(0, 1)

    @torch.no_grad()
    def compress(self, x: Tensor, bit_depth: int = 8) -> Bitstream:
        """Compress one image (C×H×W or 1×C×H×W) or a stack of slices (F×C×H×W) in [0, 1].

        A volumetric codec takes one volume (C×D×H×W) or a batch of them (F×C×D×H×W); each
        batch element is one frame of the bitstream.
        """
        if x.dim() == self.spatial_dims + 1:
            x = x.unsqueeze(0)
        self._check_input(x)
        self.update()
        x_pad, size = pad_nd(x.float().clamp(0, 1), self.stride, self.spatial_dims)
        # One frame at a time: the decoder runs its networks on batches of one, and a conv can
        # round differently at another batch size, which would desynchronise the entropy coder.
        with pinned_threads():
            frames = [
                f for i in range(x_pad.shape[0]) for f in self._compress_padded(x_pad[i : i + 1])
            ]
        depth = size[0] if self.spatial_dims == 3 else 1
        h, w = size[-2:]
        return Bitstream(
            self.name, self.weights_hash(), h, w, x.shape[1], bit_depth, frames, depth=depth
        )

    @torch.no_grad()
    def decompress(self, bitstream: Bitstream | bytes, *, source: str = "bitstream") -> Tensor:
        """Decode to an F×C×H×W tensor (F×C×D×H×W for a volumetric codec) in [0, 1].

        Every check (container, codec, weights hash, channels, depth, size budget) runs before
        any byte reaches the entropy decoder; every failure is a :class:`BitstreamError`
        whose message starts with ``source``.
        """
        # Tables first: the weights hash covers them, and the encoder hashed after updating.
        self.update()
        data = bitstream.to_bytes() if isinstance(bitstream, Bitstream) else bitstream
        bitstream = Bitstream.from_bytes(
            data, expect_codec=self.name, expect_hash=self.weights_hash(), source=source
        )
        if bitstream.channels != self.in_channels:
            raise BitstreamError(
                f"{source}: bitstream has {bitstream.channels} channels, "
                f"model takes {self.in_channels}"
            )
        if self.spatial_dims == 2 and bitstream.depth != 1:
            raise BitstreamError(
                f"{source}: bitstream holds a volume of depth {bitstream.depth}, "
                "this model codes 2D images"
            )
        size = (bitstream.height, bitstream.width)
        if self.spatial_dims == 3:
            size = (bitstream.depth, *size)
        padded = tuple(-(-s // self.stride) * self.stride for s in size)
        n_frames, frame_pixels = len(bitstream.frames), math.prod(padded)
        # A few header bytes can ask for a huge decode (a "decompression bomb"): refuse it.
        if frame_pixels > MAX_FRAME_PIXELS or n_frames * frame_pixels > MAX_TOTAL_PIXELS:
            shown = "x".join(map(str, size))
            raise BitstreamError(
                f"{source}: {n_frames} frame(s) of {shown} exceed the decoder's budget "
                f"({MAX_FRAME_PIXELS} px per frame, {MAX_TOTAL_PIXELS} in all); "
                "raise mvmic.codecs.base.MAX_FRAME_PIXELS/MAX_TOTAL_PIXELS if it is genuine"
            )
        # Frame by frame, as compress() coded them: bounded memory and identical conv shapes.
        try:
            with pinned_threads():
                x_hat = torch.cat([self._decompress_padded([f], padded) for f in bitstream.frames])
        except BitstreamError as err:
            raise BitstreamError(f"{source}: {err}") from None
        # Decoded garbage from a crafted file can be NaN; keep the output a valid image.
        return crop_nd(x_hat, size).nan_to_num(0.0).clamp(0, 1)

    def weights_hash(self) -> bytes:
        """First 4 bytes of SHA-256 over the decoder-side weights and entropy tables."""
        if self._hash is None:
            state = self.state_dict()
            digest = hashlib.sha256()
            for key in sorted(self.decoder_state_keys()):
                t = state[key].detach().cpu().contiguous()
                digest.update(key.encode())
                digest.update(t.numpy().tobytes() if t.numel() else b"")
            self._hash = digest.digest()[:4]
        return self._hash

    def _invalidate_hash(self) -> None:
        self._hash = None

    def train(self, mode: bool = True) -> Codec:
        self._invalidate_hash()
        return super().train(mode)

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            layout = "B×C×H×W" if self.spatial_dims == 2 else "B×C×D×H×W"
            raise ValueError(
                f"{self.name} ({self.spatial_dims}D) expects {layout} input with "
                f"C={self.in_channels}, got {tuple(x.shape)}; set in_channels to match the data"
            )


_ENTROPY_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")


def _resize_entropy_buffers(module: nn.Module, state_dict, prefix, *args) -> None:
    for name, sub in module.named_modules():
        for buf_name, buf in list(sub.named_buffers(recurse=False)):
            if buf_name not in _ENTROPY_BUFFERS:
                continue
            key = f"{prefix}{name + '.' if name else ''}{buf_name}"
            if key in state_dict and state_dict[key].shape != buf.shape:
                sub.register_buffer(buf_name, torch.empty_like(state_dict[key], device=buf.device))

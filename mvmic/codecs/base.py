"""The codec contract shared by every learned codec in mvmic."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mvmic.codecs.bitstream import Bitstream, BitstreamError
from mvmic.padding import crop, pad_to_multiple

#: Largest padded frame (pixels) and largest frames×pixels that ``decompress`` will decode.
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


@dataclass
class CodecOutput:
    """What a differentiable codec pass returns: the reconstruction and latent likelihoods."""

    x_hat: Tensor
    likelihoods: dict[str, Tensor]


class Codec(nn.Module):
    """Base class: ``forward`` for training, ``compress``/``decompress`` for real bits.

    Subclasses implement ``_forward_padded``, ``_compress_padded`` and ``_decompress_padded``
    on inputs whose size is a multiple of ``stride``; padding, cropping, the container and the
    weights hash live here once.
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

    # -- to implement -------------------------------------------------------------------
    def _forward_padded(self, x: Tensor) -> CodecOutput:
        raise NotImplementedError

    def _compress_padded(self, x: Tensor) -> list[list[bytes]]:
        """Return one list of strings per batch element."""
        raise NotImplementedError

    def _decompress_padded(self, frames: list[list[bytes]], padded: tuple[int, int]) -> Tensor:
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

    # -- shared -------------------------------------------------------------------------
    def forward(self, x: Tensor) -> CodecOutput:
        self._check_input(x)
        x_pad, size = pad_to_multiple(x, self.stride)
        out = self._forward_padded(x_pad)
        return CodecOutput(crop(out.x_hat, size), out.likelihoods)

    @torch.no_grad()
    def compress(self, x: Tensor, bit_depth: int = 8) -> Bitstream:
        """Compress one image (C×H×W or 1×C×H×W) or a stack of slices (F×C×H×W) in [0, 1]."""
        if x.dim() == 3:
            x = x.unsqueeze(0)
        self._check_input(x)
        self.update()
        x_pad, (h, w) = pad_to_multiple(x.float().clamp(0, 1), self.stride)
        # One frame at a time: the decoder runs its networks on batches of one, and a conv can
        # round differently at another batch size, which would desynchronise the entropy coder.
        with pinned_threads():
            frames = [
                f for i in range(x_pad.shape[0]) for f in self._compress_padded(x_pad[i : i + 1])
            ]
        return Bitstream(self.name, self.weights_hash(), h, w, x.shape[1], bit_depth, frames)

    @torch.no_grad()
    def decompress(self, bitstream: Bitstream | bytes, *, source: str = "bitstream") -> Tensor:
        """Decode to an F×C×H×W tensor in [0, 1] at the original size.

        Every check (container, codec, weights hash, channels, size budget) runs before any byte
        reaches the entropy decoder; every failure is a :class:`BitstreamError`.
        """
        # Tables first: the weights hash covers them, and the encoder hashed after updating.
        self.update()
        if not isinstance(bitstream, Bitstream):
            bitstream = Bitstream.from_bytes(
                bitstream, expect_codec=self.name, expect_hash=self.weights_hash(), source=source
            )
        else:
            Bitstream.from_bytes(
                bitstream.to_bytes(),
                expect_codec=self.name,
                expect_hash=self.weights_hash(),
                source=source,
            )
        if bitstream.channels != self.in_channels:
            raise BitstreamError(
                f"{source}: bitstream has {bitstream.channels} channels, "
                f"model takes {self.in_channels}"
            )
        hp, wp = (
            -(-bitstream.height // self.stride) * self.stride,
            -(-bitstream.width // self.stride) * self.stride,
        )
        n_frames = len(bitstream.frames)
        # A few header bytes can ask for a huge decode (a "decompression bomb"): refuse it.
        if hp * wp > MAX_FRAME_PIXELS or n_frames * hp * wp > MAX_TOTAL_PIXELS:
            raise BitstreamError(
                f"{source}: {n_frames} frame(s) of {bitstream.height}x{bitstream.width} exceed the "
                f"decoder's budget ({MAX_FRAME_PIXELS} px per frame, {MAX_TOTAL_PIXELS} in all); "
                "raise mvmic.codecs.base.MAX_FRAME_PIXELS/MAX_TOTAL_PIXELS if it is genuine"
            )
        # Frame by frame, as compress() coded them: bounded memory and identical conv shapes.
        try:
            with pinned_threads():
                x_hat = torch.cat(
                    [self._decompress_padded([f], (hp, wp)) for f in bitstream.frames]
                )
        except BitstreamError as err:
            raise BitstreamError(f"{source}: {err}") from None
        # Decoded garbage from a crafted file can be NaN; keep the output a valid image.
        return crop(x_hat, (bitstream.height, bitstream.width)).nan_to_num(0.0).clamp(0, 1)

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
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{self.name} expects B×{self.in_channels}×H×W input, got {tuple(x.shape)}; "
                "set in_channels to match the data"
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

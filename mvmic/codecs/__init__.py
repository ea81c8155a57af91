"""Codecs: everything that turns pixels into bits and back (plain PyTorch, no Lightning)."""

from mvmic.codecs.base import Codec, CodecOutput
from mvmic.codecs.bitstream import Bitstream, BitstreamError
from mvmic.codecs.hyperprior import HYPERPRIOR_MODELS, HyperpriorCodec

__all__ = [
    "Bitstream",
    "BitstreamError",
    "Codec",
    "CodecOutput",
    "HYPERPRIOR_MODELS",
    "HyperpriorCodec",
    "build_codec",
]


def build_codec(name: str, **kwargs) -> Codec:
    """Build a codec by name: the hyperprior family, or ``liu2020-binary`` (Liu et al.)."""
    if name in HYPERPRIOR_MODELS:
        return HyperpriorCodec(name, **kwargs)
    if name == "liu2020-binary":
        from mvmic.codecs.binary import BinaryCodec

        return BinaryCodec(**kwargs)
    raise ValueError(
        f"unknown codec {name!r}; choose one of {sorted([*HYPERPRIOR_MODELS, 'liu2020-binary'])}"
    )

"""Compress images to ``.mvmic`` files and back: the Python API.

Python::

    data = mvmic.compress(image, model)     # image: tensor/array in [0, 1] or a file path
    x_hat = mvmic.decompress(data, model)   # F×C×H×W tensor in [0, 1]

``model`` is a :class:`~mvmic.codecs.Codec` or a LightningModule with ``.codec`` (and ``.task``),
e.g. ``mvmic.modules.load_module("best.ckpt")``. The commands ``mvmic compress|decompress``
are in :mod:`mvmic.coding_cli` (:func:`compress_main`, :func:`decompress_main` here call them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mvmic.codecs.base import Codec
from mvmic.codecs.bitstream import Bitstream, BitstreamError
from mvmic.io import match_channels, read_image

SUFFIX = ".mvmic"


# -- Python API ---------------------------------------------------------------------------
def resolve_model(model: Any) -> tuple[Codec, nn.Module | None]:
    """The codec (and task network, if any) of a Codec or an mvmic LightningModule."""
    if isinstance(model, Codec):
        return model, None
    codec = getattr(model, "codec", None)
    if isinstance(codec, Codec):
        return codec, getattr(model, "task", None)
    raise TypeError(
        f"expected a Codec or a module with a .codec (e.g. MVMICNet), got {type(model).__name__}; "
        "a TaskModule checkpoint has no codec"
    )


def as_image(
    image: Tensor | np.ndarray | str | Path,
    bit_depth: int | None = None,
    *,
    npy_layout: str = "auto",
) -> tuple[Tensor, int]:
    """``(x, bit_depth)`` with ``x`` a float tensor (C×H×W or F×C×H×W) in [0, 1].

    ``npy_layout`` is passed to :func:`mvmic.io.read_image` for a ``.npy`` path.
    """
    if isinstance(image, str | Path):
        x, bits, _ = read_image(image, npy_layout=npy_layout)
        return torch.from_numpy(x), bit_depth or bits
    x = torch.from_numpy(np.asarray(image)) if not isinstance(image, Tensor) else image
    if x.dtype == torch.uint8:
        x, bit_depth = x.float() / 255, bit_depth or 8
    elif not x.is_floating_point():
        raise ValueError(f"image tensor of dtype {x.dtype}: pass floats in [0, 1] (or uint8)")
    if x.dim() not in (3, 4) or x.shape[-3] not in (1, 3):
        raise ValueError(f"image of shape {tuple(x.shape)}: expected C×H×W or F×C×H×W, C = 1 or 3")
    if not torch.isfinite(x).all():
        raise ValueError("image contains NaN or infinite values")
    return x.detach().float().cpu(), bit_depth or 8


def encode(
    image: Tensor | np.ndarray | str | Path,
    model: Any,
    bit_depth: int | None = None,
    *,
    npy_layout: str = "auto",
) -> Bitstream:
    """Compress to a :class:`Bitstream` (see :func:`compress`)."""
    codec, _ = resolve_model(model)
    x, bits = as_image(image, bit_depth, npy_layout=npy_layout)
    h, w = x.shape[-2:]
    if h > 0xFFFF or w > 0xFFFF:
        raise ValueError(f"image of {h}x{w} pixels: at most 65535 a side")
    # A grey model takes grey natively; colour/grey mismatches are converted (BT.601 luma or
    # channel repeat), so that one checkpoint accepts every input.
    x = match_channels(x, codec.in_channels)
    if codec.spatial_dims == 3:  # a volumetric codec codes the slices as one C×D×H×W volume
        x = (x if x.dim() == 4 else x[None]).movedim(0, 1)
    return codec.compress(x, bit_depth=bits)


def compress(
    image: Tensor | np.ndarray | str | Path,
    model: Any,
    bit_depth: int | None = None,
    *,
    npy_layout: str = "auto",
) -> bytes:
    """Compress one image (C×H×W), a stack of slices (F×C×H×W) or an image file to bytes.

    Args:
        image: float tensor/array in [0, 1] (uint8 is divided by 255), or a path that
            :func:`mvmic.io.read_image` reads.
        model: a Codec or a module with ``.codec``.
        bit_depth: the source bit depth to record (default: the file's, or 8).
        npy_layout: how a 3-D ``.npy`` file is read (see :func:`mvmic.io.read_image`).

    Returns:
        The ``.mvmic`` container bytes.
    """
    return encode(image, model, bit_depth, npy_layout=npy_layout).to_bytes()


def decompress(data: bytes | str | Path, model: Any) -> Tensor:
    """Decode container bytes (or a ``.mvmic`` file) to an F×C×H×W tensor in [0, 1].

    Raises:
        BitstreamError: truncated, corrupted, empty, foreign or wrong-version data, or data
            made by another codec/checkpoint; the message says which.
    """
    codec, _ = resolve_model(model)
    if isinstance(data, str | Path):
        path = Path(data)
        if not path.is_file():
            raise BitstreamError(f"{path}: no such file")
        return codec.decompress(path.read_bytes(), source=str(path))
    return codec.decompress(data)


def as_frames(x: Tensor) -> Tensor:
    """A volumetric codec's output (B×C×D×H×W) as its slices, (B·D)×C×H×W; else ``x``."""
    return x.movedim(2, 1).flatten(0, 1) if x.dim() == 5 else x


def compress_main(argv: list[str] | None = None) -> int:
    """``mvmic compress --ckpt CKPT IN OUT``; returns the exit status."""
    from mvmic.coding_cli import compress_main as main

    return main(argv)


def decompress_main(argv: list[str] | None = None) -> int:
    """``mvmic decompress --ckpt CKPT IN.mvmic OUT [--task]``; returns the exit status."""
    from mvmic.coding_cli import decompress_main as main

    return main(argv)

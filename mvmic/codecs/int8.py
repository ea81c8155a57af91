"""Int8 analysis transforms: an encoder-side speed lever that keeps decoding bit-exact.

Only the encoder runs g_a and h_a, and nothing downstream needs to reproduce their output: the
bitstream holds whatever ``y`` and ``z`` the (approximate) int8 encoder produced, and the decoder,
h_s and the entropy models stay float and pinned (``CODING_THREADS``), so any decoder decodes
such a file exactly as it decodes any other. Static int8 (PyTorch's FX graph mode, x86 backend:
fbgemm/oneDNN kernels) with observers calibrated on a few images.
"""

from __future__ import annotations

import copy
import warnings

import torch
from compressai.layers import GDN
from torch import Tensor, nn

from mvmic.codecs.hyperprior import HyperpriorCodec


def quantize_int8(module: nn.Module, calibration: Tensor) -> nn.Module:
    """A static-int8 copy of ``module`` calibrated on ``calibration`` (a batch of its inputs).

    Convolutions and ReLUs run in int8; GDN (CompressAI's, which FX cannot trace) stays a float
    island between a dequantize and a quantize.
    """
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    model = copy.deepcopy(module).eval()
    for layer in model.modules():
        if getattr(layer, "inplace", False):
            layer.inplace = False  # quantized (leaky) ReLU has no in-place kernel
    with warnings.catch_warnings():
        # torch.ao.quantization's deprecation notices: its FX flow is what this torch has.
        warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning, UserWarning))
        prepared = prepare_fx(
            model,
            get_default_qconfig_mapping("x86"),
            (calibration[:1],),
            prepare_custom_config={"non_traceable_module_class": [GDN]},
        )
        with torch.no_grad():
            for x in calibration.split(1):
                prepared(x)
        return convert_fx(prepared)


def int8_analysis(codec: HyperpriorCodec, calibration: Tensor) -> HyperpriorCodec:
    """A copy of ``codec`` whose g_a and h_a are int8 (see :func:`quantize_int8`).

    ``calibration``: a few images (B×C×H×W in [0, 1], sides a multiple of 64). The copy's
    weights hash, decoder and entropy tables are the original's, so its files decode with
    the original codec.
    """
    if codec.autoregressive:
        raise ValueError(f"int8 analysis needs a codec without a context model, not {codec.name}")
    out = copy.deepcopy(codec).eval()
    out.update()
    m = out.model
    with torch.no_grad():
        y = m.g_a(calibration)
    # ScaleHyperprior feeds |y| to h_a, MeanScaleHyperprior y itself.
    h_in = y.abs() if codec.name == "bmshj2018-hyperprior" else y
    m.g_a, m.h_a = quantize_int8(m.g_a, calibration), quantize_int8(m.h_a, h_in)
    return out

"""Where the bits go (mvmic.codecs.bit_map): the map sums to the model's estimated bits."""

from __future__ import annotations

import pytest
import torch

from mvmic.codecs import build_codec
from mvmic.codecs.bit_map import bit_map
from mvmic.metrics import likelihoods_bpp


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("bmshj2018-hyperprior", {"N": 16, "M": 24}),
        ("mbt2018-mean", {"N": 16, "M": 24}),
        ("cheng2020-anchor", {"N": 16}),
        ("liu2020-binary", {"N": 8}),
    ],
)
def test_bit_map_sums_to_the_estimated_bits(name, kwargs):
    torch.manual_seed(0)
    codec = build_codec(name, **kwargs).eval()
    codec.update(force=True)
    # 50×70 is padded to 64×128: padding cells' bits must land on the image, not vanish.
    x = torch.rand(2, 3, 50, 70)
    maps = bit_map(codec, x)
    assert maps.shape == (2, 50, 70) and maps.dtype == torch.float64
    assert bool((maps >= 0).all())
    with torch.no_grad():
        likelihoods = codec(x).likelihoods
    for i in range(2):
        one = {k: v[i : i + 1] for k, v in likelihoods.items()}
        estimated = float(likelihoods_bpp(one, 50 * 70)) * 50 * 70
        assert float(maps[i].sum()) == pytest.approx(estimated, rel=1e-5)


def test_bit_map_puts_a_cells_bits_on_its_pixels():
    """One latent of y made expensive shows up on exactly its 16×16 block."""
    codec = build_codec("bmshj2018-hyperprior", N=16, M=24).eval()
    real_forward = codec._forward_padded

    def forward(x):
        out = real_forward(x)
        y = torch.full_like(out.likelihoods["y"], 1.0)
        y[:, :, 1, 2] = 0.25  # 2 bits per channel at latent (1, 2), 0 elsewhere
        return type(out)(out.x_hat, {"y": y, "z": torch.ones_like(out.likelihoods["z"])})

    codec._forward_padded = forward
    maps = bit_map(codec, torch.rand(1, 3, 64, 64))[0]
    block = maps[16:32, 32:48]
    assert float(block.sum()) == pytest.approx(2.0 * 24)
    assert torch.allclose(block, torch.full_like(block, 2.0 * 24 / 256))
    assert float(maps.sum()) == pytest.approx(float(block.sum()))


def test_bit_map_refuses_volumes():
    codec = build_codec("liu2020-binary", dims=3, in_channels=1, N=8)
    with pytest.raises(ValueError, match="2D images"):
        bit_map(codec, torch.rand(1, 1, 16, 16, 16))

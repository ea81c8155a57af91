import math

import pytest
import torch

from mvmic.codecs import CodecOutput
from mvmic.losses import RateDistortionAccuracyLoss


def _output(x_hat, n_latents=10, p=0.5):
    return CodecOutput(x_hat, {"y": torch.full((1, n_latents), p)})


def test_rate_is_bits_per_pixel():
    x = torch.zeros(1, 3, 4, 5)
    # 10 latents at p = 1/2 are 10 bits over 20 pixels.
    terms = RateDistortionAccuracyLoss(0.0, 0.0)(_output(x), x)
    assert terms["bpp"].item() == pytest.approx(0.5)
    assert terms["loss"].item() == pytest.approx(0.5)


def test_terms_are_weighted_exactly():
    x = torch.zeros(2, 1, 4, 4)
    x_hat = torch.full_like(x, 0.1)  # MSE = 0.01
    loss = RateDistortionAccuracyLoss(lmbda_d=0.002, lmbda_t=0.5)
    terms = loss(_output(x_hat, n_latents=32, p=0.25), x, torch.tensor(3.0))
    bpp = 32 * 2 / 32  # 32 latents at 2 bits over 2·16 pixels
    assert terms["bpp"].item() == pytest.approx(bpp)
    assert terms["mse"].item() == pytest.approx(0.01)
    assert terms["distortion"].item() == pytest.approx(255**2 * 0.01, rel=1e-5)
    assert terms["task"].item() == 3.0
    expected = bpp + 0.002 * 255**2 * 0.01 + 0.5 * 3.0
    assert terms["loss"].item() == pytest.approx(expected, rel=1e-5)


def test_ms_ssim_distortion_is_zero_for_identical_images():
    x = torch.rand(1, 3, 64, 64)
    terms = RateDistortionAccuracyLoss(1.0, 0.0, distortion="ms-ssim")(_output(x.clone()), x)
    assert terms["distortion"].item() == pytest.approx(0.0, abs=1e-5)
    assert math.isfinite(terms["loss"].item())


@pytest.mark.parametrize("kwargs", [{"lmbda_d": -1.0}, {"lmbda_t": -0.1}])
def test_negative_lambda_is_refused(kwargs):
    with pytest.raises(ValueError, match="must be >= 0"):
        RateDistortionAccuracyLoss(**kwargs)


def test_unknown_distortion_is_refused():
    with pytest.raises(ValueError, match="distortion must be one of"):
        RateDistortionAccuracyLoss(distortion="l1")

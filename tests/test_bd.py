"""BD-rate and BD-metric (mvmic.evaluation.bd)."""

from __future__ import annotations

import pytest

from mvmic.evaluation import bd as curves

RATES = [0.1, 0.2, 0.4, 0.8]
PSNR = [30.0, 33.0, 36.0, 39.0]  # linear in log2(rate): halving the rate gains exactly 3 dB


# --- BD-rate -------------------------------------------------------------------------------


def test_bd_rate_of_halved_rates_is_minus_50_percent():
    rate, rnote, metric, mnote = curves.bd_cell((RATES, PSNR), ([r / 2 for r in RATES], PSNR))
    assert rate == pytest.approx(-50.0, abs=0.1)
    assert rnote == ""  # the PSNR ranges coincide
    assert metric == pytest.approx(3.0, abs=1e-6)
    assert mnote == "rate overlap 50%"  # log-rate ranges overlap over half the span


def test_bd_rate_of_doubled_rates_is_plus_100_percent():
    rate, _, metric, _ = curves.bd_cell((RATES, PSNR), ([r * 2 for r in RATES], PSNR))
    assert rate == pytest.approx(100.0, abs=0.1)
    assert metric == pytest.approx(-3.0, abs=1e-6)


def test_bd_cells_are_na_with_a_reason():
    few = curves.bd_cell((RATES, PSNR), (RATES[:3], PSNR[:3]))
    assert few == (None, "method has 3 points < 4", None, "method has 3 points < 4")
    apart = curves.bd_cell((RATES, PSNR), ([r * 100 for r in RATES], [v + 50 for v in PSNR]))
    assert apart[0] is None and apart[1] == "metric ranges do not overlap"
    assert apart[2] is None and apart[3] == "rate ranges do not overlap"
    bumpy = curves.bd_cell((RATES, PSNR), (RATES, [30.0, 34.0, 33.0, 39.0]))
    assert bumpy[0] is None and bumpy[1] == "method metric not increasing with rate"
    # BD-metric is still defined: +1 dB at 0.2 bpp, -3 dB at 0.4 bpp; pchip mean is -0.75 dB
    assert bumpy[2] == pytest.approx(-0.75, abs=0.01)
    assert curves.bd_cell((RATES, PSNR), ([0.1, 0.1, 0.4, 0.8], PSNR))[1] == "repeated rates"
    # With the envelope option the dip is dropped: 3 points remain, still too few.
    env = curves.bd_cell((RATES, PSNR), (RATES, [30.0, 34.0, 33.0, 39.0]), envelope=True)
    assert env[0] is None and env[1] == "method envelope 3/4 points < 4"
    five = ([0.05, *RATES], [27.0, *PSNR])
    dip = ([0.05 / 2, *(r / 2 for r in RATES)], [27.0, 30.0, 29.0, 36.0, 39.0])
    env = curves.bd_cell(five, dip, envelope=True)
    assert env[1] == "method envelope 4/5 points"
    assert env[0] == pytest.approx(-50.0, abs=3.0)


def test_bd_rate_alone_is_the_same_bd_rate():
    """The bootstrap's draws skip the BD-metric; the BD-rate must not change."""
    from mvmic.evaluation.bd import bd_cell

    anchor = ([0.04, 0.08, 0.15, 0.3], [0.77, 0.85, 0.89, 0.92])
    test = ([0.03, 0.05, 0.09, 0.2], [0.80, 0.86, 0.90, 0.93])
    full = bd_cell(anchor, test, envelope=True)
    alone = bd_cell(anchor, test, envelope=True, with_metric=False)
    assert full[0] is not None and alone[:2] == full[:2] and alone[2:] == (None, "not computed")

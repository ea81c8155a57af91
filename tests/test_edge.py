"""Edge encoder (issue 21): the light analysis, int8 analysis and the upload arithmetic."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from mvmic.codecs import HyperpriorCodec
from mvmic.codecs.int8 import int8_analysis
from mvmic.evaluation.edge import break_even_bps, goal, upload_s


def _codec(name="mbt2018-mean", analysis="light", **kw) -> HyperpriorCodec:
    torch.manual_seed(0)
    kw = {"N": 16, "M": 24, "in_channels": 1, **kw}
    return HyperpriorCodec(name, analysis=analysis, **kw)


def _decoder_shapes(codec: HyperpriorCodec) -> dict[str, tuple[int, ...]]:
    keys = set(codec.decoder_state_keys())
    return {k: tuple(v.shape) for k, v in codec.state_dict().items() if k in keys}


def _analysis_flops(codec: HyperpriorCodec, x: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        codec.model.h_a(codec.model.g_a(x))
    return counter.get_total_flops()


@pytest.mark.parametrize("name", ["mbt2018-mean", "bmshj2018-hyperprior"])
def test_light_analysis_has_the_full_codecs_latent_shapes_and_decoder(name):
    light, full = _codec(name, in_channels=3), _codec(name, "full", in_channels=3)
    x = torch.rand(2, 3, 48, 80)  # padded to 64×128 by the codec
    out, ref = light(x), full(x)
    assert out.x_hat.shape == x.shape
    assert (
        {k: v.shape for k, v in out.likelihoods.items()}
        == {k: v.shape for k, v in ref.likelihoods.items()}
        == {"y": (2, 24, 4, 8), "z": (2, 16, 1, 2)}
    )
    # the decoder side (what the file format depends on) is CompressAI's, key for key
    assert _decoder_shapes(light) == _decoder_shapes(full)
    # ~40× fewer analysis operations at N=128, M=192; at these widths still > 10×
    big = [_codec(name, a, N=128, M=192) for a in ("light", "full")]
    probe = torch.rand(1, 1, 64, 64)
    assert 20 * _analysis_flops(big[0], probe) < _analysis_flops(big[1], probe)


def test_a_light_encoders_file_decodes_with_the_full_codec_of_the_same_decoder(tmp_path):
    light = _codec().eval()
    light.update(force=True)
    x = torch.rand(1, 1, 64, 64)
    bs = light.compress(x)
    decoded = light.decompress(bs)
    assert torch.allclose(decoded, light.reconstruct(x), atol=1e-5)
    # A full codec given the light codec's decoder side: same hash, same decoded image.
    full = _codec(analysis="full").eval()
    keys = set(light.decoder_state_keys())
    full.load_state_dict({k: v for k, v in light.state_dict().items() if k in keys}, strict=False)
    full.update(force=True)
    assert full.weights_hash() == light.weights_hash()
    assert torch.equal(full.decompress(bs.to_bytes()), decoded)
    # A light codec started from a full codec's weights takes its decoder side only.
    torch.save(full.state_dict(), tmp_path / "full.pt")
    fresh = _codec()
    g_a = fresh.model.g_a[0].weight.clone()
    fresh.load_weights(tmp_path / "full.pt")
    assert torch.equal(fresh.model.g_s[0].weight, full.model.g_s[0].weight)
    assert torch.equal(fresh.model.g_a[0].weight, g_a)
    # and its own checkpoint back, analysis included; a wrong M is named
    torch.save(light.state_dict(), tmp_path / "light.pt")
    fresh.load_weights(tmp_path / "light.pt")
    assert torch.equal(fresh.model.g_a[0].weight, light.model.g_a[0].weight)
    with pytest.raises(ValueError, match=r"light\.pt: g_a\.8\.bias is \(24,\).*--model\.N"):
        _codec(M=32).load_weights(tmp_path / "light.pt")


def test_light_analysis_is_refused_for_the_context_model():
    with pytest.raises(ValueError, match="light.*without a context model"):
        HyperpriorCodec("cheng2020-anchor", N=16, analysis="light")
    with pytest.raises(ValueError, match="unknown analysis 'tiny'"):
        HyperpriorCodec("mbt2018-mean", N=16, M=24, analysis="tiny")


@pytest.mark.parametrize("analysis", ["light", "full"])
def test_int8_encoder_files_decode_exactly_with_the_float_decoder(analysis):
    ref = _codec(analysis=analysis).eval()
    ref.update(force=True)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 1, 64, 128, generator=g)
    q = int8_analysis(ref, torch.rand(3, 1, 64, 64, generator=g))
    assert any(
        type(m).__module__.startswith("torch.ao.nn.quantized") for m in q.model.g_a.modules()
    )
    assert q.weights_hash() == ref.weights_hash()
    data = q.compress(x).to_bytes()
    # the reference (float) decoder decodes the int8 encoder's file, deterministically, and
    # exactly as the int8 codec's own (unchanged) decoder does
    first = ref.decompress(data)
    assert torch.equal(ref.decompress(data), first)
    assert torch.equal(q.decompress(data), first)
    # the approximation is in the encoder only: float g_s of the coded latents, close to x's
    assert (first - ref.decompress(ref.compress(x))).abs().mean() < 0.1


def test_break_even_bandwidth_and_goal_arithmetic():
    # 1 000 bytes after 0.5 s vs 5 000 bytes after 0.25 s: 32 000 bits saved for 0.25 s more
    assert break_even_bps(0.5, 1000, 0.25, 5000) == 128_000.0
    at = 128_000.0
    assert upload_s(0.5, 1000, at) == upload_s(0.25, 5000, at) == 0.5625
    assert upload_s(0.5, 1000, at / 2) < upload_s(0.25, 5000, at / 2)  # slower link: mvmic wins
    assert upload_s(0.5, 1000, at * 2) > upload_s(0.25, 5000, at * 2)
    assert break_even_bps(0.1, 1000, 0.25, 5000) == math.inf  # faster and smaller
    assert break_even_bps(0.1, 5000, 0.25, 5000) == 0.0  # not smaller: never wins on a slow link
    # goal: JPEG 0.001 s + 25 000 bytes at 10 Mbit/s = 0.021 s; mvmic 0.0055 s + 1 250 bytes
    g = goal(0.0055, 1250, 0.001, 25_000)
    assert g.speedup == pytest.approx(0.021 / 0.0065, rel=1e-12) and g.met
    assert g.needed_encode_s == pytest.approx(0.007 - 0.001, rel=1e-12)
    assert not goal(0.5, 1250, 0.001, 25_000).met

import pytest
import torch

from mvmic.codecs import Bitstream, build_codec
from mvmic.padding import crop, pad_to_multiple


@pytest.mark.parametrize("size", [(1, 1), (17, 333), (64, 64), (65, 63)])
def test_pad_crop_round_trip(size):
    x = torch.rand(2, 3, *size)
    padded, orig = pad_to_multiple(x, 64)
    assert padded.shape[-2] % 64 == 0 and padded.shape[-1] % 64 == 0
    assert orig == size
    assert torch.equal(crop(padded, orig), x)


@pytest.mark.parametrize("name", ["bmshj2018-hyperprior", "mbt2018-mean", "cheng2020-anchor"])
@pytest.mark.parametrize("channels", [1, 3])
def test_any_size_round_trip(name, channels):
    torch.manual_seed(0)
    codec = build_codec(name, N=8, M=12, in_channels=channels).eval()
    for size in [(1, 1), (17, 33)]:
        x = torch.rand(1, channels, *size)
        assert codec(x).x_hat.shape == x.shape
        bitstream = codec.compress(x)
        assert (bitstream.height, bitstream.width, bitstream.channels) == (*size, channels)
        y = codec.decompress(bitstream.to_bytes())
        assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1


def test_decoding_matches_eval_forward():
    # What the decoder rebuilds is what the eval-mode forward pass predicts it will.
    torch.manual_seed(0)
    codec = build_codec("bmshj2018-hyperprior", N=8, M=12, in_channels=3).eval()
    x = torch.rand(1, 3, 64, 64)
    decoded = codec.decompress(codec.compress(x))
    assert torch.allclose(decoded, codec(x).x_hat.clamp(0, 1), atol=1e-4)


def test_unknown_codec_lists_valid_names():
    with pytest.raises(ValueError, match="mbt2018-mean"):
        build_codec("bpg-ish")


def test_wrong_channel_count_is_explained():
    codec = build_codec("bmshj2018-hyperprior", N=8, M=12, in_channels=1)
    with pytest.raises(ValueError, match="in_channels"):
        codec(torch.rand(1, 3, 16, 16))


def test_aux_parameters_are_exactly_the_quantiles():
    codec = build_codec("mbt2018-mean", N=8, M=12)
    aux = codec.aux_parameters()
    assert len(aux) == 1 and aux[0] is codec.model.entropy_bottleneck.quantiles
    assert len(codec.main_parameters()) == len(list(codec.parameters())) - 1


def test_checkpoint_with_entropy_tables_loads_into_a_fresh_codec_as_submodule():
    # Lightning loads the codec as a submodule, bypassing CompressAI's load_state_dict.
    torch.manual_seed(0)
    trained = torch.nn.ModuleDict({"codec": build_codec("mbt2018-mean", N=8, M=12)})
    trained["codec"].update(force=True)
    x = torch.rand(1, 3, 40, 40)
    data = trained["codec"].eval().compress(x).to_bytes()
    fresh = torch.nn.ModuleDict({"codec": build_codec("mbt2018-mean", N=8, M=12)})
    fresh.load_state_dict(trained.state_dict())
    fresh.eval()
    assert torch.equal(fresh["codec"].decompress(data), trained["codec"].decompress(data))
    assert Bitstream.from_bytes(data).model_hash == fresh["codec"].weights_hash()

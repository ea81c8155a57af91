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


#: (codec name, build_codec arguments, input batch shape) for every learned codec
CONTRACT = [
    *[
        (name, {"N": 8, "M": 12, "in_channels": c}, (2, c, 40, 72))
        for name in ["bmshj2018-hyperprior", "mbt2018-mean", "cheng2020-anchor"]
        for c in (1, 3)
    ],
    ("liu2020-binary", {"in_channels": 3, "code_channels": 8, "N": 8}, (2, 3, 37, 45)),
    (
        "liu2020-binary",
        {"in_channels": 1, "code_channels": 4, "N": 8, "dims": 3},
        (2, 1, 11, 13, 17),
    ),
]


@pytest.mark.parametrize(
    "name,kwargs,shape",
    CONTRACT,
    ids=[f"{n}-{len(s) - 2}d-{s[1]}ch" for n, _, s in CONTRACT],
)
def test_reconstruct_and_eval_forward_are_what_decoding_returns(name, kwargs, shape):
    # The contract stage 2 and validation rely on: no entropy coding, the same image. For
    # cheng2020-anchor CompressAI's forward rounds y without the means; compress does not.
    torch.manual_seed(0)
    codec = build_codec(name, **kwargs).eval()
    x = torch.rand(shape)
    decoded = torch.cat([codec.decompress(codec.compress(x[i])) for i in range(len(x))])
    assert decoded.shape == (*shape[:1], decoded.shape[1], *shape[2:])
    assert torch.allclose(codec.reconstruct(x), decoded, atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(codec(x).x_hat.clamp(0, 1), decoded, atol=1e-5)
    codec.train()  # reconstruct quantises as compress does in any mode, and keeps the mode
    assert torch.allclose(codec.reconstruct(x), decoded, atol=1e-5) and codec.training


def test_cheng2020_eval_likelihoods_are_those_of_the_coded_symbols():
    torch.manual_seed(0)
    codec = build_codec("cheng2020-anchor", N=8, in_channels=1).eval()
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        out = codec(x)
        m = codec.model
        y = m.g_a(x)
        scales, means = codec._causal_gaussian_params(y, m.h_s(m.entropy_bottleneck(m.h_a(y))[0]))
    symbols = torch.round(y - means)
    expect = m.gaussian_conditional._likelihood(symbols + means, scales, means)
    assert torch.allclose(
        out.likelihoods["y"], m.gaussian_conditional.likelihood_lower_bound(expect)
    )


@pytest.mark.parametrize("name", ["bmshj2018-hyperprior", "mbt2018-mean", "cheng2020-anchor"])
def test_mvmicnet_steps_see_the_decoded_images(name, monkeypatch):
    from mvmic.modules import MVMICNet

    torch.manual_seed(0)
    model = MVMICNet(
        num_classes=2, in_channels=3, encoder="resnet18", codec=name, N=8, M=12, stage=2,
        task_args={"encoder_depth": 3, "decoder_channels": (16, 8, 8)},
    )  # fmt: skip
    model.codec.update(force=True)
    seen = []

    def spying(real):  # training reads `loss`, validation `evaluate`
        def spy(x_hat, batch):
            seen.append(x_hat.detach().clone())
            return real(x_hat, batch)

        return spy

    monkeypatch.setattr(model.task, "loss", spying(model.task.loss))
    monkeypatch.setattr(model.task, "evaluate", spying(model.task.evaluate))
    x = torch.rand(2, 3, 40, 56, generator=torch.Generator().manual_seed(1))
    batch = {"image": x, "mask": torch.zeros(2, 40, 56, dtype=torch.long)}
    model.train()  # stage 2: the codec stays frozen in eval mode
    model.training_step(batch, 0)
    model.eval()
    with torch.no_grad():
        model.validation_step(batch, 0)
    decoded = torch.cat([model.codec.decompress(model.codec.compress(xi)) for xi in x])
    assert len(seen) == 2
    for x_hat in seen:
        assert torch.allclose(x_hat, decoded, atol=1e-5)

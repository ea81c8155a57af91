"""Starting a codec from CompressAI's own weights files (`--model.init_codec FILE`).

The files are made here from CompressAI's zoo architectures with random weights (nothing is
downloaded), in the zoo's ``*.pth.tar`` layout (plain state dict; old and new
entropy-bottleneck key names) and in ``examples/train.py``'s ``{"state_dict": …}`` layout.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from compressai.zoo.image import model_architectures

from mvmic.codecs import HyperpriorCodec
from mvmic.codecs.base import pinned_threads
from mvmic.codecs.hyperprior import describe_compressai

ARCHS = ["bmshj2018-hyperprior", "mbt2018-mean", "cheng2020-anchor"]
N, M = 8, 12


def zoo_model(arch: str, seed: int = 0, n: int = N, m: int = M) -> torch.nn.Module:
    torch.manual_seed(seed)
    cls = model_architectures[arch]
    model = cls(N=n) if arch.startswith("cheng2020") else cls(N=n, M=m)
    # Distinct, non-trivial quantiles so that the entropy tables depend on the file.
    with torch.no_grad():
        q = model.entropy_bottleneck.quantiles
        q.copy_(q * (1 + 0.1 * torch.rand_like(q)))
    return model.eval()


def old_names(state: dict[str, torch.Tensor], style: str) -> dict[str, torch.Tensor]:
    """CompressAI's earlier key names: ``_biases.0`` (zoo files) or ``_bias0`` (1.1–1.2.0),
    and ``downsample`` for the residual blocks' skip convolution."""
    out = {}
    for key, value in state.items():
        for new, old in (("matrices", "matrix"), ("biases", "bias"), ("factors", "factor")):
            prefix = f"entropy_bottleneck.{new}."
            if key.startswith(prefix):
                i = key[len(prefix) :]
                old_key = f"_{new}.{i}" if style == "zoo" else f"_{old}{i}"
                key = f"entropy_bottleneck.{old_key}"
        out[key.replace(".skip.", ".downsample.") if style == "zoo" else key] = value
    return out


def save(path: Path, model: torch.nn.Module, layout: str) -> Path:
    if layout == "zoo":  # the pretrained *.pth.tar: after update(), old key names
        model.update(force=True)
        torch.save(old_names(model.state_dict(), "zoo"), path)
    elif layout == "bias0":
        model.update(force=True)
        torch.save(old_names(model.state_dict(), "bias0"), path)
    else:  # examples/train.py's save_checkpoint, mid-training (tables empty), DataParallel
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, "min")
        state = {f"module.{k}": v for k, v in model.state_dict().items()}
        ckpt = {"epoch": 3, "state_dict": state, "loss": torch.tensor(0.5)}
        ckpt |= {"optimizer": opt.state_dict(), "lr_scheduler": sched.state_dict()}
        torch.save(ckpt, path)
    return path


def reference(arch: str, path: Path) -> torch.nn.Module:
    """CompressAI's own model loaded from the file the way CompressAI loads it."""
    from compressai.zoo import load_state_dict

    obj = torch.load(path, weights_only=True)
    state = load_state_dict(obj.get("state_dict", obj))
    model = zoo_model(arch, seed=99)  # other weights and tables, all replaced by the file's
    model.load_state_dict(state)
    model.update()
    return model.eval()


def image(channels: int = 3, h: int = 64, w: int = 128) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = (torch.sin(9 * xx) * torch.cos(7 * yy) + 1) / 2
    return (0.8 * base + 0.2 * torch.rand(channels, h, w, generator=g)).unsqueeze(0)


@pytest.mark.parametrize("layout", ["zoo", "bias0", "train.py"])
@pytest.mark.parametrize("arch", ARCHS)
def test_compressai_file_gives_compressai_bitstreams(arch, layout, tmp_path):
    path = save(tmp_path / "model.pth.tar", zoo_model(arch), layout)
    codec = HyperpriorCodec(arch, N=N, M=M, in_channels=3)
    codec.load_weights(path)
    codec.eval().update()
    ref = reference(arch, path)
    ours_state = codec.model.state_dict()
    assert all(torch.equal(ours_state[k], v) for k, v in ref.state_dict().items())
    x = image()
    with pinned_threads():
        expected = ref.compress(x)["strings"]
    ours = codec.compress(x)
    assert ours.frames == [[s[0] for s in expected]]  # bit-identical y and z strings
    # And the file decodes with mvmic to what CompressAI decodes.
    with pinned_threads():
        ref_hat = ref.decompress(expected, (1, 2))["x_hat"]
    assert torch.equal(codec.decompress(ours.to_bytes()), ref_hat.clamp(0, 1))


@pytest.mark.parametrize("arch", ARCHS)
def test_rgb_file_into_a_grey_codec_folds_the_first_and_last_layers(arch, tmp_path):
    ref = zoo_model(arch)
    path = save(tmp_path / "rgb.pth.tar", ref, "zoo")
    codec = HyperpriorCodec(arch, N=N, M=M, in_channels=1)
    codec.load_weights(path)
    grey = image(channels=1)
    with torch.no_grad():
        # A grey image gives the latents the RGB model gives for it repeated to R = G = B ...
        assert torch.allclose(codec.model.g_a(grey), ref.g_a(grey.repeat(1, 3, 1, 1)), atol=1e-5)
        # ... and decodes to the BT.601 luma of the RGB model's reconstruction.
        y = torch.randn(1, codec.M, 4, 8, generator=torch.Generator().manual_seed(1))
        luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        rgb = ref.g_s(y)
        assert torch.allclose(codec.model.g_s(y), (rgb * luma).sum(1, keepdim=True), atol=1e-5)
    data = codec.compress(grey[0]).to_bytes()
    assert codec.decompress(data).shape == (1, 1, 64, 128)


def test_grey_file_into_an_rgb_codec_is_refused(tmp_path):
    grey = HyperpriorCodec("mbt2018-mean", N=N, M=M, in_channels=1)
    torch.save(grey.model.state_dict(), tmp_path / "grey.pth")
    with pytest.raises(
        ValueError, match=r"grey.pth: holds a 1-channel mbt2018-mean .*in_channels 1"
    ):
        HyperpriorCodec("mbt2018-mean", N=N, M=M, in_channels=3).load_weights(tmp_path / "grey.pth")


@pytest.mark.parametrize(
    "held,wanted,words",
    [
        (("cheng2020-anchor", N, M), ("mbt2018-mean", N, M),
         r"holds a 3-channel cheng2020-anchor with N=8, but the config asks for mbt2018-mean "
         r"with N=8, M=12; set --model.codec cheng2020-anchor --model.N 8 to use it"),
        (("bmshj2018-hyperprior", N, M), ("bmshj2018-hyperprior", 16, M),
         r"bmshj2018-hyperprior with N=8, M=12, but the config asks for bmshj2018-hyperprior "
         r"with N=16, M=12; set .*--model.N 8 --model.M 12"),
        (("mbt2018-mean", N, M), ("mbt2018-mean", N, 16), r"mbt2018-mean with N=8, M=12, but"),
        (("mbt2018-mean", N, M), ("bmshj2018-hyperprior", N, M), r"holds a 3-channel mbt2018-mean"),
        (("mbt2018", N, M), ("mbt2018-mean", N, M), r"mbt2018 with N=8, M=12, which mvmic does "),
    ],
)  # fmt: skip
def test_other_architecture_or_size_names_what_the_file_holds(held, wanted, words, tmp_path):
    arch, n, m = held
    path = save(tmp_path / "other.pth.tar", zoo_model(arch, n=n, m=m), "train.py")
    codec = HyperpriorCodec(wanted[0], N=wanted[1], M=wanted[2])
    with pytest.raises(ValueError, match=words):
        codec.load_weights(path)


def test_describe_reads_architecture_and_sizes_from_keys():
    for arch in ARCHS:
        found = describe_compressai(zoo_model(arch, n=16, m=24).state_dict())
        m = 16 if arch == "cheng2020-anchor" else 24
        assert found == {"arch": arch, "N": 16, "M": m, "in_channels": 3}


def test_files_that_are_not_compressai_models(tmp_path):
    codec = HyperpriorCodec("mbt2018-mean", N=N, M=M)
    torch.save({"weight": torch.zeros(3)}, tmp_path / "w.pt")
    with pytest.raises(ValueError, match=r"w.pt: holds no CompressAI image model .*'weight'"):
        codec.load_weights(tmp_path / "w.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a file torch can read")
    with pytest.raises(ValueError, match="junk.pt: not a plain-tensor weights file"):
        codec.load_weights(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError, match="none.pt"):
        codec.load_weights(tmp_path / "none.pt")


def test_mvmic_checkpoints_still_load(tmp_path):
    trained = HyperpriorCodec("cheng2020-anchor", N=N, in_channels=1)
    trained.update(force=True)
    module_ckpt = {"state_dict": {f"codec.{k}": v for k, v in trained.state_dict().items()}}
    torch.save(module_ckpt, tmp_path / "stage1.ckpt")
    torch.save(trained.state_dict(), tmp_path / "codec.pt")
    for name in ("stage1.ckpt", "codec.pt"):
        fresh = HyperpriorCodec("cheng2020-anchor", N=N, in_channels=1)
        fresh.load_weights(tmp_path / name)
        assert fresh.weights_hash() == trained.weights_hash(), name


def test_init_codec_starts_mvmicnet_from_a_compressai_file(tmp_path):
    from mvmic.modules import MVMICNet

    ref = zoo_model("mbt2018-mean")
    path = save(tmp_path / "mbt.pth.tar", ref, "zoo")
    kwargs = dict(num_classes=2, in_channels=3, encoder="resnet18", codec="mbt2018-mean", N=N, M=M)
    model = MVMICNet(**kwargs, init_codec=str(path))
    model.setup("fit")
    ours = model.codec.model.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in ref.state_dict().items() if "quantized" not in k)
    with pytest.raises(ValueError, match=r"mbt.pth.tar: holds a 3-channel mbt2018-mean"):
        MVMICNet(**{**kwargs, "N": 16}, init_codec=str(path)).setup("fit")

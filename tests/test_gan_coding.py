"""GAN (liu2020-binary) bitstreams end to end: `mvmic compress` → `mvmic decompress [--task]`
in 2D and 3D from real checkpoints, the shared decoder checks, and the fuzzer over them."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from test_gan import tiny_module

import mvmic
from mvmic import coding
from mvmic.codecs import Bitstream, BitstreamError
from mvmic.codecs import base as codec_base
from mvmic.modules import load_module
from mvmic.modules.gan_seg import GanSegmentation

ROOT = Path(__file__).resolve().parents[1]


def tiny_gan(dims: int) -> GanSegmentation:
    torch.manual_seed(0)
    return tiny_module("D4", dims)  # the tiny 2D/3D D4 of the GAN training tests


def save_checkpoint(model: GanSegmentation, path: Path) -> Path:
    """What Lightning writes, minus the trainer state: weights, hparams, mvmic's class."""
    ckpt = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    model.on_save_checkpoint(ckpt)
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[int, Path]:
    folder = tmp_path_factory.mktemp("gan_ckpts")
    return {d: save_checkpoint(tiny_gan(d), folder / f"gan{d}d.ckpt") for d in (2, 3)}


def test_one_decompress_signature_for_every_codec():
    import inspect

    from mvmic.codecs.base import Codec
    from mvmic.codecs.binary import BinaryCodec
    from mvmic.codecs.hyperprior import HyperpriorCodec

    # The subclasses implement the padded pieces; the checks live once, in the base.
    for cls in (BinaryCodec, HyperpriorCodec):
        for name in ("compress", "decompress", "forward"):
            assert getattr(cls, name) is getattr(Codec, name), (cls.__name__, name)
    assert "source" in inspect.signature(BinaryCodec.decompress).parameters


def test_cli_2d_gan_compress_decompress_task(ckpts, tmp_path, capsys):
    ckpt = str(ckpts[2])
    rgb = np.random.default_rng(0).integers(0, 256, (37, 45, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    assert (
        coding.compress_main(["--ckpt", ckpt, str(tmp_path / "a.png"), str(tmp_path / "a.mvmic")])
        == 0
    )
    mask_args = ["--ckpt", ckpt, str(tmp_path / "a.mvmic"), str(tmp_path / "mask.png"), "--task"]
    assert coding.decompress_main(mask_args) == 0, capsys.readouterr().err
    mask = np.asarray(Image.open(tmp_path / "mask.png"))
    model = load_module(ckpts[2])
    decoded = mvmic.decompress(tmp_path / "a.mvmic", model)  # g's feature map
    assert decoded.shape == (1, 1, 37, 45)
    assert mask.shape == (37, 45) and np.array_equal(mask, model.task_output(decoded)[0].numpy())
    # Without --task: the feature map as an image.
    args = ["--ckpt", ckpt, str(tmp_path / "a.mvmic"), str(tmp_path / "feats.png")]
    assert coding.decompress_main(args) == 0
    assert np.asarray(Image.open(tmp_path / "feats.png")).shape == (37, 45)


def test_cli_3d_gan_nifti_volume_to_mask(ckpts, tmp_path, capsys):
    ckpt = str(ckpts[3])
    vol = np.random.default_rng(0).integers(0, 1000, (21, 19, 13)).astype(np.int16)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "v.nii.gz")
    args = ["--ckpt", ckpt, str(tmp_path / "v.nii.gz"), str(tmp_path / "v.mvmic")]
    assert coding.compress_main(args) == 0, capsys.readouterr().err
    n = (tmp_path / "v.mvmic").stat().st_size
    assert f"{n} bytes, {8 * n / vol.size:.4f} bpp" in capsys.readouterr().out  # per voxel
    bs = Bitstream.load(tmp_path / "v.mvmic")
    # One 3D code: frame k of the NIfTI (data[:, :, k]) is slice k of the volume.
    assert (len(bs.frames), bs.depth, bs.height, bs.width) == (1, 13, 19, 21)  # Z×Y×X
    args = ["--ckpt", ckpt, str(tmp_path / "v.mvmic"), str(tmp_path / "mask.nii.gz"), "--task"]
    assert coding.decompress_main(args) == 0, capsys.readouterr().err
    mask = np.asarray(nib.load(tmp_path / "mask.nii.gz").dataobj)
    assert mask.shape == vol.shape
    model = load_module(ckpts[3])
    decoded = mvmic.decompress(tmp_path / "v.mvmic", model)
    assert decoded.shape == (1, 1, 13, 19, 21)  # volumetric codecs decode to volumes
    expect = model.task_output(decoded)[0].numpy().transpose(2, 1, 0)  # Z×Y×X -> NIfTI X×Y×Z
    assert np.array_equal(mask, expect) and set(np.unique(mask)) <= {0, 1, 2}
    # The reconstruction (g's feature map) as a NIfTI volume of the input's shape.
    args = ["--ckpt", ckpt, str(tmp_path / "v.mvmic"), str(tmp_path / "feats.nii.gz")]
    assert coding.decompress_main(args) == 0
    assert nib.load(tmp_path / "feats.nii.gz").shape == vol.shape


def test_3d_decoder_refuses_bad_files_like_2d(ckpts, tmp_path, monkeypatch, capsys):
    codec = load_module(ckpts[3]).codec
    x = torch.rand(1, 1, 9, 10, 11, generator=torch.Generator().manual_seed(0))
    good = codec.compress(x)
    frames = good.frames

    def crafted(**kw) -> bytes:
        fields = dict(height=10, width=11, channels=1, bit_depth=8, depth=9) | kw
        return Bitstream(codec.name, codec.weights_hash(), frames=frames, **fields).to_bytes()

    # The volume budget counts D×H×W: a few header bytes cannot ask for a huge decode.
    with pytest.raises(BitstreamError, match="v.mvmic: .*budget"):
        codec.decompress(crafted(depth=65535, height=4096, width=4096), source="v.mvmic")
    monkeypatch.setattr(codec_base, "MAX_FRAME_PIXELS", 16**3 - 1)
    with pytest.raises(BitstreamError, match="budget"):
        codec.decompress(good)  # padded to 16×16×16 voxels
    monkeypatch.undo()
    with pytest.raises(BitstreamError, match="v.mvmic: bitstream has 3 channels"):
        codec.decompress(crafted(channels=3), source="v.mvmic")
    with pytest.raises(BitstreamError, match="v.mvmic: corrupted: code string of 3 bytes"):
        codec.decompress(
            Bitstream(codec.name, codec.weights_hash(), 10, 11, 1, 8, [[b"abc"]], 9).to_bytes(),
            source="v.mvmic",
        )
    two = Bitstream(codec.name, codec.weights_hash(), 10, 11, 1, 8, [frames[0] * 2], 9)
    with pytest.raises(BitstreamError, match="2 strings, expected 1"):
        codec.decompress(two)
    # A 2D model refuses a volume (same codec name, but it codes images).
    codec2 = load_module(ckpts[2]).codec
    vol = Bitstream(codec2.name, codec2.weights_hash(), 10, 11, 3, 8, frames, 9).to_bytes()
    with pytest.raises(BitstreamError, match="depth 9, this model codes 2D images"):
        codec2.decompress(vol)
    # And through the CLI: one line, exit 2 (it was a TypeError traceback before).
    (tmp_path / "bad.mvmic").write_bytes(crafted(channels=3))
    args = ["--ckpt", str(ckpts[3]), str(tmp_path / "bad.mvmic"), str(tmp_path / "o.nii.gz")]
    assert coding.decompress_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.mvmic" in err and "3 channels" in err, err


def test_3d_coding_runs_on_the_pinned_threads(ckpts, monkeypatch):
    codec = load_module(ckpts[3]).codec
    seen = []
    real = codec._decompress_padded

    def spy(*args):
        seen.append(torch.get_num_threads())
        return real(*args)

    monkeypatch.setattr(codec, "_decompress_padded", spy)
    monkeypatch.setattr(codec_base, "CODING_THREADS", 1)
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        codec.decompress(codec.compress(torch.rand(1, 1, 5, 6, 7)))
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(old)


def test_crafted_binary_payload_is_a_clean_error_or_garbage(ckpts):
    # Valid CRC and hash, payload rewritten: the padded rANS decoder stays in bounds, and a
    # symbol other than 0/1 (only a crafted stream decodes one) is a BitstreamError.
    for dims in (2, 3):
        codec = load_module(ckpts[dims]).codec
        shape = (1, 3, 40, 24) if dims == 2 else (1, 1, 8, 16, 9)
        good = codec.compress(torch.rand(*shape))
        size = (shape[-2], shape[-1])
        depth = shape[2] if dims == 3 else 1
        for fill in (b"\xff", b"\x00", b"\x5a"):
            frames = [[fill * 64]]
            data = Bitstream(codec.name, codec.weights_hash(), *size, shape[1], 8, frames, depth)
            try:
                y = codec.decompress(data.to_bytes())
            except BitstreamError as err:
                assert "symbols other than 0 and 1" in str(err)
            else:
                assert torch.isfinite(y).all() and y.shape[-2:] == size
        assert torch.equal(codec.decompress(good), codec.decompress(good.to_bytes()))


@pytest.mark.slow
def test_fuzz_tool_over_gan_bitstreams(ckpts, tmp_path, capsys, monkeypatch):
    # The spawned decoder workers import the tool by name, so it stays importable meanwhile.
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    import fuzz_bitstream

    vol = torch.rand(1, 1, 12, 10, 9, generator=torch.Generator().manual_seed(0))
    model = load_module(ckpts[3])
    (tmp_path / "v.mvmic").write_bytes(mvmic.compress(vol[0].movedim(0, 1), model))
    for args in (
        ["--ckpt", str(ckpts[3]), "--bitstream", str(tmp_path / "v.mvmic")],
        ["--ckpt", str(ckpts[2])],
    ):
        assert fuzz_bitstream.main([*args, "--n", "60", "--timeout", "120"]) == 0
        out = capsys.readouterr().out
        assert "crashes 0, hangs 0" in out and "other exception" in out, out
    assert fuzz_bitstream.main(["--ckpt", str(tmp_path / "none.ckpt")]) == 2

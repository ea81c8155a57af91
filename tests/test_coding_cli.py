"""mvmic.compress / mvmic.decompress and the `mvmic compress|decompress` commands."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydicom.data import get_testdata_file
from torch import nn

import mvmic
from mvmic import coding, coding_cli
from mvmic.codecs import BitstreamError, HyperpriorCodec
from mvmic.io import read_image, to_codes

ROOT = Path(__file__).resolve().parents[1]


class TinySeg(nn.Module):
    """Stands in for a segmentation TaskNet: class 1 where the image is bright."""

    task = "segmentation"

    def predict(self, x):
        return (x.mean(1) > 0.5).long()


class TinyDet(nn.Module):
    task = "detection"

    def predict(self, x):
        return [
            {"boxes": torch.tensor([[1.0, 2.0, 3.0, 4.0]]), "labels": torch.tensor([1]),
             "scores": torch.tensor([0.5])}
            for _ in x
        ]  # fmt: skip


class Module(nn.Module):
    def __init__(self, in_channels=1, task=None, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.codec = HyperpriorCodec("bmshj2018-hyperprior", N=16, M=24, in_channels=in_channels)
        self.task = task or TinySeg()
        self.eval()


@pytest.fixture(scope="module")
def module():
    return Module()


@pytest.fixture
def use_module(monkeypatch, module):
    """`--ckpt anything` loads the tiny module (the checkpoint file must exist)."""
    monkeypatch.setattr(coding_cli, "load_model", lambda ckpt: module)
    return module


@pytest.fixture
def ckpt(tmp_path):
    path = tmp_path / "model.ckpt"
    path.write_bytes(b"stand-in")
    return str(path)


def png(path: Path, size=(20, 30), dtype=np.uint8) -> Path:
    a = np.random.default_rng(0).integers(0, np.iinfo(dtype).max + 1, size, dtype=dtype)
    Image.fromarray(a).save(path)
    return path


# -- Python API ----------------------------------------------------------------------------
def test_api_round_trip_with_module_and_codec(module):
    x = torch.rand(1, 17, 33, generator=torch.Generator().manual_seed(0))
    data = mvmic.compress(x, module)
    assert isinstance(data, bytes) and data[:4] == b"MVMC"
    y = mvmic.decompress(data, module)
    assert y.shape == (1, 1, 17, 33)
    assert torch.equal(y, mvmic.decompress(data, module.codec))


def test_api_converts_rgb_for_a_grey_model(module):
    rgb = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert mvmic.decompress(mvmic.compress(rgb, module), module).shape == (1, 1, 8, 8)


def test_api_reads_a_dicom_and_keeps_its_bit_depth(module, tmp_path):
    data = mvmic.compress(get_testdata_file("CT_small.dcm"), module)
    (tmp_path / "ct.mvmic").write_bytes(data)
    assert data[15] == 12  # bit-depth byte of the header
    assert mvmic.decompress(tmp_path / "ct.mvmic", module).shape == (1, 1, 128, 128)


def test_api_rejects_bad_inputs(module):
    with pytest.raises(TypeError, match="expected a Codec"):
        mvmic.compress(torch.rand(1, 4, 4), nn.Linear(1, 1))
    with pytest.raises(ValueError, match="NaN"):
        mvmic.compress(torch.full((1, 4, 4), float("nan")), module)
    with pytest.raises(ValueError, match="expected C×H×W"):
        mvmic.compress(torch.rand(4, 4), module)
    with pytest.raises(BitstreamError, match="empty"):
        mvmic.decompress(b"", module)


# -- command line --------------------------------------------------------------------------
def test_compress_then_decompress_a_16_bit_png(use_module, ckpt, tmp_path, capsys):
    src = png(tmp_path / "scan.png", (33, 47), np.uint16)
    assert coding.compress_main(["--ckpt", ckpt, str(src), str(tmp_path / "scan.mvmic")]) == 0
    line = capsys.readouterr().out.strip()
    n = (tmp_path / "scan.mvmic").stat().st_size
    assert line.endswith(f": {n} bytes, {8 * n / (33 * 47):.4f} bpp")
    assert coding.decompress_main(["--ckpt", ckpt, str(tmp_path / "scan.mvmic"),
                                   str(tmp_path / "out.png")]) == 0  # fmt: skip
    out = Image.open(tmp_path / "out.png")
    assert out.size == (47, 33) and np.asarray(out).dtype == np.uint16
    # What the CLI wrote is what the API decodes.
    x_hat = mvmic.decompress(tmp_path / "scan.mvmic", use_module)
    assert np.array_equal(np.asarray(out), to_codes(x_hat[0, 0], 16))


def test_folder_in_folder_out(use_module, ckpt, tmp_path, capsys):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    png(tmp_path / "in" / "a.png")
    png(tmp_path / "in" / "sub" / "b.png", (5, 6))
    np.save(tmp_path / "in" / "c.npy", np.zeros((4, 4), np.uint8))
    (tmp_path / "in" / "notes.txt").write_text("skipped")
    assert coding.compress_main(["--ckpt", ckpt, str(tmp_path / "in"), str(tmp_path / "out")]) == 0
    made = sorted(
        p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.mvmic")
    )
    assert made == ["a.mvmic", "c.mvmic", "sub/b.mvmic"]
    printed = capsys.readouterr()
    assert len(printed.out.strip().splitlines()) == 3
    assert re.search(r"encoded [\d.e-]+ MP in [\d.e-]+ s: [\d.e+-]+ MP/s", printed.err)
    assert (
        coding.decompress_main(["--ckpt", ckpt, str(tmp_path / "out"), str(tmp_path / "rec")]) == 0
    )
    assert (tmp_path / "rec" / "sub" / "b.png").is_file()


def test_decompress_task_writes_a_mask(use_module, ckpt, tmp_path):
    src = tmp_path / "x.png"
    a = np.zeros((16, 16), np.uint8)
    a[:, 8:] = 255
    Image.fromarray(a).save(src)
    coding.compress_main(["--ckpt", ckpt, str(src), str(tmp_path / "x.mvmic")])
    args = ["--ckpt", ckpt, str(tmp_path / "x.mvmic"), str(tmp_path / "mask.png"), "--task"]
    assert coding.decompress_main(args) == 0
    mask = np.asarray(Image.open(tmp_path / "mask.png"))
    x_hat = mvmic.decompress(tmp_path / "x.mvmic", use_module)
    assert mask.dtype == np.uint8 and np.array_equal(mask, TinySeg().predict(x_hat)[0].numpy())


def test_decompress_task_detection_writes_json(monkeypatch, ckpt, tmp_path):
    module = Module(task=TinyDet())
    monkeypatch.setattr(coding_cli, "load_model", lambda ckpt: module)
    (tmp_path / "x.mvmic").write_bytes(mvmic.compress(torch.rand(1, 8, 8), module))
    args = ["--ckpt", ckpt, str(tmp_path / "x.mvmic"), str(tmp_path / "det.json"), "--task"]
    assert coding.decompress_main(args) == 0
    assert json.loads((tmp_path / "det.json").read_text()) == {
        "boxes": [[1.0, 2.0, 3.0, 4.0]], "labels": [1], "scores": [0.5]
    }  # fmt: skip


def one_line_error(capsys, *words):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, err


def test_exit_2_on_usage_errors(use_module, ckpt, tmp_path, capsys):
    assert coding.compress_main([str(tmp_path), str(tmp_path)]) == 2
    one_line_error(capsys, "--ckpt")
    assert coding.compress_main(["--ckpt", ckpt, str(tmp_path / "none.png"), "o.mvmic"]) == 2
    one_line_error(capsys, "does not exist")
    assert coding.decompress_main(["--ckpt", ckpt, "--bogus", "a", "b"]) == 2
    one_line_error(capsys, "unrecognized arguments")


def test_exit_2_on_missing_or_invalid_checkpoint(tmp_path, capsys):
    src = png(tmp_path / "a.png")
    assert coding.compress_main(["--ckpt", str(tmp_path / "no.ckpt"), str(src), "o.mvmic"]) == 2
    one_line_error(capsys, "checkpoint", "does not exist")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    assert coding.compress_main(["--ckpt", str(tmp_path / "junk.ckpt"), str(src), "o.mvmic"]) == 2
    one_line_error(capsys, "cannot load checkpoint")


def test_exit_2_on_unreadable_image(use_module, ckpt, tmp_path, capsys):
    (tmp_path / "bad.png").write_bytes(b"garbage")
    args = ["--ckpt", ckpt, str(tmp_path / "bad.png"), str(tmp_path / "o.mvmic")]
    assert coding.compress_main(args) == 2
    one_line_error(capsys, "bad.png", "cannot read as an image")


@pytest.mark.parametrize(
    "damage,words",
    [
        (lambda d: b"", "empty"),
        (lambda d: d[:20], "truncated"),
        (lambda d: d[:30] + bytes([d[30] ^ 1]) + d[31:], "checksum"),
        (lambda d: b"GIF89a" + d[6:], "not an mvmic bitstream"),
    ],
)
def test_exit_2_on_bad_bitstreams(use_module, ckpt, tmp_path, capsys, damage, words):
    data = mvmic.compress(torch.rand(1, 40, 40), use_module)
    (tmp_path / "x.mvmic").write_bytes(damage(data))
    args = ["--ckpt", ckpt, str(tmp_path / "x.mvmic"), str(tmp_path / "x.png")]
    assert coding.decompress_main(args) == 2
    one_line_error(capsys, "x.mvmic", words)
    assert not (tmp_path / "x.png").exists()


def test_exit_2_on_a_file_from_another_checkpoint(use_module, ckpt, tmp_path, capsys):
    (tmp_path / "x.mvmic").write_bytes(mvmic.compress(torch.rand(1, 8, 8), Module(seed=1)))
    args = ["--ckpt", ckpt, str(tmp_path / "x.mvmic"), str(tmp_path / "x.png")]
    assert coding.decompress_main(args) == 2
    one_line_error(capsys, "different checkpoint")


def test_exit_1_on_unexpected_failure(use_module, ckpt, tmp_path, monkeypatch, capsys):
    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(coding_cli, "encode", boom)
    args = ["--ckpt", ckpt, str(png(tmp_path / "a.png")), str(tmp_path / "a.mvmic")]
    assert coding.compress_main(args) == 1
    assert "unexpected error: RuntimeError: boom" in capsys.readouterr().err


def test_help_exits_0(capsys):
    assert coding.compress_main(["--help"]) == 0
    assert "--ckpt" in capsys.readouterr().out


@pytest.mark.slow  # a fresh interpreter imports torch and Lightning: ~30 s on 2 busy cores
def test_mvmic_compress_in_a_subprocess(tmp_path):
    """The real entry point end to end, with a real (tiny, untrained) MVMICNet checkpoint."""
    pytest.importorskip("mvmic.cli")
    from mvmic.modules import MVMICNet

    model = MVMICNet(num_classes=2, in_channels=1, N=16, M=24, encoder="resnet18")
    ckpt = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, ckpt)
    src = get_testdata_file("CT_small.dcm")
    run = subprocess.run(
        [sys.executable, "-m", "mvmic.cli", "compress", "--ckpt", str(ckpt), src,
         str(tmp_path / "ct.mvmic")],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
        env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "", "WANDB_MODE": "offline"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    n = (tmp_path / "ct.mvmic").stat().st_size
    assert f"{n} bytes" in run.stdout
    # The file decodes here, with the module rebuilt from the same checkpoint.
    from mvmic.modules import load_module

    x_hat = mvmic.decompress(tmp_path / "ct.mvmic", load_module(ckpt))
    assert x_hat.shape == (1, 1, 128, 128)
    assert read_image(src)[1] == 12


def test_decompress_like_dicom_writes_a_dicom_copy(use_module, ckpt, tmp_path, capsys):
    import pydicom

    src = get_testdata_file("CT_small.dcm")
    assert coding.compress_main(["--ckpt", ckpt, src, str(tmp_path / "ct.mvmic")]) == 0
    args = ["--ckpt", ckpt, str(tmp_path / "ct.mvmic"), str(tmp_path / "ct.dcm"), "--like", src]
    assert coding.decompress_main(args) == 0
    copy = pydicom.dcmread(tmp_path / "ct.dcm")
    x_hat = mvmic.decompress(tmp_path / "ct.mvmic", use_module)
    assert copy.LossyImageCompression == "01" and copy.RescaleIntercept == -1024
    assert np.array_equal(copy.pixel_array, to_codes(x_hat[0, 0], 12).astype(np.int16))
    # Without --like there is no source to copy: a one-line error, exit 2.
    args = ["--ckpt", ckpt, str(tmp_path / "ct.mvmic"), str(tmp_path / "no.dcm")]
    assert coding.decompress_main(args) == 2
    one_line_error(capsys, "needs the meta of the source DICOM")


# -- file safety (issue 23) ----------------------------------------------------------------
MR = get_testdata_file("MR_small.dcm")  # 64×64, 12-bit, another patient than CT_small


@pytest.fixture(scope="module")
def rgb_module():
    return Module(in_channels=3)


@pytest.fixture
def use_rgb(monkeypatch, rgb_module):
    monkeypatch.setattr(coding_cli, "load_model", lambda ckpt: rgb_module)
    return rgb_module


def luma_codes(x_hat, bits):
    """What a grey output must hold: the BT.601 luma of an RGB decode, as codes."""
    from mvmic.io import LUMA

    grey = (x_hat * torch.tensor(LUMA).view(1, 3, 1, 1)).sum(1)
    return to_codes(grey, bits)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_grey_dicom_decoded_by_an_rgb_model_is_a_grey_dicom(use_rgb, ckpt, tmp_path, capsys, name):
    import pydicom

    src = get_testdata_file(name)
    assert coding.compress_main(["--ckpt", ckpt, src, str(tmp_path / "x.mvmic")]) == 0
    args = ["--ckpt", ckpt, str(tmp_path / "x.mvmic"), str(tmp_path / "rec.dcm"), "--like", src]
    assert coding.decompress_main(args) == 0
    rows = pydicom.dcmread(src).Rows
    assert (
        f"1x1x{rows}x{rows} (decoded with 3 channels, grey by BT.601 luma like the --like source)"
        in (capsys.readouterr().out)
    )
    source, copy = pydicom.dcmread(src), pydicom.dcmread(tmp_path / "rec.dcm")
    assert copy.PhotometricInterpretation == "MONOCHROME2" and copy.SamplesPerPixel == 1
    assert (copy.Rows, copy.Columns) == (source.Rows, source.Columns)
    assert int(copy.get("NumberOfFrames", 1) or 1) == 1
    x_hat = mvmic.decompress(tmp_path / "x.mvmic", use_rgb)
    assert x_hat.shape[1] == 3
    assert copy.pixel_array.dtype == source.pixel_array.dtype
    assert np.array_equal(copy.pixel_array, luma_codes(x_hat, 12)[0].astype(np.int16))


def test_grey_nifti_through_an_rgb_model_writes_grey_nifti(use_rgb, ckpt, tmp_path, capsys):
    import nibabel as nib

    v = np.random.default_rng(0).integers(-1000, 1000, (32, 32, 4)).astype(np.int16)
    affine = np.diag([0.7, 0.7, 2.0, 1.0])
    nib.save(nib.Nifti1Image(v, affine), tmp_path / "v.nii.gz")
    assert coding.compress_main(["--ckpt", ckpt, str(tmp_path / "v.nii.gz"),
                                 str(tmp_path / "v.mvmic")]) == 0  # fmt: skip
    base = ["--ckpt", ckpt, str(tmp_path / "v.mvmic")]
    # Without the source nothing says the decode was grey: refused in one line, nothing written.
    assert coding.decompress_main([*base, str(tmp_path / "o.nii.gz")]) == 2
    one_line_error(capsys, "NIfTI holds grey frames only", "--like")
    assert not (tmp_path / "o.nii.gz").exists()
    assert coding.decompress_main([*base, str(tmp_path / "o.nii.gz"), "--like",
                                   str(tmp_path / "v.nii.gz")]) == 0  # fmt: skip
    out = nib.load(tmp_path / "o.nii.gz")
    assert out.shape == v.shape and np.allclose(out.affine, affine)
    x_hat = mvmic.decompress(tmp_path / "v.mvmic", use_rgb)  # 4×3×32×32
    _, bits, meta = read_image(tmp_path / "v.nii.gz")
    expected = luma_codes(x_hat, bits).astype(np.int64) + int(meta["value_min"])
    assert np.array_equal(np.asarray(out.dataobj), expected.transpose(2, 1, 0))  # Z×Y×X → X×Y×Z


def test_three_signed_slices_stay_three_slices(use_module, ckpt, tmp_path, capsys):
    a = np.random.default_rng(0).integers(-1024, 3000, (3, 32, 32)).astype(np.int16)
    np.save(tmp_path / "ct.npy", a)
    assert coding.compress_main(["--ckpt", ckpt, str(tmp_path / "ct.npy"),
                                 str(tmp_path / "ct.mvmic")]) == 0  # fmt: skip
    assert "note" not in capsys.readouterr().err  # signed data is never RGB: no choice made
    args = ["--ckpt", ckpt, str(tmp_path / "ct.mvmic"), str(tmp_path / "rec.npy")]
    assert coding.decompress_main([*args, "--like", str(tmp_path / "ct.npy")]) == 0
    assert "3x1x32x32, 13-bit" in capsys.readouterr().out
    rec = np.load(tmp_path / "rec.npy")
    assert rec.shape == a.shape and rec.dtype == np.int16  # the source's own layout
    x_hat = mvmic.decompress(tmp_path / "ct.mvmic", use_module)
    assert np.array_equal(rec, to_codes(x_hat[:, 0], 13).astype(np.int64) - 4096)


def test_ambiguous_3xhxw_is_read_as_slices_and_says_so(use_module, ckpt, tmp_path, capsys):
    np.save(tmp_path / "a.npy", np.random.default_rng(0).integers(0, 256, (3, 16, 16), np.uint8))
    assert coding.compress_main(["--ckpt", ckpt, str(tmp_path / "a.npy"),
                                 str(tmp_path / "a.mvmic")]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "a.npy (3×16×16 uint8) as 3 slices (D×H×W)" in err
    assert "pass --npy_layout chw to read it as one RGB image (C×H×W)" in err
    assert mvmic.decompress(tmp_path / "a.mvmic", use_module).shape == (3, 1, 16, 16)
    assert coding.compress_main(["--ckpt", ckpt, str(tmp_path / "a.npy"), str(tmp_path / "b.mvmic"),
                                 "--npy_layout", "chw"]) == 0  # fmt: skip
    assert "note" not in capsys.readouterr().err  # the user chose
    assert mvmic.decompress(tmp_path / "b.mvmic", use_module).shape == (1, 1, 16, 16)


def test_an_output_that_is_the_input_is_refused(use_module, ckpt, tmp_path, capsys):
    src = png(tmp_path / "same.png")
    before = src.read_bytes()
    for extra in ([], ["--overwrite"]):
        assert coding.compress_main(["--ckpt", ckpt, str(src), str(src), *extra]) == 2
        one_line_error(capsys, "same.png is the input")
        assert src.read_bytes() == before
    # Nor may a decode replace its --like source.
    src = get_testdata_file("CT_small.dcm")
    (tmp_path / "ct.dcm").write_bytes(Path(src).read_bytes())
    coding.compress_main(["--ckpt", ckpt, src, str(tmp_path / "ct.mvmic")])
    capsys.readouterr()
    args = ["--ckpt", ckpt, str(tmp_path / "ct.mvmic"), str(tmp_path / "ct.dcm"),
            "--like", str(tmp_path / "ct.dcm"), "--overwrite"]  # fmt: skip
    assert coding.decompress_main(args) == 2
    one_line_error(capsys, "ct.dcm is the input")
    assert (tmp_path / "ct.dcm").read_bytes() == Path(src).read_bytes()


def test_folder_round_trip_in_place_keeps_the_originals(use_module, ckpt, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    png(folder / "a.png")
    before = (folder / "a.png").read_bytes()
    assert coding.compress_main(["--ckpt", ckpt, str(folder), str(folder)]) == 0
    assert (folder / "a.mvmic").is_file()
    assert coding.decompress_main(["--ckpt", ckpt, str(folder), str(folder)]) == 2
    one_line_error(capsys, "a.png exists; pass --overwrite")
    assert (folder / "a.png").read_bytes() == before
    # A second compress into the same place is refused too, and --overwrite allows both.
    assert coding.compress_main(["--ckpt", ckpt, str(folder), str(folder)]) == 2
    one_line_error(capsys, "a.mvmic exists", "--overwrite")
    assert coding.decompress_main(["--ckpt", ckpt, str(folder), str(folder), "--overwrite"]) == 0
    x_hat = mvmic.decompress(folder / "a.mvmic", use_module)
    assert np.array_equal(np.asarray(Image.open(folder / "a.png")), to_codes(x_hat[0, 0], 8))
    assert sorted(p.name for p in folder.iterdir()) == ["a.mvmic", "a.png"]  # no temporaries


def test_two_inputs_onto_one_output_are_refused(use_module, ckpt, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    png(tmp_path / "in" / "a.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "in" / "a.jpg")
    png(tmp_path / "in" / ".hidden.png")  # hidden files are never inputs
    args = ["--ckpt", ckpt, str(tmp_path / "in"), str(tmp_path / "out")]
    assert coding.compress_main(args) == 2
    one_line_error(capsys, "a.jpg and", "a.png would both be written to", "a.mvmic")
    assert not (tmp_path / "out").exists()
    (tmp_path / "in" / "a.jpg").unlink()
    assert coding.compress_main(args) == 0
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a.mvmic"]


def test_existing_outputs_need_overwrite(use_module, ckpt, tmp_path, capsys):
    src, dst = png(tmp_path / "a.png"), tmp_path / "a.mvmic"
    dst.write_bytes(b"keep me")
    assert coding.compress_main(["--ckpt", ckpt, str(src), str(dst)]) == 2
    one_line_error(capsys, "a.mvmic exists; pass --overwrite")
    assert dst.read_bytes() == b"keep me"
    assert coding.compress_main(["--ckpt", ckpt, str(src), str(dst), "--overwrite"]) == 0
    assert dst.read_bytes()[:4] == b"MVMC"
    (tmp_path / "mask.png").write_bytes(b"keep me")  # task outputs follow the same rule
    args = ["--ckpt", ckpt, str(dst), str(tmp_path / "mask.png"), "--task"]
    assert coding.decompress_main(args) == 2
    one_line_error(capsys, "mask.png exists; pass --overwrite")
    assert (tmp_path / "mask.png").read_bytes() == b"keep me"
    assert coding.decompress_main([*args, "--overwrite"]) == 0
    assert np.asarray(Image.open(tmp_path / "mask.png")).shape == (20, 30)


def test_like_from_another_image_is_refused(use_module, ckpt, tmp_path, capsys):
    assert coding.compress_main(["--ckpt", ckpt, MR, str(tmp_path / "mr.mvmic")]) == 0
    args = ["--ckpt", ckpt, str(tmp_path / "mr.mvmic"), str(tmp_path / "rec.dcm"),
            "--like", get_testdata_file("CT_small.dcm")]  # fmt: skip
    assert coding.decompress_main(args) == 2
    one_line_error(capsys, "CT_small.dcm is 1×128×128", "mr.mvmic decodes to 1×64×64",
                   "not its source")  # fmt: skip
    assert not (tmp_path / "rec.dcm").exists()


@pytest.mark.parametrize("command", ["compress", "decompress"])
def test_an_output_under_a_regular_file_is_one_line(use_module, ckpt, tmp_path, capsys, command):
    src = tmp_path / "grey.jpg"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(src)
    if command == "compress":
        argv, main = [str(src), str(src / "x.mvmic")], coding.compress_main
    else:
        (tmp_path / "x.mvmic").write_bytes(mvmic.compress(torch.rand(1, 8, 8), use_module))
        argv, main = [str(tmp_path / "x.mvmic"), str(src / "sub" / "x.png")], coding.decompress_main
    assert main(["--ckpt", ckpt, *argv]) == 2
    one_line_error(capsys, "grey.jpg is a file, not a folder")

"""Reading medical and ordinary images into [0, 1] and writing them back exactly."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.data import get_testdata_file

from mvmic.io import ImageReadError, match_channels, read_image, to_codes, write_image

CT = get_testdata_file("CT_small.dcm")  # bundled with pydicom: no download


def rng():
    return np.random.default_rng(0)


@pytest.mark.parametrize("size", [(1, 1), (17, 333)])
@pytest.mark.parametrize("dtype,bits", [(np.uint8, 8), (np.uint16, 16)])
def test_grey_png_round_trip_is_exact(tmp_path, size, dtype, bits):
    a = rng().integers(0, np.iinfo(dtype).max + 1, size, dtype=dtype)
    Image.fromarray(a).save(tmp_path / "in.png")
    x, bit_depth, meta = read_image(tmp_path / "in.png")
    assert x.shape == (1, *size) and x.dtype == np.float32 and bit_depth == bits
    assert meta["format"] == "png"
    write_image(tmp_path / "out.png", x, bit_depth)
    back = np.asarray(Image.open(tmp_path / "out.png"))
    assert back.dtype == dtype and np.array_equal(back, a)


def test_rgb_png_8_and_16_bit(tmp_path):
    a8 = rng().integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(a8).save(tmp_path / "c8.png")
    x, bits, _ = read_image(tmp_path / "c8.png")
    assert x.shape == (3, 5, 7) and bits == 8
    assert np.array_equal(to_codes(x, 8).transpose(1, 2, 0), a8)

    import cv2

    a16 = rng().integers(0, 65536, (5, 7, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "c16.png"), a16[..., ::-1])  # OpenCV stores BGR
    x, bits, _ = read_image(tmp_path / "c16.png")
    assert bits == 16 and np.array_equal(to_codes(x, 16).transpose(1, 2, 0), a16)
    write_image(tmp_path / "o16.png", x, 16)
    x2, bits2, _ = read_image(tmp_path / "o16.png")
    assert bits2 == 16 and np.array_equal(x2, x)


def test_tiff_16_bit_and_multipage(tmp_path):
    pages = [Image.fromarray(a) for a in rng().integers(0, 65536, (3, 4, 6), dtype=np.uint16)]
    pages[0].save(tmp_path / "s.tif", save_all=True, append_images=pages[1:])
    x, bits, _ = read_image(tmp_path / "s.tif")
    assert x.shape == (3, 1, 4, 6) and bits == 16
    write_image(tmp_path / "o.tif", x, bits)
    x2, _, _ = read_image(tmp_path / "o.tif")
    assert np.array_equal(x, x2)


def test_jpeg_is_read_as_8_bit_and_16_bit_jpeg_is_refused(tmp_path):
    Image.fromarray(rng().integers(0, 256, (9, 11), dtype=np.uint8)).save(tmp_path / "a.jpg")
    x, bits, _ = read_image(tmp_path / "a.jpg")
    assert x.shape == (1, 9, 11) and bits == 8
    with pytest.raises(ValueError, match="8 bits only"):
        write_image(tmp_path / "b.jpg", x, 16)


def test_twelve_bit_values_use_twelve_bits(tmp_path):
    a = rng().integers(0, 4096, (6, 5), dtype=np.uint16)
    a[0, 0] = 4095
    np.save(tmp_path / "a.npy", a)
    x, bits, meta = read_image(tmp_path / "a.npy")
    assert bits == 12 and x.shape == (1, 6, 5)
    assert np.array_equal(to_codes(x, 12)[0], a)
    write_image(tmp_path / "o.png", x, bits)  # 16-bit PNG holding the 12-bit codes
    back = np.asarray(Image.open(tmp_path / "o.png"))
    assert back.dtype == np.uint16 and np.array_equal(back, a)


def test_real_dicom_ct(tmp_path):
    ds = pydicom.dcmread(CT)
    x, bits, meta = read_image(CT)
    stored = ds.pixel_array  # int16, 128..2191
    assert x.shape == (1, 128, 128) and bits == 12
    assert (meta["slope"], meta["intercept"], meta["invert"]) == (1.0, -1024.0, False)
    assert np.array_equal(to_codes(x, bits)[0], stored)
    # A DICOM copy with the reconstruction: same stored values, marked lossy, new UID.
    write_image(tmp_path / "ct.dcm", x, bits, meta)
    copy = pydicom.dcmread(tmp_path / "ct.dcm")
    assert np.array_equal(copy.pixel_array, stored)
    assert copy.LossyImageCompression == "01" and copy.SOPInstanceUID != ds.SOPInstanceUID
    assert copy.RescaleIntercept == -1024
    # A 16-bit PNG of the stored values.
    write_image(tmp_path / "ct.png", x, bits)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "ct.png")), stored)


def test_dicom_monochrome1_is_inverted_and_restored(tmp_path):
    ds = pydicom.dcmread(CT)
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(tmp_path / "m1.dcm")
    x1, bits, meta = read_image(tmp_path / "m1.dcm")
    x2, _, _ = read_image(CT)
    assert meta["invert"] and np.allclose(x1, 1 - x2, atol=1e-6)
    write_image(tmp_path / "back.dcm", x1, bits, meta)
    back = pydicom.dcmread(tmp_path / "back.dcm")
    assert back.PhotometricInterpretation == "MONOCHROME1"
    assert np.array_equal(back.pixel_array, ds.pixel_array)


def test_signed_values_are_shifted(tmp_path):
    a = np.array([[-1024, 0], [1000, 3071]], dtype=np.int16)
    np.save(tmp_path / "hu.npy", a)
    x, bits, meta = read_image(tmp_path / "hu.npy")
    assert bits == 13 and meta["value_min"] == -4096
    assert np.array_equal(to_codes(x, bits)[0].astype(int) - 4096, a)
    write_image(tmp_path / "back.npy", x, bits, meta)
    back = np.load(tmp_path / "back.npy")  # the source's own H×W layout and dtype
    assert back.dtype == a.dtype and np.array_equal(back, a)


def test_nifti_integer_volume_round_trip(tmp_path):
    v = rng().integers(-1024, 3000, (20, 30, 4)).astype(np.int16)
    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    nib.save(nib.Nifti1Image(v, affine), tmp_path / "v.nii.gz")
    x, bits, meta = read_image(tmp_path / "v.nii.gz")
    assert x.shape == (4, 1, 30, 20) and bits == 13  # frames Z×Y×X, as the HVSMR data module
    assert np.allclose(x[2, 0], (v[:, :, 2].T.astype(np.float64) + 2**12) / (2**13 - 1))
    assert np.array_equal(x[2, 0], read_image(tmp_path / "v.nii.gz")[0][2, 0])
    write_image(tmp_path / "o.nii.gz", x, bits, meta)
    out = nib.load(tmp_path / "o.nii.gz")
    assert np.array_equal(np.asarray(out.dataobj), v) and np.allclose(out.affine, affine)


def test_nifti_float_volume_is_quantised_to_16_bits(tmp_path):
    v = (rng().random((8, 9, 3)) * 100).astype(np.float32)
    nib.save(nib.Nifti1Image(v, np.eye(4)), tmp_path / "f.nii")
    x, bits, meta = read_image(tmp_path / "f.nii")
    assert bits == 16 and x.shape == (3, 1, 9, 8)
    write_image(tmp_path / "o.nii", x, bits, meta)
    err = np.abs(np.asarray(nib.load(tmp_path / "o.nii").dataobj) - v).max()
    assert err <= meta["value_step"] / 2 + 1e-4


@pytest.mark.parametrize(
    "shape,layout,expected",
    [
        ((4, 5), "auto", (1, 4, 5)),
        ((3, 4, 5), "auto", (3, 1, 4, 5)),  # 3 slices, not one RGB image, unless told
        ((3, 4, 5), "chw", (3, 4, 5)),
        ((4, 5, 3), "auto", (3, 4, 5)),
        ((4, 5, 3), "dhw", (4, 1, 5, 3)),
        ((1, 4, 5), "auto", (1, 4, 5)),
        ((6, 4, 5), "auto", (6, 1, 4, 5)),
    ],
)
def test_npy_layouts(tmp_path, shape, layout, expected):
    np.save(tmp_path / "a.npy", rng().random(shape).astype(np.float32))
    x, bits, _ = read_image(tmp_path / "a.npy", npy_layout=layout)
    assert x.shape == expected and bits == 16


def test_match_channels():
    grey = torch.rand(1, 1, 4, 4)
    assert torch.equal(match_channels(grey, 3), grey.expand(1, 3, 4, 4))
    rgb = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1).expand(3, 2, 2)
    assert torch.allclose(match_channels(rgb, 1), torch.full((1, 2, 2), 0.299))


def test_several_frames_to_png_write_one_file_each(tmp_path):
    paths = write_image(tmp_path / "s.png", np.zeros((3, 1, 4, 4), np.float32), 8)
    assert [p.name for p in paths] == ["s_0000.png", "s_0001.png", "s_0002.png"]


@pytest.mark.parametrize(
    "name,content,words",
    [
        ("missing.png", None, "no such file"),
        ("bad.png", b"garbage", "cannot read as an image"),
        ("bad.dcm", b"garbage", "not a valid DICOM file"),
        ("bad.xyz", b"garbage", "not a DICOM file"),
        ("bad.nii.gz", b"garbage", "cannot read as an image"),
        ("bad.npy", b"garbage", "cannot read as an image"),
    ],
)
def test_unreadable_file_gives_one_error_naming_it(tmp_path, name, content, words):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageReadError, match=words) as err:
        read_image(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


# -- writing safely (issue 23) -------------------------------------------------------------
def rgb_dicom(tmp_path, photometric="RGB"):
    ds = pydicom.dcmread(CT)
    a = rng().integers(0, 256, (ds.Rows, ds.Columns, 3), dtype=np.uint8)
    ds.set_pixel_data(a, photometric, 8)
    ds.save_as(tmp_path / f"{photometric}.dcm")
    return tmp_path / f"{photometric}.dcm"


def test_rgb_reconstruction_of_a_grey_dicom_is_written_grey(tmp_path):
    x, bits, meta = read_image(CT)
    rgb = np.repeat(x[None], 3, axis=1)  # what a 3-channel codec decodes
    rgb[:, 0] = np.clip(rgb[:, 0] + 0.01, 0, 1)
    write_image(tmp_path / "ct.dcm", rgb, bits, meta)
    copy = pydicom.dcmread(tmp_path / "ct.dcm")
    assert (copy.PhotometricInterpretation, copy.SamplesPerPixel) == ("MONOCHROME2", 1)
    assert (copy.Rows, copy.Columns, copy.get("NumberOfFrames")) == (128, 128, None)
    luma = match_channels(torch.from_numpy(rgb), 1).numpy()
    assert np.array_equal(copy.pixel_array, to_codes(luma, bits)[0, 0].astype(np.int16))
    # Every other format follows the source's channels too.
    write_image(tmp_path / "ct.png", rgb, bits, meta)
    assert np.asarray(Image.open(tmp_path / "ct.png")).shape == (128, 128)


def test_without_meta_nifti_refuses_rgb_and_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="NIfTI holds grey frames only"):
        write_image(tmp_path / "o.nii.gz", np.zeros((3, 8, 8), np.float32), 8)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("photometric", ["RGB", "YBR_FULL"])
def test_grey_reconstruction_of_an_rgb_dicom_is_written_rgb(tmp_path, photometric):
    src = rgb_dicom(tmp_path, photometric)
    x, bits, meta = read_image(src)  # pydicom gives RGB, whatever the source's colour space
    assert x.shape == (3, 128, 128) and bits == 8
    write_image(tmp_path / "rgb_copy.dcm", x, bits, meta)
    copy = pydicom.dcmread(tmp_path / "rgb_copy.dcm")
    assert copy.PhotometricInterpretation == "RGB" and copy.SamplesPerPixel == 3
    assert np.array_equal(copy.pixel_array, to_codes(x, 8).transpose(1, 2, 0))
    grey = match_channels(torch.from_numpy(x), 1).numpy()
    write_image(tmp_path / "grey_copy.dcm", grey, bits, meta)
    copy = pydicom.dcmread(tmp_path / "grey_copy.dcm")
    assert copy.SamplesPerPixel == 3 and copy.pixel_array.shape == (128, 128, 3)
    assert np.array_equal(copy.pixel_array[..., 1], to_codes(grey, 8)[0])


def test_meta_of_another_image_is_refused(tmp_path):
    _, bits, meta = read_image(CT)  # 128×128
    for x in (np.zeros((1, 64, 64), np.float32), np.zeros((2, 1, 128, 128), np.float32)):
        with pytest.raises(ValueError, match="not its source"):
            write_image(tmp_path / "o.dcm", x, bits, meta)
    with pytest.raises(ValueError, match="8-bit but the source .* is 12-bit"):
        write_image(tmp_path / "o.npy", np.zeros((1, 128, 128), np.float32), 8, meta)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "shape,dtype,layout,frames,note",
    [
        ((3, 8, 8), np.int16, "dhw", 3, None),  # signed: slices, no question
        ((3, 8, 8), np.uint16, "dhw", 3, None),  # wider than 8 bits: slices
        ((3, 8, 8), np.uint8, "dhw", 3, "chw"),  # could be RGB: slices, and the other reading
        ((8, 8, 3), np.uint8, "hwc", 1, "dhw"),
        ((8, 8, 3), np.int16, "dhw", 8, None),
    ],
)
def test_npy_3d_layout_rule(tmp_path, shape, dtype, layout, frames, note):
    a = rng().integers(0, 200, shape).astype(dtype)
    a.flat[0] = 300 if dtype != np.uint8 else 255  # > 8 bits unless uint8
    np.save(tmp_path / "a.npy", a)
    x, _, meta = read_image(tmp_path / "a.npy")
    assert meta["npy_layout"] == layout and meta["shape"][0] == frames
    assert meta.get("npy_layout_other") == note


def test_npy_layout_is_checked(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((4, 5, 6), np.uint8))
    with pytest.raises(ImageReadError, match="npy_layout chw needs 1 or 3 channels"):
        read_image(tmp_path / "a.npy", npy_layout="chw")
    with pytest.raises(ValueError, match="npy_layout 'rgb'"):
        read_image(tmp_path / "a.npy", npy_layout="rgb")


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "o.npy"
    target.write_bytes(b"old")

    def half_then_fail(f, arr):
        f.write(b"\x93NUMPY half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        write_image(target, np.zeros((1, 4, 4), np.float32), 8)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["o.npy"]


def test_overwrite_false_refuses_existing_files(tmp_path):
    (tmp_path / "s_0001.png").write_bytes(b"old")
    with pytest.raises(FileExistsError, match="s_0001.png already exists"):
        write_image(tmp_path / "s.png", np.zeros((3, 1, 4, 4), np.float32), 8, overwrite=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s_0001.png"]  # no frame written
    assert (tmp_path / "s_0001.png").read_bytes() == b"old"


def test_nifti_frames_follow_the_hvsmr_data_module_axes(tmp_path):
    # `mvmic compress` must hand a 3D model volumes laid out as it saw them in training.
    from data_modules.hvsmr import load_volume

    v = rng().integers(0, 1000, (11, 7, 5)).astype(np.int16)
    nib.save(nib.Nifti1Image(v, np.eye(4)), tmp_path / "v.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros_like(v), np.eye(4)), tmp_path / "v-label.nii.gz")
    trained, _ = load_volume(tmp_path / "v.nii.gz", tmp_path / "v-label.nii.gz")
    sent = read_image(tmp_path / "v.nii.gz")[0][:, 0]
    assert trained.shape[1:] == sent.shape == (5, 7, 11)
    # The data module rescales by percentiles (monotone): the same voxels, in the same places.
    assert np.corrcoef(trained[0].ravel(), sent.ravel())[0, 1] > 0.99

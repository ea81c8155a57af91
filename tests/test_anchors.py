"""Standard-codec anchors and their points through a task net (mvmic.evaluation.anchors)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.images import synthetic_image as _image

from mvmic.codecs.standard import STANDARD_CODECS, codec_available

# --- standard codec anchors ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rgb8", "grey8", "grey16", "rgb16"])
@pytest.mark.parametrize("name", sorted(STANDARD_CODECS))
def test_standard_codec_bpp_grows_with_quality(name, kind):
    reason = codec_available(name)
    if reason:
        pytest.skip(reason)
    codec = STANDARD_CODECS[name]
    img = _image(kind)
    if not codec.supports(img):
        with pytest.raises(ValueError, match=name):
            codec.encode(img, codec.qualities[0])
        return
    sizes, errors = [], []
    for q in codec.qualities:
        data = codec.encode(img, q)
        out = codec.decode(data, channels=1 if img.ndim == 2 else 3)
        assert out.shape == img.shape and out.dtype == img.dtype
        assert 0 < codec.payload_bytes(data) <= len(data)
        sizes.append(codec.payload_bytes(data))
        errors.append(float(np.mean((out.astype(float) - img) ** 2)))
    assert all(b >= a for a, b in zip(sizes, sizes[1:])), sizes
    assert sizes[-1] > 2 * sizes[0], sizes
    assert errors[-1] < errors[0], errors


# --- anchors through a task network ---------------------------------------------------------


def test_anchor_point_runs_the_task_net_on_decoded_images():
    import torch

    from mvmic.evaluation.anchors import _parse_qualities, evaluate_codec
    from mvmic.tasks.segmentation import SegmentationNet

    torch.manual_seed(0)
    task = SegmentationNet(encoder="resnet18", in_channels=3, num_classes=2).eval()
    img = torch.from_numpy(_image("rgb8")[:32, :32]).permute(2, 0, 1).float() / 255
    batch = {
        "image": torch.stack([img, img.flip(-1)]),
        "mask": (img[0] > 0.5).long().expand(2, -1, -1),
        "name": ["a", "b"],
    }
    [low] = evaluate_codec("jpeg", 5, [task], [batch])
    [high] = evaluate_codec("jpeg", 90, [task], [batch])
    assert low["quality"] == 5.0 and low["pixels"] == 1024 and low["height"] == 32
    assert low["bpp"] == pytest.approx(8 * low["bytes"] / 1024)
    assert high["bpp"] > low["bpp"] and high["psnr"] > low["psnr"]
    assert {"miou", "dice", "ms-ssim", "enc_ms", "dec_ms", "task_ms"} <= set(low)
    assert 0 <= low["miou"] <= 1 and low["task_ms"] > 0
    assert _parse_qualities("jpeg=5,10;hevc=20", ["jpeg", "hevc"]) == {
        "jpeg": [5.0, 10.0],
        "hevc": [20.0],
    }
    with pytest.raises(ValueError, match="not in --codecs"):
        _parse_qualities("webp=5", ["jpeg"])


def test_anchor_point_codes_each_image_once_for_every_task_net(monkeypatch):
    """``hevc`` and ``hevc+ft`` read the same bytes: one encode per image and quality, and each
    net's point is what it would get alone."""
    import dataclasses

    import torch

    from mvmic.codecs.standard import STANDARD_CODECS
    from mvmic.evaluation.anchors import evaluate_codec
    from mvmic.tasks.segmentation import SegmentationNet

    torch.manual_seed(0)
    nets = [SegmentationNet(encoder="resnet18", in_channels=3, num_classes=2).eval()]
    nets.append(SegmentationNet(encoder="resnet18", in_channels=3, num_classes=2).eval())
    img = torch.from_numpy(_image("rgb8")[:32, :32]).permute(2, 0, 1).float() / 255
    batch = {
        "image": torch.stack([img, img.flip(-1), img.flip(-2)]),
        "mask": (img[0] > 0.5).long().expand(3, -1, -1),
        "name": ["a", "b", "c"],
    }
    codec, calls = STANDARD_CODECS["jpeg"], []

    def encode(arr, quality):  # the codec's own encoder; counts the calls
        calls.append(quality)
        return codec._encode(arr, quality)

    monkeypatch.setitem(STANDARD_CODECS, "jpeg", dataclasses.replace(codec, _encode=encode))
    both = evaluate_codec("jpeg", 20, nets, [batch])
    assert calls == [20, 20, 20] and len(both) == 2
    alone = [evaluate_codec("jpeg", 20, [net], [batch])[0] for net in nets]
    drop = ("enc_ms", "dec_ms", "task_ms")
    for shared, single in zip(both, alone, strict=True):
        assert {k: v for k, v in shared.items() if k not in drop} == {
            k: v for k, v in single.items() if k not in drop
        }
    assert both[0]["bpp"] == both[1]["bpp"] and both[0]["psnr"] == both[1]["psnr"]
    assert both[0]["per_image"] != both[1]["per_image"]  # two different nets read them


# --- fair anchors: the task net fine-tuned on each codec's decoded images --------------------


def _tiny_task_run(root, tmp_path, image_size=64):
    """A 2-step U-Net checkpoint on ``root`` and a config with its data section."""
    import torch
    import yaml
    from lightning import Trainer

    from data_modules import SegmentationDataModule
    from mvmic.modules import TaskModule

    data = {"root": str(root), "image_size": image_size, "batch_size": 4, "augment": False}
    torch.manual_seed(0)
    small = {"encoder_depth": 3, "decoder_channels": [16, 8, 4]}
    module = TaskModule(arch="Unet", encoder="resnet18", task_args=small, results_dir="unused")
    trainer = Trainer(
        max_steps=2, limit_val_batches=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(module, SegmentationDataModule(**data))
    ckpt = tmp_path / "task.ckpt"
    trainer.save_checkpoint(ckpt)
    config = tmp_path / "data.yaml"
    spec = {"class_path": "data_modules.SegmentationDataModule", "init_args": data}
    config.write_text(yaml.safe_dump({"data": spec}))
    return config, ckpt


@pytest.mark.slow  # fits a tiny task net, then 2 anchors x 2 qualities and 3 fine-tune steps
def test_finetune_trains_a_copy_on_decoded_images_and_records_codec_ft(colondb_root, tmp_path):
    import json

    import torch

    from mvmic.evaluation.anchors import main as anchors_main

    config, ckpt = _tiny_task_run(colondb_root, tmp_path)
    out = tmp_path / "results"
    argv = ["--config", str(config), "--ckpt_path", str(ckpt), "--codecs", "jpeg"]
    argv += ["--qualities", "5,60", "--results_dir", str(out), "--no_curves", "--finetune", "3"]
    assert anchors_main(argv) == 0
    plain = json.loads((out / "colondb" / "jpeg.json").read_text())
    tuned = json.loads((out / "colondb" / "jpeg+ft.json").read_text())
    assert tuned["name"] == "jpeg+ft" and tuned["anchor"] is True
    assert tuned["finetune"]["steps"] == 3 and tuned["finetune"]["qualities"] == [5.0, 60.0]
    assert tuned["results"]["bpp"] == plain["results"]["bpp"]  # same codec, same images
    # a real fine-tune: the predictions (per-image confusion counts) moved
    assert tuned["results"]["per_image"] != plain["results"]["per_image"]
    # the fine-tuned net is saved beside the records, so `mvmic compare` can decode +ft points
    from mvmic.modules import load_module

    original = load_module(plain["task_ckpt"]).task.state_dict()
    again = load_module(tuned["task_ckpt"]).task.state_dict()
    assert tuned["task_ckpt"].endswith("colondb/finetuned/jpeg+ft.ckpt")
    assert any(not torch.equal(original[k], again[k]) for k in original)


def test_auto_bit_depth_codes_16_bit_sources_at_16_bits_where_the_codec_can():
    import torch

    from mvmic.evaluation.anchors import coded_bit_depth, source_bit_depth

    batches = [{"bit_depth": torch.tensor([8, 16])}, {"bit_depth": torch.tensor([8])}]
    assert source_bit_depth(batches) == 16
    assert source_bit_depth([{"bit_depth": torch.tensor([8, 8])}, {}]) == 8
    assert coded_bit_depth("hevc", "auto", 16, 1) == (16, None)  # x265 main12 via pillow-heif
    assert coded_bit_depth("jpeg2000", "auto", 16, 1) == (16, None)
    depth, note = coded_bit_depth("jpeg2000", "auto", 16, 3)  # OpenJPEG here: grey only
    assert depth == 8 and "cannot code 3-channel 16-bit" in note and "rounded to 8" in note
    assert coded_bit_depth("avif", "auto", 16, 1)[0] == 8
    assert coded_bit_depth("avif", "auto", 8, 1) == (8, None)
    assert coded_bit_depth("jpeg", "16", 8, 1) == (16, None)  # as asked: encode() says no
    depth, note = coded_bit_depth("h264", "auto", 16, 1, volumes=True)
    assert depth == 8 and "volume codecs code 8-bit volumes" in note


@pytest.mark.slow  # fits a tiny task net on a 16-bit twin, then 2 anchors x 1 quality
def test_anchors_record_the_depth_each_codec_coded_16_bit_sources_at(tmp_path, capsys):
    import json

    from mvmic.cli import main as mvmic_main
    from mvmic.evaluation.anchors import main as anchors_main

    root = tmp_path / "c16"
    assert mvmic_main(["synth", "colondb", "--out", str(root), "--num", "8", "--size", "32",
                       "--bit_depth", "16"]) == 0  # fmt: skip
    config, ckpt = _tiny_task_run(root, tmp_path, image_size=32)
    out = tmp_path / "results"
    argv = ["--config", str(config), "--ckpt_path", str(ckpt), "--codecs", "hevc,jpeg2000"]
    assert anchors_main([*argv, "--qualities", "hevc=30;jpeg2000=30", "--results_dir", str(out),
                         "--no_curves"]) == 0  # fmt: skip
    hevc = json.loads((out / "colondb" / "hevc.json").read_text())
    j2k = json.loads((out / "colondb" / "jpeg2000.json").read_text())
    assert (hevc["bit_depth"], hevc["source_bit_depth"]) == (16, 16)
    assert (j2k["bit_depth"], j2k["source_bit_depth"]) == (8, 16)  # RGB: no 16-bit JPEG 2000
    assert "jpeg2000: cannot code 3-channel 16-bit images" in capsys.readouterr().out
    # the same run at --bit_depth 8 codes HEVC at 8 bits: fewer bytes for the same quality
    out8 = tmp_path / "results8"
    assert anchors_main([*argv, "--qualities", "30", "--results_dir", str(out8), "--no_curves",
                         "--bit_depth", "8", "--codecs", "hevc"]) == 0  # fmt: skip
    hevc8 = json.loads((out8 / "colondb" / "hevc.json").read_text())
    assert hevc8["bit_depth"] == 8
    assert hevc8["results"]["bpp"] != hevc["results"]["bpp"]


def test_finetune_on_codec_leaves_the_original_net_alone():
    import torch

    from mvmic.evaluation.anchor_finetune import finetune_on_codec
    from mvmic.tasks.segmentation import SegmentationNet

    torch.manual_seed(0)
    net = SegmentationNet(encoder="resnet18", encoder_depth=3, decoder_channels=[8, 8, 8])
    before = {k: v.clone() for k, v in net.state_dict().items()}
    batch = {"image": torch.rand(2, 3, 32, 32), "mask": torch.randint(0, 2, (2, 32, 32))}
    seen = []

    def roundtrip(img, q):
        seen.append(q)
        return (img * 8).round() / 8  # a coarse "codec"

    tuned, losses = finetune_on_codec(net, roundtrip, [1, 2], lambda: [batch], steps=4, lr=1e-2)
    assert len(losses) == 4 and set(seen) <= {1, 2} and len(seen) == 8
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    changed = [k for k, v in tuned.state_dict().items() if not torch.equal(before[k], v)]
    assert changed and not tuned.training
    with pytest.raises(ValueError, match="empty"):
        finetune_on_codec(net, roundtrip, [1], lambda: [], steps=1)


# --- volume anchors (3D data modules) -------------------------------------------------------


def _volume(shape=(9, 21, 19)) -> np.ndarray:
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]]
    rng = np.random.default_rng(0)
    vol = 120 + 60 * np.sin(x / 4) * np.cos(y / 5) + 3 * z + rng.normal(0, 4, shape)
    return np.clip(vol, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", ["h264", "hevc", "jpeg2000"])
def test_volume_codec_round_trip_keeps_the_shape_and_rate_grows(name):
    from mvmic.codecs.volume import VOLUME_CODECS

    codec, vol = VOLUME_CODECS[name], _volume()
    sizes, errors = [], []
    for q in (codec.qualities[0], codec.qualities[-1]):
        data = codec.encode(vol, q)
        out = codec.decode(data)
        assert out.shape == vol.shape and out.dtype == np.uint8
        if name != "h264":  # x264 varies by a few bytes between runs (mvmic.codecs.volume)
            assert data == codec.encode(vol, q)
        sizes.append(len(data))
        errors.append(float(np.mean((out.astype(float) - vol) ** 2)))
    assert sizes[1] > sizes[0] and errors[1] < errors[0], (sizes, errors)
    with pytest.raises(ValueError, match="uint8"):
        codec.encode(vol.astype(np.uint16), 10)


def test_volume_anchor_point_is_exact_in_size_and_bpp(hvsmr_root, monkeypatch):
    import dataclasses

    import torch

    from data_modules.hvsmr import HVSMRDataModule
    from mvmic.codecs.volume import VOLUME_CODECS
    from mvmic.evaluation.volume_anchors import _to_uint8, evaluate_volume_codec, is_volumetric
    from mvmic.tasks.gan import GanSegmentor, build_segmentor

    torch.manual_seed(0)
    seg = {"channels": (8, 16), "strides": (2,), "num_res_units": 0}
    window = {"roi_size": (16, 16, 16), "sw_batch_size": 2, "overlap": 0.25}
    names = ["background", "myocardium", "blood_pool"]
    task = GanSegmentor(build_segmentor(3, "UNet", 1, 3, seg_args=seg), 3, names, window).eval()
    dm = HVSMRDataModule(root=str(hvsmr_root), crop_size=(16, 16, 16), test_fraction=0.5)
    dm.setup("test")
    loader = list(dm.test_dataloader())
    assert is_volumetric(loader) and len(loader) == 2
    codec, coded = VOLUME_CODECS["h264"], []

    def encode(volume, quality):  # the codec's own encoder; keeps what it sent
        coded.append((volume.shape, codec._encode(volume, quality)))
        return coded[-1][1]

    monkeypatch.setitem(VOLUME_CODECS, "h264", dataclasses.replace(codec, _encode=encode))
    [point] = evaluate_volume_codec("h264", 8, [task], loader)
    pv = point["per_volume"]
    expected = []
    for batch, bpp, (shape, stream) in zip(loader, pv["bpp"], coded, strict=True):
        arr = _to_uint8(batch["image"][0])
        data = codec.encode(arr, 8)[:6] + stream  # the 6-byte shape header + the stream sent
        assert shape == arr.shape and codec.decode(data).shape == batch["mask"][0].shape
        assert bpp == 8 * len(data) / arr.size
        expected.append(8 * len(data) / arr.size)
    assert point["bpp"] == pytest.approx(sum(expected) / 2) and point["pixels"] == arr.size
    assert pv["names"] == [b["name"][0] for b in loader]
    for key in ("dice_myocardium", "iou_blood_pool"):
        assert point[key] == pytest.approx(sum(pv[key]) / 2)
    assert 0 < point["bpp"] < 8 and point["psnr"] > 15

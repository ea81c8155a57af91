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
    low = evaluate_codec("jpeg", 5, task, [batch])
    high = evaluate_codec("jpeg", 90, task, [batch])
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

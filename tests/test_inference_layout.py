"""Task nets infer on channels_last activations and never change their weights' layout."""

import torch

from mvmic.tasks.base import inference_layout
from mvmic.tasks.detection import DetectionNet
from mvmic.tasks.segmentation import SegmentationNet


def test_inference_layout_is_channels_last_for_images_only():
    x = torch.rand(2, 3, 8, 8)
    assert inference_layout(x).is_contiguous(memory_format=torch.channels_last)
    assert not x.is_contiguous(memory_format=torch.channels_last)  # the caller's is untouched
    v = torch.rand(1, 1, 4, 4, 4)
    assert inference_layout(v) is v  # volumes keep theirs


def _strides(net):
    return {k: p.stride() for k, p in net.named_parameters()}


def test_segmentation_predict_keeps_weights_and_matches_the_default_layout():
    torch.manual_seed(0)
    net = SegmentationNet(encoder="resnet18", encoder_depth=3, decoder_channels=[8, 8, 8])
    net.eval()
    before = _strides(net)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        pred = net.predict(x)
        logits = net(x)
    assert _strides(net) == before
    # the same prediction as the default layout (float rounding may differ, argmax does not)
    assert torch.equal(pred, logits.argmax(1))


def test_detector_backbone_sees_channels_last_in_eval_only():
    net = DetectionNet(arch="fasterrcnn_mobilenet_v3_large_fpn", in_channels=3, num_classes=2)
    seen = []
    body = net.model.backbone.body
    body.register_forward_pre_hook(
        lambda m, a: seen.append(a[0].is_contiguous(memory_format=torch.channels_last))
    )
    x = torch.rand(1, 3, 64, 64)  # 3 channels: a 1-channel batch is both layouts at once
    net.predict(x)
    batch = {
        "image": x,
        "target": [{"boxes": torch.tensor([[4.0, 4.0, 30.0, 30.0]]), "labels": torch.tensor([1])}],
    }
    net.loss(x, batch)
    assert seen == [True, False]

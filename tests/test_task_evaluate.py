"""``TaskNet.evaluate``: an evaluation batch's loss and predictions, one forward pass where the
two share it (segmentation), the two methods' results otherwise."""

import torch

from mvmic.tasks.base import TaskNet
from mvmic.tasks.segmentation import SegmentationNet


def _batch(n=2, size=32, classes=2):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 3, size, size, generator=g)
    return x, {"image": x, "mask": torch.randint(0, classes, (n, size, size), generator=g)}


def test_segmentation_evaluate_is_one_forward_with_loss_and_predict_results():
    torch.manual_seed(0)
    net = SegmentationNet(encoder="resnet18", encoder_depth=3, decoder_channels=[8, 8, 8]).eval()
    x, batch = _batch()
    calls = []
    net.net.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        loss, pred = net.evaluate(x, batch)
        assert len(calls) == 1
        ref_loss, _ = net.loss(x, batch)
        ref_pred = net.predict(x)
    assert torch.equal(pred, ref_pred)
    assert torch.allclose(loss, ref_loss, atol=1e-5)  # only the activations' layout differs


class _Counting(TaskNet):
    """A task whose loss and prediction are separate passes (as a detector's are)."""

    task = "toy"

    def __init__(self):
        super().__init__()
        self.calls = []

    def loss(self, x, batch):
        self.calls.append("loss")
        return x.mean(), {}

    def predict(self, x):
        self.calls.append("predict")
        return x.sum()


def test_default_evaluate_runs_loss_then_predict():
    net = _Counting()
    x = torch.ones(1, 1, 2, 2)
    loss, pred = net.evaluate(x, {"image": x})
    assert net.calls == ["loss", "predict"]
    assert float(loss) == 1.0 and float(pred) == 4.0

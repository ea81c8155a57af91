"""Per-image sufficient statistics and the bootstrap intervals built on them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mvmic.evaluation.bootstrap import bd_rate_interval, curve_with_intervals, metric_interval
from mvmic.evaluation.image_stats import StatsCollector, recompute


def _seg_batches(num_classes: int, n_batches: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n_batches):
        mask = torch.randint(0, num_classes, (3, 16, 16), generator=g)
        noise = torch.randint(0, num_classes, (3, 16, 16), generator=g)
        pred = torch.where(torch.rand(3, 16, 16, generator=g) < 0.7, mask, noise)
        yield pred, {"image": torch.zeros(3, 3, 16, 16), "mask": mask}


@pytest.mark.parametrize("num_classes", [2, 4])
def test_segmentation_stats_recompute_the_record_exactly(num_classes):
    from mvmic.tasks.segmentation import SegmentationNet

    task = SegmentationNet(encoder="resnet18", in_channels=3, num_classes=num_classes)
    metrics, stats = task.build_metrics(), StatsCollector(task)
    for pred, batch in _seg_batches(num_classes):
        task.update_metrics(metrics, pred, batch)
        stats.update(pred, batch, [8, 9, 10])
    record, per_image = task.record(metrics.compute()), stats.result()
    assert recompute(per_image, "miou") == record["miou"]
    assert recompute(per_image, "dice") == record["dice"]
    assert per_image["bytes"] == [8, 9, 10] * 4 and per_image["pixels"] == [256] * 12
    assert np.asarray(per_image["confmat"]).dtype.kind == "i"  # integers only


def test_gan_segmentor_stats_recompute_its_per_image_dice():
    from torch import nn

    from mvmic.tasks.gan import GanSegmentor

    task = GanSegmentor(nn.Identity(), 3, ["background", "a", "b"])
    metrics, stats = task.build_metrics(), StatsCollector(task)
    for pred, batch in _seg_batches(3):
        task.update_metrics(metrics, pred, batch)
        stats.update(pred, batch)
    record, per_image = task.record(metrics.compute()), stats.result()
    assert recompute(per_image, "dice") == record["dice"]
    # MeanIoU sums per-batch float32 scores: equal up to summation order
    assert recompute(per_image, "iou") == pytest.approx(record["iou"], abs=1e-6)


def _det_batches(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    shift = torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 1]])
    for _ in range(5):
        preds, targets = [], []
        for _ in range(2):
            n = int(torch.randint(1, 4, (1,), generator=g))
            xy = torch.rand(n, 2, generator=g) * 40
            boxes = torch.cat([xy, xy + 5 + torch.rand(n, 2, generator=g) * 20], 1)
            labels = torch.randint(1, 4, (n,), generator=g)
            targets.append({"boxes": boxes, "labels": labels})
            k = int(torch.randint(0, 4, (1,), generator=g))
            extra = torch.rand(k, 2, generator=g) * 40 @ shift + torch.tensor([0, 0, 10, 10])
            preds.append(
                {
                    "boxes": torch.cat([boxes, extra]) + torch.randn(n + k, 4, generator=g),
                    "scores": torch.rand(n + k, generator=g),
                    "labels": torch.cat([labels, torch.randint(1, 4, (k,), generator=g)]),
                }
            )
        yield preds, {"image": torch.zeros(2, 1, 64, 64), "target": targets}


def test_detection_stats_recompute_coco_map_exactly_and_on_a_subset():
    from mvmic.tasks.detection import DetectionNet

    task = DetectionNet(arch="fasterrcnn_mobilenet_v3_large_fpn", in_channels=1, num_classes=4)
    metrics, stats = task.build_metrics(), StatsCollector(task)
    sub_metrics = task.build_metrics()
    for i, (preds, batch) in enumerate(_det_batches()):
        task.update_metrics(metrics, preds, batch)
        stats.update(preds, batch)
        if i % 2 == 0:  # the subset: batches 0, 2, 4, the first of them twice
            for _ in range(2 if i == 0 else 1):
                task.update_metrics(sub_metrics, preds, batch)
    record, per_image = task.record(metrics.compute()), stats.result()
    for key in ("map", "map_50", "map_75"):
        assert recompute(per_image, key) == record[key]
    weights = np.array([2, 2, 0, 0, 1, 1, 0, 0, 1, 1])  # images of batches 0 (twice), 2, 4
    assert recompute(per_image, "map", weights) == task.record(sub_metrics.compute())["map"]


def test_detection_stats_with_a_class_never_detected_match_coco():
    """A class with ground truth and no detection anywhere: COCOeval's precision 0, not an
    error (the benchmark's det part met it with a short-trained detector)."""
    from mvmic.tasks.detection import DetectionNet

    task = DetectionNet(arch="fasterrcnn_mobilenet_v3_large_fpn", in_channels=1, num_classes=4)
    metrics, stats = task.build_metrics(), StatsCollector(task)
    for preds, batch in _det_batches(seed=3):
        for p, t in zip(preds, batch["target"]):
            t["labels"][0] = 3  # every image has class 3, which no prediction names
            p["labels"][p["labels"] == 3] = 1
        task.update_metrics(metrics, preds, batch)
        stats.update(preds, batch)
    record, per_image = task.record(metrics.compute()), stats.result()
    for key in ("map", "map_50", "map_75"):
        assert recompute(per_image, key) == record[key]


def _curve(scale: float, n_images: int = 30, seed: int = 0) -> dict:
    """A segmentation record of 5 points: accuracy and bytes grow with the point's index."""
    rng = np.random.default_rng(seed)
    base = rng.integers(200, 400, n_images)
    hard = rng.uniform(0.0, 0.3, n_images)
    results = {"bpp": [], "miou": [], "per_image": []}
    for j in range(5):
        wrong = np.round((hard + 0.1 * (4 - j)) * 50).astype(int)
        cms = [[[100, int(w)], [int(w), 50 - int(w)]] for w in wrong]
        nbytes = [int(b * (j + 1) * scale) for b in base]
        stats = {"kind": "confusion", "rules": {"miou": "jaccard_macro"}, "confmat": cms}
        stats.update(bytes=nbytes, pixels=[256 * 256] * n_images)
        results["bpp"].append(8 * float(np.mean(nbytes)) / 256**2)
        results["miou"].append(recompute(stats, "miou"))
        results["per_image"].append(stats)
    return {"name": f"x{scale}", "results": results}


def test_metric_interval_is_seeded_and_brackets_the_value():
    rec = _curve(1.0)
    value = rec["results"]["miou"][2]
    lo, hi = metric_interval(rec, "miou", draws=500, point=2)
    assert lo < value < hi and hi - lo < 0.1
    assert metric_interval(rec, "miou", draws=500, point=2) == (lo, hi)
    assert metric_interval(rec, "miou", draws=500, point=2, seed=1) != (lo, hi)
    assert metric_interval(rec, "psnr", point=2) is None  # no per-image rule for it
    assert metric_interval({"results": {"bpp": [1.0], "miou": [0.5]}}, "miou") is None
    rows = curve_with_intervals(rec, "miou", draws=200)
    assert [r["bpp"] for r in rows] == sorted(rec["results"]["bpp"])
    assert all(r["low"] <= r["value"] <= r["high"] for r in rows)


def test_bd_rate_interval_resamples_images_jointly_across_both_curves():
    anchor, half = _curve(1.0), _curve(0.5)
    ci = bd_rate_interval(anchor, half, "miou", draws=200)
    # the same images drawn for both curves: every draw sees exactly half the bytes
    assert ci.valid == 200 and ci.low == pytest.approx(-50, abs=0.5)
    assert ci.high == pytest.approx(-50, abs=0.5)
    other = _curve(0.5, seed=3)  # different images' costs: the BD-rate now varies by draw
    ci = bd_rate_interval(anchor, other, "miou", draws=200)
    assert ci.low < ci.high and ci.valid > 100
    none = bd_rate_interval(anchor, {"results": {"bpp": [1.0], "miou": [0.5]}}, "miou")
    assert none.low is None and "per-image" in none.note


def test_curves_draw_error_bars_and_print_intervals(tmp_path):
    import json

    from mvmic.evaluation.curves import draw_curves, load_methods, plot_metric

    for name, rec in (("hevc", _curve(1.0)), ("MVMICNet stage 2", _curve(0.5, seed=3))):
        folder = tmp_path / "colondb"
        folder.mkdir(exist_ok=True)
        (folder / f"{name}.json").write_text(json.dumps({**rec, "name": name}))
    result = draw_curves(tmp_path, metrics=["miou"], draws=200)
    (cell,) = result.cells
    assert cell.rate_low < cell.bd_rate < cell.rate_high
    assert f"[{cell.rate_low:+.1f}, {cell.rate_high:+.1f}]" in result.markdown
    assert "95 % bootstrap interval (200 draws)" in result.markdown
    assert result.markdown.count("| MVMICNet stage 2 | mIoU |") == 5
    assert "bd_rate_low" in result.csv_path.read_text().splitlines()[0]
    fig = plot_metric("colondb", "miou", load_methods(tmp_path)["colondb"], draws=200)
    ax = fig.axes[0]
    assert len(ax.lines) == 2 and len(ax.collections) == 2  # one bar set per method
    segments = ax.collections[0].get_segments()
    assert len(segments) == 5 and all(s[0][1] < s[1][1] for s in segments)


def test_records_keep_per_image_statistics_compact_and_loadable(tmp_path):
    from mvmic.evaluation.records import append_point, load_record

    rec = _curve(1.0)
    for i in range(2):
        point = {k: v[i] for k, v in rec["results"].items()}
        path = append_point(tmp_path, "colondb", "x", {**point, "quality": i})
    text = path.read_text()
    assert len(text.splitlines()) < 40  # one line per point's statistics
    loaded = load_record(path)
    assert loaded["results"]["per_image"] == rec["results"]["per_image"][:2]
    assert metric_interval(loaded, "miou", draws=100, point=1) is not None

"""ChestX-Det detection: data layouts, bad-input errors, mAP vs pycocotools, R-CNN task nets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from data_modules.chestxdet import (
    CHESTXDET10_CLASSES,
    CHESTXDET_CLASSES,
    ChestXDetDataModule,
)
from data_modules.synthetic.chestxdet import generate
from mvmic.tasks import build_task
from mvmic.tasks.detection import DetectionNet

SIZE = 40


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("chestxdet")
    generate(root, num=6, size=64, seed=3)
    return root


def _grey(path: Path, size: int = SIZE, value: int = 90) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, np.uint8), mode="L").save(path)


def _chestxdet(root: Path, entries: list[dict], test: list[dict] | None = None) -> Path:
    """Hand-written ChestX-Det layout: images in root/train and root/test."""
    for split, ents in (("train", entries), ("test", test or entries)):
        for e in ents:
            _grey(root / split / e["file_name"])
        (root / f"ChestX_Det_{split}.json").write_text(json.dumps(ents))
    return root


def _entries() -> list[dict]:
    square = [[10, 10], [20, 10], [20, 20], [10, 20]]
    return [
        {"file_name": "a.png", "syms": ["Nodule", "Mass"],
         "boxes": [[10, 10, 20, 20], [2, 4, 30, 36]],
         "polygons": [square, [[2, 4], [30, 4], [30, 36], [2, 36]]]},
        {"file_name": "b.png", "syms": [], "boxes": [], "polygons": []},
        {"file_name": "c.png", "syms": ["Pneumothorax"], "boxes": [[0, 0, 40, 40]],
         "polygons": [[[0, 0], [39, 0], [39, 39]]]},
    ]  # fmt: skip


def _dm(root: Path, **kw) -> ChestXDetDataModule:
    kw = {"image_size": SIZE, "batch_size": 3, "augment": False, "val_fraction": 0.34, **kw}
    return ChestXDetDataModule(root, **kw)


# ---------------------------------------------------------------------------- synthetic twin
def test_synth_writes_chestxdet_layout(synth: Path, tmp_path: Path) -> None:
    train = json.loads((synth / "ChestX_Det_train.json").read_text())
    test = json.loads((synth / "ChestX_Det_test.json").read_text())
    assert (len(train), len(test)) == (5, 1)
    for split, entries in (("train", train), ("test", test)):
        for e in entries:
            im = Image.open(synth / split / e["file_name"])
            assert (im.mode, im.size) == ("L", (64, 64))
            assert len(e["syms"]) == len(e["boxes"]) == len(e["polygons"])
            assert set(e["syms"]) <= set(CHESTXDET_CLASSES)
            for (x1, y1, x2, y2), poly in zip(e["boxes"], e["polygons"]):
                assert 0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 64
                assert len(poly) >= 3
    assert sum(len(e["syms"]) for e in train) > 0
    generate(tmp_path, num=6, size=64, seed=3)  # same seed, same files
    assert (tmp_path / "ChestX_Det_train.json").read_text() == json.dumps(train)


def test_datamodule_on_synthetic(synth: Path, tmp_path: Path) -> None:
    split_file = tmp_path / "split.json"
    dm = ChestXDetDataModule(
        synth, image_size=32, batch_size=2, with_masks=True, augment=False,
        val_fraction=0.2, split_file=str(split_file),
    )  # fmt: skip
    assert (dm.dataset_name, dm.in_channels, dm.num_classes, dm.layout) == (
        "chestxdet", 1, 14, "chestxdet",
    )  # fmt: skip
    dm.setup("fit")
    dm.setup("test")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (4, 1, 1)
    saved = json.loads(split_file.read_text())
    assert sorted(saved["train"] + saved["val"]) == ["00000", "00001", "00002", "00003", "00004"]
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 1, 32, 32) and batch["image"].dtype == torch.float32
    assert 0 <= batch["image"].min() and batch["image"].max() <= 1
    assert len(batch["target"]) == len(batch["name"]) == 2
    for t in batch["target"]:
        n = len(t["labels"])
        assert t["boxes"].shape == (n, 4) and t["labels"].dtype == torch.int64
        assert t["masks"].shape == (n, 32, 32) and t["masks"].dtype == torch.uint8
        for box, m in zip(t["boxes"], t["masks"]):  # each mask lies inside its box
            ys, xs = torch.nonzero(m, as_tuple=True)
            assert xs.min() >= box[0] - 1 and xs.max() + 1 <= box[2] + 1
            assert ys.min() >= box[1] - 1 and ys.max() + 1 <= box[3] + 1
    # The same seed gives the same split; the saved split is read back.
    dm2 = ChestXDetDataModule(synth, image_size=32, val_fraction=0.2, split_file=str(split_file))
    dm2.setup("fit")
    assert dm2.split == dm.split


def test_augmented_boxes_and_masks_stay_consistent(synth: Path) -> None:
    dm = ChestXDetDataModule(synth, image_size=64, with_masks=True, augment=True, val_fraction=0.2)
    dm.setup("fit")
    torch.manual_seed(0)
    np.random.seed(0)
    checked = 0
    for _ in range(3):
        for i in range(len(dm.train_set)):
            t = dm.train_set[i]["target"]
            assert len(t["boxes"]) == len(t["labels"]) == len(t["masks"])
            for box, m in zip(t["boxes"], t["masks"]):
                ys, xs = torch.nonzero(m, as_tuple=True)
                if len(xs):  # the mask's centre lies in its (flipped/moved) box
                    cx, cy = xs.float().mean(), ys.float().mean()
                    assert box[0] - 2 <= cx <= box[2] + 2 and box[1] - 2 <= cy <= box[3] + 2
                    checked += 1
    assert checked > 0


def test_chestxdet_json_layout(tmp_path: Path) -> None:
    root = _chestxdet(tmp_path, _entries())
    dm = _dm(root, with_masks=True)
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    assert batch["name"] == ["a", "b", "c"]
    t = batch["target"]
    assert t[0]["boxes"].tolist() == [[10, 10, 20, 20], [2, 4, 30, 36]]
    nodule, mass = CHESTXDET_CLASSES.index("Nodule") + 1, CHESTXDET_CLASSES.index("Mass") + 1
    assert t[0]["labels"].tolist() == [nodule, mass] == [11, 10]
    assert t[1]["boxes"].shape == (0, 4) and t[1]["masks"].shape == (0, SIZE, SIZE)
    assert t[2]["labels"].tolist() == [13]
    # pycocotools rasterises the 10..20 square to pixels 10..19
    assert t[0]["masks"][0].sum().item() == 100 and t[0]["masks"][0][10:20, 10:20].all()
    assert batch["image"][0, 0, 0, 0].item() == pytest.approx(90 / 255)


def test_chestxdet10_json_layout(tmp_path: Path) -> None:
    entries = [
        {"file_name": "1.png", "syms": ["Nodule", "Fracture"],
         "boxes": [[1, 2, 5, 9], [3, 3, 30, 20]]},
        {"file_name": "2.png", "syms": [], "boxes": []},
        {"file_name": "3.png", "syms": ["Atelectasis"], "boxes": [[0, 0, 10, 10]]},
    ]  # fmt: skip
    for e in entries:
        _grey(tmp_path / "train_data" / "train" / e["file_name"])
    (tmp_path / "train.json").write_text(json.dumps(entries))
    dm = _dm(tmp_path)
    assert (dm.layout, dm.num_classes, dm.classes) == ("chestxdet10", 11, CHESTXDET10_CLASSES)
    dm.setup("fit")
    by_name = {r.name: r for r in dm.train_set.records + dm.val_set.records}
    assert by_name["1"].labels.tolist() == [9, 7]
    assert by_name["1"].boxes.tolist() == [[1, 2, 5, 9], [3, 3, 30, 20]]
    with pytest.raises(ValueError, match="ChestX-Det10 .*no polygons"):
        _dm(tmp_path, with_masks=True).setup("fit")


def test_coco_json_layout(tmp_path: Path) -> None:
    for n in ("x.png", "y.png"):
        _grey(tmp_path / "images" / n)
    coco = {
        "images": [{"id": 1, "file_name": "x.png", "width": SIZE, "height": SIZE},
                   {"id": 2, "file_name": "y.png", "width": SIZE, "height": SIZE}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [4, 5, 10, 20], "iscrowd": 0,
             "segmentation": [[4, 5, 14, 5, 14, 25, 4, 25]], "area": 200},
            {"id": 2, "image_id": 1, "category_id": 5, "bbox": [20, 20, 8, 8], "iscrowd": 0,
             "segmentation": [[20, 20, 28, 20, 28, 28]], "area": 32},
        ],
        "categories": [{"id": 7, "name": "lesion"}, {"id": 5, "name": "nodule"}],
    }  # fmt: skip
    for split in ("train", "test"):
        (tmp_path / f"{split}.json").write_text(json.dumps(coco))
    dm = _dm(tmp_path, with_masks=True)
    assert (dm.layout, dm.num_classes, dm.classes) == ("coco", 3, ("nodule", "lesion"))
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    t0, t1 = batch["target"]
    assert t0["boxes"].tolist() == [[4, 5, 14, 25], [20, 20, 28, 28]]
    assert t0["labels"].tolist() == [2, 1]
    assert t0["masks"][0].sum().item() == 200 and t0["masks"][0][5:25, 4:14].all()
    assert t1["boxes"].shape == (0, 4)


# ---------------------------------------------------------------------------- bad input
def test_missing_root_suggests_synth(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere.*mvmic synth chestxdet --out"):
        ChestXDetDataModule(tmp_path / "nowhere").setup("fit")


def test_root_without_annotations(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"ChestX_Det_train.json.*mvmic synth chestxdet"):
        ChestXDetDataModule(tmp_path).setup("fit")


def test_json_in_no_layout(tmp_path: Path) -> None:
    (tmp_path / "ChestX_Det_train.json").write_text(json.dumps({"foo": [1, 2]}))
    with pytest.raises(ValueError, match="ChestX_Det_train.json is in no accepted layout"):
        ChestXDetDataModule(tmp_path).setup("fit")


@pytest.mark.parametrize(
    ("box", "why"),
    [([30, 30, 45, 39], "outside the 40x40 image"), ([5, 5, 5, 20], "zero area"),
     ([-1, 0, 10, 10], "outside")],
)  # fmt: skip
def test_invalid_box_fails_or_drops(tmp_path: Path, box: list[int], why: str) -> None:
    entries = _entries()
    entries[2]["boxes"] = [box]
    root = _chestxdet(tmp_path, entries)
    dm = _dm(root)
    with pytest.raises(ValueError, match=rf"c\.png\): box \[{box[0]}, .*{why}.*invalid_boxes drop"):
        dm.setup("test")
    dm = _dm(root, invalid_boxes="drop")
    with pytest.warns(UserWarning, match="dropping object"):
        dm.setup("test")
    assert [len(r.labels) for r in dm.test_set.records] == [2, 0, 0]


def test_unknown_class(tmp_path: Path) -> None:
    entries = _entries()
    entries[0]["syms"][1] = "Tumour"
    dm = _dm(_chestxdet(tmp_path, entries))
    with pytest.raises(ValueError, match=r"a\.png\): unknown class 'Tumour'.*'Atelectasis'"):
        dm.setup("test")


def test_polygon_with_two_points(tmp_path: Path) -> None:
    entries = _entries()
    entries[2]["polygons"] = [[[0, 0], [39, 39]]]
    dm = _dm(_chestxdet(tmp_path, entries), with_masks=True)
    with pytest.raises(ValueError, match=r"c\.png\): polygon .* has 2 points \(needs at least 3\)"):
        dm.setup("test")


def test_missing_image(tmp_path: Path) -> None:
    root = _chestxdet(tmp_path, _entries())
    (root / "test" / "b.png").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"image 'b\.png' listed in .*ChestX_Det_test\.json"
    ):
        _dm(root).setup("test")


# ---------------------------------------------------------------------------- mAP vs COCOeval
def _disc(cx: int, cy: int, r: int, size: int = 48) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return ((xx - cx) ** 2 + (yy - cy) ** 2 <= r * r).astype(np.uint8)


def _hand_built(seed: int = 0):
    """3 images, 2 classes: GT discs and noisy, partly wrong predictions with distinct scores."""
    rng = np.random.default_rng(seed)
    gts, preds = [], []
    scores = iter(np.linspace(0.95, 0.05, 40)[rng.permutation(40)])
    for img in range(3):
        g_boxes, g_labels, g_masks = [], [], []
        for k in range(2 + img):
            cx, cy, r = rng.integers(10, 38), rng.integers(10, 38), int(rng.integers(4, 9))
            g_masks.append(_disc(cx, cy, r))
            ys, xs = np.nonzero(g_masks[-1])
            g_boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            g_labels.append(1 + (k + img) % 2)
        p_boxes, p_labels, p_masks, p_scores = [], [], [], []
        for (x1, y1, x2, y2), lab, m in zip(g_boxes, g_labels, g_masks):
            j = rng.uniform(-3, 3, 4)
            p_boxes.append([x1 + j[0], y1 + j[1], x2 + j[2], y2 + j[3]])
            p_labels.append(lab if rng.random() < 0.8 else 3 - lab)
            p_masks.append(np.roll(m, int(rng.integers(-2, 3)), axis=1))
            p_scores.append(next(scores))
        p_boxes.append([1.0, 1.0, 15.0, 12.0])  # a false positive
        p_labels.append(1)
        p_masks.append(_disc(8, 6, 5))
        p_scores.append(next(scores))
        gts.append(
            {
                "boxes": torch.tensor(g_boxes, dtype=torch.float32),
                "labels": torch.tensor(g_labels),
                "masks": torch.tensor(np.stack(g_masks)),
            }
        )
        preds.append({"boxes": torch.tensor(p_boxes, dtype=torch.float32),
                      "labels": torch.tensor(p_labels),
                      "scores": torch.tensor(p_scores, dtype=torch.float32),
                      "masks": torch.tensor(np.stack(p_masks))[:, None].float()})  # fmt: skip
    return preds, gts


def _cocoeval(preds, gts, iou_type: str) -> np.ndarray:
    """pycocotools run directly: stats[0:3] = mAP@[.5:.95], mAP@.5, mAP@.75."""
    images, anns, dets = [], [], []
    for i, (p, g) in enumerate(zip(preds, gts)):
        images.append({"id": i, "width": 48, "height": 48})
        for b, lab, m in zip(g["boxes"].tolist(), g["labels"].tolist(), g["masks"].numpy()):
            rle = mask_utils.encode(np.asfortranarray(m))
            area = (
                float(mask_utils.area(rle)) if iou_type == "segm" else (b[2] - b[0]) * (b[3] - b[1])
            )
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": lab, "iscrowd": 0,
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "area": area,
                         "segmentation": rle})  # fmt: skip
        for b, lab, s, m in zip(
            p["boxes"].tolist(), p["labels"].tolist(), p["scores"].tolist(), p["masks"]
        ):
            det = {"image_id": i, "category_id": lab, "score": s,
                   "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]}  # fmt: skip
            if iou_type == "segm":
                det["segmentation"] = mask_utils.encode(
                    np.asfortranarray((m[0] > 0.5).numpy().astype(np.uint8))
                )
            dets.append(det)
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": 1}, {"id": 2}]}
    gt.createIndex()
    ev = COCOeval(gt, gt.loadRes(dets), iou_type)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev.stats


@pytest.mark.parametrize("arch", ["fasterrcnn_mobilenet_v3_large_fpn", "maskrcnn_resnet50_fpn"])
def test_map_matches_cocoeval(arch: str) -> None:
    net = DetectionNet(arch, in_channels=1, num_classes=3, min_size=48, max_size=48)
    preds, gts = _hand_built()
    metrics = net.build_metrics().clone(prefix="test_")  # the modules' per-stage copy
    for p, g in zip(preds, gts):
        net.update_metrics(metrics, [p], {"target": [g]})
    computed = {k.removeprefix("test_"): v for k, v in metrics.compute().items()}
    # the same scalar keys for Faster and Mask R-CNN; no int "classes" or -1 per-class entries
    assert {"map", "map_50", "map_75", "mar_100"} <= set(computed)
    assert all(v.numel() == 1 and v.is_floating_point() for v in computed.values())
    assert ("segm_map" in computed) == arch.startswith("maskrcnn")
    record = net.record(computed)
    bbox = _cocoeval(preds, gts, "bbox")
    assert 0.05 < bbox[0] < 0.95  # a non-trivial case
    for i, key in enumerate(("map", "map_50", "map_75")):
        assert record[key] == pytest.approx(bbox[i], abs=1e-6)
    if arch.startswith("maskrcnn"):
        segm = _cocoeval(preds, gts, "segm")
        for i, key in enumerate(("segm_map", "segm_map_50", "segm_map_75")):
            assert record[key] == pytest.approx(segm[i], abs=1e-6)
    else:
        assert "segm_map" not in record


def test_record_accepts_prefixed_keys() -> None:
    net = DetectionNet("fasterrcnn_mobilenet_v3_large_fpn", num_classes=3, min_size=48, max_size=48)
    computed = {"val_bbox_map": torch.tensor(0.5), "val/segm_map_50": torch.tensor(0.25),
                "map_75": torch.tensor(0.125), "classes": torch.tensor([1, 2])}  # fmt: skip
    computed = {k.removeprefix("val_"): v for k, v in computed.items()}
    assert net.record(computed) == {"map": 0.5, "map_75": 0.125, "segm_map_50": 0.25}
    with pytest.raises(KeyError, match="no 'map'"):
        net.record({"psnr": torch.tensor(30.0)})


# ---------------------------------------------------------------------------- task nets
def _batch(with_masks: bool) -> dict:
    torch.manual_seed(0)
    x = torch.rand(2, 1, 64, 64)
    m = torch.zeros(2, 64, 64, dtype=torch.uint8)
    m[0, 10:30, 12:40] = 1
    t0 = {"boxes": torch.tensor([[12.0, 10.0, 40.0, 30.0]]), "labels": torch.tensor([3])}
    t1 = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    if with_masks:
        t0["masks"], t1["masks"] = m[:1], m[:0]
    return {"image": x, "target": [t0, t1], "name": ["a", "b"]}


@pytest.mark.parametrize(
    ("arch", "extra"),
    [
        ("fasterrcnn_mobilenet_v3_large_fpn", ()),
        # a ResNet-50 Mask R-CNN: ~7 s
        pytest.param("maskrcnn_resnet50_fpn", ("loss_mask",), marks=pytest.mark.slow),
    ],
)
def test_loss_predict_render(arch: str, extra: tuple[str, ...]) -> None:
    torch.manual_seed(0)
    net = build_task(
        "detection", arch=arch, in_channels=1, num_classes=14, weights=None,
        min_size=64, max_size=64, anchor_sizes=[8, 16, 32, 64, 128],
    )  # fmt: skip
    assert (net.task, net.target_key, net.primary_metric) == ("detection", "target", "map")
    batch = _batch(bool(extra))
    net.train()
    total, terms = net.loss(batch["image"], batch)
    keys = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg", *extra}
    assert set(terms) == keys and torch.isfinite(total) and total.requires_grad
    assert total.item() == pytest.approx(sum(v.item() for v in terms.values()), rel=1e-5)
    preds = net.predict(batch["image"])
    assert net.training  # predict restored the mode
    assert len(preds) == 2
    for p in preds:
        n = len(p["scores"])
        assert p["boxes"].shape == (n, 4) and p["labels"].shape == (n,)
        if extra:
            assert p["masks"].shape == (n, 1, 64, 64)
    pred_rgb, gt_rgb = net.render(preds, batch)
    assert pred_rgb.shape == gt_rgb.shape == (2, 3, 64, 64)
    assert 0 <= gt_rgb.min() and gt_rgb.max() <= 1
    # the ground-truth box is drawn: its top edge differs from the grey image
    assert not torch.allclose(
        gt_rgb[0, :, 10, 12:40], batch["image"][0, 0, 10, 12:40].expand(3, -1)
    )


def test_loss_while_frozen_in_eval_mode() -> None:
    torch.manual_seed(0)
    net = DetectionNet("fasterrcnn_resnet50_fpn", num_classes=14, min_size=64, max_size=64)
    net.eval().requires_grad_(False)
    bn = net.model.backbone.body.bn1
    stats = bn.running_mean.clone()
    batch = _batch(False)
    x = batch["image"].clone().requires_grad_(True)
    total, terms = net.loss(x, batch)
    total.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # gradients reach the codec's output
    assert not net.training and not any(m.training for m in net.modules())
    assert torch.equal(bn.running_mean, stats)  # BatchNorm stayed in eval: no stats update
    # predict() restores each layer's own mode (a trained net with a frozen BatchNorm)
    net.train()
    bn.eval()
    net.predict(batch["image"])
    assert net.training and not bn.training and net.model.backbone.body.layer1.training


def test_loss_weights_and_errors(tmp_path: Path) -> None:
    torch.manual_seed(0)
    kw = {"num_classes": 4, "min_size": 64, "max_size": 64}
    net = DetectionNet(
        "fasterrcnn_mobilenet_v3_large_fpn",
        loss_weights={"loss_classifier": 2.0, "loss_objectness": 0.0},
        **kw,
    )
    batch = _batch(False)
    net.eval()
    total, t = net.loss(batch["image"], batch)
    expected = 2 * t["loss_classifier"] + t["loss_box_reg"] + t["loss_rpn_box_reg"]
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(
        ValueError, match=r"unknown detection architecture 'yolo'.*maskrcnn_resnet50_fpn"
    ):
        DetectionNet("yolo")
    with pytest.raises(ValueError, match=r"unknown loss_weights keys \['loss_mask'\]"):
        DetectionNet("fasterrcnn_mobilenet_v3_large_fpn", loss_weights={"loss_mask": 1.0}, **kw)
    mask_net = DetectionNet("maskrcnn_resnet50_fpn", **kw)
    with pytest.raises(ValueError, match="needs instance masks.*with_masks true"):
        mask_net.loss(batch["image"], batch)
    # local weights: a DetectionNet state dict and a plain torchvision state dict
    torch.save(net.state_dict(), tmp_path / "net.pt")
    torch.save(net.model.state_dict(), tmp_path / "tv.pt")
    for f in ("net.pt", "tv.pt"):
        torch.manual_seed(1)
        other = DetectionNet("fasterrcnn_mobilenet_v3_large_fpn", weights=str(tmp_path / f), **kw)
        assert torch.equal(
            other.model.backbone.body["0"][0].weight, net.model.backbone.body["0"][0].weight
        )
    assert net.model.backbone.body["0"][0].in_channels == 1
    assert net.model.transform.image_mean == [pytest.approx(0.449)]


def test_cli_missing_root_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from mvmic.cli import main

    args = ["fit", "--config", "chestxdet_det.yaml", "--data.root", str(tmp_path / "none"),
            "--model.arch", "fasterrcnn_mobilenet_v3_large_fpn", "--model.N", "8", "--model.M",
            "8", "--trainer.fast_dev_run", "1", "--trainer.logger", "false"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "mvmic synth chestxdet --out" in err and "Traceback" not in err


def test_datamodule_hparams_give_records_their_data_root(chestxdet_root):
    # ResultsWriter stores hparams["root"]: `mvmic latency` measures PNG/JPEG uploads from it.
    from pathlib import Path

    dm = ChestXDetDataModule(root=Path(chestxdet_root), image_size=64)
    assert dm.hparams["root"] == str(chestxdet_root)
    assert all(
        isinstance(v, (str, int, float, bool, tuple, list, type(None))) for v in dm.hparams.values()
    )


@pytest.mark.parametrize("name", ["../outside.png", "/etc/passwd"])
def test_annotation_cannot_point_outside_the_dataset(tmp_path, name):
    root = _chestxdet(tmp_path / "ds", _entries())
    _grey(tmp_path / "outside.png")
    entries = _entries()
    entries[0]["file_name"] = name
    (root / "ChestX_Det_train.json").write_text(json.dumps(entries))
    dm = ChestXDetDataModule(root=str(root), image_size=SIZE)
    with pytest.raises(ValueError, match="points outside the dataset folder"):
        dm.setup("fit")

"""Per-image sufficient statistics of a test run, and the dataset metrics recomputed from them.

A record's point keeps, under ``per_image``, what each test image contributed to the task
metric, so the metric can be recomputed exactly on any subset of the images (a bootstrap draw):

* segmentation (``kind: "confusion"``): the image's confusion matrix ``[true][pred]`` of pixel
  (voxel) counts; mIoU and Dice are then torchmetrics' own reductions of the summed counts;
* detection (``kind: "coco"``): pycocotools' per-image, per-class matching at every IoU
  threshold (the ``evalImgs`` COCOeval computes, at area "all", 100 detections), which
  ``COCOeval.accumulate`` turns into mAP for any list of images.

Beside them ``bytes``/``pixels`` per image give the rate of a subset. Only integers, scores and
bit masks are stored, no pixels. ``rules`` names how each record metric is reduced (see
:data:`RULES`), as the task network's metrics reduce it.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

#: How a record metric is reduced from per-image confusion matrices (torchmetrics semantics):
#: ``jaccard_macro`` JaccardIndex(average="macro") over summed counts; ``dice_global_fg``
#: DiceScore(include_background=False, average="macro", aggregation_level="global");
#: ``dice_samplewise_fg`` / ``iou_samplewise_fg``: per-image per-class DiceScore / MeanIoU
#: averaged over images, then over the foreground classes (the GAN segmentor's record).
RULES = ("jaccard_macro", "dice_global_fg", "dice_samplewise_fg", "iou_samplewise_fg")


# -- collection -------------------------------------------------------------------------------
def confusion_matrices(preds: Tensor, target: Tensor, num_classes: int) -> list[list[list[int]]]:
    """One ``num_classes``×``num_classes`` confusion matrix (rows: truth) per image."""
    k = num_classes
    flat = (target.long() * k + preds.long()).flatten(1)
    return [torch.bincount(f, minlength=k * k).view(k, k).tolist() for f in flat.cpu()]


def coco_image_stats(metric: Any, pred: dict[str, Tensor], target: dict[str, Tensor]) -> list:
    """pycocotools' matching of one image, as ``metric`` (a MeanAveragePrecision) sees it.

    A fresh clone of ``metric`` takes the image, torchmetrics builds its COCO datasets (same box
    conversion as the record's mAP) and COCOeval matches it. Returns one entry per class present
    (in truth or prediction): ``[class, n_gt, scores, matched, ignored]``, where ``n_gt`` counts
    the ground truths that are not ignored and ``matched``/``ignored`` are bit masks over the
    IoU thresholds (bit t: matched / ignored at threshold t), one per detection kept.
    """
    m = metric.clone()
    m.reset()
    m.update([pred], [target])
    gt, dt = _coco_datasets(m)
    if not gt.getCatIds():
        return []
    with contextlib.redirect_stdout(io.StringIO()):
        ev = m._coco_backend.cocoeval(gt, dt, iouType="bbox")
        ev.params.iouThrs = np.array(m.iou_thresholds, dtype=np.float64)
        ev.params.recThrs = np.array(m.rec_thresholds, dtype=np.float64)
        ev.params.maxDets = list(m.max_detection_thresholds)
        ev.evaluate()
    all_area = list(ev.params.areaRng[0])
    out = []
    for e in ev.evalImgs:
        if e is None or list(e["aRng"]) != all_area:
            continue
        bits = 1 << np.arange(len(ev.params.iouThrs))
        matched = ((np.asarray(e["dtMatches"]) > 0).T.astype(np.int64) @ bits).tolist()
        ignored = (np.asarray(e["dtIgnore"]).astype(bool).T.astype(np.int64) @ bits).tolist()
        n_gt = int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0))
        scores = [float(s) for s in e["dtScores"]]
        out.append([int(e["category_id"]), n_gt, scores, matched, ignored])
    return out


def _coco_datasets(m: Any) -> tuple[Any, Any]:
    with contextlib.redirect_stdout(io.StringIO()):
        preds, target = m._coco_backend._get_coco_datasets(
            m.groundtruth_labels,
            m.groundtruth_box,
            m.groundtruth_mask,
            m.groundtruth_crowds,
            m.groundtruth_area,
            m.detection_labels,
            m.detection_box,
            m.detection_mask,
            m.detection_scores,
            ("bbox",),
            average=m.average,
        )
    return target, preds


# -- recomputation ------------------------------------------------------------------------------
def recompute(stats: dict[str, Any], metric: str, weights: np.ndarray | None = None) -> float:
    """``metric`` on the images weighted by ``weights`` (how often each is drawn; all once
    when None), exactly as the record computed it on the full set.

    Raises:
        KeyError: the statistics cannot give ``metric``.
    """
    w = np.ones((1, n_images(stats)), dtype=np.int64) if weights is None else weights[None]
    return float(recompute_draws(stats, metric, w)[0])


def recompute_draws(stats: dict[str, Any], metric: str, weights: np.ndarray) -> np.ndarray:
    """:func:`recompute` for every row of ``weights`` (draws × images), sharing the set-up."""
    weights = np.asarray(weights, dtype=np.int64)
    if stats["kind"] == "confusion":
        rule = stats.get("rules", {}).get(metric)
        if rule is None:
            raise KeyError(f"no per-image rule for {metric!r} (have {sorted(stats['rules'])})")
        cm = np.asarray(stats["confmat"], dtype=np.int64)
        return np.array([_confusion_metric(cm, rule, w) for w in weights])
    if stats["kind"] == "coco":
        return _coco_metric(stats, metric, weights)
    raise KeyError(f"unknown per-image statistics kind {stats['kind']!r}")


def n_images(stats: dict[str, Any]) -> int:
    return len(stats["confmat"] if stats["kind"] == "confusion" else stats["images"])


def metrics_of(stats: dict[str, Any]) -> list[str]:
    """The record metrics these statistics recompute."""
    if stats["kind"] == "coco":
        return ["map", "map_50", "map_75"]
    return sorted(stats.get("rules", {}))


def _confusion_metric(cm: np.ndarray, rule: str, w: np.ndarray) -> float:
    from torchmetrics.functional.classification.jaccard import _jaccard_index_reduce
    from torchmetrics.functional.segmentation.dice import _dice_score_compute
    from torchmetrics.utilities.compute import _safe_divide

    tp = np.diagonal(cm, axis1=1, axis2=2)
    pred_sum, true_sum = cm.sum(1), cm.sum(2)
    if rule == "jaccard_macro":
        total = torch.from_numpy(np.tensordot(w, cm, axes=1))
        return float(_jaccard_index_reduce(total, average="macro"))
    if rule == "dice_global_fg":
        num = torch.from_numpy(np.tensordot(w, 2 * tp[:, 1:], axes=1))[None]
        den = torch.from_numpy(np.tensordot(w, (pred_sum + true_sum)[:, 1:], axes=1))[None]
        return float(_dice_score_compute(num, den, "macro", "global").nanmean(dim=0))
    # samplewise rules: each drawn image counts once per draw
    rows = np.repeat(np.arange(len(w)), w)
    if rule == "dice_samplewise_fg":
        num, den = torch.from_numpy(2 * tp[rows]), torch.from_numpy((pred_sum + true_sum)[rows])
        per_class = _dice_score_compute(num, den, "none", "samplewise").nanmean(dim=0)
        return float(per_class.float()[1:].mean())
    if rule == "iou_samplewise_fg":
        inter = torch.from_numpy(tp[rows])
        union = torch.from_numpy((pred_sum + true_sum)[rows]) - inter
        valid = union > 0
        score = (_safe_divide(inter, union, zero_division=0.0) * valid).sum(0)
        per_class = (score / valid.sum(0)).nan_to_num(-1.0)
        return float(per_class[1:].mean())
    raise KeyError(f"unknown per-image rule {rule!r}; known: {', '.join(RULES)}")


def _coco_metric(stats: dict[str, Any], metric: str, weights: np.ndarray) -> np.ndarray:
    """COCO mAP (area "all", the stored detections per image) of every draw.

    This is ``COCOeval.accumulate``'s arithmetic on stored matches, vectorised over classes'
    detections: pycocotools runs a Python loop per detection and threshold, 40 ms a draw for
    100 images, too slow for 1000 draws per point. The tests check it equals torchmetrics'
    pycocotools mAP on the full set and on a resampled subset.
    """
    thrs = np.asarray(stats["iou_thrs"], dtype=np.float64)
    rec_thrs = np.asarray(stats["rec_thrs"], dtype=np.float64)
    if metric == "map":
        t_sel = slice(None)
    elif metric in ("map_50", "map_75"):
        t_sel = [int(np.argmin(np.abs(thrs - int(metric[-2:]) / 100)))]
    else:
        raise KeyError(f"per-image detection statistics give map, map_50, map_75, not {metric!r}")
    bits = 1 << np.arange(len(thrs))
    cats = sorted({e[0] for img in stats["images"] for e in img})
    per_cat = [_class_detections(stats["images"], c, bits) for c in cats]
    weights = np.asarray(weights, dtype=np.int64)
    out = []
    for lo in range(0, len(weights), 100):  # draws in chunks: arrays chunk × thresholds × dets
        w = weights[lo : lo + 100]
        precision = -np.ones((len(w), len(thrs), len(rec_thrs), len(cats)))
        for k, cls in enumerate(per_cat):
            _class_precision(w, *cls, rec_thrs, precision[..., k])
        for p in precision:
            s = p[t_sel]
            value = float(np.mean(s[s > -1])) if np.any(s > -1) else -1.0
            out.append(float(np.float32(value)))  # torchmetrics reports COCO's stats as float32
    return np.array(out)


def _class_precision(
    w: np.ndarray,
    present: np.ndarray,
    n_gt: np.ndarray,
    img_of: np.ndarray,
    tp: np.ndarray,
    fp: np.ndarray,
    rec_thrs: np.ndarray,
    out: np.ndarray,
) -> None:
    """COCOeval's interpolated precision (draws × thresholds × recall thresholds) of one class.

    A detection drawn c times counts c times in the running sums: the copies' intermediate
    points never raise the precision envelope (an extra true positive only raises precision,
    an extra false positive leaves recall unchanged), so q equals COCOeval's on the expanded
    list. Draws without ground truth of the class keep -1, as in COCOeval.
    """
    npig = w @ n_gt
    valid = (npig > 0) & w[:, present].any(1)
    if not valid.any():
        return
    if tp.shape[1] == 0:  # ground truth but no detection: COCOeval's precision is 0
        out[valid] = 0.0
        return
    w, npig = w[valid], npig[valid]
    dw = w[:, img_of].astype(float)[:, None, :]  # draws × 1 × detections
    tp_sum = np.cumsum(dw * tp[None], axis=2)
    fp_sum = np.cumsum(dw * fp[None], axis=2)
    rc = tp_sum / npig[:, None, None]
    pr = tp_sum / (fp_sum + tp_sum + np.spacing(1))
    pr = np.maximum.accumulate(pr[..., ::-1], axis=2)[..., ::-1]  # precision envelope
    nd = rc.shape[2]
    rows = rc.reshape(-1, nd)
    # one searchsorted for all rows: row r's recalls shifted past row r-1's
    shift = (max(1.0, float(rows.max(initial=0.0))) + 1.0) * np.arange(len(rows))[:, None]
    inds = np.searchsorted((rows + shift).ravel(), (rec_thrs[None] + shift).ravel(), "left")
    inds = inds.reshape(len(rows), -1) - nd * np.arange(len(rows))[:, None]
    ok = inds < nd
    q = np.zeros(inds.shape)
    q[ok] = pr.reshape(-1, nd)[np.nonzero(ok)[0], inds[ok]]
    out[valid] = q.reshape(len(w), -1, len(rec_thrs))


def _class_detections(images: Sequence, cat: int, bits: np.ndarray) -> tuple:
    """One class over all images: where it occurs, ground truths per image, and its detections
    sorted by score (stable, so ties keep image order as COCOeval's mergesort does) with their
    image, true/false positive flags per threshold (ignored detections are neither)."""
    n = len(images)
    present, n_gt = np.zeros(n, dtype=bool), np.zeros(n, dtype=np.int64)
    scores, img_of, matched, ignored = [], [], [], []
    for i, img in enumerate(images):
        for c, g, sc, m, ig in img:
            if c != cat:
                continue
            present[i], n_gt[i] = True, g
            scores += list(sc)
            img_of += [i] * len(sc)
            matched += list(m)
            ignored += list(ig)
    order = np.argsort(-np.asarray(scores, dtype=float), kind="mergesort")
    m = (np.asarray(matched, dtype=np.int64)[order][None, :] & bits[:, None]) > 0
    ig = (np.asarray(ignored, dtype=np.int64)[order][None, :] & bits[:, None]) > 0
    img = np.asarray(img_of, dtype=np.int64)[order]
    return present, n_gt, img, m & ~ig, ~m & ~ig


class StatsCollector:
    """Gathers a test run's per-image statistics; :meth:`result` is the point's ``per_image``.

    Args:
        task: the task network (its ``stats_header``/``image_stats``); None or a task without
            statistics collects nothing.
    """

    def __init__(self, task: Any) -> None:
        header = task.stats_header() if task is not None else None
        self.task, self.header = task, header
        self.items: list = []
        self.bytes: list[int] = []
        self.pixels: list[int] = []

    def update(
        self, preds: Any, batch: dict[str, Any], nbytes: Sequence[int] | None = None
    ) -> None:
        """Add a batch: the task's predictions, the batch, and each image's payload bytes."""
        if self.header is None:
            return
        self.items.extend(self.task.image_stats(preds, batch))
        x = batch["image"]
        self.pixels.extend([int(np.prod(x.shape[2:]))] * len(x))
        if nbytes is not None:
            self.bytes.extend(int(b) for b in nbytes)

    def result(self) -> dict[str, Any] | None:
        """The point's ``per_image`` (every process's images under DDP, as the metrics)."""
        if self.header is None:
            return None
        self._gather()
        if not self.items:
            return None
        key = "confmat" if self.header["kind"] == "confusion" else "images"
        out = {**self.header, key: self.items, "pixels": self.pixels}
        if len(self.bytes) == len(self.items):
            out["bytes"] = self.bytes
        return out

    def _gather(self) -> None:
        # Under DDP the task metrics are synced over processes: the statistics must be too.
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        if getattr(self, "_gathered", False):
            return
        parts: list = [None] * dist.get_world_size()
        dist.all_gather_object(parts, (self.items, self.bytes, self.pixels))
        self.items = [x for p in parts for x in p[0]]
        self.bytes = [x for p in parts for x in p[1]]
        self.pixels = [x for p in parts for x in p[2]]
        self._gathered = True

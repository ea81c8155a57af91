"""Image panels with titles: a grid of tiles (image, overlay, bit map), drawn with matplotlib.

Used by ``mvmic test`` (the panels of :class:`mvmic.callbacks.ImagePanels`), ``mvmic compare``
and ``mvmic report``. Each tile is shown at the input's resolution, integer-upscaled to at
least ``min_side`` pixels so the labels stay readable on tiny images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor

from mvmic.evaluation.methods import METRIC_SHORT

#: shown in tile titles, in this order, when the task's record has them
TITLE_METRICS = ("miou", "iou", "dice", "map")


@dataclass
class Tile:
    """One picture of a grid: an H×W×3 float array in [0, 1] and its title lines."""

    image: np.ndarray
    title: str = ""


def to_rgb(x: Tensor) -> np.ndarray:
    """One C×H×W image (1 or 3 channels) as an H×W×3 float array in [0, 1]."""
    x = x.detach().float().cpu().clamp(0, 1)
    x = x.expand(3, -1, -1) if x.shape[0] == 1 else x[:3]
    return x.permute(1, 2, 0).numpy()


def overlay(base: np.ndarray, paint: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``paint`` blended over ``base`` where ``paint`` is not black (mask colours)."""
    where = paint.max(-1, keepdims=True) > 0
    return np.where(where, (1 - alpha) * base + alpha * paint, base)


def bits_overlay(base: np.ndarray, bits: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """A bit-allocation map (H×W bits) as an ``inferno`` heat map over a grey ``base``."""
    from matplotlib import colormaps

    top = float(bits.max())
    heat = colormaps["inferno"](bits / top if top > 0 else bits)[..., :3]
    grey = base.mean(-1, keepdims=True).repeat(3, -1)
    return (1 - alpha) * grey + alpha * heat


def bits_title(bits: np.ndarray) -> str:
    """``86 bits · peak 0.05 bit/px``: the map's sum and the value its brightest colour means."""
    return f"{bits.sum():.0f} bits · peak {bits.max():.3g} bit/px"


def slice_batch(batch: dict[str, Any], i: int) -> dict[str, Any]:
    """Image ``i`` of a batch as a batch of one (tensors and lists sliced, the rest kept)."""
    return {
        k: (v[i : i + 1] if isinstance(v, Tensor | list | tuple) else v) for k, v in batch.items()
    }


def per_image_metrics(task: Any, preds: Any, batch: dict[str, Any]) -> list[dict[str, float]]:
    """The task's own record fields (mIoU/Dice, mAP …) for each image alone."""
    out = []
    for i in range(len(batch["image"])):
        metrics = task.build_metrics(sync=False).to("cpu")  # rank 0 alone draws panels
        one = slice_batch(batch, i)
        task.update_metrics(metrics, preds[i : i + 1], one)
        try:
            out.append(task.record(metrics.compute()))
        except (KeyError, ValueError):  # e.g. no ground truth for a detection metric
            out.append({})
    return out


def metric_text(values: dict[str, float]) -> str:
    """``mIoU 0.812 · Dice 0.774`` from a record's fields (negative = undefined: n/a)."""
    parts = []
    for key in TITLE_METRICS:
        if key in values and isinstance(values[key], int | float):
            v = float(values[key])
            shown = f"{v:.3f}" if math.isfinite(v) and v >= 0 else "n/a"
            parts.append(f"{METRIC_SHORT.get(key, key)} {shown}")
    return " · ".join(parts)


def prediction_tiles(
    task: Any, preds: Any, batch: dict[str, Any], shown: Tensor
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Prediction and ground truth drawn over ``shown`` (the decoded images), one per image.

    A segmentation task paints label colours (blended over the image); a detection task draws
    its boxes on the image it is given.
    """
    pred_rgb, truth_rgb = task.render(preds, {**batch, "image": shown})
    paints_labels = task.target_key == "mask"
    preds_out, truth_out = [], []
    for i in range(len(shown)):
        base = to_rgb(shown[i])
        p, t = to_rgb(pred_rgb[i]), to_rgb(truth_rgb[i])
        preds_out.append(overlay(base, p) if paints_labels else p)
        truth_out.append(overlay(base, t) if paints_labels else t)
    return preds_out, truth_out


def draw_grid(
    rows: Sequence[Sequence[Tile]],
    column_titles: Sequence[str] = (),
    min_side: int = 256,
    title_lines: int = 2,
    font_px: int = 13,
):
    """A matplotlib Figure: one row of tiles per image, column titles on top.

    Each tile is drawn pixel for pixel (integer-upscaled to ``min_side`` when smaller), with
    ``title_lines`` lines of ``font_px``-pixel text above it.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    if not rows or not rows[0]:
        raise ValueError("a panel needs at least one row of tiles")
    h = max(t.image.shape[0] for r in rows for t in r)
    w = max(t.image.shape[1] for r in rows for t in r)
    scale = max(1, math.ceil(min_side / max(h, w)))
    tile_h, tile_w = h * scale, w * scale
    gap = 8
    text_h = int(font_px * 1.35 * title_lines) + 6
    head_h = int(font_px * 1.6) + 6 if column_titles else 0
    ncols = max(len(r) for r in rows)
    width = ncols * tile_w + (ncols + 1) * gap
    height = head_h + len(rows) * (tile_h + text_h + gap) + gap
    dpi = 100
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, facecolor="white")
    pt = font_px * 72 / dpi  # matplotlib sizes text in points
    for j, title in enumerate(column_titles):
        x = (gap + j * (tile_w + gap) + tile_w / 2) / width
        y = 1 - (head_h / 2) / height
        fig.text(x, y, title, ha="center", va="center", fontsize=pt * 1.15, weight="bold")
    for i, row in enumerate(rows):
        top = head_h + i * (tile_h + text_h + gap) + text_h
        for j, tile in enumerate(row):
            left = gap + j * (tile_w + gap)
            ax = fig.add_axes(
                (left / width, 1 - (top + tile_h) / height, tile_w / width, tile_h / height)
            )
            img = np.clip(tile.image, 0, 1)
            img = img.repeat(scale, 0).repeat(scale, 1) if scale > 1 else img
            ax.imshow(img, interpolation="nearest", aspect="auto")
            ax.set_axis_off()
            if tile.title:
                fig.text(
                    (left + tile_w / 2) / width,
                    1 - (top - 3) / height,
                    tile.title,
                    ha="center",
                    va="bottom",
                    fontsize=pt,
                    linespacing=1.2,
                )
    return fig


def module_panel(task, panel: dict, batch: dict, n: int):
    """original | reconstruction (or g's features) | bits | prediction | ground truth.

    The prediction is drawn over what the task saw and titled with the image's own metric;
    the bit-allocation map (:func:`mvmic.codecs.bit_map.bit_map`) appears for learned codecs.
    """
    images = panel["image"][:n]
    shown = panel.get("reconstruction", images)[:n]
    preds = panel["prediction"][:n]
    pred_tiles = prediction_tiles(task, preds, batch, shown)[0]
    truth_tiles = prediction_tiles(task, preds, batch, images)[1]  # the truth over the input
    values = per_image_metrics(task, preds, {**batch, "image": shown})
    titles = ["original"]
    titles += [t for k, t in (("reconstruction", "decoded"), ("features", "g's features"))
               if k in panel]  # fmt: skip
    titles += ["bits (estimated)"] if "bits" in panel else []
    titles += ["prediction", "ground truth"]
    rows = []
    for i in range(n):
        name = batch.get("name")
        row = [Tile(to_rgb(images[i]), str(name[i]) if name is not None else "")]
        for key in ("reconstruction", "features"):
            if key in panel:
                row.append(Tile(to_rgb(panel[key][i])))
        if "bits" in panel and i < len(panel["bits"]):
            bits = panel["bits"][i].cpu().numpy()
            row.append(Tile(bits_overlay(to_rgb(images[i]), bits), bits_title(bits)))
        row += [Tile(pred_tiles[i], metric_text(values[i])), Tile(truth_tiles[i])]
        rows.append(row)
    return draw_grid(rows, titles, title_lines=1)


def figure_to_array(fig) -> np.ndarray:
    """The rendered figure as an H×W×3 uint8 array (for W&B or tests)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()

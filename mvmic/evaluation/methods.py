"""Records grouped into methods: one curve per method per dataset, and the BD reference."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mvmic.evaluation.records import is_anchor, iter_records, record_points

DEFAULT_METRICS = ("psnr", "ms-ssim", "miou", "iou", "dice", "map")
METRIC_LABELS = {
    "psnr": "PSNR (dB)",
    "ms-ssim": "MS-SSIM",
    "miou": "mIoU",
    "iou": "IoU",
    "dice": "Dice",
    "map": "mAP",
    "map_50": "mAP@50",
    "map_75": "mAP@75",
}
METRIC_SHORT = {
    "psnr": "PSNR",
    "ms-ssim": "MS-SSIM",
    "miou": "mIoU",
    "iou": "IoU",
    "dice": "Dice",
    "map": "mAP",
}
#: Suffix of a method whose task net was fine-tuned on that codec's decoded images (the fair
#: anchors of ``mvmic anchors --finetune``: ``hevc+ft``; the MSE codec's stage 2:
#: ``mbt2018-mean+ft``). It shares its codec's colour on the curves, with another line style.
FT_SUFFIX = "+ft"


def family(name: str) -> str:
    """The codec a method belongs to: ``hevc`` for ``hevc`` and ``hevc+ft``."""
    return name.removesuffix(FT_SUFFIX)


#: Preferred default BD reference, first one present wins (BPG/HEVC intra is the usual anchor).
DEFAULT_ANCHORS = ("hevc", "bpg", "jpeg2000", "jpeg", "webp", "avif")


@dataclass
class Method:
    """One method's curve data within one dataset (records with the same name are merged)."""

    name: str
    anchor: bool
    results: dict[str, list] = field(default_factory=dict)
    paths: list[Path] = field(default_factory=list)

    def points(self, metric: str) -> tuple[list[float], list[float]]:
        return record_points({"results": self.results}, metric)


def load_methods(results_dir: str | Path, skip: Sequence[Path] = ()) -> dict[str, list[Method]]:
    """Records under ``results_dir`` grouped by dataset, one :class:`Method` per record name."""
    grouped: dict[str, dict[str, Method]] = {}
    for dataset, path, record in iter_records(results_dir, skip=tuple(skip)):
        name = str(record.get("name") or path.stem)
        methods = grouped.setdefault(dataset, {})
        m = methods.get(name)
        if m is None:
            m = methods[name] = Method(name, is_anchor({**record, "name": name}))
        _merge_columns(m.results, record["results"])
        m.paths.append(path)
    return {d: list(ms.values()) for d, ms in sorted(grouped.items())}


def _merge_columns(into: dict[str, list], results: dict[str, list]) -> None:
    # Columns of a record may be ragged (None-padded by append_point); keep rows aligned.
    n_old = max((len(v) for v in into.values()), default=0)
    n_new = max((len(v) for v in results.values()), default=0)
    for key in set(into) | set(results):
        col = into.setdefault(key, [])
        col.extend([None] * (n_old - len(col)))
        new = list(results.get(key) or [])
        col.extend(new + [None] * (n_new - len(new)))


def choose_anchor(methods: Sequence[Method], anchor: str | None) -> Method | None:
    """The reference method: ``anchor`` by name (case-insensitive), else a default."""
    by_name = {m.name.lower(): m for m in methods}
    by_stem = {p.stem.lower(): m for m in methods for p in m.paths}
    if anchor:
        return by_name.get(anchor.lower()) or by_stem.get(anchor.lower())
    for name in DEFAULT_ANCHORS:
        if name in by_name:
            return by_name[name]
    return next((m for m in methods if m.anchor), methods[0] if methods else None)

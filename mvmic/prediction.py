"""``mvmic predict``: write each image's task output, and what its bitstream cost, to a folder.

The modules' ``predict_step`` sends every image through the real bitstream (compress → bytes →
decompress → task; see :meth:`mvmic.modules.base.BaseModule.predict_step`); this writer puts
one file per image in the output folder, named after the source image:

- segmentation masks: ``<name>.png`` (class indices, uint8; uint16 above 255 classes), the
  same file ``mvmic decompress --task`` writes; volumes: ``<name>.nii.gz`` in the source's
  voxel order and affine;
- detections: ``<name>.json`` ``{"boxes": [[x1, y1, x2, y2], …], "labels": […], "scores": […]}``;

plus ``predictions.csv`` with one row per image: ``file, source, depth, height, width, bytes,
bpp`` (``bytes``: the ``.mvmic`` container, or the raw image for a model without a codec).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter

from mvmic.io.task_outputs import write_task_output

CSV_NAME = "predictions.csv"
CSV_FIELDS = ("file", "source", "depth", "height", "width", "bytes", "bpp")


def write_result(out_dir: Path, result: dict[str, Any]) -> Path:
    """Write one image's prediction (a ``predict_step`` item) under ``out_dir``.

    Returns:
        The file written: ``<name>.png`` (2D mask), ``<name>.nii.gz`` (volume mask) or
        ``<name>.json`` (detections).

    Raises:
        ValueError: the name would write outside ``out_dir``, or onto its own source image.
    """
    name = str(result["name"])
    pred = result["prediction"]
    if isinstance(pred, dict):
        suffix = ".json"
    else:
        suffix = ".nii.gz" if pred.dim() == 3 else ".png"
    path = out_dir / f"{name}{suffix}"
    # Names come from file names; none may climb out of the output folder.
    if Path(name).is_absolute() or ".." in Path(name).parts:
        raise ValueError(f"prediction name {name!r} would write outside {out_dir}")
    source = result.get("source")
    if source and Path(source).resolve() == path.resolve():
        raise ValueError(f"the prediction for {source} would replace it; use another --predict_dir")
    # D×H×W volumes are (z, y, x), as HVSMR volumes are read; NIfTI gets them back as (x, y, z).
    write_task_output(path, pred, affine=result.get("affine"))
    return path


class PredictionWriter(BasePredictionWriter):
    """Writes each batch's predictions as it arrives (nothing is kept in memory).

    Args:
        output_dir: the folder for the per-image files and ``predictions.csv``.

    Under DDP every process writes its own images and ``predictions_rank<N>.csv``.
    """

    def __init__(self, output_dir: str | Path) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self.count = 0

    @property
    def csv_path(self) -> Path:
        """The table of this process (``predictions.csv`` on rank 0)."""
        return self.output_dir / CSV_NAME

    def _csv(self, trainer: Trainer) -> Path:
        if trainer.world_size > 1 and trainer.global_rank > 0:
            return self.output_dir / f"predictions_rank{trainer.global_rank}.csv"
        return self.csv_path

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        out = self.output_dir
        if out.exists() and not out.is_dir():
            raise ValueError(f"--predict_dir {out} is a file; name a folder")
        # Predictions replace those of an earlier run, never other files (images, masks).
        if out.is_dir() and not (out / CSV_NAME).is_file() and any(out.iterdir()):
            raise ValueError(
                f"--predict_dir {out} holds files but no {CSV_NAME}, so it is not an earlier "
                "predict run's folder; name a new or empty folder"
            )
        out.mkdir(parents=True, exist_ok=True)
        with open(self._csv(trainer), "w", newline="") as f:
            csv.writer(f).writerow(CSV_FIELDS)
        self.count = 0

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Sequence[dict[str, Any]],
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        rows = []
        for result in prediction:
            path = write_result(self.output_dir, result)
            shape = tuple(result["shape"])
            depth, (height, width) = (shape[0] if len(shape) == 3 else 1), shape[-2:]
            rows.append(
                (
                    path.relative_to(self.output_dir).as_posix(),
                    result.get("source") or "",
                    depth,
                    height,
                    width,
                    result["bytes"],
                    f"{result['bpp']:.6f}",
                )
            )
        with open(self._csv(trainer), "a", newline="") as f:
            csv.writer(f).writerows(rows)
        self.count += len(rows)

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.is_global_zero:
            print(f"predict: {self.count} prediction(s) in {self.output_dir} ({CSV_NAME})")

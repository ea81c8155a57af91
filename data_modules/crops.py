"""Train on crops, evaluate on whole images: the albumentations ops the 2D data modules share.

Every split is resized to ``image_size``; the training split is then cut to random
``train_crop`` crops of it, at the same scale, so fully convolutional codecs and task nets train
at the crop's cost and are evaluated on whole images (padded to their stride by the codec, see
:mod:`mvmic.padding`).
"""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A

from mvmic.validation import ConfigError


def train_ops(
    size: tuple[int, int] | None, crop: tuple[int, int] | None, train: bool
) -> list[A.BasicTransform]:
    """Resize to ``size`` (every split), then on the training split a random ``crop`` of it.

    Evaluation sees whole images at ``size``; training sees crops at the same scale, so a fully
    convolutional codec or task net trains at the crop's cost. An image smaller than the crop
    (``size`` None) is padded with zeros first.
    """
    ops: list[A.BasicTransform] = [A.Resize(*size)] if size is not None else []
    if train and crop is not None:
        ops += [A.PadIfNeeded(*crop, border_mode=0), A.RandomCrop(*crop)]
    return ops


def pair_size(value: int | Sequence[int] | None) -> tuple[int, int] | None:
    """An ``image_size``/``train_crop`` value as (H, W), or None."""
    if value is None:
        return None
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def check_crop(crop: tuple[int, int] | None, size: tuple[int, int] | None) -> None:
    """A training crop must fit in the evaluation size it is cut from."""
    if crop is not None and size is not None and (crop[0] > size[0] or crop[1] > size[1]):
        raise ConfigError(
            "--data.train_crop",
            f"{list(crop)} is larger than --data.image_size {list(size)}; a crop is cut from "
            "the resized image: make it smaller (e.g. half of image_size) or leave it unset",
        )

"""What the data modules share: the loader plumbing, the unreadable-file policy, and a training
loader that resumes mid-epoch exactly where a checkpoint left it."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence, Sized
from pathlib import Path
from typing import Any, TypeVar

import torch
from lightning import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler

# Re-exported: every data module reads files through data_modules.reading (mvmic.io).
from data_modules.reading import (  # noqa: F401
    UnreadableFileError,
    check_channels,
    image_size,
    resolve_channels,
)

T = TypeVar("T")
R = TypeVar("R")

#: values of ``on_bad_image``: stop naming the file, or leave it out and count it
ON_BAD_IMAGE = ("error", "skip")


def check_on_bad_image(value: str) -> str:
    """Validate an ``on_bad_image`` value (raises ``ValueError`` naming the choices)."""
    if value not in ON_BAD_IMAGE:
        raise ValueError(f"--data.on_bad_image must be one of {ON_BAD_IMAGE}, got {value!r}")
    return value


class BadFilePolicy:
    """Mixin for data modules: what happens to files that cannot be read.

    ``on_bad_image="error"`` stops with one message naming the file; ``"skip"`` leaves the
    sample out, warns naming each file, and counts it in ``skipped`` / ``skipped_files``.
    Files are screened when the dataset is built, so a batch never silently shrinks or shifts.
    """

    on_bad_image: str = "error"

    @property
    def skipped_files(self) -> list[Path]:
        """The files left out so far (``on_bad_image="skip"``)."""
        if not hasattr(self, "_skipped_files"):
            self._skipped_files: list[Path] = []
        return self._skipped_files

    @property
    def skipped(self) -> int:
        """How many samples were left out for an unreadable file."""
        return len(self.skipped_files)

    def read_all(self, items: Sequence[T], read: Callable[[T], R], what: str) -> list[R]:
        """``read(item)`` for every item whose files can be read.

        Args:
            items: samples (pairs of paths, records, names).
            read: reads (or checks) one sample's files, raising :class:`UnreadableFileError`
                for a bad one; what it returns is kept.
            what: the set being read, for messages (e.g. ``"isic2017 train"``).

        Raises:
            ValueError: with ``on_bad_image="error"`` at the first unreadable file, and with
                ``"skip"`` when no sample of a non-empty set is left.
        """
        kept: list[R] = []
        bad: list[Path] = []
        for item in items:
            try:
                kept.append(read(item))
            except UnreadableFileError as err:
                if self.on_bad_image != "skip":
                    raise ValueError(
                        f"{err}; replace or remove the file, or set data.on_bad_image skip to "
                        "leave unreadable files out"
                    ) from None
                bad.append(err.path)
                rank_zero_warn(f"skipping a {what} sample: {err}")
        if bad:
            self.skipped_files.extend(bad)
            rank_zero_info(
                f"{what}: skipped {len(bad)} unreadable file(s) of {len(items)} "
                f"(on_bad_image=skip): {', '.join(p.name for p in bad[:5])}"
                + (" …" if len(bad) > 5 else "")
            )
            if not kept:
                raise ValueError(f"{what}: none of its {len(items)} samples can be read")
        return kept


class ChannelPolicy:
    """Mixin for 2D data modules: ``in_channels`` is ``"auto"``, 1 or 3.

    ``"auto"`` reads the headers of the dataset's images (:meth:`channel_sources`) at first
    use: 1 when every one is single-channel (CT, X-ray, MR), else 3, so a grey dataset is
    never tripled into RGB. ``mvmic predict`` on a plain folder converts to the model's
    channels instead (``predict_channels``).
    """

    _channels_setting: int | str = 3
    _channels: int | None = None

    def init_channels(self, setting: int | str) -> None:
        self._channels_setting = check_channels("--data.in_channels", setting)
        self._channels = None if setting == "auto" else int(setting)

    def channel_sources(self) -> Sequence[Path]:
        """The image files ``"auto"`` looks at (every image of the dataset)."""
        raise NotImplementedError

    def resolve_channels_from(self, paths: Sequence[Path]) -> int:
        """Resolve ``"auto"`` from these files (a no-op once resolved, or for 1 / 3)."""
        if self._channels is None:
            what = getattr(self, "dataset_name", type(self).__name__)
            self._channels = resolve_channels("auto", paths, str(what))
            # Lightning merges the data module's and the model's hparams for the loggers and
            # refuses a key with two values: log what "auto" resolved to, not "auto".
            if getattr(self, "hparams", {}).get("in_channels") == "auto":
                self.save_hyperparameters({**self.hparams, "in_channels": self._channels})
        return self._channels

    @property
    def in_channels(self) -> int:
        if self._channels is None:
            return self.resolve_channels_from(self.channel_sources())
        return self._channels

    def predict_channels(self) -> int:
        """Channels of a ``predict_root`` folder's images: the model's under ``"auto"``."""
        trainer = getattr(self, "_trainer", None)
        module = getattr(trainer, "lightning_module", None) if trainer is not None else None
        wanted = getattr(module, "hparams", {}).get("in_channels") if module else None
        if self._channels_setting == "auto" and wanted in (1, 3):
            return int(wanted)
        return self.in_channels


class SeededRandomSampler(RandomSampler):
    """A shuffling sampler whose order is a function of (seed, epoch) alone.

    ``RandomSampler`` draws its seed from torch's global RNG when an epoch starts; a run resumed
    mid-epoch restarts the iterator at a different point of that stream and would draw another
    order. Here the order of epoch ``e`` is ``randperm`` under ``seed + e`` (as in
    ``DistributedSampler``, which Lightning puts in its place under DDP), and the global RNG is
    left alone. Lightning calls ``set_epoch`` before every epoch; outside Lightning the epoch
    advances after each full pass.

    Args:
        data_source: the dataset.
        seed: base seed; default ``PL_GLOBAL_SEED`` (set by ``seed_everything``), else
            ``torch.initial_seed()``.
    """

    def __init__(self, data_source: Sized, seed: int | None = None) -> None:
        super().__init__(data_source)
        if seed is None:
            seed = int(os.environ.get("PL_GLOBAL_SEED", torch.initial_seed()))
        self.seed, self.epoch = int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        # The body runs at the first next(), after Lightning's set_epoch for this epoch.
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        yield from torch.randperm(len(self.data_source), generator=g).tolist()
        self.epoch += 1


class ResumableBatchSampler(BatchSampler):
    """A ``BatchSampler`` that can leave out the first ``skip`` batches of its next pass.

    The skipped batches' indices are computed but never loaded, so resuming costs no I/O and
    draws no augmentation seeds. ``skip`` applies once, and only when the inner sampler is at
    ``skip_epoch`` (the epoch the checkpoint was saved in): when the checkpoint closed its
    epoch, Lightning moves on to the next one, which starts from the top.
    """

    def __init__(self, sampler: Sampler[int], batch_size: int, drop_last: bool) -> None:
        super().__init__(sampler, batch_size, drop_last)
        self.skip: int = 0
        self.skip_epoch: int | None = None

    @property
    def epoch(self) -> int | None:
        """The inner sampler's epoch (None for an unshuffled sampler)."""
        return getattr(self.sampler, "epoch", None)

    def resolve_skip(self) -> int:
        """The batches the next pass leaves out (0 unless the epoch matches)."""
        if self.epoch != self.skip_epoch:
            self.skip = 0
        return self.skip

    def __iter__(self) -> Iterator[list[int]]:
        skip, self.skip = self.resolve_skip(), 0
        for i, batch in enumerate(super().__iter__()):
            if i >= skip:
                yield batch


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` Lightning can checkpoint mid-epoch (``state_dict``/``load_state_dict``).

    The state is the epoch and how many of its batches were handed out; on resume the batch
    sampler leaves those out. With ``num_workers=0`` the resumed run then sees the very batches,
    augmentations included, of an uninterrupted one: augmentation seeds come from torch's
    global RNG, whose state the checkpoint restores at the same batch. (Worker processes keep
    RNG streams of their own, which no checkpoint captures.) Build it with
    :func:`train_loader`.
    """

    _handed_out = 0
    _pass_epoch: int | None = None

    def __iter__(self) -> Iterator[Any]:
        # Runs at the first next(), after Lightning's set_epoch for this epoch.
        bs = self.batch_sampler
        self._handed_out = bs.resolve_skip() if isinstance(bs, ResumableBatchSampler) else 0
        self._pass_epoch = getattr(bs, "epoch", None)
        for batch in super().__iter__():
            self._handed_out += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self._pass_epoch, "batches": self._handed_out}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        bs = self.batch_sampler
        if not isinstance(bs, ResumableBatchSampler):
            raise TypeError(f"{type(bs).__name__} cannot skip batches; use ResumableBatchSampler")
        bs.skip, bs.skip_epoch = int(state["batches"]), state["epoch"]


def train_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int = 0,
    drop_last: bool = False,
    **kwargs: Any,
) -> ResumableDataLoader:
    """A shuffling, mid-epoch-resumable training loader (see :class:`ResumableDataLoader`).

    The loader's own generator (seeded like the sampler) gives worker base seeds, so creating
    an iterator draws nothing from torch's global RNG either.
    """
    sampler = SeededRandomSampler(dataset)
    generator = torch.Generator()
    generator.manual_seed(sampler.seed)
    return ResumableDataLoader(
        dataset,
        batch_sampler=ResumableBatchSampler(sampler, batch_size, drop_last),
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        generator=generator,
        **kwargs,
    )


class SplitDataModule(BadFilePolicy, LightningDataModule):
    """Train/val/test/predict loaders over ``self.datasets["train"|"val"|"test"]``.

    Subclasses fill ``self.datasets`` in ``setup`` and may override ``batch_size_for`` and
    ``drop_last`` (the hparams ``batch_size``, ``num_workers`` and ``on_bad_image`` are read
    here). The training loader resumes mid-epoch exactly (:class:`ResumableDataLoader`).
    """

    datasets: dict[str, Dataset]

    @property
    def on_bad_image(self) -> str:  # type: ignore[override]
        return self.hparams.get("on_bad_image", "error")

    def batch_size_for(self, part: str) -> int:
        return self.hparams.batch_size

    def drop_last(self, part: str) -> bool:
        return False

    def _loader(self, part: str, shuffle: bool) -> DataLoader:
        workers = self.hparams.num_workers
        if shuffle:
            return train_loader(
                self.datasets[part], self.batch_size_for(part), workers, self.drop_last(part)
            )
        return DataLoader(
            self.datasets[part],
            batch_size=self.batch_size_for(part),
            shuffle=False,
            num_workers=workers,
            persistent_workers=workers > 0,
            drop_last=self.drop_last(part),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        # A plain folder (``predict_root``) when given, else the test split.
        if self.hparams.get("predict_root"):
            from data_modules.predict import folder_loader

            return folder_loader(
                self.predict_dataset(), self.batch_size_for("test"), self.hparams.num_workers
            )
        return self._loader("test", shuffle=False)

    def predict_dataset(self) -> Dataset:
        """The images of ``predict_root``, resized as the test split is."""
        from data_modules.predict import ImageFolderDataset

        size = self.hparams.get("image_size")
        if isinstance(size, int):
            size = (size, size)
        channels = getattr(self, "predict_channels", lambda: self.in_channels)()
        return ImageFolderDataset(
            self.hparams.predict_root,
            channels,
            tuple(size) if size else None,
            window=getattr(self, "window", None),
        )

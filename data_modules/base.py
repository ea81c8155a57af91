"""The loader plumbing shared by data modules that keep their splits in ``self.datasets``."""

from __future__ import annotations

from lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset


class SplitDataModule(LightningDataModule):
    """Train/val/test/predict loaders over ``self.datasets["train"|"val"|"test"]``.

    Subclasses fill ``self.datasets`` in ``setup`` and may override ``batch_size_for`` and
    ``drop_last`` (the hparams ``batch_size`` and ``num_workers`` are read here).
    """

    datasets: dict[str, Dataset]

    def batch_size_for(self, part: str) -> int:
        return self.hparams.batch_size

    def drop_last(self, part: str) -> bool:
        return False

    def _loader(self, part: str, shuffle: bool) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(
            self.datasets[part],
            batch_size=self.batch_size_for(part),
            shuffle=shuffle,
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
        return self._loader("test", shuffle=False)

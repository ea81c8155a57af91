"""LightningDataModules for each dataset family, reading the public on-disk layouts."""

from data_modules.segmentation import SegmentationDataModule

__all__ = ["SegmentationDataModule"]

try:  # optional families land in their own files
    from data_modules.chestxdet import ChestXDetDataModule  # noqa: F401

    __all__.append("ChestXDetDataModule")
except ImportError:
    pass
try:
    from data_modules.isic import ISICDataModule  # noqa: F401

    __all__.append("ISICDataModule")
except ImportError:
    pass
try:
    from data_modules.hvsmr import HVSMRDataModule  # noqa: F401

    __all__.append("HVSMRDataModule")
except ImportError:
    pass

"""Image-quality and rate metrics (torchmetrics), shared by every module."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import MeanMetric, Metric, MetricCollection
from torchmetrics.functional.image import multiscale_structural_similarity_index_measure
from torchmetrics.image import PeakSignalNoiseRatio

#: The five MS-SSIM scale weights of Wang et al. 2003 (torchmetrics' default).
MS_SSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def ms_ssim_betas(height: int, width: int, kernel_size: int = 11) -> tuple[float, ...]:
    """The longest prefix of the MS-SSIM weights that fits an image of this size, renormalised.

    torchmetrics needs ``side >= 2**s`` and ``side // max(1, s-1)**2 > kernel_size - 1`` for
    ``s`` scales; a 256² image gets all five, a 64² image three. Returns () if none fits.
    """
    side = min(height, width)
    for s in range(len(MS_SSIM_BETAS), 0, -1):
        if side >= 2**s and side // max(1, s - 1) ** 2 > kernel_size - 1:
            betas = MS_SSIM_BETAS[:s]
            total = sum(betas)
            return tuple(b / total for b in betas)
    return ()


def likelihoods_bpp(likelihoods: dict[str, Tensor], num_pixels: int) -> Tensor:
    """Estimated bits per pixel: −Σ log₂ p over all latents, divided by pixels."""
    total = sum(torch.log(lk).sum() for lk in likelihoods.values())
    return -total / (torch.log(torch.tensor(2.0)) * num_pixels)


class MultiScaleSSIM(Metric):
    """Mean per-image MS-SSIM with as many scales as the image size allows."""

    higher_is_better = True
    full_state_update = False

    def __init__(self, data_range: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.data_range = data_range
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        betas = ms_ssim_betas(*preds.shape[-2:])
        if not betas:
            return
        values = multiscale_structural_similarity_index_measure(
            preds.float(),
            target.float(),
            data_range=self.data_range,
            betas=betas,
            reduction="none",
        )
        self.total += values.double().sum()
        self.count += values.numel()

    def compute(self) -> Tensor:
        if self.count == 0:
            return torch.tensor(float("nan"))
        return (self.total / self.count).float()


def image_quality_metrics() -> MetricCollection:
    """PSNR (mean of per-image values, as CompressAI reports it) and MS-SSIM, images in [0, 1]."""
    return MetricCollection(
        {
            "psnr": PeakSignalNoiseRatio(
                data_range=1.0, reduction="elementwise_mean", dim=(1, 2, 3)
            ),
            "ms-ssim": MultiScaleSSIM(data_range=1.0),
        }
    )


def rate_metrics(*names: str) -> MetricCollection:
    """Running means of per-image rates (``bpp``, ``bpp_est``, …)."""
    return MetricCollection({name: MeanMetric() for name in names})

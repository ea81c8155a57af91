"""Training objectives: MVMICNet's rate–distortion–accuracy loss."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

from mvmic.codecs.base import CodecOutput
from mvmic.codecs.hyperprior import likelihoods_bpp
from mvmic.metrics import ms_ssim_betas

DISTORTIONS = ("mse", "ms-ssim")


class RateDistortionAccuracyLoss(nn.Module):
    """``L = R + λ_d · D(x, x̂) + λ_t · L_task``.

    R is the bits per pixel estimated from the latents' likelihoods; D is ``255² · MSE``
    (CompressAI's scale, so λ_d values from its λ grid carry over) or ``1 − MS-SSIM``;
    ``L_task`` is the task network's own loss on the reconstruction. λ_t = 0 is the plain
    rate–distortion codec.

    Args:
        lmbda_d: weight of the distortion term (≥ 0).
        lmbda_t: weight of the task term (≥ 0).
        distortion: ``"mse"`` or ``"ms-ssim"``.
    """

    def __init__(self, lmbda_d: float = 0.0067, lmbda_t: float = 1.0, distortion: str = "mse"):
        super().__init__()
        for name, value in (("lmbda_d", lmbda_d), ("lmbda_t", lmbda_t)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if distortion not in DISTORTIONS:
            raise ValueError(f"distortion must be one of {DISTORTIONS}, got {distortion!r}")
        self.lmbda_d, self.lmbda_t, self.distortion = lmbda_d, lmbda_t, distortion

    def forward(
        self, output: CodecOutput, x: Tensor, task_loss: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Return ``loss`` and each term (``bpp``, ``mse``, ``distortion``, ``task``)."""
        b, _, h, w = x.shape
        bpp = likelihoods_bpp(output.likelihoods, b * h * w)
        mse = F.mse_loss(output.x_hat, x)
        if self.distortion == "mse":
            distortion = 255.0**2 * mse
        else:
            betas = ms_ssim_betas(h, w)
            if not betas:
                raise ValueError(f"MS-SSIM needs images of at least 11 px a side, got {h}x{w}")
            distortion = 1 - multiscale_structural_similarity_index_measure(
                output.x_hat, x, data_range=1.0, betas=betas
            )
        loss = bpp + self.lmbda_d * distortion
        terms = {"bpp": bpp, "mse": mse, "distortion": distortion}
        if task_loss is not None:
            loss = loss + self.lmbda_t * task_loss
            terms["task"] = task_loss
        terms["loss"] = loss
        return terms

"""Training objectives: MVMICNet's rate–distortion–accuracy loss and Liu et al.'s GAN losses."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

from mvmic.codecs.base import CodecOutput
from mvmic.metrics import likelihoods_bpp, ms_ssim_betas

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


# -- Liu et al. (MICCAI 2020) -------------------------------------------------------------------
def one_hot(mask: Tensor, num_classes: int) -> Tensor:
    """B×K×… float one-hot label maps from a B×… integer mask."""
    return F.one_hot(mask.long(), num_classes).movedim(-1, 1).float()


def segmentation_mse(prob: Tensor, target: Tensor) -> Tensor:
    """``loss_seg``: MSE between class probabilities and the one-hot ground truth."""
    return F.mse_loss(prob, target)


def multiscale_l1(
    critic: nn.Module, pred: Tensor, target: Tensor, image: Tensor | None = None
) -> Tensor:
    """``loss_dis``: mean |φ_D(pred) − φ_D(target)| over the concatenated multi-scale features."""
    return (critic(pred, image) - critic(target, image)).abs().mean()


def rate_weight(lmbda_cr: float, rate_loss: bool, rate_fits_entropy_model: bool) -> float:
    """Weight of the bpp estimate in C+S's loss.

    Args:
        lmbda_cr: λ of ``loss_cr`` (Liu's D4).
        rate_loss: whether the design trains the encoder for rate (D4).
        rate_fits_entropy_model: the codec's contract property: its entropy model learns from
            the rate itself, so the term stays (weight 1) even without a rate loss; its
            gradient then stops at the entropy model.

    Returns:
        λ for D4, 1 for a rate-fitted entropy model, else 0.
    """
    if rate_loss:
        return lmbda_cr
    return 1.0 if rate_fits_entropy_model else 0.0


def critic_step_loss(critic: nn.Module, prob: Tensor, target: Tensor, image: Tensor) -> Tensor:
    """D's loss: it maximizes ``loss_dis`` on the segmentor's prediction, taken as a constant."""
    return -multiscale_l1(critic, prob.detach(), target, image)


__all__ = [
    "DISTORTIONS",
    "RateDistortionAccuracyLoss",
    "critic_step_loss",
    "multiscale_l1",
    "one_hot",
    "rate_weight",
    "segmentation_mse",
]

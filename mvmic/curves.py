"""Old home of the curves API, kept because the manual documents
``mvmic.curves.log_curves_to_wandb(mvmic.curves.draw_curves(...))``; see
:mod:`mvmic.evaluation.curves`."""

from mvmic.evaluation.curves import draw_curves, log_curves_to_wandb

__all__ = ["draw_curves", "log_curves_to_wandb"]

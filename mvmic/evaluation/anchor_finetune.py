"""Fair anchors: the task network fine-tuned on a standard codec's decoded training images.

MVMICNet's stage 2 adapts the task net to its own decoded images; a user who picks HEVC would
fine-tune on HEVC output just the same. ``mvmic anchors --finetune STEPS`` therefore also trains
a copy of the task net, per standard codec, on training images that went through that codec
(each image at a quality drawn from the codec's list, so one net serves all its qualities) for
STEPS optimiser steps, the same budget and learning rate as stage 2, and evaluates it again:
records ``<codec>+ft`` beside the un-tuned ``<codec>`` (the papers' protocol).
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch


def finetune_on_codec(
    task: torch.nn.Module,
    roundtrip: Callable[[torch.Tensor, float], torch.Tensor],
    qualities: Sequence[float],
    batches: Callable[[], Iterable[dict[str, Any]]],
    steps: int,
    lr: float = 1e-4,
    seed: int = 0,
) -> tuple[torch.nn.Module, list[float]]:
    """A copy of ``task`` trained ``steps`` Adam steps on decoded training images.

    Args:
        task: the task network (a :class:`mvmic.tasks.TaskNet`); it is not changed.
        roundtrip: one C×H×W image and a quality -> the decoded image.
        qualities: the codec's qualities; each training image draws one (seeded).
        batches: returns a fresh pass over the training batches (re-called per epoch).
        steps: optimiser steps (MVMICNet stage 2's budget).
        lr: Adam learning rate (stage 2's ``lr``).
        seed: seeds the quality draws and the torch RNG of the run.

    Returns:
        The fine-tuned copy in eval mode and the training loss of each step.
    """
    if steps < 1:
        raise ValueError(f"--finetune needs at least 1 step, got {steps}")
    tuned = copy.deepcopy(task)
    tuned.requires_grad_(True)
    tuned.train()
    params = [p for p in tuned.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    pick = random.Random(seed)
    losses: list[float] = []
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        while len(losses) < steps:
            n_before = len(losses)
            for batch in batches():
                x = batch["image"]
                with torch.no_grad():  # the codec is no part of the graph: decoded pixels in
                    x_hat = torch.stack([roundtrip(img, pick.choice(qualities)) for img in x])
                loss, _ = tuned.loss(x_hat.to(x.dtype), batch)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"non-finite fine-tuning loss at step {len(losses)}; lower --finetune_lr"
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                if len(losses) >= steps:
                    break
            if len(losses) == n_before:
                raise ValueError("the training split is empty; check data.root and the splits")
    return tuned.eval(), losses

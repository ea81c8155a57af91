"""Stage-1 training step: mvmic's LightningModule vs a bare PyTorch loop, same model and batch.

    python tools/bench_train_step.py [--steps 30] [--size 128] [--batch 8]

Both sides run the same MVMICNet parts (codec, task net, RateDistortionAccuracyLoss, aux loss,
one Adam with the same parameter groups) on the same batch; the Lightning side goes through
Trainer.fit (logging, hooks, gradient clipping off on both). Prints seconds per step and the
ratio Lightning / bare (goal ≤ 1.10).
"""

from __future__ import annotations

import argparse
import time

import torch
from lightning import LightningDataModule, Trainer
from torch.utils.data import DataLoader, Dataset

from mvmic.modules import MVMICNet


class _Repeat(Dataset):
    def __init__(self, batch: dict, n: int) -> None:
        self.batch, self.n = batch, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return {k: v[i % len(v)] for k, v in self.batch.items()}


class _Data(LightningDataModule):
    def __init__(self, batch: dict, steps: int, batch_size: int) -> None:
        super().__init__()
        self.ds, self.bs = _Repeat(batch, steps * batch_size), batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.ds, batch_size=self.bs)


def _model(seed: int) -> MVMICNet:
    torch.manual_seed(seed)
    return MVMICNet(
        arch="Unet",
        encoder="resnet18",
        codec="mbt2018-mean",
        N=64,
        M=96,
        lmbda_d=0.0067,
        lmbda_t=1.0,
    )


def bare(batch: dict, steps: int, warmup: int) -> float:
    model = _model(0).train()
    opt = model.configure_optimizers()
    x = batch["image"]
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        opt.zero_grad()
        out = model.codec(x)
        task_loss, _ = model.task.loss(out.x_hat, batch)
        loss = model.criterion(out, x, task_loss)["loss"] + model.codec.aux_loss()
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / steps


def lightning(batch: dict, steps: int, warmup: int, batch_size: int) -> float:
    from lightning import Callback

    class Clock(Callback):
        def on_train_batch_start(self, trainer, module, b, idx):
            if idx == warmup:
                self.t0 = time.perf_counter()

        def on_train_end(self, trainer, module):
            self.elapsed = time.perf_counter() - self.t0

    clock = Clock()
    model = _model(0)
    model.configure_callbacks = lambda: []  # no image panels/results writer in a timing loop
    trainer = Trainer(
        max_steps=warmup + steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[clock],
        accelerator="cpu",
    )
    trainer.fit(model, _Data(batch, warmup + steps, batch_size))
    return clock.elapsed / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    batch = {
        "image": torch.rand(args.batch, 3, args.size, args.size, generator=g),
        "mask": torch.randint(0, 2, (args.batch, args.size, args.size), generator=g),
    }
    # Interleave to share any drift in machine load between the two sides.
    t_bare = bare(batch, args.steps, args.warmup)
    t_light = lightning(batch, args.steps, args.warmup, args.batch)
    t_bare2 = bare(batch, args.steps, args.warmup)
    t_bare = min(t_bare, t_bare2)
    print(
        f"threads={torch.get_num_threads()} batch={args.batch} size={args.size} steps={args.steps}"
    )
    print(f"bare PyTorch loop : {t_bare * 1e3:8.1f} ms/step")
    print(f"Lightning module  : {t_light * 1e3:8.1f} ms/step")
    print(f"ratio             : {t_light / t_bare:8.3f}  (goal <= 1.10)")


if __name__ == "__main__":
    main()

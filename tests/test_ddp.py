"""DDP on CPU (gloo): two processes give the same test metrics as one, one record is written;
GAN training (manual optimization) keeps the ranks in step."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning import Callback, Trainer

from data_modules import SegmentationDataModule
from data_modules.chestxdet import ChestXDetDataModule
from data_modules.isic import ISICDataModule
from mvmic.losses import multiscale_l1, one_hot
from mvmic.modules import MVMICNet
from mvmic.modules.gan_seg import GanSegmentation

# Two processes each, 25–90 s apiece on 2 cores: CI runs them, the inner loop does not.
pytestmark = pytest.mark.slow

HELPERS = Path(__file__).parent / "helpers"


@pytest.fixture(scope="module")
def checkpoint(colondb_root, tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ddp") / "m.ckpt"
    model = MVMICNet(arch="Unet", encoder="resnet18", codec="mbt2018-mean", N=8, M=12)
    dm = SegmentationDataModule(root=str(colondb_root), image_size=32, batch_size=2)
    return _fit_checkpoint(model, dm, path)


def _test(root, ckpt, cwd, devices: int, results: str):
    args = [
        "test",
        "--config",
        "colondb_seg.yaml",
        "--data.root",
        str(root),
        "--data.image_size",
        "32",
        "--data.batch_size",
        "1",
        "--data.test_fraction",
        "0.34",
        "--model.N",
        "8",
        "--model.M",
        "12",
        "--model.encoder",
        "resnet18",
        "--model.codec",
        "mbt2018-mean",
        "--model.results_dir",
        results,
        "--trainer.logger",
        "false",
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        str(devices),
        "--ckpt_path",
        str(ckpt),
    ]
    if devices > 1:
        args += ["--trainer.strategy", "ddp"]
    r = subprocess.run(
        [sys.executable, "-m", "mvmic.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    record = json.loads((cwd / results / "colondb" / "MVMICNet_stage_1.json").read_text())
    return record["results"]


def test_two_process_test_matches_one_process(colondb_root, checkpoint, tmp_path):
    one = _test(colondb_root, checkpoint, tmp_path, 1, "one")
    two = _test(colondb_root, checkpoint, tmp_path, 2, "two")
    # 12 images, 4 in the test split: 2 per rank, no padding duplicates.
    assert len(two["bpp"]) == 1, "rank 0 alone writes the record"
    for key in ("bpp", "bpp_est", "psnr", "ms-ssim", "miou", "dice"):
        assert two[key][0] == pytest.approx(one[key][0], rel=1e-5, abs=1e-6), key
    # every rank's images in the per-image statistics, as in the synced metrics
    from mvmic.evaluation.image_stats import recompute

    assert len(two["per_image"][0]["confmat"]) == len(one["per_image"][0]["confmat"]) == 4
    assert recompute(two["per_image"][0], "miou") == pytest.approx(two["miou"][0], abs=1e-6)


# -- GAN segmentation (manual optimization) and detection ------------------------------------
GAN_TINY = [
    "--model.code_channels", "8",
    "--model.codec_width", "8",
    "--model.encoder", "resnet18",
    "--model.seg_args", '{"encoder_depth": 3, "decoder_channels": [32, 16, 8]}',
    "--model.critic_channels", "[8, 16]",
    "--data.image_size", "32",
    "--data.batch_size", "1",
]  # fmt: skip
DET_TINY = [
    "--model.arch", "fasterrcnn_mobilenet_v3_large_fpn",
    "--model.task_args",
    '{"min_size": 64, "max_size": 64, "anchor_sizes": [8, 16, 32, 64, 128]}',
    "--model.N", "8",
    "--model.M", "12",
    "--data.image_size", "64",
    "--data.batch_size", "1",
]  # fmt: skip


def _cli(cwd: Path, *args: str, devices: int = 1) -> subprocess.CompletedProcess:
    args = (*args, "--trainer.accelerator", "cpu", "--trainer.devices", str(devices))
    if devices > 1:
        args += ("--trainer.strategy", "ddp")
    env = {**os.environ, "PYTHONPATH": f"{HELPERS}:{os.environ.get('PYTHONPATH', '')}"}
    r = subprocess.run(
        [sys.executable, "-m", "mvmic.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _fit_checkpoint(model, dm, path: Path) -> Path:
    torch.manual_seed(0)
    trainer = Trainer(
        accelerator="cpu",
        max_steps=1,
        limit_val_batches=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=path.parent,
    )
    trainer.fit(model, dm)
    trainer.save_checkpoint(path)
    return path


def _test_twice(cwd: Path, config: str, tiny: list[str], ckpt: Path, record: str) -> tuple:
    out = []
    for devices in (1, 2):
        results = f"results{devices}"
        _cli(
            cwd, "test", "--config", config, *tiny, "--model.results_dir", results,
            "--trainer.logger", "false", "--ckpt_path", str(ckpt), devices=devices,
        )  # fmt: skip
        out.append(json.loads((cwd / results / record).read_text())["results"])
    return tuple(out)


def test_gan_two_process_test_matches_one_process(isic_root, tmp_path):
    # 2 ISIC test images: one per rank, no padding duplicates.
    model = GanSegmentation(
        design="D4", code_channels=8, codec_width=8, encoder="resnet18",
        seg_args={"encoder_depth": 3, "decoder_channels": (32, 16, 8)}, critic_channels=[8, 16],
    )  # fmt: skip
    dm = ISICDataModule(root=str(isic_root), image_size=32, batch_size=2)
    ckpt = _fit_checkpoint(model, dm, tmp_path / "gan.ckpt")
    tiny = [*GAN_TINY, "--data.root", str(isic_root)]
    one, two = _test_twice(tmp_path, "isic_gan.yaml", tiny, ckpt, "isic2017/liu2020-d4.json")
    assert len(two["bpp"]) == 1, "rank 0 alone writes the record"
    for key in ("bpp", "bpp_est", "bpp_container", "dice", "iou", "dice_lesion"):
        assert two[key][0] == pytest.approx(one[key][0], rel=1e-5, abs=1e-6), key


def _fit_two_ranks(cwd: Path, config: str, *args: str) -> tuple[dict, dict, dict]:
    """A 2-process fit of 2 optimizer steps: (rank 0's, rank 1's, the initial) weights."""
    dump = '{"class_path": "weights_dump.DumpWeights", "init_args": {"out": "ranks"}}'
    _cli(
        cwd, "fit", "--config", config, *args,
        "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1",
        "--trainer.num_sanity_val_steps", "0", "--trainer.logger", "false",
        "--trainer.callbacks.dirpath", "ckpt", f"--trainer.callbacks+={dump}",
        devices=2,
    )  # fmt: skip
    ranks = [torch.load(cwd / "ranks" / f"{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["step"] == ranks[1]["step"] == 2
    w0, w1 = ranks[0]["weights"], ranks[1]["weights"]
    assert set(w0) == set(w1)
    # Every parameter all-reduced (buffers: broadcast from rank 0 by the validation forward).
    diverged = [k for k in w0 if not torch.equal(w0[k], w1[k])]
    assert not diverged, diverged[:5]
    return w0, w1, ranks[0]["initial"]


def _moved(after: dict, before: dict, prefix: str) -> bool:
    keys = [k for k in after if k.startswith(prefix) and after[k].is_floating_point()]
    return any(not torch.equal(after[k], before[k]) for k in keys)


def test_gan_two_process_fit_keeps_ranks_in_step(isic_root, tmp_path):
    # Manual optimization under DDP: a parameter the reducer waits for in vain, or one left
    # out of the reduction, fails here. Global step counts both optimizers' steps: 1 batch.
    w0, _, before = _fit_two_ranks(
        tmp_path, "isic_gan.yaml", *GAN_TINY, "--data.root", str(isic_root),
        "--data.batch_size", "2",
    )  # fmt: skip
    for prefix in ("codec.", "task.", "critic."):  # both optimizers stepped
        assert _moved(w0, before, prefix), prefix


def test_mvmicnet_two_process_fit_keeps_ranks_in_step(colondb_root, tmp_path):
    # Automatic optimization, the codec's auxiliary quantiles in the same optimizer.
    w0, _, before = _fit_two_ranks(
        tmp_path, "colondb_seg.yaml", "--data.root", str(colondb_root),
        "--data.image_size", "32", "--data.batch_size", "2", "--model.N", "8",
        "--model.M", "12", "--model.encoder", "resnet18", "--model.codec", "mbt2018-mean",
    )  # fmt: skip
    for prefix in ("codec.model.g_a.", "codec.model.entropy_bottleneck.quantiles", "task."):
        assert _moved(w0, before, prefix), prefix


@pytest.fixture(scope="module")
def chestxdet10(tmp_path_factory) -> Path:
    from data_modules.synthetic import generate

    # 10 films: 2 in the test split, one per rank.
    return generate("chestxdet", tmp_path_factory.mktemp("det"), num=10, size=64, seed=0)


def test_detection_two_process_test_matches_one_process(chestxdet10, tmp_path):
    model = MVMICNet(
        task="detection", arch="fasterrcnn_mobilenet_v3_large_fpn", num_classes=14,
        in_channels=1, codec="mbt2018-mean", N=8, M=12,
        task_args={"min_size": 64, "max_size": 64, "anchor_sizes": [8, 16, 32, 64, 128]},
    )  # fmt: skip
    dm = ChestXDetDataModule(root=str(chestxdet10), image_size=64, batch_size=2)
    ckpt = _fit_checkpoint(model, dm, tmp_path / "det.ckpt")
    tiny = [*DET_TINY, "--data.root", str(chestxdet10)]
    one, two = _test_twice(
        tmp_path, "chestxdet_det.yaml", tiny, ckpt, "chestxdet/MVMICNet_stage_1.json"
    )
    assert len(two["bpp"]) == 1, "rank 0 alone writes the record"
    for key in ("bpp", "bpp_est", "psnr", "ms-ssim", "map", "map_50"):
        assert two[key][0] == pytest.approx(one[key][0], rel=1e-5, abs=1e-6), key


class _Grads(Callback):
    """Keeps the weights and RNG state before the first step, and each optimizer's grads."""

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.weights = {k: v.clone() for k, v in module.state_dict().items()}
        self.rng, self.batch = torch.get_rng_state(), batch
        self.grads: list[dict[str, torch.Tensor]] = []

    def on_before_optimizer_step(self, trainer, module, optimizer) -> None:
        mine = {id(p) for group in optimizer.param_groups for p in group["params"]}
        self.grads.append(
            {
                n: p.grad.clone()
                for n, p in module.named_parameters()
                if id(p) in mine and p.requires_grad
            }
        )


def test_gan_one_backward_gives_the_gradients_of_alternating_steps(isic_root, tmp_path):
    """The DDP fix does not change the algorithm: C+S get the gradients of their loss with D
    held fixed, D those of -loss_dis on the detached prediction, as in two separate passes."""
    kw = dict(
        design="D4", code_channels=8, codec_width=8, encoder="resnet18",
        seg_args={"encoder_depth": 3, "decoder_channels": (32, 16, 8)}, critic_channels=[8, 16],
    )  # fmt: skip
    torch.manual_seed(0)
    model, spy = GanSegmentation(**kw), _Grads()
    trainer = Trainer(
        accelerator="cpu", max_steps=1, limit_val_batches=0, logger=False, callbacks=[spy],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(model, ISICDataModule(root=str(isic_root), image_size=32, batch_size=2))
    got_cs, got_d = spy.grads

    ref = GanSegmentation(**kw)
    ref.load_state_dict(spy.weights)
    ref.train()
    torch.set_rng_state(spy.rng)  # the same stochastic binarization
    x, target = spy.batch["image"], one_hot(spy.batch["mask"], ref.hparams.num_classes)
    ref.critic.requires_grad_(False)
    feats, bpp = ref.encode(x)
    prob = ref.task(feats).softmax(1)
    loss_cs = (
        torch.nn.functional.mse_loss(prob, target)
        + multiscale_l1(ref.critic, prob, target, x)
        + ref.hparams.lmbda_cr * bpp
    )
    loss_cs.backward()
    ref.critic.requires_grad_(True)
    (-multiscale_l1(ref.critic, prob.detach(), target, x)).backward()
    params = {n: p for n, p in ref.named_parameters() if p.requires_grad}
    assert set(got_d) == {n for n in params if n.startswith("critic.")}
    assert set(got_cs) == set(params) - set(got_d)
    for got in (got_cs, got_d):
        for name, grad in got.items():
            assert torch.allclose(grad, params[name].grad, rtol=1e-5, atol=1e-7), name


def test_shallow_smp_encoder_leaves_no_trainable_parameter_without_a_gradient():
    # smp keeps resnet18's layer3/layer4 at encoder_depth 3 but never runs them; trainable,
    # they left DDP's buckets unreduced (ranks drifted apart after the first step).
    from mvmic.tasks.segmentation import SegmentationNet

    net = SegmentationNet(encoder="resnet18", encoder_depth=3, decoder_channels=(16, 8, 4))
    assert net.unused and all(".layer3." in n or ".layer4." in n for n in net.unused)
    net.requires_grad_(True)  # e.g. MVMICNet un-freezing its task network
    net(torch.rand(2, 3, 32, 32)).sum().backward()
    trainable = {n: p for n, p in net.named_parameters() if p.requires_grad}
    assert set(trainable) == {n for n, _ in net.named_parameters()} - set(net.unused)
    assert all(p.grad is not None for p in trainable.values())
    assert not SegmentationNet(encoder="resnet18").unused


def test_detection_two_process_fit_keeps_ranks_in_step(chestxdet10, tmp_path):
    w0, _, before = _fit_two_ranks(
        tmp_path, "chestxdet_det.yaml", *DET_TINY, "--data.root", str(chestxdet10),
        "--data.batch_size", "2",
    )  # fmt: skip
    for prefix in ("codec.model.g_a.", "task.model.backbone.", "task.model.roi_heads."):
        assert _moved(w0, before, prefix), prefix


def test_two_process_fit_resumed_mid_epoch_ends_identical(colondb_root, tmp_path):
    # 9 training images over 2 ranks: 5 each (DistributedSampler pads), 2 batches of 2 per
    # epoch; the checkpoint after global step 3 sits mid-epoch 2. Resuming from it must skip
    # the batch each rank already had (state of the re-instantiated batch sampler, epoch from
    # DistributedSampler) and end where the uninterrupted run ends.
    mid = (
        '{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": '
        '{"dirpath": "mid", "filename": "mid", "every_n_train_steps": 3, '
        '"enable_version_counter": false}}'
    )
    args = [
        "--data.root", str(colondb_root), "--data.image_size", "32", "--data.batch_size", "2",
        "--model.N", "8", "--model.M", "12", "--model.encoder", "resnet18",
        "--trainer.max_epochs", "2", "--trainer.deterministic", "true",
        "--trainer.limit_val_batches", "1", "--trainer.num_sanity_val_steps", "0",
        "--trainer.logger", "false", "--trainer.callbacks.dirpath", "ckpt",
        f"--trainer.callbacks+={mid}",
        '--trainer.callbacks+={"class_path": "weights_dump.DumpWeights", '
        '"init_args": {"out": "ranks"}}',
    ]  # fmt: skip
    ref, cont = tmp_path / "ref", tmp_path / "resumed"
    ref.mkdir()
    _cli(ref, "fit", "--config", "colondb_seg.yaml", *args, devices=2)
    state = torch.load(ref / "mid" / "mid.ckpt", weights_only=True)
    assert state["global_step"] == 3
    assert state["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
        {"epoch": 1, "batches": 1}
    ]
    shutil.copytree(ref / "mid", cont / "mid")
    ckpt = str(cont / "mid" / "mid.ckpt")
    _cli(cont, "fit", "--config", "colondb_seg.yaml", *args, "--ckpt_path", ckpt, devices=2)
    for r in (0, 1):
        want = torch.load(ref / "ranks" / f"{r}.pt", weights_only=True)
        got = torch.load(cont / "ranks" / f"{r}.pt", weights_only=True)
        assert want["step"] == got["step"] == 4
        different = [
            k for k in want["weights"] if not torch.equal(want["weights"][k], got["weights"][k])
        ]
        assert not different, (r, different[:5])

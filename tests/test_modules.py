import pytest
import torch
from lightning import Trainer

from data_modules import SegmentationDataModule
from mvmic.modules import MVMICNet, TaskModule, load_module
from mvmic.validation import ConfigError

SMALL = dict(arch="Unet", encoder="resnet18", codec="bmshj2018-hyperprior", N=8, M=12)


def _trainer(tmp_path, **kw):
    return Trainer(
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kw,
    )


def test_stage2_freezes_the_codec_and_trains_only_the_task():
    model = MVMICNet(**SMALL, stage=2)
    assert not any(p.requires_grad for p in model.codec.parameters())
    assert all(p.requires_grad for p in model.task.parameters())
    model.train()
    assert not model.codec.training and model.task.training
    opt = model.configure_optimizers()
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {
        id(p) for p in model.task.parameters()
    }


def test_stage1_frozen_task_keeps_eval_mode_and_codec_groups():
    model = MVMICNet(**SMALL, freeze_task=True, lr=1e-4, aux_lr=1e-3)
    model.train()
    assert model.codec.training and not model.task.training
    groups = {g["name"]: g for g in model.configure_optimizers().param_groups}
    assert set(groups) == {"codec", "aux"}
    assert groups["aux"]["lr"] == 1e-3 and groups["codec"]["lr"] == 1e-4
    assert [id(p) for p in groups["aux"]["params"]] == [
        id(model.codec.model.entropy_bottleneck.quantiles)
    ]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lmbda_d": -0.1}, "lmbda_d must be >= 0"),
        ({"lmbda_t": -1.0}, "lmbda_t must be >= 0"),
        ({"codec": "nope"}, "--model.codec 'nope' is not a codec"),
        ({"arch": "Unnet"}, "--model.arch 'Unnet' is not a segmentation architecture"),
        ({"stage": 3}, "--model.stage 3 is not a stage; choose one of 1, 2"),
    ],
)
def test_bad_values_get_one_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MVMICNet(**{**SMALL, **kwargs})


def test_stage2_without_stage1_checkpoint_is_refused(colondb_root, tmp_path):
    dm = SegmentationDataModule(root=str(colondb_root), image_size=32, batch_size=2)
    with pytest.raises(ValueError, match="stage 2 needs a stage-1 checkpoint"):
        _trainer(tmp_path, fast_dev_run=1).fit(MVMICNet(**SMALL, stage=2), dm)


def test_checkpoint_round_trip_through_load_module(colondb_root, tmp_path):
    torch.manual_seed(0)
    dm = SegmentationDataModule(root=str(colondb_root), image_size=32, batch_size=2)
    model = MVMICNet(**SMALL)
    trainer = _trainer(tmp_path, max_steps=1, limit_val_batches=1)
    trainer.fit(model, dm)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    loaded = load_module(path)
    assert isinstance(loaded, MVMICNet) and not loaded.training
    x = torch.rand(1, 3, 32, 32)
    model.eval()
    data = model.codec.compress(x).to_bytes()
    # The file carries entropy tables matching its weights: the loaded model decodes it.
    assert torch.equal(loaded.codec.decompress(data), model.codec.decompress(data))
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key


def test_task_module_trains_and_initialises_stage1(colondb_root, tmp_path):
    dm = SegmentationDataModule(root=str(colondb_root), image_size=32, batch_size=2)
    task = TaskModule(arch="Unet", encoder="resnet18")
    trainer = _trainer(tmp_path, max_steps=1, limit_val_batches=1)
    trainer.fit(task, dm)
    trainer.save_checkpoint(tmp_path / "task.ckpt")
    stage1 = MVMICNet(**SMALL, init_task=str(tmp_path / "task.ckpt"))
    stage1.setup("fit")
    for key, value in task.task.state_dict().items():
        assert torch.equal(stage1.task.state_dict()[key], value), key


def test_a_cosine_task_run_anneals_its_lr_to_zero_over_its_steps(colondb_root, tmp_path):
    dm = SegmentationDataModule(root=str(colondb_root), image_size=32, batch_size=2)
    seen = []

    class Probe(TaskModule):
        def on_train_batch_start(self, batch, batch_idx):
            seen.append(self.optimizers().param_groups[0]["lr"])

    task = Probe(arch="Unet", encoder="resnet18", lr=0.01, lr_schedule="cosine")
    _trainer(tmp_path, max_steps=4, limit_val_batches=0).fit(task, dm)
    lr = task.optimizers().param_groups[0]["lr"]
    # cos schedule over 4 steps: 0.01 * (1 + cos(pi * k / 4)) / 2 before step k, 0 after the last
    assert seen == pytest.approx([0.01, 0.0085355, 0.005, 0.0014645], rel=1e-4)
    assert lr == pytest.approx(0.0, abs=1e-12)
    constant = TaskModule(arch="Unet", encoder="resnet18", lr=0.01)
    _trainer(tmp_path, max_steps=2, limit_val_batches=0).fit(constant, dm)
    assert constant.optimizers().param_groups[0]["lr"] == 0.01


def test_a_cosine_schedule_without_a_run_length_is_one_config_error(colondb_root, tmp_path):
    dm = SegmentationDataModule(root=str(colondb_root), image_size=32, batch_size=2)
    task = TaskModule(arch="Unet", encoder="resnet18", lr_schedule="cosine")
    with pytest.raises(ConfigError, match="--model.lr_schedule cosine needs a run of known"):
        _trainer(tmp_path, max_epochs=-1, max_steps=-1).fit(task, dm)


def test_stage1_trains_codec_and_task_with_finite_loss(colondb_root, tmp_path):
    torch.manual_seed(0)
    dm = SegmentationDataModule(root=str(colondb_root), image_size=32, batch_size=2)
    model = MVMICNet(**SMALL, lmbda_d=0.001, lmbda_t=1.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _trainer(tmp_path, max_steps=2, limit_val_batches=1).fit(model, dm)
    after = model.state_dict()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert {"codec", "task"} <= changed


def _fit_and_save(model, dm, tmp_path, name, **kw):
    trainer = _trainer(tmp_path, max_steps=1, limit_val_batches=0, **kw)
    trainer.fit(model, dm)
    trainer.save_checkpoint(tmp_path / name)
    return tmp_path / name


@pytest.mark.slow  # a fit and two tests through the CLI: ~8 s
def test_frozen_untrained_task_net_is_refused_at_test(colondb_root, tmp_path):
    # colondb_codec_mse.yaml without --model.init_task: the U-Net is random and frozen.
    dm = SegmentationDataModule(root=str(colondb_root), image_size=32, batch_size=2)
    mse = MVMICNet(**SMALL, lmbda_t=0.0, freeze_task=True, results_dir=str(tmp_path / "r"))
    ckpt = _fit_and_save(mse, dm, tmp_path, "mse.ckpt")
    with pytest.raises(ValueError, match=r"never trained.*--model\.init_task"):
        _trainer(tmp_path).test(mse, dm)
    assert not (tmp_path / "r").exists()  # no record with a random network's mIoU
    fresh = MVMICNet(**SMALL, lmbda_t=0.0, freeze_task=True, results_dir=str(tmp_path / "r"))
    with pytest.raises(ValueError, match="never trained"):
        _trainer(tmp_path).test(fresh, dm, ckpt_path=str(ckpt))
    # The same codec run initialised from a trained task net writes its record.
    task = TaskModule(arch="Unet", encoder="resnet18")
    task_ckpt = _fit_and_save(task, dm, tmp_path, "task.ckpt")
    ok = MVMICNet(
        **SMALL,
        lmbda_t=0.0,
        freeze_task=True,
        init_task=str(task_ckpt),
        results_dir=str(tmp_path / "r"),
    )
    ok_ckpt = _fit_and_save(ok, dm, tmp_path, "ok.ckpt")
    again = MVMICNet(**SMALL, lmbda_t=0.0, freeze_task=True, results_dir=str(tmp_path / "r"))
    _trainer(tmp_path).test(again, dm, ckpt_path=str(ok_ckpt))
    assert again.test_point["stage"] == 1


def test_stage2_takes_lambda_from_its_stage1_checkpoint(colondb_root, tmp_path):
    # A manual sweep: fit stage 1 at λ_d 0.0932, stage 2 from it with the default config λ.
    dm = SegmentationDataModule(root=str(colondb_root), image_size=32, batch_size=2)
    results = str(tmp_path / "r")
    s1 = _fit_and_save(MVMICNet(**SMALL, lmbda_d=0.0932, lmbda_t=0.5), dm, tmp_path, "s1.ckpt")
    stage2 = MVMICNet(**SMALL, stage=2, init_from=str(s1), results_dir=results)
    assert stage2.hparams.lmbda_d == 0.0067  # the config's default, before fit
    s2 = _fit_and_save(stage2, dm, tmp_path, "s2.ckpt")
    assert (stage2.hparams.lmbda_d, stage2.hparams.lmbda_t) == (0.0932, 0.5)
    # `mvmic test --config stage2.yaml --ckpt_path s2.ckpt` builds the module from the config.
    tested = MVMICNet(**SMALL, stage=2, results_dir=results)
    _trainer(tmp_path).test(tested, dm, ckpt_path=str(s2))
    assert tested.test_point["lmbda"] == 0.0932 and tested.test_point["lmbda_t"] == 0.5


def test_transmit_adds_encode_and_decode_times():
    model = MVMICNet(**SMALL).eval()
    model.codec.update(force=True)
    x = torch.rand(1, 3, 32, 32)
    times: dict[str, float] = {}
    decoded, bitstream, nbytes = model.transmit(x, times=times)
    assert set(times) == {"enc_ms", "dec_ms"} and all(v > 0 for v in times.values())
    assert decoded.shape == x.shape and nbytes == len(bitstream.to_bytes())
    again, _, _ = model.transmit(x, times=times)  # sums, as the test loop needs
    assert torch.equal(again, decoded) and times["enc_ms"] > 0

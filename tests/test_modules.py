import pytest
import torch
from lightning import Trainer

from data_modules import SegmentationDataModule
from mvmic.modules import MVMICNet, TaskModule, load_module

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
        ({"codec": "nope"}, "unknown codec 'nope'"),
        ({"arch": "Unnet"}, "unknown segmentation architecture 'Unnet'"),
        ({"stage": 3}, "stage must be 1 or 2"),
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


def test_stage1_trains_codec_and_task_with_finite_loss(colondb_root, tmp_path):
    torch.manual_seed(0)
    dm = SegmentationDataModule(root=str(colondb_root), image_size=32, batch_size=2)
    model = MVMICNet(**SMALL, lmbda_d=0.001, lmbda_t=1.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _trainer(tmp_path, max_steps=2, limit_val_batches=1).fit(model, dm)
    after = model.state_dict()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert {"codec", "task"} <= changed

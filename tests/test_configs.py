"""Every config in configs/ trains for a step and validates through the real CLI."""

from pathlib import Path

import pytest
import yaml

from mvmic.cli import CONFIG_DIR, main
from mvmic.cli_lightning import load_config

CONFIGS = sorted(p.name for p in CONFIG_DIR.glob("*.yaml"))

# Per dataset family: the session fixture with its synthetic twin, and overrides that keep a
# step tiny. Model overrides apply only where the config has that argument.
FAMILIES = {
    "colondb": ("colondb_root", ["--data.image_size", "32", "--data.batch_size", "2"]),
    "demo": ("colondb_root", ["--data.image_size", "32", "--data.batch_size", "2"]),
    "chestxdet": (
        "chestxdet_root",
        [
            "--data.image_size",
            "64",
            "--data.batch_size",
            "2",
            "--model.task_args",
            '{"min_size": 64, "max_size": 64}',
        ],
    ),
    "isic": ("isic_root", ["--data.image_size", "32", "--data.batch_size", "2"]),
    "hvsmr": (
        "hvsmr_root",
        ["--data.crop_size", "[16,16,16]", "--model.roi_size", "[16,16,16]"],
    ),
}
MODEL_OVERRIDES = {"N": "8", "M": "12", "encoder": "resnet18"}
RUN = [
    "--trainer.max_epochs",
    "1",
    "--trainer.limit_train_batches",
    "1",
    "--trainer.limit_val_batches",
    "1",
    "--trainer.num_sanity_val_steps",
    "0",
    "--trainer.logger",
    "false",
]


def _args(name: str, root: Path) -> list[str]:
    config = yaml.safe_load((CONFIG_DIR / name).read_text())
    family = name.removesuffix(".yaml").split("_")[0]
    fixture, data = FAMILIES[family]
    init_args = config["model"].get("init_args", {})
    model = []
    for key, value in MODEL_OVERRIDES.items():
        if key in init_args and init_args[key] is not None:
            model += [f"--model.{key}", value]
    # Checkpoints of earlier pipeline steps (demo configs) do not exist here.
    for key in ("init_codec", "init_task"):
        if init_args.get(key):
            model += [f"--model.{key}", "null"]
    return ["--config", name, "--data.root", str(root), *data, *model]


# Each config's smoke run costs 2-60 s (detection configs build full-size R-CNNs), so the inner
# loop runs one config per formulation and CI runs them all.
INNER_LOOP = ("demo.yaml", "isic_gan_d4.yaml", "hvsmr_gan3d_d4.yaml")
RUNS_A_STEP = [n if n in INNER_LOOP else pytest.param(n, marks=pytest.mark.slow) for n in CONFIGS]


@pytest.mark.parametrize("name", RUNS_A_STEP)
def test_config_runs_a_step(name, request, tmp_path, monkeypatch):
    family = name.removesuffix(".yaml").split("_")[0]
    assert family in FAMILIES, f"add {name}'s family to FAMILIES"
    root = request.getfixturevalue(FAMILIES[family][0])
    monkeypatch.chdir(tmp_path)
    config = yaml.safe_load((CONFIG_DIR / name).read_text())
    extra = []
    if config["model"].get("init_args", {}).get("stage") == 2:
        stage1 = name.replace("_stage2", "")
        assert main(["fit", *_args(stage1, root), *RUN]) == 0
        ckpt = next(tmp_path.rglob("last.ckpt"))
        extra = ["--model.init_from", str(ckpt)]
    assert main(["fit", *_args(name, root), *RUN, *extra]) == 0
    # Every config leaves last.ckpt after each training epoch, even when it validates rarely.
    root_dir = config["trainer"]["default_root_dir"]
    assert (tmp_path / root_dir / "checkpoints" / "last.ckpt").is_file(), root_dir


@pytest.mark.parametrize("name", CONFIGS)
def test_config_writes_last_checkpoint_every_epoch(name):
    config = load_config(name)  # composed: the callbacks come from configs/base/
    last = [
        cb["init_args"]
        for cb in config["trainer"]["callbacks"]
        if cb["class_path"].endswith("ModelCheckpoint")
        and cb["init_args"].get("filename") == "last"
    ]
    assert len(last) == 1 and last[0].get("save_on_train_epoch_end") is True, name

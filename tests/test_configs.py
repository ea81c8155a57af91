"""Every config in configs/ trains for a step and validates through the real CLI; a config with
design overlays (``configs/isic_gan.yaml`` and ``configs/isic_gan/*.yaml``) does so composed with
each overlay, as ``mvmic fit --config isic_gan.yaml --config isic_gan/d2.yaml`` runs it."""

from pathlib import Path

import pytest
import yaml

from mvmic.cli import CONFIG_DIR, main
from mvmic.cli_lightning import load_config

CONFIGS = sorted(p.name for p in CONFIG_DIR.glob("*.yaml"))


def _overlays(name: str) -> list[str]:
    """The overlays of ``configs/<name>``: ``configs/<stem>/*.yaml`` (``isic_gan/d2.yaml``)."""
    stem = name.removesuffix(".yaml")
    return sorted(f"{stem}/{p.name}" for p in (CONFIG_DIR / stem).glob("*.yaml"))


#: what a run reads: a config alone, or a dataset config then one design overlay
CASES = sorted(case for n in CONFIGS for case in [(n, o) for o in _overlays(n)] or [(n,)])

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


def _merge(into: dict, more: dict) -> dict:
    for key, value in more.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
    return into


def _raw(case: tuple[str, ...]) -> dict:
    """The case's YAML files merged in order, as LightningCLI merges repeated --config (no
    defaults, sub-config files left as their names)."""
    config: dict = {}
    for name in case:
        _merge(config, yaml.safe_load((CONFIG_DIR / name).read_text()))
    return config


def _family(case: tuple[str, ...]) -> str:
    return case[0].removesuffix(".yaml").split("_")[0]


def _args(case: tuple[str, ...], root: Path) -> list[str]:
    config = _raw(case)
    family = _family(case)
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
    configs = [arg for name in case for arg in ("--config", name)]
    return [*configs, "--data.root", str(root), *data, *model]


# Each config's smoke run costs 2-60 s (detection configs build full-size R-CNNs), so the inner
# loop runs one config per formulation and CI runs them all.
INNER_LOOP = (
    ("demo.yaml",),
    ("isic_gan.yaml", "isic_gan/d4.yaml"),
    ("hvsmr_gan3d.yaml", "hvsmr_gan3d/d4.yaml"),
)
RUNS_A_STEP = [
    pytest.param(case, id="+".join(case), marks=() if case in INNER_LOOP else pytest.mark.slow)
    for case in CASES
]


def test_every_overlay_folder_belongs_to_a_config_and_the_inner_loop_runs():
    folders = {p.name for p in CONFIG_DIR.iterdir() if p.is_dir()} - {"base", "data"}
    assert folders == {n.removesuffix(".yaml") for n in CONFIGS if _overlays(n)}
    assert set(INNER_LOOP) <= set(CASES)


@pytest.mark.parametrize("case", RUNS_A_STEP)
def test_config_runs_a_step(case, request, tmp_path, monkeypatch):
    family = _family(case)
    assert family in FAMILIES, f"add {case[0]}'s family to FAMILIES"
    root = request.getfixturevalue(FAMILIES[family][0])
    monkeypatch.chdir(tmp_path)
    config = _raw(case)
    extra = []
    if config["model"].get("init_args", {}).get("stage") == 2:
        stage1 = (case[0].replace("_stage2", ""), *case[1:])
        assert main(["fit", *_args(stage1, root), *RUN]) == 0
        ckpt = next(tmp_path.rglob("last.ckpt"))
        extra = ["--model.init_from", str(ckpt)]
    assert main(["fit", *_args(case, root), *RUN, *extra]) == 0
    # Every config leaves last.ckpt after each training epoch, even when it validates rarely.
    root_dir = config["trainer"]["default_root_dir"]
    assert (tmp_path / root_dir / "checkpoints" / "last.ckpt").is_file(), root_dir


@pytest.mark.parametrize(
    "case", [pytest.param(c, id="+".join(c)) for c in sorted({*CASES, *((n,) for n in CONFIGS)})]
)
def test_config_writes_last_checkpoint_every_epoch(case):
    config = load_config(case)  # composed: the callbacks come from configs/base/
    last = [
        cb["init_args"]
        for cb in config["trainer"]["callbacks"]
        if cb["class_path"].endswith("ModelCheckpoint")
        and cb["init_args"].get("filename") == "last"
    ]
    assert len(last) == 1 and last[0].get("save_on_train_epoch_end") is True, case


def test_a_design_overlay_changes_the_design_and_run_folder_only():
    # (and, for D1–D3, lmbda_cr to 0: the rate loss is D4's, so their saved config says so)
    base = load_config("isic_gan.yaml")
    d2 = load_config(["isic_gan.yaml", "isic_gan/d2.yaml"])
    args, base_args = d2["model"]["init_args"], base["model"]["init_args"]
    assert base_args["design"] == "D4" and base["trainer"]["default_root_dir"] == "runs/isic_gan_d4"
    assert args["design"] == "D2"
    assert d2["trainer"]["default_root_dir"] == "runs/isic_gan_d2"
    assert args["encoder"] == base_args["encoder"] == "resnet34"
    assert args["code_channels"] == base_args["code_channels"] == 8
    assert d2["data"] == base["data"]
    assert args["lmbda_cr"] == 0.0 and base_args["lmbda_cr"] == 1.0
    # Everything else is the base's: the run folder moves the checkpoints with it.
    own = ("design", "lmbda_cr")
    assert {k: v for k, v in args.items() if k not in own} == {
        k: v for k, v in base_args.items() if k not in own
    }

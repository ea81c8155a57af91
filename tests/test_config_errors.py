"""A bad config value stops with one line naming the option, exit 2, no traceback (issue 20),
a missing --ckpt_path too (issue 23), and re-running `mvmic test` replaces its record point."""

import inspect
import os
import pickle
import subprocess
import sys
import traceback

import pytest
import yaml

from data_modules import (
    ChestXDetDataModule,
    HVSMRDataModule,
    ISICDataModule,
    SegmentationDataModule,
)
from mvmic.cli import main
from mvmic.evaluation.records import append_point, load_record
from mvmic.modules import MVMICNet, TaskModule
from mvmic.modules.gan_seg import GanSegmentation
from mvmic.validation import ConfigError

TRAINER = {
    "logger": False,
    "enable_checkpointing": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "accelerator": "cpu",
    "devices": 1,
    # A value that slipped through would train: one step, so the test fails instead of hanging.
    "max_steps": 1,
    "limit_val_batches": 0,
    "limit_test_batches": 1,
}
TINY_SEG = {"encoder": "resnet18", "task_args": {"encoder_depth": 3}}
TINY_CODEC = {"codec": "bmshj2018-hyperprior", "N": 8, "M": 8}
TINY_GAN = {
    "design": "D4",
    "code_channels": 8,
    "codec_width": 8,
    "encoder": "resnet18",
    "seg_args": {"encoder_depth": 3, "decoder_channels": [32, 16, 8]},
    "critic_channels": [8, 16],
}
#: data-module configs carry a model that costs nothing to build
BORING = {"class_path": "lightning.pytorch.demos.boring_classes.BoringModel"}

#: config name -> (class whose every option is tried, the option prefix)
CLASSES = {
    "task": (TaskModule, "model"),
    "mvmicnet": (MVMICNet, "model"),
    "gan": (GanSegmentation, "model"),
    "colondb": (SegmentationDataModule, "data"),
    "isic": (ISICDataModule, "data"),
    "chestxdet": (ChestXDetDataModule, "data"),
    "hvsmr": (HVSMRDataModule, "data"),
}

MISSING = "/nonexistent/file.ckpt"
# One bad value per option: negative, zero, wrong type, unknown name, missing file, a file
# where a folder belongs ("FILE" and "DIR" stand for an existing file and folder).
MODEL_CASES = {
    "task": "nosuch",
    "arch": "Unnet",
    "encoder": "resnet99",
    "num_classes": "1",
    "in_channels": "2",
    "task_weights": MISSING,
    "task_args": "abc",
    "lr": "0",
    "weight_decay": "-1",
    "method": "",
    "results_dir": "FILE",
}
BAD = {
    "task": {**MODEL_CASES, "lr_schedule": "linear"},
    "mvmicnet": {
        **{k: v for k, v in MODEL_CASES.items() if k != "weight_decay"},
        "codec": "nosuch",
        "codec_analysis": "heavy",
        "N": "0",
        "M": "-8",
        "stage": "3",
        "lmbda_d": "-0.1",
        "lmbda_t": "-1",
        "distortion": "l1",
        "freeze_task": "maybe",
        "init_codec": MISSING,  # these three only `fit` reads: checked before it starts
        "init_task": MISSING,
        "init_from": MISSING,
        "task_lr": "-1",
        "aux_lr": "0",
    },
    "gan": {
        "design": "D9",
        "dims": "4",
        "in_channels": "2",
        "num_classes": "1",
        "class_names": "[background]",
        "codec": "nosuch",
        "code_channels": "0",
        "feature_channels": "-1",
        "codec_width": "0",
        "codec_stride": "4",
        "codec_args": "abc",
        "arch": "Unnet",
        "encoder": "resnet99",
        "seg_args": "abc",
        "lmbda_cr": "-0.1",
        "lmbda_dis": "-1",
        "init_from": MISSING,
        "lr": "0",
        "betas": "[0.5, 1.5]",
        "bit_lr": "-1",
        "aux_lr": "0",
        "clip_critic": "0",
        "critic_input": "image",
        "critic_channels": "[]",
        "roi_size": "[16, 16]",
        "sw_batch_size": "0",
        "sw_overlap": "1.0",
        "method": "",
        "results_dir": "FILE",
    },
    "colondb": {
        "root": "/nonexistent/colondb",  # read at setup, so this one runs `fit` that far
        "layout": "flat",
        "dataset_name": "",
        "image_size": "0",
        "train_crop": "[32, 0]",
        "in_channels": "2",
        "batch_size": "0",
        "num_workers": "-1",
        "val_fraction": "1.5",
        "test_fraction": "-0.1",
        "seed": "abc",
        "split_file": MISSING,
        "augment": "maybe",
        "on_bad_image": "ignore",
        "window": "[1]",
        "predict_root": "[1]",
    },
    "isic": {
        "root": "/nonexistent/isic",
        "image_size": "-1",
        "train_crop": "0",
        "in_channels": "grey",
        "batch_size": "0",
        "num_workers": "-2",
        "augment": "maybe",
        "eval_batch_size": "0",
        "on_bad_image": "ignore",
        "predict_root": "[1]",
    },
    "chestxdet": {
        "root": "/nonexistent/chestxdet",
        "train_json": "nosuch.json",
        "test_json": "nosuch.json",
        "image_size": "[64, 0]",
        "train_crop": "[64, 512]",
        "in_channels": "2",
        "batch_size": "-1",
        "num_workers": "-1",
        "val_fraction": "0",
        "seed": "1.5",
        "invalid_boxes": "keep",
        "with_masks": "maybe",
        "augment": "maybe",
        "split_file": "DIR",
        "on_bad_image": "ignore",
        "window": "[5, 1]",
        "predict_root": "[1]",
    },
    "hvsmr": {
        "root": "/nonexistent/hvsmr",
        "crop_size": "[32, 32]",
        "crops_per_volume": "0",
        "batch_size": "0",
        "num_workers": "-1",
        "val_fraction": "1",
        "test_fraction": "-0.5",
        "seed": "abc",
        "split_file": MISSING,
        "augment": "maybe",
        "on_bad_image": "ignore",
        "predict_root": "[1]",
    },
}
CASES = [
    (config, option, value) for config, options in BAD.items() for option, value in options.items()
]
#: options a module reads in `fit` only, and data roots read at setup: the run gets that far
LATE = {("mvmicnet", "init_codec"), ("mvmicnet", "init_task"), ("mvmicnet", "init_from")}
LATE |= {("gan", "init_from")} | {(c, "root") for c in ("colondb", "isic", "chestxdet", "hvsmr")}
#: what Lightning prints on the way to setup (info, not errors)
LIGHTNING_INFO = ("Seed set to", "GPU available", "TPU available", "HPU available", "💡")


@pytest.fixture(scope="module")
def configs(tmp_path_factory, colondb_root, isic_root, chestxdet_root, hvsmr_root) -> dict:
    """One tiny YAML config per class under test."""
    out = tmp_path_factory.mktemp("configs")
    colondb = {
        "class_path": "data_modules.SegmentationDataModule",
        "init_args": {"root": str(colondb_root), "image_size": 32, "batch_size": 2},
    }
    isic = {
        "class_path": "data_modules.ISICDataModule",
        "init_args": {"root": str(isic_root), "image_size": 32, "batch_size": 2},
    }
    task = {"class_path": "mvmic.modules.TaskModule", "init_args": TINY_SEG}
    mvmicnet = {"class_path": "mvmic.modules.MVMICNet", "init_args": {**TINY_SEG, **TINY_CODEC}}
    gan = {"class_path": "mvmic.modules.gan_seg.GanSegmentation", "init_args": TINY_GAN}
    data = {
        "chestxdet": {"root": str(chestxdet_root), "image_size": 64},
        "hvsmr": {"root": str(hvsmr_root), "crop_size": [16, 16, 16]},
    }
    pairs = {
        "task": (task, colondb),
        "mvmicnet": (mvmicnet, colondb),
        "gan": (gan, isic),
        "colondb": (BORING, colondb),
        "isic": (BORING, isic),
        "chestxdet": (
            BORING,
            {"class_path": "data_modules.ChestXDetDataModule", "init_args": data["chestxdet"]},
        ),
        "hvsmr": (
            BORING,
            {"class_path": "data_modules.HVSMRDataModule", "init_args": data["hvsmr"]},
        ),
    }
    paths = {}
    for name, (model, dm) in pairs.items():
        root = out / name
        config = {
            "seed_everything": 0,
            "trainer": {**TRAINER, "default_root_dir": str(root)},
            "model": model,
            "data": dm,
        }
        paths[name] = out / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(config))
    (out / "a_file").write_text("x")
    (out / "a_dir").mkdir()
    paths["FILE"], paths["DIR"] = out / "a_file", out / "a_dir"
    return paths


def _run(args: list[str], capsys) -> tuple[int, list[str]]:
    code = main(args)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, [line for line in err.splitlines() if line.strip()]


def test_every_option_of_every_module_and_data_module_is_tried():
    for config, (cls, _) in CLASSES.items():
        options = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        assert sorted(options) == sorted(BAD[config]), f"{cls.__name__}: add a bad value"


@pytest.mark.parametrize("config, option, value", CASES, ids=[f"{c}-{o}" for c, o, _ in CASES])
def test_bad_value_is_one_line_naming_the_option(configs, config, option, value, capsys):
    prefix = CLASSES[config][1]
    value = str(configs[value]) if value in ("FILE", "DIR") else value
    args = ["fit", "--config", str(configs[config]), f"--{prefix}.{option}", value]
    late = (config, option) in LATE
    if late:
        args += ["--trainer.fast_dev_run", "true"]
    code, lines = _run(args, capsys)
    assert code == 2
    if late:  # Lightning's info lines may come first; the error is the last line
        lines = [line for line in lines if not line.startswith(LIGHTNING_INFO)]
    assert len(lines) == 1, lines
    assert lines[0].startswith("mvmic: error: ")
    assert f"{prefix}.{option}" in lines[0], lines[0]


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--model.nosuch", "1"], "--model.nosuch is not an option of mvmic.modules.TaskModule"),
        (["--trainer.max_epochs", "x"], "--trainer.max_epochs got 'x'; expected int | None"),
        (["--nosuch", "1"], "unrecognized arguments: --nosuch 1"),
        (["--model.lr", "abc"], "--model.lr got 'abc'; expected float"),
        (["--model", "nosuch.Module"], "--model nosuch.Module: No module named 'nosuch'"),
    ],
)
def test_parse_errors_are_one_line(configs, args, expected, capsys):
    code, lines = _run(["fit", "--config", str(configs["task"]), *args], capsys)
    assert code == 2 and len(lines) == 1 and expected in lines[0], lines


def test_issue_examples_name_the_value_and_the_fix(configs, capsys):
    config = str(configs["mvmicnet"])
    _, lines = _run(["fit", "--config", config, "--model.codec", "nosuch"], capsys)
    assert lines == [
        "mvmic: error: --model.codec 'nosuch' is not a codec; choose one of "
        "bmshj2018-hyperprior, mbt2018-mean, cheng2020-anchor"
    ]
    _, lines = _run(["fit", "--config", config, "--model.lmbda_t", "-1"], capsys)
    assert lines == ["mvmic: error: --model.lmbda_t must be >= 0, got -1.0"]
    _, lines = _run(["fit", "--config", config, "--data.image_size", "0"], capsys)
    assert lines == ["mvmic: error: --data.image_size must be a positive integer, got 0"]


@pytest.mark.parametrize("subcommand", ["fit", "test"])
def test_missing_ckpt_path_is_one_line(configs, subcommand, capsys):
    args = [subcommand, "--config", str(configs["task"]), "--ckpt_path", "MISSING.ckpt"]
    code, lines = _run(args, capsys)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("mvmic: error: --ckpt_path MISSING.ckpt does not exist")


def test_mvmic_debug_shows_the_traceback(configs, monkeypatch):
    monkeypatch.setenv("MVMIC_DEBUG", "1")
    with pytest.raises(ValueError) as info:  # raised on: Python prints the whole traceback
        main(["fit", "--config", str(configs["task"]), "--model.lr", "0"])
    shown = "".join(traceback.format_exception(info.value))
    assert "Traceback" in shown and "ConfigError: --model.lr must be > 0, got 0.0" in shown


@pytest.mark.slow
def test_real_process_exits_2_with_one_stderr_line(configs, tmp_path):
    args = ["fit", "--config", str(configs["mvmicnet"]), "--model.codec", "nosuch"]
    env = {k: v for k, v in os.environ.items() if k != "MVMIC_DEBUG"}
    r = subprocess.run(
        [sys.executable, "-m", "mvmic.cli", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert r.returncode == 2
    assert r.stderr.splitlines() == [
        "mvmic: error: --model.codec 'nosuch' is not a codec; choose one of "
        "bmshj2018-hyperprior, mbt2018-mean, cheng2020-anchor"
    ]


# -- re-running `mvmic test` replaces the module's own point ------------------------------------
RECORD_RUNS = {
    "task": ("colondb", "uncompressed"),
    "mvmicnet": ("colondb", "MVMICNet_stage_1"),
    "gan": ("isic2017", "liu2020-d4"),
}


@pytest.mark.parametrize(
    "config",
    # MVMICNet fits a step first (it tests only a trained task network): > 10 s on 2 cores
    [c if c != "mvmicnet" else pytest.param(c, marks=pytest.mark.slow) for c in RECORD_RUNS],
)
def test_rerunning_test_keeps_one_point(configs, config, tmp_path):
    results = tmp_path / "results"
    args = ["--config", str(configs[config]), "--model.results_dir", str(results)]
    if config == "mvmicnet":
        # MVMICNet tests only a trained task network: fit one step, test that checkpoint.
        fit = ["--trainer.enable_checkpointing", "true", "--trainer.default_root_dir"]
        assert main(["fit", *args, *fit, str(tmp_path)]) == 0
        args += ["--ckpt_path", str(next(tmp_path.glob("checkpoints/*.ckpt")))]
    dataset, method = RECORD_RUNS[config]
    counts = []
    for _ in range(2):
        assert main(["test", *args]) == 0
        record = load_record(results / dataset / f"{method}.json")
        counts.append({k: len(v) for k, v in record["results"].items()})
    assert counts[0] == counts[1]
    assert set(counts[1].values()) == {1}


@pytest.mark.parametrize(
    "key, points, expected",
    [
        ((), [{"bpp": 24.0, "miou": 0.5}, {"bpp": 24.0, "miou": 0.6}], [0.6]),
        (
            ("design", "lmbda"),
            [
                {"design": "D4", "lmbda": 0.1, "miou": 0.5},
                {"design": "D3", "lmbda": 0.0, "miou": 0.4},
                {"design": "D4", "lmbda": 0.1, "miou": 0.7},
            ],
            [0.7, 0.4],
        ),
        # no key and none of the default key fields: appended, as before
        (None, [{"bpp": 24.0, "miou": 0.5}, {"bpp": 24.0, "miou": 0.6}], [0.5, 0.6]),
    ],
)
def test_append_point_replaces_by_key(tmp_path, key, points, expected):
    for point in points:
        path = append_point(tmp_path, "ds", "m", point, key=key)
    assert load_record(path)["results"]["miou"] == expected


def test_config_error_survives_a_trip_between_processes():
    err = pickle.loads(pickle.dumps(ConfigError("--data.batch_size", "must be > 0, got 0")))
    assert isinstance(err, ConfigError) and err.option == "--data.batch_size"
    assert str(err) == "--data.batch_size must be > 0, got 0"

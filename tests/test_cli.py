import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from mvmic.cli import main, resolve_config

TINY = [
    "--data.image_size",
    "32",
    "--data.batch_size",
    "2",
    "--model.N",
    "8",
    "--model.M",
    "12",
    "--model.encoder",
    "resnet18",
]
STEPS = [
    "--trainer.max_epochs",
    "1",
    "--trainer.limit_train_batches",
    "2",
    "--trainer.limit_val_batches",
    "1",
]


def _mvmic(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "mvmic.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_bare_config_names_resolve_to_configs_folder(tmp_path):
    assert resolve_config("colondb_seg.yaml").endswith("configs/colondb_seg.yaml")
    mine = tmp_path / "colondb_seg.yaml"
    mine.write_text("{}")
    assert resolve_config(str(mine)) == str(mine)


@pytest.mark.slow
def test_fit_stage1_then_stage2_then_test_writes_record_and_wandb_run(colondb_root, tmp_path):
    data = ["--data.root", str(colondb_root)]
    r = _mvmic("fit", "--config", "colondb_seg.yaml", *data, *TINY, *STEPS, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    stage1 = tmp_path / "runs/colondb_seg/checkpoints/last.ckpt"
    assert stage1.is_file()
    r = _mvmic(
        "fit",
        "--config",
        "colondb_seg_stage2.yaml",
        *data,
        *TINY,
        *STEPS,
        "--model.init_from",
        str(stage1),
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    best = tmp_path / "runs/colondb_seg_stage2/checkpoints/best.ckpt"
    r = _mvmic(
        "test",
        "--config",
        "colondb_seg_stage2.yaml",
        *data,
        *TINY,
        "--ckpt_path",
        str(best),
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    record = json.loads((tmp_path / "runs/results/colondb/MVMICNet_stage_2.json").read_text())
    assert record["name"] == "MVMICNet stage 2"
    results = record["results"]
    for key in (
        "bpp",
        "bpp_est",
        "bpp_container",
        "psnr",
        "ms-ssim",
        "miou",
        "dice",
        "lmbda",
        "stage",
    ):
        assert len(results[key]) == 1, key
    assert results["stage"] == [2] and results["lmbda"] == [0.0067]
    # Real bytes: the container costs more than its payload, both are positive.
    assert 0 < results["bpp"][0] < results["bpp_container"][0]
    assert 0 <= results["miou"][0] <= 1
    runs = list((tmp_path / "runs/colondb_seg").glob("wandb/offline-run-*/run-*.wandb"))
    assert runs, "no offline W&B run folder"
    assert list((tmp_path / "runs/colondb_seg").rglob("images/val_epoch000.png"))


def test_missing_dataset_is_one_clear_line(tmp_path, capsys):
    code = main(
        [
            "fit",
            "--config",
            "colondb_seg.yaml",
            "--data.root",
            str(tmp_path / "none"),
            "--trainer.fast_dev_run",
            "1",
            "--trainer.logger",
            "false",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "mvmic synth colondb --out" in err and "Traceback" not in err


def test_help_lists_subcommands_and_configs(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "synth" in out and "compress" in out and "colondb_seg.yaml" in out


def test_synth_subcommand(tmp_path):
    assert (
        main(["synth", "colondb", "--out", str(tmp_path / "d"), "--num", "3", "--size", "16"]) == 0
    )
    assert sorted(p.name for p in Path(tmp_path / "d/images").iterdir()) == [
        "1.png",
        "2.png",
        "3.png",
    ]


def test_unknown_synth_family_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        main(["synth", "imagenet", "--out", str(tmp_path)])


def test_lightning_commands_read_their_arguments_not_sys_argv(monkeypatch, capsys):
    # LightningCLI gets args= (issue 15): sys.argv is neither read nor swapped, and
    # Lightning's warning about getting both does not fire.
    monkeypatch.setattr(sys, "argv", ["mvmic", "--bogus"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(["fit", "--config", "colondb_seg.yaml", "--model.lmbda_t", "-1"])
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        "mvmic: error: --model.lmbda_t must be >= 0, got -1.0"
    )
    assert sys.argv == ["mvmic", "--bogus"]
    assert not [w for w in caught if "args parameter" in str(w.message)]


def test_a_batch_limit_of_1_is_one_batch_and_a_fraction_stays_a_fraction(colondb_root, tmp_path):
    """Lightning reads ``limit_*_batches=1`` as one batch and 1.0 as the whole epoch; the CLI
    used to hand it 1.0 for a written 1 (measured: a 2-step budget trained 2 × 21 batches)."""
    import torch

    from mvmic.cli_lightning import MvmicLightningCLI, load_config

    limits = ["--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "0.25",
              "--trainer.limit_test_batches", "2", "--trainer.overfit_batches", "1"]  # fmt: skip
    trainer = load_config("colondb_seg.yaml", limits)["trainer"]
    assert [type(trainer[k]).__name__ for k in ("limit_train_batches", "limit_val_batches",
            "limit_test_batches", "overfit_batches")] == ["int", "float", "int", "int"]  # fmt: skip
    assert (trainer["limit_train_batches"], trainer["limit_val_batches"]) == (1, 0.25)
    # and a run trains exactly one batch an epoch
    args = ["fit", "--config", str(resolve_config("colondb_seg.yaml")),
            "--data.root", str(colondb_root), *TINY,
            "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "1",
            "--trainer.limit_val_batches", "1", "--trainer.default_root_dir", str(tmp_path),
            "--trainer.logger", "false"]  # fmt: skip
    cli = MvmicLightningCLI(args=args[1:], run=False)
    assert cli.trainer.limit_train_batches == 1 and cli.trainer.limit_val_batches == 1
    cli.trainer.fit(cli.model, cli.datamodule)
    batches = cli.trainer.fit_loop.epoch_loop.batch_progress.total.completed
    assert batches == 2  # two epochs of one batch, not two whole epochs
    assert torch.is_tensor(cli.trainer.callback_metrics["val_loss"])

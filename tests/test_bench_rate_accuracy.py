"""The rate–accuracy benchmark's verdicts: bits at equal accuracy, BD-rate goals, stage 2 vs 1."""

from pathlib import Path

import pytest
import yaml

from mvmic.evaluation import bench as bench_module
from mvmic.evaluation.records import append_point


@pytest.fixture(scope="module")
def bench():
    return bench_module


def test_rate_at_interpolates_log_rate_and_flags_bounds(bench):
    rates, values = [0.1, 0.4, 0.3], [0.5, 0.7, 0.4]  # 0.3 is beaten by a cheaper point
    assert bench.rate_at(rates, values, 0.6) == (pytest.approx(0.2), "")  # geometric midpoint
    assert bench.rate_at(rates, values, 0.9) == (0.4, ">")  # never reached
    assert bench.rate_at(rates, values, 0.45) == (0.1, "<")  # the cheapest point beats it
    rows = bench.bit_ratios(([0.02, 0.05], [0.6, 0.9]), (rates, values))
    assert rows[0]["ratio"] == pytest.approx(0.1) and rows[0]["bound"] == ""
    # the anchor needs more than 0.4 for 0.9, so the ratio is at most 0.05 / 0.4
    assert rows[1]["ratio"] == pytest.approx(0.125) and rows[1]["bound"] == "<"


def _store(tmp_path: Path) -> Path:
    results = tmp_path / "results"
    miou = [0.5, 0.6, 0.7, 0.8]
    hevc = [0.1, 0.2, 0.4, 0.8]
    for q, (bpp, m) in enumerate(zip(hevc, miou)):
        append_point(results, "colondb", "hevc", {"quality": q, "bpp": bpp, "miou": m},
                     fields={"anchor": True})  # fmt: skip
    for lmbda, bpp, m in zip([1, 2, 3, 4], hevc, miou):
        # stage 2: 1/20 of HEVC's bits; MSE codec: 3/20 (so stage 2 needs 1/3 of its bits)
        append_point(results, "colondb", "MVMICNet stage 2",
                     {"lmbda": lmbda, "bpp": bpp / 20, "miou": m})  # fmt: skip
        s1 = m - 0.01 if lmbda != 3 else m + 0.01  # stage 1 beats stage 2 at λ = 3 only
        append_point(results, "colondb", "MVMICNet stage 1",
                     {"lmbda": lmbda, "bpp": bpp / 20, "miou": s1})  # fmt: skip
        append_point(results, "colondb", "mbt2018-mean",
                     {"lmbda": lmbda, "bpp": 3 * bpp / 20, "miou": m})  # fmt: skip
    append_point(results, "colondb", "uncompressed", {"bpp": 24.0, "miou": 0.505})
    return results


def test_summary_judges_each_goal_from_the_records(bench, tmp_path):
    summary = bench.summarize(bench.SEG, _store(tmp_path))
    goals = {g["goal"]: g for g in summary["goals"]}
    hevc = goals["stage 2 needs ≤ 0.1× the bits of hevc at equal miou"]
    assert hevc["bd_rate"] == pytest.approx(-95.0, abs=0.1) and hevc["met"] is True
    assert [r["ratio"] for r in hevc["ratios"]] == pytest.approx([0.05] * 4)
    mse = goals["stage 2 needs ≤ 0.5× the bits of mbt2018-mean at equal miou"]
    assert mse["bd_rate"] == pytest.approx(-66.67, abs=0.1) and mse["met"] is True
    # λ = 3: stage 1 0.71 > stage 2 0.70
    assert goals["stage 2 ≥ stage 1 in miou at every λ (beyond noise)"]["met"] is False
    low = goals["stage 2 at its lowest rate (≤ 0.05 bpp) within 1 point of uncompressed miou"]
    assert low["met"] is True  # 0.500 vs 0.505
    text = bench.format_summary(bench.SEG, summary)
    assert "| MVMICNet stage 2 | 0.0050 | 0.5000 | – | – |" in text
    assert "| stage 2 ≥ stage 1 in miou at every λ (beyond noise) | **no** |" in text
    assert "no per-image statistics: no interval" in goals[low["goal"]]["why"]


def test_a_bound_beyond_the_anchors_range_is_undetermined_not_a_verdict(bench):
    # anchor reaches 0.5..0.7 at 1..4 bpp
    anchor = ([1.0, 2.0, 4.0], [0.5, 0.6, 0.7])
    # above the anchor's best: it needs > 4 bpp, so 0.3 bpp is < 0.075x (passes 0.1x) and
    # 0.6 bpp is < 0.15x (open); below its cheapest: it needs < 1 bpp, so 0.05 is > 0.05x (open)
    # and 0.2 is > 0.2x (fails)
    rows = bench.bit_ratios(([0.3, 0.6, 0.05, 0.2], [0.8, 0.8, 0.4, 0.4]), anchor)
    assert [r["bound"] for r in rows] == ["<", "<", ">", ">"]
    verdicts = [bench.ratio_verdict(r, 0.1) for r in rows]
    assert verdicts == [True, None, None, False]
    assert bench.all_verdicts(verdicts[:2]) == "undetermined"
    assert bench.all_verdicts(verdicts) is False
    assert bench.all_verdicts(verdicts[:1]) is True


def test_summary_says_missing_instead_of_guessing(bench, tmp_path):
    results = tmp_path / "results"
    append_point(results, "colondb", "uncompressed", {"bpp": 24.0, "miou": 0.9})
    goals = bench.summarize(bench.SEG, results)["goals"]
    assert goals[0]["met"] is None and "missing hevc" in goals[0]["why"]


def test_readme_region_is_rewritten_and_nothing_else(bench, tmp_path):
    figures = tmp_path / "docs" / "bench"
    figures.mkdir(parents=True)
    (figures / "seg_colondb_miou.png").write_bytes(b"png")
    readme = tmp_path / "README.md"
    readme.write_text(f"# top\n{bench.README_BEGIN}\nold numbers\n{bench.README_END}\ntail\n")
    for _ in range(2):  # idempotent
        bench.update_readme(readme, "| a | 1 |\n", figures)
    assert readme.read_text() == (
        f"# top\n{bench.README_BEGIN}\n| a | 1 |\n\n"
        "![seg_colondb_miou](docs/bench/seg_colondb_miou.png)\n"
        f"{bench.README_END}\ntail\n"
    )
    readme.write_text("no markers\n")
    with pytest.raises(SystemExit, match="has no"):
        bench.update_readme(readme, "x", None)


def test_readme_without_a_path_targets_the_benchmarks_page(bench):
    page = Path(__file__).parents[1] / "docs" / "benchmarks.md"
    args = bench.build_parser().parse_args(["--readme", "--parts", "seg"])
    assert Path(args.readme) == page.resolve() and args.parts == "seg"
    text = page.read_text()
    assert text.count(bench.README_BEGIN) == 1 and text.count(bench.README_END) == 1
    assert bench.build_parser().parse_args([]).readme is None  # nothing rewritten unless asked


def test_set_overrides_copy_the_settings_and_name_what_is_wrong(bench):
    settings = bench.with_overrides(
        bench.PART_SETTINGS,
        ["seg.stage1.freeze_task=true", "gan.steps=500", "det.lmbdas=[0.001, 0.01]"],
    )
    assert settings["seg"].stage1["freeze_task"] is True
    assert settings["seg"].stage1["lmbda_t"] == bench.SEG.stage1["lmbda_t"]  # the rest is kept
    assert settings["gan"].steps == 500 and settings["det"].lmbdas == [0.001, 0.01]
    assert "freeze_task" not in bench.SEG.stage1 and bench.GanPart().steps != 500
    for bad, message in [
        ("seg.stage1", "expected PART.FIELD"),
        ("vid.steps=1", "unknown part 'vid'"),
        ("seg.stepz=1", "seg has no field 'stepz'"),
        ("seg.metric.x=1", "seg.metric is not a mapping"),
    ]:
        with pytest.raises(ValueError, match=message):
            bench.with_overrides(bench.PART_SETTINGS, [bad])


# --- verdicts on bootstrap intervals (per-image statistics in the records) -------------------


def test_band_verdicts_need_the_whole_interval(bench):
    from mvmic.evaluation.goals import band_verdict, combine

    assert band_verdict(-97.0, -92.0, -90.0, lower_is_better=True) is True
    assert band_verdict(-89.0, -80.0, -90.0, lower_is_better=True) is False
    assert band_verdict(-93.0, -85.0, -90.0, lower_is_better=True) == "within noise"
    assert band_verdict(0.0, 0.02, 0.0, lower_is_better=False) is True
    assert band_verdict(-0.03, -0.01, 0.0, lower_is_better=False) is False
    assert band_verdict(-0.01, 0.01, 0.0, lower_is_better=False) == "within noise"
    assert combine([True, "within noise", True]) == "within noise"
    assert combine([True, "within noise", False]) is False
    assert combine([True, True]) is True and combine([True, None]) is None


N_IMAGES = 20


def _stats(wrong, nbytes=None):
    """Binary segmentation statistics: image i has wrong[i] false positives and negatives."""
    cms = [[[100, int(w)], [int(w), 50 - int(w)]] for w in wrong]
    stats = {"kind": "confusion", "rules": {"miou": "jaccard_macro"}, "confmat": cms}
    stats["pixels"] = [64 * 64] * len(wrong)
    if nbytes is not None:
        stats["bytes"] = [int(b) for b in nbytes]
    return stats


def _point(store, method, wrong, nbytes=None, **key):
    from mvmic.evaluation.image_stats import recompute

    stats = _stats(wrong, nbytes)
    point = {**key, "miou": recompute(stats, "miou"), "per_image": stats}
    point["bpp"] = 8 * sum(nbytes) / len(nbytes) / 64**2 if nbytes is not None else 24.0
    append_point(store, "colondb", method, point, key=list(key) or ())


def _interval_store(tmp_path: Path, stage2_worse_at_4: bool) -> Path:
    import numpy as np

    store = tmp_path / "results"
    base = np.arange(N_IMAGES) % 5 + 10  # per-image errors of stage 1
    swing = np.where(np.arange(N_IMAGES) % 2 == 0, 3, -3)
    deltas = {1: -1, 2: 0, 3: swing, 4: 2 if stage2_worse_at_4 else 0}
    noise = np.where(np.arange(N_IMAGES) % 2 == 0, 0.6, 1.4)  # mean 1: exactly 2x on average
    for q, lmbda in enumerate([1, 2, 3, 4]):
        wrong = base - 2 * q
        nbytes = np.full(N_IMAGES, 20 * (q + 1))  # stage 2: 20, 40, 60, 80 bytes per image
        _point(store, "MVMICNet stage 1", wrong, nbytes, lmbda=lmbda)
        _point(store, "MVMICNet stage 2", wrong + deltas[lmbda], nbytes, lmbda=lmbda)
        _point(store, "hevc", wrong + deltas[lmbda], nbytes * 20, quality=q)  # 20x the bits
        _point(store, "mbt2018-mean", wrong + deltas[lmbda], nbytes * 2 * noise, lmbda=lmbda)
    _point(store, "uncompressed", base - 6)  # = stage 1 at its best; stage 2 at 0.039 bpp
    return store


def test_goal_verdicts_use_the_intervals(bench, tmp_path):
    summary = bench.summarize(bench.SEG, _interval_store(tmp_path, False), draws=200)
    goals = {g["goal"]: g for g in summary["goals"]}
    hevc = goals["stage 2 needs ≤ 0.1× the bits of hevc at equal miou"]
    # the same images drawn for both curves: every draw needs exactly 1/20 of HEVC's bits
    assert hevc["bd_rate"] == pytest.approx(-95.0, abs=0.1) and hevc["met"] is True
    assert hevc["bd_interval"] == pytest.approx([-95.0, -95.0], abs=0.1)
    mse = goals["stage 2 needs ≤ 0.5× the bits of mbt2018-mean at equal miou"]
    # exactly 0.5x on the full set; draws with more 0.6x than 1.4x images say less
    assert mse["bd_rate"] == pytest.approx(-50.0, abs=0.1) and mse["met"] == "within noise"
    lo, hi = mse["bd_interval"]
    assert lo < -50 < hi
    stage = goals["stage 2 ≥ stage 1 in miou at every λ (beyond noise)"]
    # λ=1 better on every image, λ=2 equal, λ=3 better on half and worse on half
    assert stage["met"] == "within noise" and stage["why"].count("[") == 4
    low = goals["stage 2 at its lowest rate (≤ 0.05 bpp) within 1 point of uncompressed miou"]
    assert low["met"] is False  # its lowest rate is 0.039 bpp, but its mIoU is far below
    text = bench.format_summary(bench.SEG, summary)
    assert "| within noise |" in text and "| met |" in text


def test_stage_goal_is_no_when_one_lambda_is_worse_beyond_noise(bench, tmp_path):
    summary = bench.summarize(bench.SEG, _interval_store(tmp_path, True), draws=200)
    goals = {g["goal"]: g for g in summary["goals"]}
    assert goals["stage 2 ≥ stage 1 in miou at every λ (beyond noise)"]["met"] is False
    cis = summary["methods"]["MVMICNet stage 2"]["interval"]
    values = summary["methods"]["MVMICNet stage 2"]["miou"]
    assert all(lo <= v <= hi for (lo, hi), v in zip(cis, values))


def _gan_point(store, method, wrong, nbytes, **key):
    """An ISIC record point whose Dice and bpp come from per-image statistics."""
    from mvmic.evaluation.image_stats import recompute

    stats = _stats(wrong, nbytes)
    stats["rules"] = {"dice": "dice_samplewise_fg"}
    p = {**key, "dice": recompute(stats, "dice"), "per_image": stats}
    p["bpp"] = 8 * sum(nbytes) / len(nbytes) / 64**2
    append_point(store, "isic2017", method, p, key=list(key))


def test_gan_goals_judge_d4_on_intervals(bench, tmp_path):
    import numpy as np

    store = tmp_path / "results"

    def point(method, wrong, nbytes, **key):
        _gan_point(store, method, wrong, nbytes, **key)

    wrong = np.arange(N_IMAGES) % 4 + 8
    for q in range(4):
        point("jpeg2000", wrong + 2 - q, np.full(N_IMAGES, 400 * (q + 1)), quality=q)
    point("liu2020-d4", wrong, np.full(N_IMAGES, 30), lmbda=1.0)  # JPEG 2000 q=2: 1/40
    point("liu2020-d1", wrong - 1, np.full(N_IMAGES, 4096 * 3), lmbda=0.0)
    goals = {g["goal"]: g for g in bench.summarize_gan(bench.GanPart(), store, 200)["goals"]}
    j2k = goals["D4 needs ≤ 0.05× the bits of jpeg2000 at equal dice"]
    assert j2k["met"] is True and "[0.025, 0.025]×" in j2k["why"]
    d1 = goals["D4 dice at least that of D1 (no compression) − 1 point"]
    assert d1["met"] is False  # one more wrong pixel pair per image: > 1 Dice point lower


@pytest.mark.parametrize(
    ("shift", "met", "band"),
    [(-5, True, "[0.000, 0.019]×"), (5, False, "[0.075, ∞]×")],  # better / worse than any j2k
)
def test_gan_bit_goal_draws_beyond_the_anchors_range_count_at_their_bound(
    bench, tmp_path, shift, met, band
):
    import numpy as np

    store = tmp_path / "results"

    def point(method, wrong, nbytes, **key):
        _gan_point(store, method, wrong, nbytes, **key)

    wrong = np.arange(N_IMAGES) % 4 + 8
    for q in range(4):  # 400 … 1600 bytes, each quality one wrong pixel pair fewer per image
        point("jpeg2000", wrong + 2 - q, np.full(N_IMAGES, 400 * (q + 1)), quality=q)
    point("liu2020-d4", wrong + shift, np.full(N_IMAGES, 30), lmbda=1.0)
    summary = bench.summarize_gan(bench.GanPart(), store, 200)
    goal = {g["goal"]: g for g in summary["goals"]}[
        "D4 needs ≤ 0.05× the bits of jpeg2000 at equal dice"
    ]
    # better than JPEG 2000's best on every image: every draw's ratio is below 30/1600, so the
    # low end is 0 and the high end that bound; worse than its cheapest: above 30/400, up to ∞
    assert goal["met"] is met and band in goal["why"]
    assert "200 of 200 draws beyond jpeg2000's range: at their bound" in goal["why"]
    # the table's intervals: one per point, in the record's order, each around its value
    cols = summary["methods"]["jpeg2000"]
    assert len(cols["interval"]) == 4
    assert all(lo <= v <= hi for (lo, hi), v in zip(cols["interval"], cols["dice"]))


@pytest.mark.parametrize(
    ("steps", "per_epoch", "epochs", "limit"),
    [
        (60, 21, 4, 15),  # seg stage 1: 3 epochs' worth, rounded up to 2 validations
        (30, 21, 2, 15),
        (300, 90, 4, 75),  # det base
        (16, 90, 2, 8),
        (160, 21, 8, 20),  # seg task net
        (320, 20, 16, 20),  # gan3d: whole epochs
        (250, 50, 6, 42),  # gan
    ],
)
def test_a_budget_trains_its_steps_and_validates_twice(steps, per_epoch, epochs, limit):
    from mvmic.evaluation.bench_settings import epoch_plan

    plan = epoch_plan(steps, per_epoch)
    assert plan == {
        "max_epochs": epochs,
        "check_val_every_n_epoch": epochs // 2,
        "limit_train_batches": limit,
    }
    assert limit <= per_epoch and epochs * limit >= steps and epochs * (limit - 1) < steps
    # Lightning validates after epoch e when e % every == 0: mid-run and at the end
    every = plan["check_val_every_n_epoch"]
    assert [e for e in range(1, epochs + 1) if e % every == 0] == [epochs // 2, epochs]


def test_a_budget_of_one_step_is_one_batch():
    """A limit of 1 is one batch (the CLI keeps integer batch limits integers, see
    tests/test_cli.py), so the plan writes it as it is."""
    from mvmic.evaluation.bench_settings import epoch_plan

    assert epoch_plan(2, 21)["limit_train_batches"] == 1
    assert epoch_plan(1, 5, validations=0) == {
        "max_epochs": 1, "limit_train_batches": 1, "limit_val_batches": 0,
    }  # fmt: skip


def test_a_budget_validates_as_often_as_asked():
    from mvmic.evaluation.bench_settings import epoch_plan

    assert epoch_plan(320, 20, validations=4) == {
        "max_epochs": 16, "check_val_every_n_epoch": 4, "limit_train_batches": 20,
    }  # fmt: skip
    assert epoch_plan(60, 21, validations=1) == {
        "max_epochs": 3, "check_val_every_n_epoch": 3, "limit_train_batches": 20,
    }  # fmt: skip


def test_a_budget_without_validation_trains_its_steps_and_never_validates():
    from mvmic.evaluation.bench_settings import epoch_plan

    assert epoch_plan(24, 21, validations=0) == {
        "max_epochs": 2, "limit_train_batches": 12, "limit_val_batches": 0,
    }  # fmt: skip
    assert epoch_plan(12, 90, validations=0) == {
        "max_epochs": 1, "limit_train_batches": 12, "limit_val_batches": 0,
    }  # fmt: skip


def test_a_run_without_validation_keeps_only_its_last_checkpoint(bench, isic_root, tmp_path):
    part = bench.PART_SETTINGS["gan"]
    assert part.validations == 0 and bench.SEG.stage_validations == 0
    kwargs = dict(
        overlays=[part.overlay("D1")], model={"encoder": "resnet18"},
        data={"root": str(isic_root), "image_size": 32}, max_steps=4,
        run_dir=tmp_path / "d1", group="bench-gan",
    )  # fmt: skip
    checks = {}
    for validations in (0, 2):
        path = bench.write_config(part.config, tmp_path / f"v{validations}.yaml", **kwargs,
                                  validations=validations)  # fmt: skip
        trainer = yaml.safe_load(path.read_text())["trainer"]
        checks[validations] = (
            trainer.get("limit_val_batches"),
            sorted(cb["init_args"].get("filename") or "" for cb in trainer["callbacks"]
                   if cb["class_path"].endswith("ModelCheckpoint")),
        )  # fmt: skip
    # no validation: nothing to monitor, so the `best` checkpoint (monitor val_loss) goes
    assert checks[0] == (0, ["last"])
    assert checks[2][0] is None and "best" in checks[2][1]


def test_lambda_calibration_widens_the_grid_to_reach_the_knee():
    import math

    from mvmic.evaluation.calibration import calibrate_grid

    # a saturating curve, 0.8 uncompressed: metric = 0.8 - 0.1 * sqrt(1e-4 / λ)
    def measure(lmbda):
        calls.append(lmbda)
        return 0.8 - 0.1 * math.sqrt(1e-4 / lmbda)

    calls = []
    cal = calibrate_grid(measure, 0.8, [0.0002, 0.0006, 0.002, 0.006])
    # low end: 2e-4 gives 0.729 (> 5 points below): kept; high end: 6e-3 gives 0.787 and
    # 0.024 gives 0.7935 (not within 0.5 points), 0.096 gives 0.7968: the grid ends there
    assert sorted(calls) == [0.0002, 0.006, 0.024, 0.096]
    assert cal.grid == [0.0002, 0.00157, 0.0123, 0.096]
    text = cal.text("MVMICNet")
    assert "λ grid [0.0002, " in text and "within 0.005" in text
    # a curve that never falls 5 points: the low end says so after max_steps widenings
    cal = calibrate_grid(lambda lm: 0.79, 0.8, [0.01, 0.1], max_steps=2)
    assert cal.grid[0] == 0.01 / 16 and "still < 0.05 below" in cal.reasons[0]


def test_bench_grid_runs_short_sweeps_and_reads_their_records(tmp_path):
    import math

    from mvmic.evaluation.calibration import bench_grid

    append_point(tmp_path / "results", "colondb", "uncompressed", {"bpp": 24.0, "miou": 0.8})
    config = tmp_path / "mvmicnet.yaml"
    config.write_text("trainer:\n  max_epochs: 8\n")

    class Runner:  # stands in for the bench's runner: each sweep writes its stage-1 point
        calls: list = []

        def mvmic(self, *args, done=None):
            a = list(args)
            lm, res = float(a[a.index("--lmbda") + 1]), a[a.index("--results_dir") + 1]
            self.calls.append(a)
            point = {"lmbda": lm, "bpp": lm, "miou": 0.8 - 0.1 * math.sqrt(1e-4 / lm)}
            append_point(res, "colondb", "MVMICNet stage 1", point)

    runner = Runner()
    grid = bench_grid(runner, config, "MVMICNet stage 1", [2e-4, 6e-3], "miou", tmp_path, "g")
    assert grid == [0.0002, 0.096] and len(runner.calls) == 4
    assert all(c[:2] == ["sweep", "--config"] and "--no_stage2" in c for c in runner.calls)
    assert runner.calls[0][-4:] == [
        "--trainer.max_epochs",
        "2",
        "--trainer.check_val_every_n_epoch",
        "2",
    ]
    assert "λ grid [0.0002, 0.096]" in (tmp_path / "calib" / "grids.txt").read_text()


def test_gan3d_part_judges_d4_against_h264_and_names_its_configs(bench, tmp_path):
    part = bench.PART_SETTINGS["gan3d"]
    assert part.config == "hvsmr_gan3d.yaml" and part.synth == "hvsmr" and part.channels == 1
    assert (Path(bench.REPO) / "configs" / part.config).is_file()
    for design in part.designs:
        assert part.overlay(design) == f"hvsmr_gan3d/{design.lower()}.yaml"
        config = Path(bench.REPO) / "configs" / part.overlay(design)
        assert config.is_file(), config
    store = tmp_path / "results"
    for q, (bpp, dice) in enumerate([(0.1, 0.7), (0.2, 0.8), (0.4, 0.85)]):
        append_point(store, "hvsmr", "h264", {"quality": q, "bpp": bpp, "dice": dice})
    append_point(store, "hvsmr", "liu2020-d1", {"lmbda": 0.0, "bpp": 8.0, "dice": 0.8})
    append_point(store, "hvsmr", "liu2020-d4", {"lmbda": 10.0, "bpp": 0.01, "dice": 0.795})
    goals = {g["goal"]: g for g in bench.summarize_gan(part, store, 0)["goals"]}
    h264 = goals["D4 needs ≤ 0.1× the bits of h264 at equal dice"]
    # H.264 needs 0.1·2^0.95 bpp for Dice 0.795 (log-rate interpolation): ratio 0.0518
    assert h264["met"] is True and h264["ratios"][0]["ratio"] == pytest.approx(0.01 / 0.19319, 1e-3)
    assert goals["D4 dice at least that of D1 (no compression) − 1 point"]["met"] is True


def test_gan_part_writes_each_design_composed_on_the_dataset_config(bench, isic_root, tmp_path):
    part = bench.PART_SETTINGS["gan"]
    assert part.config == "isic_gan.yaml" and part.overlay("D2") == "isic_gan/d2.yaml"
    path = bench.write_config(
        part.config, tmp_path / "configs" / "d2.yaml", overlays=[part.overlay("D2")],
        model={"encoder": "resnet18"}, data={"root": str(isic_root), "image_size": 32},
        max_steps=2, run_dir=tmp_path / "d2", group="bench-gan",
    )  # fmt: skip
    assert path.read_text().startswith("# isic_gan.yaml + isic_gan/d2.yaml for ")
    cfg = yaml.safe_load(path.read_text())
    args = cfg["model"]["init_args"]
    assert args["design"] == "D2" and args["encoder"] == "resnet18" and args["code_channels"] == 8
    assert cfg["trainer"]["default_root_dir"] == str(tmp_path / "d2")
    assert cfg["trainer"]["num_sanity_val_steps"] == 0  # no third validation pass
    assert cfg["data"]["init_args"]["root"] == str(isic_root)


def test_a_resumed_part_adds_its_time_to_the_earlier_runs(tmp_path):
    assert bench_module.part_wall(tmp_path, 12.5) == 12.5
    assert bench_module.part_wall(tmp_path, 2.0) == 14.5  # the resumed run skipped its done steps
    assert (tmp_path / "wall_s").read_text() == "14.5\n"


def test_gan_part_runs_d1_and_d2_side_by_side_and_d4_after_d2(bench, isic_root, tmp_path):
    part = bench.with_overrides(
        bench.PART_SETTINGS,
        ["gan.data.image_size=32", "gan.data.train_crop=16", "gan.side_by_side=true"],
    )["gan"]

    class Runner:  # records the plan instead of running it
        chains: list = []
        single: list = []

        def side_by_side(self, chains):
            self.chains = [[(args[0], done.parent.name) for args, done in c] for c in chains]

        def mvmic(self, *args, done=None):
            self.single.append(args[0])

    runner = Runner()
    bench_module.run_gan_part(part, runner, isic_root, tmp_path, 0.05)
    assert runner.chains == [
        [("fit", "d1"), ("test", "d1_test"), ("anchors", "anchors")],
        [("fit", "d2"), ("test", "d2_test"), ("fit", "d4"), ("test", "d4_test")],
    ]
    assert runner.single == ["curves"]


class PlanRunner:  # records the bench's plan instead of running it
    def __init__(self):
        self.chains, self.single = [], []

    def side_by_side(self, chains):
        self.chains = [[args for args, _ in c] for c in chains]

    def mvmic(self, *args, done=None):
        self.single.append(args)


def test_a_base_ladder_starts_each_lambda_of_both_sweeps_from_its_own_base(
    bench, colondb_root, tmp_path
):
    part = bench.with_overrides(
        bench.PART_SETTINGS,
        ["seg.data.image_size=64", "seg.data.train_crop=32", "seg.base_ladder=true",
         "seg.mse_lmbdas=[0.001,0.01,0.1]", "seg.lmbdas=[0.0002,0.002,0.02]"],
    )["seg"]  # fmt: skip
    bases = [tmp_path / "codec_base" / f"lmbda_d_{v}" / "checkpoints" / "last.ckpt"
             for v in ("0.001", "0.01", "0.1")]  # fmt: skip
    bases[2].parent.mkdir(parents=True)
    bases[2].write_bytes(b"")  # an interrupted base: it resumes from its last checkpoint
    runner = PlanRunner()
    bench_module.run_codec_part(part, runner, colondb_root, tmp_path, 0.05)
    # one base per MSE-grid λ, trained on the sweep's two lanes
    names = [[Path(args[2]).name for args in chain] for chain in runner.chains]
    assert names == [
        ["codec_base_lmbda_d_0.001.yaml", "codec_base_lmbda_d_0.1.yaml"],
        ["codec_base_lmbda_d_0.01.yaml"],
    ]
    assert runner.chains[0][1][3:] == ("--ckpt_path", str(bases[2]))
    assert len(runner.chains[0][0]) == len(runner.chains[1][0]) == 3  # fresh: no --ckpt_path
    for name, lmbda in zip(["0.001", "0.01", "0.1"], [0.001, 0.01, 0.1]):
        cfg = yaml.safe_load((tmp_path / "configs" / f"codec_base_lmbda_d_{name}.yaml").read_text())
        assert cfg["model"]["init_args"]["lmbda_d"] == lmbda
    sweeps = [a for a in runner.single if a[0] == "sweep"]
    assert [Path(a[2]).name for a in sweeps] == ["codec_mse.yaml", "mvmicnet.yaml"]
    for a in sweeps:
        i = a.index("--init_codec")
        assert list(a[i + 1 : i + 4]) == [str(b) for b in bases] and a[i + 4] == "--lmbda"


def test_one_shared_base_codec_without_a_ladder(bench, colondb_root, tmp_path):
    part = bench.with_overrides(
        bench.PART_SETTINGS,
        ["seg.data.image_size=64", "seg.data.train_crop=32", "seg.base_ladder=false"],
    )["seg"]  # fmt: skip
    runner = PlanRunner()
    bench_module.run_codec_part(part, runner, colondb_root, tmp_path, 0.05)
    fits = [Path(a[2]).name for a in runner.single if a[0] == "fit"]
    assert fits == ["task.yaml", "codec_base.yaml"] and runner.chains == []
    base = yaml.safe_load((tmp_path / "configs" / "codec_base.yaml").read_text())
    assert base["model"]["init_args"]["lmbda_d"] == part.base_lmbda
    mse = yaml.safe_load((tmp_path / "configs" / "codec_mse.yaml").read_text())
    assert mse["model"]["init_args"]["init_codec"] == str(
        tmp_path / "codec_base" / "checkpoints" / "last.ckpt"
    )
    assert not any("--init_codec" in a for a in runner.single if a[0] == "sweep")


@pytest.mark.parametrize(
    "bad, message",
    [
        ("seg.lmbdas=[0.002]", "both need as many points (lmbdas [0.002], mse_lmbdas"),
        ("seg.calibrate=true", "set seg.base_ladder=false with it"),
        ("seg.mse_lmbdas=[0.001,0.0010,0.01,0.1]", "a λ repeats; give each once"),
    ],
)
def test_a_base_ladder_that_cannot_pair_its_grids_fails_before_anything_runs(
    bench, tmp_path, capsys, bad, message
):
    # point i of MVMICNet's grid starts from base i, so the grids must be as long
    out = tmp_path / "out"
    args = ["--parts", "seg", "--out", str(out), "--set", "seg.base_ladder=true", "--set", bad]
    assert bench.main(args) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()

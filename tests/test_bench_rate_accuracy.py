"""The rate–accuracy benchmark's verdicts: bits at equal accuracy, BD-rate goals, stage 2 vs 1."""

from pathlib import Path

import pytest

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
    assert goals["stage 2 ≥ stage 1 in miou at every λ"]["met"] is False
    low = goals["stage 2 at its lowest rate within 1 point of uncompressed miou"]
    assert low["met"] is True  # 0.500 vs 0.505
    text = bench.format_summary(bench.SEG, summary)
    assert "| MVMICNet stage 2 | 0.0050 | 0.5000 | – |" in text
    assert "| stage 2 ≥ stage 1 in miou at every λ | **no** |" in text


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
    assert settings["seg"].stage1["lmbda_t"] == 1.0  # the rest of the mapping is kept
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

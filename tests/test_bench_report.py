"""The benchmark's report (mvmic.evaluation.bench_report): part sections, provenance, the page."""

from mvmic.evaluation.bench_report import (
    README_BEGIN,
    README_END,
    joined_summary,
    part_sections,
    readme_region,
    update_readme,
    with_provenance,
)

ORDER = ("seg", "det", "gan", "gan3d")
OLD = (
    "command: `python tools/bench_rate_accuracy.py --readme`  \nmachine: old box\n\n"
    "### seg: miou against bpp (bpp measured from real bitstreams)\n\n| a | 1 |\n\n"
    "wall time: 100 s\n"
    "\n### gan3d: dice against bpp (bpp measured from real bitstreams)\n\n| b | 2 |\n\n"
    "wall time: 40 s\n\ntotal wall time: 140 s (2.3 min)\n"
)


def test_a_partial_run_replaces_its_part_and_keeps_the_others_with_their_provenance(tmp_path):
    page = tmp_path / "benchmarks.md"
    page.write_text(f"# Results\n{README_BEGIN}\n{OLD}\n![x](bench/x.png)\n{README_END}\ntail\n")
    old = part_sections(readme_region(page))
    assert list(old) == ["seg", "gan3d"]
    # a section of a summary written before sections carried their command gets the summary's
    assert old["seg"] == (
        "### seg: miou against bpp (bpp measured from real bitstreams)\n\n"
        "command: `python tools/bench_rate_accuracy.py --readme`  \nmachine: old box\n\n"
        "| a | 1 |\n\nwall time: 100 s\n"
    )
    new = with_provenance(
        "### gan3d: dice against bpp (bpp measured from real bitstreams)\n\n| c | 3 |\n\n"
        "wall time: 55 s\n",
        "python tools/bench_rate_accuracy.py --parts gan3d --readme",
        "new box",
    )
    assert part_sections(new) == {"gan3d": new}  # its own command line is kept, not doubled
    text = joined_summary({**old, "gan3d": new}, ORDER)
    update_readme(page, text, None)
    region = readme_region(page)
    assert region.index("### seg") < region.index("### gan3d")
    assert "| b | 2 |" not in region and "| c | 3 |" in region and "| a | 1 |" in region
    assert "--parts gan3d --readme`  \nmachine: new box" in region
    assert region.endswith(
        "total wall time: 155 s (2.6 min; the sum of the parts' own, from 2 runs)\n\n"
    )
    assert page.read_text().endswith(f"{README_END}\ntail\n")
    # parsing the page again finds the same sections: a second partial run is the same splice
    assert part_sections(region) == {"seg": old["seg"], "gan3d": new}


def test_a_page_without_the_region_has_no_sections(tmp_path):
    page = tmp_path / "plain.md"
    page.write_text("no markers\n")
    assert readme_region(page) == "" and part_sections("") == {}
    one = with_provenance("### seg: m\n\nwall time: 5 s\n", "cmd", "box")
    assert joined_summary({"seg": one}, ORDER).endswith(
        "total wall time: 5 s (0.1 min; the sum of the parts' own)\n"
    )

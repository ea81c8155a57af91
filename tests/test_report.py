"""``mvmic report``: one self-contained HTML page, checked by parsing it (and in Chromium)."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from mvmic.evaluation.records import append_point


class _Page(HTMLParser):
    """Collects every <img> src, every table (by class) with its rows, and external links."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.external: list[str] = []
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a.get("src", ""))
        if tag in ("link", "script") or (tag == "a" and "href" in a):
            self.external.append(a.get("href") or a.get("src") or tag)
        if tag == "table":
            self._table = a.get("class", "")
            self.tables.setdefault(self._table, [])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._table is not None and self._row is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None


def _results(tmp_path: Path) -> Path:
    """A bench-shaped folder: <out>/seg/results/colondb/*.json and <out>/summary.json."""
    results = tmp_path / "bench" / "seg" / "results"
    curves = {
        "hevc": ([0.10, 0.20, 0.40, 0.80], [0.60, 0.70, 0.78, 0.84]),
        "MVMICNet stage 2": ([0.02, 0.04, 0.08, 0.16], [0.70, 0.78, 0.83, 0.86]),
    }
    for name, (rates, values) in curves.items():
        for i, (r, v) in enumerate(zip(rates, values)):
            key = {"quality": 40 - 5 * i} if name == "hevc" else {"lmbda": 0.001 * 2**i}
            point = {**key, "bpp": r, "miou": v, "psnr": 25 + 3 * i}
            append_point(results, "colondb", name, point)
    goals = [
        {"goal": "stage 2 needs ≤ 0.1× the bits of hevc at equal miou", "met": False, "why": "x"},
        {"goal": "stage 2 ≥ stage 1 in miou at every λ", "met": True, "why": "y"},
    ]
    summary = {"parts": {"seg": {"metric": "miou", "goals": goals}}}
    (tmp_path / "bench" / "summary.json").write_text(json.dumps(summary))
    return results


def test_report_is_one_self_contained_page(tmp_path):
    from mvmic.evaluation.plots import draw_curves
    from mvmic.evaluation.report import main

    results = _results(tmp_path)
    out = tmp_path / "report.html"
    assert main([str(results), "--out", str(out), "--no_panels"]) == 0
    page = _Page()
    page.feed(out.read_text(encoding="utf-8"))
    assert not page.external, page.external  # no stylesheet, script or link to fetch
    expected = draw_curves(results, tmp_path / "curves", envelope=True)
    assert len(page.images) == len(expected.pngs) >= 2
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    # every BD cell and every goal has its row (plus the header row)
    bd = page.tables["bd"]
    assert len(bd) == 1 + len(expected.cells)
    assert {(r[0], r[1]) for r in bd[1:]} == {(c.method, c.metric) for c in expected.cells}
    goals = page.tables["goals"]
    assert [r[2] for r in goals[1:]] == ["no", "met"] and goals[1][1] == "seg"
    points = page.tables["points"]  # one table per metric: header + 8 points each
    assert len(points) == 2 * (1 + 8)
    assert ["MVMICNet stage 2", "0.0200", "0.7000", "–"] in points


def test_report_names_a_missing_folder(tmp_path, capsys):
    from mvmic.cli import main

    assert main(["report", str(tmp_path / "nope"), "--no_panels"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0]


def _chromium() -> str | None:
    names = ("chromium", "chromium-browser", "google-chrome", "chrome", "headless_shell")
    return next((p for n in names if (p := shutil.which(n))), None)


@pytest.mark.skipif(_chromium() is None, reason="no headless Chromium installed")
def test_report_renders_in_headless_chromium(tmp_path):
    from mvmic.evaluation.report import build_report

    out = build_report(_results(tmp_path), tmp_path / "report.html", panels=False)
    shot = tmp_path / "shot.png"
    run = subprocess.run(
        [_chromium(), "--headless", "--disable-gpu", "--no-sandbox", f"--screenshot={shot}",
         "--window-size=1400,3000", out.resolve().as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert shot.is_file() and shot.stat().st_size > 10_000

"""The latency table (mvmic.evaluation.latency)."""

from __future__ import annotations

import math

import pytest
from helpers.images import synthetic_image as _image
from PIL import Image

from mvmic.evaluation import latency
from mvmic.evaluation.records import append_point

# --- latency ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "bps"),
    [("10Mbit", 1e7), ("10 Mbps", 1e7), ("100kbit/s", 1e5), ("1.5MB/s", 1.2e7), ("8b", 8)],
)
def test_parse_bandwidth(text, bps):
    assert latency.parse_bandwidth(text) == pytest.approx(bps)


def test_latency_table_is_bytes_over_bandwidth_plus_measured_times(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.fromarray(_image("rgb8")).save(images / f"{i}.png")
    root = tmp_path / "results"
    point = {
        "quality": 5,
        "bpp": 0.5,
        "bytes": 144.0,
        "pixels": 2304,
        "height": 48,
        "width": 48,
        "enc_ms": 2.0,
        "dec_ms": 1.0,
        "task_ms": 10.0,
    }
    append_point(root, "colondb", "jpeg", point)
    append_point(
        root,
        "colondb",
        "MVMICNet stage 2",
        {"lmbda": 0.01, "bpp": 0.25, "enc_ms": 5.0, "dec_ms": 4.0, "task_ms": 10.0},
    )
    rows, baselines = latency.latency_table(root, "10Mbit", images=str(images))
    jpeg = next(r for r in rows if r.method == "jpeg")
    assert jpeg.transfer_ms == pytest.approx(144 * 8 / 1e7 * 1e3)
    assert jpeg.total_ms == pytest.approx(2.0 + 1.0 + 10.0 + 0.1152)
    learned = next(r for r in rows if r.method == "MVMICNet stage 2")
    assert learned.bytes == pytest.approx(0.25 * 2304 / 8)  # from bpp × the records' pixels
    png = baselines["colondb"]["png"]
    assert png.task_ms == pytest.approx(10.0) and png.bytes > 144
    assert png.transfer_ms == pytest.approx(png.bytes * 8 / 1e7 * 1e3)
    values = latency.table_rows(rows, baselines)
    row = next(v for v in values if v[1] == "jpeg")
    assert row[11] == pytest.approx(png.total_ms / jpeg.total_ms)
    assert latency.main([str(root), "--bandwidth", "10Mbit", "--images", str(images)]) == 0
    md = (root / "latency" / "latency.md").read_text()
    assert "PNG (lossless)" in md and "JPEG q90" in md and "| jpeg | quality=5 |" in md
    assert not math.isnan(row[10])


def test_latency_rows_send_whole_files_and_show_the_payload_beside(tmp_path):
    root = tmp_path / "results"
    common = {"bpp": 0.5, "pixels": 2304, "enc_ms": 1.0, "dec_ms": 1.0, "task_ms": 1.0}
    append_point(
        root, "colondb", "jpeg", {"quality": 5, "bytes": 144.0, "file_bytes": 300.0, **common}
    )
    append_point(
        root,
        "colondb",
        "MVMICNet stage 2",
        {"lmbda": 0.01, "bytes": 144.0, "bpp_container": 0.75, **common},
    )
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(_image("rgb8")).save(images / "0.png")
    rows, baselines = latency.latency_table(root, "10Mbit", images=str(images))
    jpeg = next(r for r in rows if r.method == "jpeg")
    learned = next(r for r in rows if r.method == "MVMICNet stage 2")
    assert (jpeg.bytes, jpeg.payload) == (300.0, 144.0)
    assert jpeg.transfer_ms == pytest.approx(300 * 8 / 1e7 * 1e3)
    assert (learned.bytes, learned.payload) == (0.75 * 2304 / 8, 144.0)
    png = baselines["colondb"]["png"]
    assert png.bytes == png.payload  # a PNG upload is its own file
    values = latency.table_rows(rows, baselines)
    assert latency.HEADER[4:6] == ["bytes", "payload"]
    assert next(v for v in values if v[1] == "jpeg")[4:6] == [300.0, 144.0]

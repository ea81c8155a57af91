"""The results store (mvmic.evaluation.records)."""

from __future__ import annotations

from mvmic.evaluation.records import append_point, load_record, record_path


def test_append_point_replaces_same_lambda_and_keeps_lambda_t_apart(tmp_path):
    append_point(tmp_path, "ds", "m", {"lmbda": 0.01, "lmbda_t": 1.0, "bpp": 0.1})
    append_point(tmp_path, "ds", "m", {"lmbda": 0.01, "lmbda_t": 2.0, "bpp": 0.2})
    append_point(tmp_path, "ds", "m", {"lmbda": 0.01, "lmbda_t": 1.0, "bpp": 0.3})
    path = append_point(tmp_path, "ds", "m", {"quality": 5, "bpp": 0.4}, fields={"anchor": True})
    rec = load_record(path)
    assert rec["results"]["bpp"] == [0.3, 0.2, 0.4]
    assert rec["anchor"] is True
    assert path == record_path(tmp_path, "ds", "m")

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


def _append_many(results_dir: str, start: int) -> None:
    for i in range(start, start + 15):
        append_point(results_dir, "ds", "m", {"lmbda": float(i + 1), "bpp": 0.1})


def test_processes_appending_to_one_record_at_once_lose_no_point(tmp_path):
    """`mvmic sweep --jobs` tests several λ at once: each read-change-write holds the lock."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(tmp_path), k * 15)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    lmbdas = load_record(record_path(tmp_path, "ds", "m"))["results"]["lmbda"]
    assert sorted(lmbdas) == [float(i + 1) for i in range(60)]

"""Results store: one JSON file per method per dataset, in CompressAI's results shape.

A file ``<results_dir>/<dataset>/<method>.json`` holds::

    {"name": "MVMICNet stage 2", "description": "...",
     "results": {"bpp": [...], "psnr": [...], "ms-ssim": [...], "miou": [...], ...}}

Each list has one entry per operating point (one λ or one quality). Appending a point whose
key (the fields that identify it: ``lmbda``/``quality`` by default, or the key a module
declares) is already there replaces it, so re-running a test is idempotent.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

#: Fields that identify an operating point when the caller names no key: a new point replaces
#: an old one when every one of these that the new point has matches (λ_d and λ_t both, so a
#: λ_t sweep at fixed λ_d keeps its points apart).
POINT_KEYS = ("lmbda", "lmbda_t", "quality")


def record_path(results_dir: str | Path, dataset: str, method: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_.+" else "_" for c in method)
    return Path(results_dir) / dataset / f"{safe}.json"


def load_record(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}); delete or fix the file") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise ValueError(f"{path}: not a results record (needs a 'results' object)")
    # CompressAI's shape is one list per metric; a hand-written single point may use scalars.
    for key, value in data["results"].items():
        if isinstance(value, dict):
            raise ValueError(f"{path}: results.{key} is an object; expected a list of values")
        if not isinstance(value, list):
            data["results"][key] = [value]
    return data


def append_point(
    results_dir: str | Path,
    dataset: str,
    method: str,
    point: dict[str, Any],
    description: str = "",
    fields: dict[str, Any] | None = None,
    key: Sequence[str] | None = None,
) -> Path:
    """Add one operating point to ``method``'s record and return the file path.

    Args:
        results_dir: root of the results store.
        dataset: dataset name (a subfolder).
        method: method name (the record's ``name`` and, sanitised, the file stem).
        point: one operating point, ``{"bpp": …, "psnr": …, "lmbda": …}``.
        description: free text for the record.
        fields: extra top-level record fields, e.g. ``{"anchor": True, "data_root": "…"}``.
        key: the fields that identify the point (a module's ``POINT_KEY``); the point
            replaces the one whose key fields all equal its own. ``()``: the method has a
            single operating point (e.g. uncompressed), replaced each time. None: those of
            :data:`POINT_KEYS` the point has; a point with none of them is appended.
    """
    path = record_path(results_dir, dataset, method)
    with locked(path.parent):  # runs side by side (`mvmic sweep --jobs`) add to one record
        _append(path, method, point, description, fields, key)
    return path


def _append(
    path: Path,
    method: str,
    point: dict[str, Any],
    description: str,
    fields: dict[str, Any] | None,
    key: Sequence[str] | None,
) -> None:
    record = (
        load_record(path)
        if path.is_file()
        else {"name": method, "description": description, "results": {}}
    )
    results: dict[str, list] = record["results"]
    n = max((len(v) for v in results.values()), default=0)
    index = _matching_index(results, point, n, key)
    # Deterministic column order: existing columns, then new ones in the point's order.
    for name in [*results, *(k for k in point if k not in results)]:
        column = results.setdefault(name, [None] * n)
        if index == n:
            column.append(point.get(name))
        else:
            column[index] = point.get(name, column[index])
    if description:
        record["description"] = description
    record.update(fields or {})
    _write_json_atomic(path, record)


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on a folder of records (``.lock`` in it) while one process reads,
    changes and writes there; without ``fcntl`` (Windows) no lock is taken."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(folder / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _matching_index(
    results: dict[str, list], point: dict[str, Any], n: int, key: Sequence[str] | None
) -> int:
    if key is None:
        key = [k for k in POINT_KEYS if point.get(k) is not None]
        if not key:
            return n
    for i in range(n):
        if all(_same(results.get(k), i, point.get(k)) for k in key):
            return i
    return n


def _same(column: list | None, i: int, value: Any) -> bool:
    stored = column[i] if column is not None and i < len(column) else None
    if stored is None or value is None:
        return stored is None and value is None
    try:
        return math.isclose(float(stored), float(value))
    except (TypeError, ValueError):
        return stored == value


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    # Write then rename, so a killed run never leaves half a JSON file behind.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(_dumps(data))
    os.replace(tmp, path)


def _dumps(data: dict[str, Any]) -> str:
    """Indented JSON, except each point's per-image statistics: one compact line per point
    (indented, 100 images' confusion counts would take a thousand lines)."""
    results = data.get("results") or {}
    stats = results.get("per_image")
    if not stats:
        return json.dumps(data, indent=2)
    marker = "__mvmic_per_image__"
    text = json.dumps({**data, "results": {**results, "per_image": marker}}, indent=2)
    lines = ",\n".join("      " + json.dumps(s, separators=(",", ":")) for s in stats)
    return text.replace(f'"{marker}"', "[\n" + lines + "\n    ]", 1)


#: Method-name prefixes that mark an anchor (standard codecs and λ_t = 0 learned codecs); a
#: record can also say so itself with ``"anchor": true``.
ANCHOR_PREFIXES = (
    "jpeg",
    "jpeg2000",
    "webp",
    "avif",
    "hevc",
    "bpg",
    "h264",
    "mbt2018",
    "cheng2020",
    "bmshj2018",
)


def is_anchor(record: dict[str, Any]) -> bool:
    """Whether a record is an anchor (drawn dashed; a candidate reference for BD-rate)."""
    if "anchor" in record:
        return bool(record["anchor"])
    return str(record.get("name", "")).lower().startswith(ANCHOR_PREFIXES)


def iter_records(
    results_dir: str | Path, skip: tuple[str | Path, ...] = ()
) -> list[tuple[str, Path, dict[str, Any]]]:
    """Every record under ``results_dir`` (recursively) as ``(dataset, path, record)``.

    The dataset is the record file's folder name. JSON files that are not results records
    (no ``results`` object) are skipped with a note on stderr; files under ``skip`` folders too.

    Raises:
        FileNotFoundError: ``results_dir`` does not exist.
    """
    import sys

    root = Path(results_dir)
    if not root.is_dir():
        raise FileNotFoundError(
            f"results folder {root} not found; run `mvmic test …` or `mvmic anchors …` first"
        )
    skipped = [Path(p).resolve() for p in skip]
    out = []
    for path in sorted(root.rglob("*.json")):
        rp = path.resolve()
        if any(rp.is_relative_to(s) for s in skipped):
            continue
        try:
            record = load_record(path)
        except ValueError as err:
            print(f"skipping {path}: {err}", file=sys.stderr)
            continue
        out.append((path.parent.name, path, record))
    return out


def record_points(
    record: dict[str, Any], metric: str, rate_key: str = "bpp"
) -> tuple[list[float], list[float]]:
    """The ``(rates, values)`` of a record for ``metric``, sorted by rate.

    Points where the rate or the metric is missing/not finite are dropped.
    """
    results = record["results"]
    rates, values = results.get(rate_key) or [], results.get(metric) or []
    pairs = []
    for r, v in zip(rates, values):
        try:
            r, v = float(r), float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(r) and math.isfinite(v) and r > 0:
            pairs.append((r, v))
    pairs.sort()
    return [p[0] for p in pairs], [p[1] for p in pairs]

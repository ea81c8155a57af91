"""``mvmic latency``: service latency per method, as in Liu et al. (MICCAI 2020) Table 2.

For every operating point of every record under ``RESULTS_DIR``::

    total = encode + transfer + decode + task,   transfer = bytes · 8 / bandwidth

with encode/decode/task times **measured** when the point was made (``enc_ms``, ``dec_ms``,
``task_ms`` per image: ``mvmic test`` for learned codecs, ``mvmic anchors`` for standard
codecs), and the speed-up against two baselines measured here on real images: lossless PNG
upload and JPEG upload (Pillow, quality ``--jpeg_quality``). The baselines' task time is the
mean ``task_ms`` of the dataset's records (the same task network on the same image size).

Baseline images: ``--images`` (a folder or glob), else the ``data_root`` a record stores
(``mvmic anchors`` writes it; ``<data_root>/images`` if that exists). They are resized to the
records' ``height``×``width`` when the records give it, so every row codes the same pixels.
"""

from __future__ import annotations

import argparse
import csv
import glob
import io
import re
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from mvmic.evaluation.records import iter_records
from mvmic.io import IMAGE_SUFFIXES

_UNITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}


def parse_bandwidth(text: str) -> float:
    """``"10Mbit"``, ``"10 Mbps"``, ``"100kbit/s"``, ``"1.5MB/s"`` -> bits per second (SI)."""
    m = re.fullmatch(
        r"\s*([0-9]*\.?[0-9]+(?:e[-+]?\d+)?)\s*([kKmMgG]?)(bit|bps|b|B)(?:/s|ps)?\s*", text
    )
    if not m:
        raise ValueError(f"bandwidth {text!r} not understood; write e.g. 10Mbit, 100kbit, 1.5MB/s")
    value, prefix, unit = float(m.group(1)), m.group(2).lower(), m.group(3)
    bits = value * _UNITS[prefix] * (8 if unit == "B" else 1)
    if bits <= 0:
        raise ValueError(f"bandwidth must be positive, got {text!r}")
    return bits


@dataclass
class Row:
    """One line of the latency table (times in milliseconds per image)."""

    dataset: str
    method: str
    point: str
    bpp: float | None
    #: bytes sent (the whole file); ``payload``: the coded data inside it
    bytes: float | None
    payload: float | None
    enc_ms: float | None
    transfer_ms: float | None
    dec_ms: float | None
    task_ms: float | None

    @property
    def total_ms(self) -> float | None:
        parts = (self.enc_ms, self.transfer_ms, self.dec_ms, self.task_ms)
        return None if any(p is None for p in parts) else sum(parts)


def transfer_ms(nbytes: float, bandwidth_bps: float) -> float:
    return 1e3 * 8.0 * nbytes / bandwidth_bps


def _finite(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if value == value and abs(value) != float("inf") else None


def record_rows(
    dataset: str,
    record: dict,
    bandwidth_bps: float,
    default_pixels: float | None = None,
) -> list[Row]:
    """Rows for every point of one record.

    ``bytes`` is what would really be sent: the whole file (``file_bytes``: the ``.mvmic``
    container, or the standard codec's file), else ``bpp_container × pixels / 8``; records of
    older versions without either fall back to the payload. ``payload`` is shown beside it.
    """
    res = record["results"]
    n = max((len(v) for v in res.values()), default=0)

    def col(key: str, i: int) -> float | None:
        values = res.get(key) or []
        return _finite(values[i]) if i < len(values) else None

    rows = []
    for i in range(n):
        bpp = col("bpp", i)
        pixels = col("pixels", i) or default_pixels
        payload = col("bytes", i)
        if payload is None and bpp is not None and pixels:
            payload = bpp * pixels / 8.0
        nbytes = col("file_bytes", i)
        if nbytes is None and col("bpp_container", i) is not None and pixels:
            nbytes = col("bpp_container", i) * pixels / 8.0
        if nbytes is None:
            nbytes = payload
        key = next(
            (
                f"{k}={col(k, i):g}"
                for k in ("quality", "lmbda", "lmbda_t")
                if col(k, i) is not None
            ),
            f"#{i}",
        )
        rows.append(
            Row(
                dataset,
                str(record.get("name")),
                key,
                bpp,
                nbytes,
                payload,
                col("enc_ms", i),
                None if nbytes is None else transfer_ms(nbytes, bandwidth_bps),
                col("dec_ms", i),
                col("task_ms", i),
            )
        )
    return rows


def find_images(spec: str | Path, limit: int = 32) -> list[Path]:
    """Image files from a folder (``images/`` inside it if present) or a glob pattern."""
    spec = str(spec)
    if any(c in spec for c in "*?["):
        files = [Path(p) for p in sorted(glob.glob(spec, recursive=True))]
    else:
        folder = Path(spec)
        if not folder.exists():
            raise FileNotFoundError(f"images folder {folder} not found; pass --images DIR|GLOB")
        if (folder / "images").is_dir():
            folder = folder / "images"
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    files = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES][:limit]
    if not files:
        raise FileNotFoundError(f"no images found at {spec}; pass --images DIR|GLOB")
    return files


def measure_baselines(
    images: Sequence[Path],
    size: tuple[int, int] | None = None,
    jpeg_quality: int = 90,
    repeats: int = 3,
) -> dict[str, dict[str, float]]:
    """Measured PNG (lossless) and JPEG upload costs per image: bytes, enc_ms, dec_ms.

    Each image is loaded (and resized to ``size`` = (H, W) if given) once; encode and decode
    are timed ``repeats`` times and the median is kept, then averaged over images.
    """
    stats: dict[str, dict[str, list[float]]] = {
        "png": {"bytes": [], "enc_ms": [], "dec_ms": [], "pixels": []},
        "jpeg": {"bytes": [], "enc_ms": [], "dec_ms": [], "pixels": []},
    }
    for path in images:
        with Image.open(path) as im:
            im = im.convert("RGB" if im.mode not in ("L", "I;16") else im.mode)
        if size is not None and (im.height, im.width) != tuple(size):
            im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        for name, kwargs in (("png", {}), ("jpeg", {"quality": jpeg_quality})):
            if name == "jpeg" and im.mode == "I;16":
                im8 = im.point(lambda v: v / 257).convert("L")
            else:
                im8 = im
            enc, dec = [], []
            for _ in range(repeats):
                buf = io.BytesIO()
                t0 = time.perf_counter()
                im8.save(buf, name.upper(), **kwargs)
                t1 = time.perf_counter()
                data = buf.getvalue()
                with Image.open(io.BytesIO(data)) as out:
                    out.load()
                t2 = time.perf_counter()
                enc.append(1e3 * (t1 - t0))
                dec.append(1e3 * (t2 - t1))
            s = stats[name]
            s["bytes"].append(len(data))
            s["enc_ms"].append(statistics.median(enc))
            s["dec_ms"].append(statistics.median(dec))
            s["pixels"].append(im.width * im.height)
    return {k: {m: statistics.fmean(v) for m, v in s.items()} for k, s in stats.items()}


def latency_table(
    results_dir: str | Path,
    bandwidth: str,
    images: str | None = None,
    jpeg_quality: int = 90,
    max_images: int = 32,
) -> tuple[list[Row], dict[str, dict[str, Row]]]:
    """Rows for every record point plus measured PNG/JPEG baseline rows per dataset."""
    bw = parse_bandwidth(bandwidth)
    by_dataset: dict[str, list[dict]] = {}
    for dataset, _path, record in iter_records(results_dir):
        by_dataset.setdefault(dataset, []).append(record)
    if not by_dataset:
        raise FileNotFoundError(f"no results records under {results_dir}")
    rows: list[Row] = []
    baselines: dict[str, dict[str, Row]] = {}
    for dataset, records in sorted(by_dataset.items()):
        heights = _column_values(records, "height")
        widths = _column_values(records, "width")
        size = (
            (round(statistics.fmean(heights)), round(statistics.fmean(widths)))
            if (heights and widths)
            else None
        )
        spec = images or next((r.get("data_root") for r in records if r.get("data_root")), None)
        base = None
        if spec:
            base = measure_baselines(find_images(spec, max_images), size, jpeg_quality)
        else:
            print(
                f"{dataset}: no --images and no data_root in the records: no PNG/JPEG baseline",
                file=sys.stderr,
            )
        pixels = base["png"]["pixels"] if base else None
        pix_col = _column_values(records, "pixels")
        default_pixels = statistics.fmean(pix_col) if pix_col else pixels
        for record in sorted(records, key=lambda r: str(r.get("name"))):
            rows += record_rows(dataset, record, bw, default_pixels)
        if base:
            task_times = [r.task_ms for r in rows if r.dataset == dataset and r.task_ms is not None]
            task = statistics.fmean(task_times) if task_times else None
            baselines[dataset] = {
                name: Row(
                    dataset,
                    "PNG (lossless)" if name == "png" else f"JPEG q{jpeg_quality}",
                    "baseline",
                    8.0 * b["bytes"] / b["pixels"],
                    b["bytes"],
                    b["bytes"],
                    b["enc_ms"],
                    transfer_ms(b["bytes"], bw),
                    b["dec_ms"],
                    task,
                )
                for name, b in base.items()
            }
    return rows, baselines


def _column_values(records: Sequence[dict], key: str) -> list[float]:
    out = []
    for r in records:
        out += [v for v in map(_finite, r["results"].get(key) or []) if v is not None]
        if _finite(r.get(key)) is not None:
            out.append(_finite(r.get(key)))
    return out


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _speedup(base: Row | None, row: Row) -> float | None:
    if base is None or base.total_ms is None or row.total_ms is None or row.total_ms <= 0:
        return None
    return base.total_ms / row.total_ms


HEADER = [
    "dataset",
    "method",
    "point",
    "bpp",
    "bytes",
    "payload",
    "enc_ms",
    "transfer_ms",
    "dec_ms",
    "task_ms",
    "total_ms",
    "speedup_vs_png",
    "speedup_vs_jpeg",
]


def table_rows(rows: Sequence[Row], baselines: dict[str, dict[str, Row]]) -> list[list]:
    """Rows as lists of values in :data:`HEADER` order (baselines first per dataset)."""
    out = []
    for dataset in dict.fromkeys([*baselines, *(r.dataset for r in rows)]):
        base = baselines.get(dataset, {})
        ds_rows = list(base.values()) + [r for r in rows if r.dataset == dataset]
        for r in ds_rows:
            out.append(
                [
                    r.dataset,
                    r.method,
                    r.point,
                    r.bpp,
                    r.bytes,
                    r.payload,
                    r.enc_ms,
                    r.transfer_ms,
                    r.dec_ms,
                    r.task_ms,
                    r.total_ms,
                    _speedup(base.get("png"), r),
                    _speedup(base.get("jpeg"), r),
                ]
            )
    return out


def format_markdown(values: Sequence[list], bandwidth: str) -> str:
    lines = [
        f"Service latency per image at {bandwidth} (ms; bytes = the whole file sent, payload "
        "= its coded data; transfer = bytes·8/bandwidth; enc/dec/task measured)\n",
        "| " + " | ".join(HEADER[1:]) + " |",
        "|" + "---|" * (len(HEADER) - 1),
    ]
    for v in values:
        cells = [v[1], v[2], _fmt(v[3], 3), _fmt(v[4], 0), _fmt(v[5], 0)]
        cells += [_fmt(x) for x in v[6:11]]
        cells += ["n/a" if x is None else f"{x:.2f}×" for x in v[11:13]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mvmic latency",
        description="encode + transfer + decode + task time per method (Liu et al. Table 2)",
    )
    p.add_argument("results_dir", type=Path)
    p.add_argument("--bandwidth", default="10Mbit", help="link speed, e.g. 10Mbit, 1.5MB/s")
    p.add_argument("--images", default=None, help="baseline images: folder or glob")
    p.add_argument("--jpeg_quality", type=int, default=90)
    p.add_argument("--max_images", type=int, default=32)
    p.add_argument("--out", type=Path, default=None, help="default RESULTS_DIR/latency")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``mvmic latency``: see :func:`build_parser`."""
    args = build_parser().parse_args(argv)
    try:
        rows, baselines = latency_table(
            args.results_dir, args.bandwidth, args.images, args.jpeg_quality, args.max_images
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"mvmic latency: {err}", file=sys.stderr)
        return 2
    values = table_rows(rows, baselines)
    md = format_markdown(values, args.bandwidth)
    out = args.out or args.results_dir / "latency"
    out.mkdir(parents=True, exist_ok=True)
    (out / "latency.md").write_text(md)
    with open(out / "latency.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        w.writerows([["" if x is None else x for x in v] for v in values])
    print(md)
    print(f"wrote {out / 'latency.md'}\nwrote {out / 'latency.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark `mvmic serve` end to end: a real server process on 127.0.0.1, real HTTP.

    python tools/bench_service.py --ckpt runs/demo/demo_stage2/checkpoints/best.ckpt \
        [--size 256] [--requests 200] [--concurrency 1,4,16] [--workers 1,2] \
        [--images 20] [--bandwidth 10Mbit] [--bad 1000] [--out service.json]

Four parts, each printed as a Markdown table:

1. **Latency and throughput**: ``--requests`` valid ``.mvmic`` requests at each concurrency,
   for each worker count (a fresh server each); p50/p95/p99 of the client's wall time per
   request, requests per second, errors (goal: 0).
2. **Liu et al.'s Table 2, measured**: per image, encode here + upload paced at
   ``--bandwidth`` + the server's decode + task, against uploading a lossless PNG and a JPEG
   (quality 90) of the same image to the same server, which decodes it and runs the same
   task network on it; the speed-up is the ratio of totals from the same run.
3. **Bad bodies under load**: ``--bad`` damaged/crafted bodies (``tools/fuzz_bitstream.py``'s
   mutations plus foreign, oversized and other-model files) while a second client measures
   valid requests; goal: 0 server crashes, 0 5xx, every damaged body a 4xx (a crafted body
   with a valid checksum may decode to garbage: 200 or 4xx).
4. **Memory**: the server's resident memory (all its processes) after warm-up and at the end.

Without ``--ckpt`` the demo's architecture (MVMICNet, mbt2018-mean N=64 M=96, ResNet-18
U-Net, RGB) is built untrained: timings are the same, masks meaningless. Images are the
synthetic CVC-ColonDB twin at ``--size``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from mvmic.serve.process import ServerProcess  # noqa: E402 - after the path set-up


class Server(ServerProcess):
    """``mvmic serve --workers N``, ready when every worker answers (a few 200s in a row each)."""

    def __init__(self, ckpt: Path, workers: int, log: Path, ready_s: float = 600) -> None:
        super().__init__(ckpt, "--workers", str(workers), log=log, ready_s=ready_s,
                         healthy=3 * workers)  # fmt: skip

    def rss_mb(self) -> float:
        """Resident memory of the server and all its processes (psutil, else Linux /proc)."""
        try:
            import psutil
        except ImportError:
            return _proc_rss(self.proc.pid) / 2**20
        procs = [psutil.Process(self.proc.pid)]
        procs += procs[0].children(recursive=True)
        return sum(p.memory_info().rss for p in procs if p.is_running()) / 2**20


def _proc_rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = next(
        int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS")
    )
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return rss + sum(_proc_rss(int(c)) for c in children)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def load(client, bodies: list[bytes], n: int, concurrency: int) -> dict:  # noqa: ANN001
    """``n`` valid requests from ``concurrency`` threads: latency percentiles, throughput."""
    from mvmic.serve.api import PNG

    lock, counter = threading.Lock(), iter(range(n))
    lat: list[float] = []
    errors = Counter()

    def worker() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            t0 = time.perf_counter()
            try:
                answer = client.infer(bodies[i % len(bodies)], PNG)
                status = answer.status
            except Exception as err:  # noqa: BLE001 - counted, not raised
                status = type(err).__name__
            ms = 1e3 * (time.perf_counter() - t0)
            with lock:
                if status == 200:
                    lat.append(ms)
                else:
                    errors[str(status)] += 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {
        "n": n,
        "concurrency": concurrency,
        "p50_ms": pct(lat, 50),
        "p95_ms": pct(lat, 95),
        "p99_ms": pct(lat, 99),
        "req_per_s": len(lat) / wall,
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
    }


def table2(url: str, ckpt_model, images: list[Path], bps: float) -> list[dict]:  # noqa: ANN001
    """Encode + paced upload + decode + task per image, for .mvmic, PNG and JPEG (q 90)."""
    import torch
    from PIL import Image

    from mvmic.coding import encode
    from mvmic.io import read_image
    from mvmic.serve.api import JPEG, MVMIC, PNG
    from mvmic.serve.client import Client

    rows: dict[str, list[dict]] = {"mvmic": [], "png": [], "jpeg": []}
    with Client(url, bandwidth=bps) as client:
        for path in images:
            x, bits, _ = read_image(path)
            t0 = time.perf_counter()
            data = encode(torch.from_numpy(x), ckpt_model, bits).to_bytes()
            enc = {"mvmic": (data, 1e3 * (time.perf_counter() - t0), MVMIC)}
            pixels = np.asarray(Image.open(path).convert("RGB"))
            for name, fmt, media, kw in (("png", "PNG", PNG, {}),
                                         ("jpeg", "JPEG", JPEG, {"quality": 90})):  # fmt: skip
                t0 = time.perf_counter()
                buf = io.BytesIO()
                Image.fromarray(pixels).save(buf, format=fmt, **kw)
                enc[name] = (buf.getvalue(), 1e3 * (time.perf_counter() - t0), media)
            for name, (body, enc_ms, media) in enc.items():
                answer = client.infer(body, PNG, content_type=media)
                if not answer.ok:
                    raise RuntimeError(f"{name} upload refused: {answer.refusal()}")
                t = answer.timing
                rows[name].append(
                    {
                        "bytes": len(body),
                        "encode_ms": enc_ms,
                        "transfer_ms": answer.upload_ms,
                        "decode_ms": t["decode"],
                        "task_ms": t["task"],
                        # the rest of the exchange: headers, the answer, Python on both sides
                        "other_ms": answer.total_ms - answer.upload_ms - t["decode"] - t["task"],
                        "total_ms": enc_ms + answer.total_ms,
                    }
                )
    out = []
    base = np.mean([r["total_ms"] for r in rows["mvmic"]])
    for name, rs in rows.items():
        mean = {k: float(np.mean([r[k] for r in rs])) for k in rs[0]}
        mean.update(method=name, n=len(rs), speedup_of_mvmic=mean["total_ms"] / base)
        out.append(mean)
    return out


def bad_bodies(valid: list[bytes], n: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """``n`` bodies: fuzz_bitstream mutations (damage, crafted) plus hand-made refusals."""
    from fuzz_bitstream import mutate

    from mvmic.codecs.bitstream import Bitstream

    rng = random.Random(seed)
    bs = Bitstream.from_bytes(valid[0])
    specials = [
        ("foreign", b"GIF89a" + rng.randbytes(200)),
        ("empty", b""),
        (
            "other-model",
            Bitstream(
                bs.codec, b"\x01\x02\x03\x04", bs.height, bs.width, bs.channels, 8, bs.frames
            ).to_bytes(),
        ),  # fmt: skip
        (
            "budget",
            Bitstream(bs.codec, bs.model_hash, 65535, 65535, bs.channels, 8, bs.frames).to_bytes(),
        ),  # fmt: skip
    ]
    out = []
    while len(out) < n:
        if len(out) % 50 < len(specials):
            out.append(specials[len(out) % 50])
            continue
        family, _, data = mutate(rng.choice(valid), rng, "all")
        if data not in valid:
            out.append((family, data))
    return out


def fuzz_under_load(url: str, valid: list[bytes], bodies: list[tuple[str, bytes]]) -> dict:
    """Send the bad bodies while another client times valid requests."""
    import httpx

    from mvmic.serve.api import PNG
    from mvmic.serve.client import Client

    stop = threading.Event()
    lat: list[float] = []
    valid_errors = Counter()

    def measure() -> None:
        with Client(url) as client:
            i = 0
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    status = client.infer(valid[i % len(valid)], PNG).status
                except Exception as err:  # noqa: BLE001 - counted
                    status = type(err).__name__
                if status == 200:
                    lat.append(1e3 * (time.perf_counter() - t0))
                else:
                    valid_errors[str(status)] += 1
                i += 1

    thread = threading.Thread(target=measure)
    thread.start()
    by_family: dict[str, Counter] = {}
    t0 = time.perf_counter()
    with httpx.Client(base_url=url, timeout=120) as client:
        for family, body in bodies:
            try:
                r = client.post("/v1/infer", content=body)
                cls = f"{r.status_code // 100}xx"
            except httpx.TransportError as err:
                cls = type(err).__name__
            by_family.setdefault(family, Counter())[cls] += 1
    elapsed = time.perf_counter() - t0
    stop.set()
    thread.join()
    return {
        "bad": len(bodies),
        "seconds": elapsed,
        "by_family": {k: dict(v) for k, v in by_family.items()},
        "valid_n": len(lat),
        "valid_p50_ms": pct(lat, 50),
        "valid_p99_ms": pct(lat, 99),
        "valid_errors": dict(valid_errors),
    }


def build_demo_checkpoint(path: Path) -> Path:
    import torch

    from mvmic.modules import MVMICNet

    torch.manual_seed(0)
    model = MVMICNet(task="segmentation", arch="Unet", encoder="resnet18", num_classes=2,
                     in_channels=3, codec="mbt2018-mean", N=64, M=96)  # fmt: skip
    ckpt = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    model.on_save_checkpoint(ckpt)
    torch.save(ckpt, path)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", type=Path, help="default: the demo architecture, untrained")
    p.add_argument("--size", type=int, default=256, help="image side (synthetic ColonDB twin)")
    p.add_argument("--requests", type=int, default=200, help="valid requests per concurrency")
    p.add_argument("--concurrency", default="1,4,16")
    p.add_argument("--workers", default="1,2")
    p.add_argument("--images", type=int, default=20, help="images for Table 2")
    p.add_argument("--bandwidth", default="10Mbit", help="link(s) for Table 2, e.g. 10Mbit,1Mbit")
    p.add_argument("--bad", type=int, default=1000, help="damaged/crafted bodies")
    p.add_argument("--out", type=Path, help="write every number as JSON here too")
    args = p.parse_args(argv)

    from mvmic.evaluation.latency import parse_bandwidth
    from mvmic.modules import load_module
    from mvmic.serve.client import Client

    links = [(b.strip(), parse_bandwidth(b)) for b in args.bandwidth.split(",")]
    conc = [int(c) for c in args.concurrency.split(",")]
    workers = [int(w) for w in args.workers.split(",")]
    results: dict = {"argv": sys.argv[1:], "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        tmp = Path(tmp)
        ckpt = args.ckpt or build_demo_checkpoint(tmp / "demo_untrained.ckpt")
        if not ckpt.is_file():
            print(f"bench_service: error: {ckpt} does not exist", file=sys.stderr)
            return 2
        from data_modules.synthetic import generate

        root = generate("colondb", tmp / "colondb", num=max(args.images, 8), size=args.size)
        images = sorted((root / "images").glob("*.png"))[: args.images]
        model = load_module(ckpt)
        model.codec.update()
        from mvmic import compress

        valid = [compress(p, model) for p in images[:8]]
        results["bytes_per_request"] = float(np.mean([len(v) for v in valid]))
        log = tmp / "server.log"

        results["load"] = []
        for w in workers:
            srv = Server(ckpt, w, log)
            try:
                with Client(srv.url) as client:
                    load(client, valid, 10, 1)  # warm-up
                    rss0 = srv.rss_mb()
                    for c in conc:
                        row = load(client, valid, args.requests, c)
                        row.update(workers=w)
                        results["load"].append(row)
                        print(f"workers {w} concurrency {c}: {row}", file=sys.stderr)
                if w == workers[0]:
                    results["table2"] = [
                        {"bandwidth": name, "rows": table2(srv.url, model, images, bps)}
                        for name, bps in links
                    ]
                    bodies = bad_bodies(valid, args.bad)
                    results["fuzz"] = fuzz_under_load(srv.url, valid, bodies)
                    results["fuzz"]["server_alive"] = srv.alive()
                results.setdefault("memory", []).append(
                    {"workers": w, "after_warmup_mb": rss0, "at_end_mb": srv.rss_mb()}
                )
            finally:
                srv.stop()
    print(report(results, args))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    fuzz = results["fuzz"]["by_family"]
    five = sum(c.get("5xx", 0) for c in fuzz.values())
    damage_ok = all(k == "4xx" for k in fuzz.get("damage", {}))
    errors = sum(r["errors"] for r in results["load"])
    return 0 if not five and damage_ok and not errors and results["fuzz"]["server_alive"] else 1


def report(r: dict, args: argparse.Namespace) -> str:
    lines = [
        f"bench_service {' '.join(r['argv'])} ({r['cpus']} CPUs; "
        f"{r['bytes_per_request']:.0f} bytes per .mvmic at {args.size}x{args.size})",
        "",
        "| workers | concurrency | requests | p50 ms | p95 ms | p99 ms | req/s | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for x in r["load"]:
        lines.append(
            f"| {x['workers']} | {x['concurrency']} | {x['n']} | {x['p50_ms']:.1f} | "
            f"{x['p95_ms']:.1f} | {x['p99_ms']:.1f} | {x['req_per_s']:.2f} | {x['errors']} |"
        )
    for t in r["table2"]:
        lines += [
            "",
            f"Table 2, measured: per image (mean of {t['rows'][0]['n']}), upload paced at "
            f"{t['bandwidth']}",
            "",
            "| upload | bytes | encode ms | transfer ms | decode ms | task ms | other ms "
            "| total ms | total / mvmic |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for x in t["rows"]:
            lines.append(
                f"| {x['method']} | {x['bytes']:.0f} | {x['encode_ms']:.1f} "
                f"| {x['transfer_ms']:.1f} | {x['decode_ms']:.1f} | {x['task_ms']:.1f} "
                f"| {x['other_ms']:.1f} | {x['total_ms']:.1f} | {x['speedup_of_mvmic']:.2f} |"
            )
    f = r["fuzz"]
    lines += [
        "",
        f"Bad bodies: {f['bad']} in {f['seconds']:.1f} s, server alive at the end: "
        f"{f['server_alive']}",
        "",
        "| family | n | 2xx | 4xx | 5xx | other |",
        "|---|---|---|---|---|---|",
    ]
    for fam, c in sorted(f["by_family"].items()):
        other = sum(v for k, v in c.items() if k not in ("2xx", "4xx", "5xx"))
        lines.append(
            f"| {fam} | {sum(c.values())} | {c.get('2xx', 0)} | {c.get('4xx', 0)} | "
            f"{c.get('5xx', 0)} | {other} |"
        )
    lines += [
        "",
        f"Valid requests meanwhile: {f['valid_n']}, p50 {f['valid_p50_ms']:.1f} ms, "
        f"p99 {f['valid_p99_ms']:.1f} ms, errors {sum(f['valid_errors'].values())}",
        "",
        "| workers | RSS after warm-up MB | RSS at end MB |",
        "|---|---|---|",
    ]
    for m in r["memory"]:
        lines.append(f"| {m['workers']} | {m['after_warmup_mb']:.0f} | {m['at_end_mb']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

"""Fuzz the .mvmic decoder: random damage must give BitstreamError, never a crash or a hang.

    python tools/fuzz_bitstream.py --n 10000 --family damage
    python tools/fuzz_bitstream.py --n 2000 --family crafted
    python tools/fuzz_bitstream.py --n 2000 --codec liu2020-binary-3d
    python tools/fuzz_bitstream.py --n 2000 --ckpt runs/isic_gan_d4/checkpoints/last.ckpt \
        [--bitstream scan.mvmic ...]

Every mutated file is decoded in a worker process behind a watchdog, so a crash (the worker
dies, e.g. a segfault in the C++ entropy decoder) or a hang (no answer within --timeout s) is
counted rather than taking the fuzzer down. Two families:

* ``damage``: bit flips, truncations, insertions, deletions, byte overwrites of a valid file.
  Goal: every one → BitstreamError.
* ``crafted``: payload bytes replaced and the CRC recomputed (what an attacker, not a noisy
  channel, makes). The container cannot tell these from valid files, so they may decode to
  garbage ("decoded"); goal: no crash, no hang, no other exception.

The decoder is a small seeded codec (``--codec``: any hyperprior codec, ``liu2020-binary`` in
2D or ``liu2020-binary-3d``) or the codec of an mvmic checkpoint (``--ckpt``: MVMICNet or
GanSegmentation, 2D or 3D). The files mutated are valid files of that codec: ``--bitstream``
files (made by ``mvmic compress`` with the same checkpoint), else ones made here from random
images (or volumes).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import struct
import sys
import time
import zlib
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CODECS = ["bmshj2018-hyperprior", "mbt2018-mean", "cheng2020-anchor", "liu2020-binary"]
CODECS.append("liu2020-binary-3d")


def build_codec(spec: tuple[str, str] = ("codec", "bmshj2018-hyperprior")):
    """The decoder under test: ``("codec", name)`` (seeded, tiny) or ``("ckpt", path)``."""
    import torch

    kind, value = spec
    if kind == "ckpt":
        from mvmic.coding import resolve_model
        from mvmic.modules import load_module

        codec, _ = resolve_model(load_module(value))
        codec.eval().update()  # the checkpoint's own tables: what its files were hashed with
        return codec
    from mvmic.codecs import HyperpriorCodec
    from mvmic.codecs.binary import BinaryCodec

    torch.manual_seed(0)
    if value == "liu2020-binary":
        codec = BinaryCodec(in_channels=3, code_channels=8, N=8)
    elif value == "liu2020-binary-3d":
        codec = BinaryCodec(in_channels=1, code_channels=4, N=8, dims=3)
    else:
        codec = HyperpriorCodec(value, N=16, M=24, in_channels=1)
    codec.eval()
    codec.update(force=True)
    return codec


def seeds(codec) -> list[bytes]:
    """Valid files of ``codec``: images (64×96, a 3-slice 17×33 stack, 1×1) or volumes."""
    import torch

    g = torch.Generator().manual_seed(0)
    c = codec.in_channels
    if codec.spatial_dims == 3:
        shapes = [(1, c, 11, 13, 17), (2, c, 8, 9, 10), (1, c, 1, 1, 1)]
    else:
        shapes = [(1, c, 64, 96), (3, c, 17, 33), (1, c, 1, 1)]
    return [codec.compress(torch.rand(*s, generator=g)).to_bytes() for s in shapes]


def worker(conn, spec: tuple[str, str]) -> None:
    import torch

    from mvmic.codecs import BitstreamError

    torch.set_num_threads(1)
    codec = build_codec(spec)
    conn.send("ready")  # start-up (imports) is not counted against the per-file timeout
    while True:
        data = conn.recv()
        if data is None:
            return
        try:
            codec.decompress(data)
            conn.send("decoded")
        except BitstreamError:
            conn.send("BitstreamError")
        except Exception as err:  # noqa: BLE001 - exactly what we count
            conn.send(f"other: {type(err).__name__}: {str(err)[:80]}")


DAMAGE = ["flip", "truncate", "insert", "delete", "overwrite"]
CRAFTED = ["crafted-bytes", "crafted-random", "crafted-ff"]


def mutate(data: bytes, rng: random.Random, family: str) -> tuple[str, str, bytes]:
    bad = bytearray(data)
    kinds = {"damage": DAMAGE, "crafted": CRAFTED}.get(family, DAMAGE + ["crafted"])
    kind = rng.choice(kinds)
    if kind == "crafted":
        kind = rng.choice(CRAFTED)
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            bad[rng.randrange(len(bad))] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        bad = bad[: rng.randrange(len(bad))]
    elif kind == "insert":
        pos = rng.randrange(len(bad) + 1)
        bad[pos:pos] = rng.randbytes(rng.randint(1, 32))
    elif kind == "delete":
        pos = rng.randrange(len(bad))
        del bad[pos : pos + rng.randint(1, 32)]
    elif kind == "overwrite":
        pos = rng.randrange(len(bad))
        n = rng.randint(1, 16)
        bad[pos : pos + n] = rng.randbytes(n)
    else:  # crafted: keep the header, replace payload bytes, fix the CRC
        from mvmic.codecs import Bitstream

        bs = Bitstream.from_bytes(data)
        header = len(data) - 4 - bs.payload_bytes
        body = bad[:-4]
        if kind == "crafted-bytes":
            for _ in range(rng.randint(1, 64)):
                body[rng.randrange(header, len(body))] = rng.randrange(256)
        elif kind == "crafted-random":
            body[header:] = rng.randbytes(len(body) - header)
        else:  # all ones: the longest escape (bypass) codes the rANS decoder can meet
            body[header:] = b"\xff" * (len(body) - header)
        bad = body + struct.pack("<I", zlib.crc32(body))
    family = "crafted" if kind.startswith("crafted") else "damage"
    return family, kind, bytes(bad)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="number of mutated files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--family",
        choices=["all", "damage", "crafted"],
        default="all",
        help="damage: what a bad disk or network does (must all be BitstreamError); crafted: "
        "payload rewritten with a valid CRC (may decode to garbage; must not crash or hang)",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds before 'hang'")
    parser.add_argument(
        "--codec", choices=CODECS, default=CODECS[0], help="the seeded test codec to fuzz"
    )
    parser.add_argument("--ckpt", type=Path, help="fuzz the codec of this mvmic checkpoint")
    parser.add_argument(
        "--bitstream",
        type=Path,
        action="append",
        default=[],
        help="a valid .mvmic file of that codec to mutate (repeatable; default: files made "
        "here from random images)",
    )
    args = parser.parse_args(argv)

    for path in [args.ckpt, *args.bitstream]:
        if path is not None and not path.is_file():
            print(f"fuzz_bitstream: error: {path} does not exist", file=sys.stderr)
            return 2
    spec = ("ckpt", str(args.ckpt)) if args.ckpt else ("codec", args.codec)
    rng = random.Random(args.seed)
    codec = build_codec(spec)
    originals = [p.read_bytes() for p in args.bitstream] or seeds(codec)
    for path, data in zip(args.bitstream, originals):
        try:  # a seed must decode, or every mutation of it would count as a clean error
            codec.decompress(data, source=str(path))
        except ValueError as err:
            print(f"fuzz_bitstream: error: {err}", file=sys.stderr)
            return 2
    ctx = mp.get_context("spawn")

    def start():
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=worker, args=(child, spec), daemon=True)
        proc.start()
        deadline = time.monotonic() + 600
        while not parent.poll(0.5):  # a worker that dies while starting is reported at once
            if not proc.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the decoder worker did not start (exit code {proc.exitcode})")
        if parent.recv() != "ready":
            raise RuntimeError("the decoder worker did not start")
        return proc, parent

    proc, conn = start()
    counts: dict[tuple[str, str], Counter] = defaultdict(Counter)
    others: Counter = Counter()
    t0 = time.perf_counter()
    for _ in range(args.n):
        family, kind, data = mutate(rng.choice(originals), rng, args.family)
        if data in originals:
            continue
        conn.send(data)
        if conn.poll(args.timeout):
            try:
                outcome = conn.recv()
            except EOFError:
                outcome = "crash"
        else:
            outcome = "hang"
        if not proc.is_alive() and outcome != "hang":
            outcome = "crash"
        if outcome in ("crash", "hang"):
            proc.kill()
            proc, conn = start()
        if outcome.startswith("other"):
            others[outcome] += 1
            outcome = "other exception"
        counts[(family, kind)][outcome] += 1
    conn.send(None)
    proc.join(5)
    elapsed = time.perf_counter() - t0

    cols = ["BitstreamError", "decoded", "other exception", "crash", "hang"]
    print(f"| family | mutation | n | {' | '.join(cols)} |")
    print("|" + "---|" * (3 + len(cols)))
    total: Counter = Counter()
    for (family, kind), c in sorted(counts.items()):
        total.update(c)
        row = " | ".join(str(c[k]) for k in cols)
        print(f"| {family} | {kind} | {sum(c.values())} | {row} |")
    print(f"| all | | {sum(total.values())} | {' | '.join(str(total[k]) for k in cols)} |")
    for msg, n in others.most_common(10):
        print(f"  {n} x {msg}")
    damage = Counter()
    for (family, _), c in counts.items():
        if family == "damage":
            damage.update(c)
    print(
        f"{args.n} mutations in {elapsed:.1f} s; damage: {damage['BitstreamError']} clean errors "
        f"of {sum(damage.values())}; crashes {total['crash']}, hangs {total['hang']}"
    )
    bad = sum(damage.values()) - damage["BitstreamError"] + total["crash"] + total["hang"]
    return 1 if bad or total["other exception"] else 0


if __name__ == "__main__":
    sys.exit(main())

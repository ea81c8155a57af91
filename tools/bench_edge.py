"""Edge encoder speed: encode MP/s of mvmic's codec configurations and where mvmic's upload wins.

    python tools/bench_edge.py                      # all tables: 85 s of CPU time, measured
    python tools/bench_edge.py --records runs/results/colondb --compile --md /tmp/edge.md

For every codec configuration the configs ship (the hyperprior codecs at their widths, the
light-analysis variant, Liu's C in 2D and 3D), on a 512² CT slice (pydicom's CT_small,
upsampled): warm encode throughput, the median of ``--repeats``, at 1 and 2 threads, of the
full ``compress`` to bytes and of the analysis transforms alone (g_a + h_a, or C). Then, for
that slice and a 512×512×300 volume (the slice ×300; Liu's 3D C measured on a block), the
break-even bandwidth below which encode + transfer of the ``.mvmic`` beats encode + transfer of
PNG and JPEG q90 (Pillow) at the bpp of the benchmark's operating points (``--records``) or a
grid (``--bpp``). Then the encoder levers (inference_mode, channels_last, int8, torch.compile
with ``--compile``) and the goal line: encode + transfer at 10 Mbit/s ≥ 3× faster than JPEG q90,
met or by how much, bounded by encoder FLOPs/pixel against this machine's measured GFLOP/s.
Weights are random (speed does not depend on them; file size is set from the bpp).
"""

from __future__ import annotations

import argparse
import io
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_codec import images  # noqa: E402

from mvmic.codecs import build_codec  # noqa: E402
from mvmic.codecs.int8 import int8_analysis  # noqa: E402
from mvmic.evaluation.edge import (  # noqa: E402
    GOAL_BPS,
    GOAL_SPEEDUP,
    break_even_bps,
    goal,
    median_time,
    upload_s,
)

#: (row label, codec name, constructor arguments), as the shipped configs build them
_GREY, _RGB = dict(in_channels=1), dict(in_channels=3)
_WIDE, _LIGHT = dict(N=128, M=192), dict(analysis="light")
CONFIGS = [
    ("colondb_seg: mbt2018-mean N128 M192 RGB", "mbt2018-mean", {**_WIDE, **_RGB}),
    ("chestxdet_det: mbt2018-mean N128 M192 grey", "mbt2018-mean", {**_WIDE, **_GREY}),
    ("demo: mbt2018-mean N64 M96 RGB", "mbt2018-mean", dict(N=64, M=96, **_RGB)),
    ("colondb_seg_fast_encoder: light N128 M192 RGB", "mbt2018-mean", {**_WIDE, **_RGB, **_LIGHT}),
    ("(lever) light analysis N128 M192 grey", "mbt2018-mean", {**_WIDE, **_GREY, **_LIGHT}),
    ("isic_gan: Liu C 2D N64, 8 code ch, RGB", "liu2020-binary", dict(code_channels=8, **_RGB)),
    ("hvsmr_gan3d: Liu C 3D N32, 8 code ch, grey", "liu2020-binary",
     dict(code_channels=8, dims=3, **_GREY)),
]  # fmt: skip
VOLUME_DEPTH = 300


def analysis(codec):
    """The encoder-only transforms as one callable (g_a + h_a, or Liu's C)."""
    if hasattr(codec, "model"):
        m = codec.model
        return lambda x: m.h_a(m.g_a(x))
    return codec.encoder


def encoder_flops(codec, x: torch.Tensor) -> tuple[float, float]:
    """FLOPs per pixel of the analysis, and of everything the encoder runs (adds h_s)."""
    px = math.prod(x.shape[2:])
    with torch.no_grad(), FlopCounterMode(display=False) as fa:
        out = analysis(codec)(x)
    total = fa.get_total_flops()
    if hasattr(codec, "model"):
        with torch.no_grad(), FlopCounterMode(display=False) as fs:
            codec.model.h_s(torch.round(out))
        total += fs.get_total_flops()
    return fa.get_total_flops() / px, total / px


def machine_gflops(threads: int) -> float:
    """This machine's fp32 GFLOP/s on a 3×3 convolution of a 128-channel 128² map."""
    torch.set_num_threads(threads)
    x, w = torch.rand(1, 128, 128, 128), torch.rand(128, 128, 3, 3)
    flops = 2 * 9 * 128 * 128 * 128 * 128
    with torch.no_grad():
        return flops / median_time(lambda: torch.conv2d(x, w, padding=1), 5) / 1e9


def reference_uploads(x: np.ndarray, repeats: int) -> dict[str, tuple[float, int]]:
    """Encode seconds and bytes of PNG (lossless) and JPEG q90 of an 8-bit image."""
    from PIL import Image

    img = Image.fromarray(x)
    out = {}
    for fmt, kwargs in (("PNG", {}), ("JPEG q90", {"quality": 90})):
        buf = io.BytesIO()

        def enc(buf=buf, fmt=fmt.split()[0], kwargs=kwargs):
            buf.seek(0)
            buf.truncate()
            img.save(buf, fmt, **kwargs)

        out[fmt] = (median_time(enc, repeats), len(buf.getvalue()))
    return out


def measure(codec, x: torch.Tensor, repeats: int, threads: int) -> dict[str, float]:
    torch.set_num_threads(threads)
    with torch.no_grad():
        f = analysis(codec)
        t_ana = median_time(lambda: f(x), repeats)
    t_enc = median_time(lambda: codec.compress(x).to_bytes(), repeats)
    px = math.prod(x.shape[-2:]) * (x.shape[2] if x.dim() == 5 else 1)
    return {"compress": px / t_enc / 1e6, "analysis": px / t_ana / 1e6, "t_enc": t_enc}


def _mbit(bps: float) -> str:
    return "always" if math.isinf(bps) else ("never" if bps == 0 else f"{bps / 1e6:.3g}")


def levers(x: torch.Tensor, repeats: int, compile_: bool) -> list[tuple[str, float, float]]:
    """(lever, analysis MP/s, compress MP/s) on the grey N128 M192 codec, both analyses."""
    rows = []
    px = x.shape[-2] * x.shape[-1]
    cal = images(3, 128)
    for variant in ("full", "light"):
        codec = build_codec("mbt2018-mean", N=128, M=192, in_channels=1, analysis=variant).eval()
        codec.update(force=True)
        f = analysis(codec)
        xc = x.contiguous(memory_format=torch.channels_last)
        cl = build_codec("mbt2018-mean", N=128, M=192, in_channels=1, analysis=variant).eval()
        cl.load_state_dict(codec.state_dict())
        cl.model.g_a.to(memory_format=torch.channels_last)
        cl.model.h_a.to(memory_format=torch.channels_last)
        q = int8_analysis(codec, cal)
        cases = {
            "no_grad (compress's own)": (torch.no_grad, f, x, codec),
            "inference_mode": (torch.inference_mode, f, x, None),
            "channels_last": (torch.no_grad, analysis(cl), xc, cl),
            "int8 static (FX, x86)": (torch.no_grad, analysis(q), x, q),
        }
        if compile_:
            cases["torch.compile (inductor)"] = (torch.no_grad, torch.compile(f), x, None)
        for name, (mode, fn, inp, full) in cases.items():
            try:
                with mode():
                    t = median_time(lambda fn=fn, inp=inp: fn(inp), repeats)
            except Exception as err:  # noqa: BLE001 - report a lever that cannot run here
                rows.append((f"{variant}: {name} (fails: {type(err).__name__})", 0.0, 0.0))
                continue
            enc = px / median_time(lambda c=full: c.compress(x), repeats) / 1e6 if full else 0.0
            rows.append((f"{variant}: {name}", px / t / 1e6, enc))
    return rows


def int8_cost(ckpt: str, root: str, image_size: int) -> None:
    """``mvmic test``'s pipeline (real bits, task metrics): float vs int8 g_a/h_a."""
    from lightning import Trainer

    from data_modules import SegmentationDataModule
    from mvmic.modules import load_module
    from mvmic.modules.checkpoints import load_checkpoint

    dm = SegmentationDataModule(root=root, image_size=image_size, batch_size=8)
    dm.setup("fit")
    cal = next(iter(dm.train_dataloader()))["image"][:4]
    print(f"int8 cost: {ckpt} on the test split of {root} ({image_size}²)")
    print("| encoder | bpp (real) | PSNR | mIoU | Dice |\n|---|---|---|---|---|")
    saved = load_checkpoint(ckpt)
    scratch = tempfile.mkdtemp(prefix="bench_edge_")  # the test's records go here, not to the run's
    for variant in ("float", "int8"):
        module = load_module(ckpt)
        module.on_load_checkpoint(saved)  # what `mvmic test --ckpt_path` restores (task trained)
        module.hparams.results_dir = scratch
        if variant == "int8":
            module.codec = int8_analysis(module.codec, cal)
        trainer = Trainer(
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            default_root_dir=scratch,  # the test panels too, not the working directory
        )
        trainer.test(module, datamodule=dm, verbose=False)
        r = module.test_point
        print(
            f"| {variant} | {r['bpp']:.4f} | {r['psnr']:.2f} | {r['miou']:.4f} | {r['dice']:.4f} |"
        )


def bpp_points(args) -> list[float]:
    if not args.records:
        return [float(b) for b in args.bpp.split(",")]
    from mvmic.evaluation.records import is_anchor, iter_records

    found = sorted(
        {round(float(b), 4) for _, _, r in iter_records(args.records) if not is_anchor(r)
         for b in r["results"].get("bpp", []) if b is not None}
    )  # fmt: skip
    if not found:
        raise SystemExit(f"--records {args.records}: no learned codec record with a bpp")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--bpp", default="0.05,0.1,0.25", help="rates when no --records")
    parser.add_argument("--records", help="a results dir: take bpp from its learned records")
    parser.add_argument("--block", default="32,128,128", help="D,H,W the 3D codec is timed on")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--md", help="also write the Markdown tables to this file")
    parser.add_argument("--int8-cost", metavar="CKPT", help="only: float vs int8 encoder test")
    parser.add_argument("--data", help="--int8-cost: the segmentation dataset root")
    parser.add_argument("--image-size", type=int, default=64, help="--int8-cost: test size")
    args = parser.parse_args(argv)
    if args.int8_cost:
        int8_cost(args.int8_cost, args.data, args.image_size)
        return 0
    torch.manual_seed(0)
    lines: list[str] = []

    def out(s: str = "") -> None:
        print(s, flush=True)
        lines.append(s)

    grey = images(1, args.size)  # 1×1×H×W in [0, 1]
    u8 = (grey[0, 0].numpy() * 255).round().astype(np.uint8)
    refs = {1: reference_uploads(u8, args.repeats),
            3: reference_uploads(np.repeat(u8[..., None], 3, -1), args.repeats)}  # fmt: skip
    rates = bpp_points(args)
    px = args.size**2
    gflops = {t: machine_gflops(t) for t in (1, 2)}
    out(f"machine: {gflops[1]:.0f} / {gflops[2]:.0f} GFLOP/s fp32 conv at 1 / 2 threads; "
        f"torch {torch.__version__}; image {args.size}² CT slice")  # fmt: skip
    out()
    out("| configuration | analysis FLOPs/px | encoder FLOPs/px | compress MP/s (1 / 2 thr) "
        "| g_a+h_a MP/s (1 / 2 thr) | slice encode ms | volume encode s |")  # fmt: skip
    out("|---|---|---|---|---|---|---|")
    results = []
    for label, name, kwargs in CONFIGS:
        codec = build_codec(name, **kwargs).eval()
        codec.update(force=True)
        c = kwargs["in_channels"]
        if kwargs.get("dims") == 3:
            d, h, w = (int(s) for s in args.block.split(","))
            x = images(1, h)[:, :, None, :, :w].expand(1, c, d, h, w).contiguous()
        else:
            x = grey.expand(1, c, -1, -1).contiguous()
        fa, ft = encoder_flops(codec, x)
        m = {t: measure(codec, x, args.repeats, t) for t in (1, 2)}
        best = max(m.values(), key=lambda r: r["compress"])
        t_px = 1 / (best["compress"] * 1e6)  # seconds per pixel (voxel)
        bs = codec.compress(x)
        overhead = len(bs.to_bytes()) - bs.payload_bytes
        # Liu's code is at most code_channels bits per stride^dims pixels before entropy coding
        top = codec.code_channels / codec.stride**codec.dims if name == "liu2020-binary" else 1e9
        results.append((label, c, kwargs.get("dims", 2), t_px, overhead, ft, top))
        out(f"| {label} | {fa:,.0f} | {ft:,.0f} | {m[1]['compress']:.3g} / {m[2]['compress']:.3g} "
            f"| {m[1]['analysis']:.3g} / {m[2]['analysis']:.3g} | {t_px * px * 1e3:.0f} "
            f"| {t_px * px * VOLUME_DEPTH:.1f} |")  # fmt: skip
    out()
    for c, r in refs.items():
        parts = [f"{k} {b / 1024:.1f} KB, {t * 1e3:.1f} ms to encode" for k, (t, b) in r.items()]
        out(f"references, {'grey' if c == 1 else 'RGB'} slice: " + "; ".join(parts))
    out()
    out(
        f"| configuration | bpp | slice .mvmic KB | slice upload ms at {GOAL_BPS / 1e6:g} Mbit/s "
        "(JPEG q90) | break-even Mbit/s vs PNG | vs JPEG q90 | volume upload s (JPEG q90) |"
    )
    out("|---|---|---|---|---|---|---|")
    goals = []
    for label, c, dims, t_px, overhead, ft, top in results:
        (t_png, b_png), (t_jpg, b_jpg) = refs[c]["PNG"], refs[c]["JPEG q90"]
        for bpp in [b for b in rates if b <= top] or [top]:
            t_enc, n = t_px * px, bpp * px / 8 + overhead
            be_png, be_jpg = (
                break_even_bps(t_enc, n, t_png, b_png),
                break_even_bps(t_enc, n, t_jpg, b_jpg),
            )
            vol = upload_s(t_enc * VOLUME_DEPTH, n * VOLUME_DEPTH, GOAL_BPS)
            jvol = upload_s(t_jpg * VOLUME_DEPTH, b_jpg * VOLUME_DEPTH, GOAL_BPS)
            mine, jpeg = upload_s(t_enc, n, GOAL_BPS), upload_s(t_jpg, b_jpg, GOAL_BPS)
            out(f"| {label} | {bpp:g} | {n / 1024:.1f} | {mine * 1e3:.0f} ({jpeg * 1e3:.0f}) "
                f"| {_mbit(be_png)} | {_mbit(be_jpg)} | {vol:.1f} ({jvol:.1f}) |")  # fmt: skip
            if c == 1 and dims == 2:  # the goal is about a grey slice
                goals.append((goal(t_enc, n, t_jpg, b_jpg), label, bpp, ft, t_px))
    out()
    out("| lever (grey N128 M192, 2 threads) | g_a+h_a MP/s | compress MP/s |")
    out("|---|---|---|")
    torch.set_num_threads(2)
    for name, ana, enc in levers(grey, args.repeats, args.compile):
        out(f"| {name} | {ana:.3g} | {enc:.3g} |" if enc else f"| {name} | {ana:.3g} | – |")
    out()
    g, label, bpp, ft, t_px = max(goals, key=lambda t: t[0].speedup)
    verdict = "MET" if g.met else "NOT MET"
    out(f"goal ({GOAL_SPEEDUP:g}× faster than the JPEG q90 upload at {GOAL_BPS / 1e6:g} Mbit/s, "
        f"512² grey slice, 2 threads): {verdict}: best is {label} at {bpp:g} bpp, "
        f"{g.speedup:.2f}× the JPEG upload speed.")  # fmt: skip
    if not g.met:
        need = px / g.needed_encode_s / 1e6 if g.needed_encode_s > 0 else math.inf
        have = 1 / t_px / 1e6
        bound = ft * need * 1e6 / 1e9
        out(
            f"  it would need {need:.3g} MP/s encode (has {have:.3g}: {need / have:.3g}× short); "
            f"at {ft:,.0f} encoder FLOPs/px that is {bound:.0f} GFLOP/s against this machine's "
            f"{gflops[2]:.0f} GFLOP/s measured (2 threads): {bound / gflops[2]:.2g}× beyond it."
        )
    if args.md:
        Path(args.md).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

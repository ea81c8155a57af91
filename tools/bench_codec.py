"""Benchmark mvmic's bitstream path against raw CompressAI, and Pillow JPEG/WebP for context.

    OMP_NUM_THREADS=1 python tools/bench_codec.py --images 4 --repeats 3

On the same 512×512 grey images, in one run, prints:

(a) time of mvmic ``compress``+``decompress`` (container, padding, checks, CRC) divided by the
    time of CompressAI's own ``compress``+``decompress`` on the same tensors (goal ≤ 1.05);
(b) real bits (payload of the file) / bits estimated from the likelihoods (goal ≤ 1.02);
(c) container overhead in bytes;
(d) encode/decode megapixels per second, next to Pillow JPEG and WebP.

The codec is ``bmshj2018-hyperprior`` (N=128, M=192, 1 channel) with random weights and
updated entropy tables unless ``--ckpt`` names a trained checkpoint (``--train-steps`` fits it
briefly on the benchmark images first, so that the latents are not all zeros).
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mvmic.codecs import Bitstream, HyperpriorCodec  # noqa: E402
from mvmic.metrics import likelihoods_bpp  # noqa: E402


def images(n: int, size: int = 512) -> torch.Tensor:
    """A real CT slice (pydicom's CT_small, upsampled) and smooth textured synthetic scans."""
    from PIL import Image
    from pydicom.data import get_testdata_file

    from mvmic.io import read_image

    ct, _, _ = read_image(get_testdata_file("CT_small.dcm"))
    ct = (ct[0] - ct.min()) / (ct.max() - ct.min())
    out = [np.asarray(Image.fromarray(ct).resize((size, size), Image.BICUBIC)).clip(0, 1)]
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    for k in range(n - 1):
        f = 4 + 3 * k
        base = (torch.sin(f * xx + k) * torch.cos((f + 2) * yy) + 1) / 2
        out.append((0.85 * base + 0.15 * torch.rand(size, size, generator=g)).numpy())
    return torch.from_numpy(np.stack(out)).float().unsqueeze(1)


def timed(fn, repeats: int) -> tuple[float, object]:
    """Fastest wall time of ``repeats`` calls after one warm-up call, and the last result.

    The minimum, not the median: on a shared machine other processes only ever add time.
    """
    times, result = [], fn()
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def once(fn, warm_up: bool = False) -> tuple[float, object]:
    if warm_up:
        fn()
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def fit_aux(codec: HyperpriorCodec, steps: int) -> None:
    """Fit the entropy bottleneck's quantiles (CompressAI's aux loss), as training does."""
    aux = torch.optim.Adam(codec.aux_parameters(), lr=1e-2)
    for _ in range(steps):
        aux.zero_grad()
        codec.aux_loss().backward()
        aux.step()


def train_briefly(codec: HyperpriorCodec, x: torch.Tensor, steps: int) -> None:
    if steps <= 0:
        return
    opt = torch.optim.Adam(codec.main_parameters(), lr=1e-3)
    aux = torch.optim.Adam(codec.aux_parameters(), lr=1e-2)
    codec.train()
    for _ in range(steps):
        crop = x[:, :, :256, :256]
        out = codec(crop)
        bpp = likelihoods_bpp(out.likelihoods, crop.numel())
        loss = 0.01 * 255**2 * torch.mean((out.x_hat - crop) ** 2) + bpp
        opt.zero_grad()
        aux.zero_grad()
        (loss + codec.aux_loss()).backward()
        opt.step()
        aux.step()
    codec.eval()
    codec.update(force=True)


def pillow(x: np.ndarray, fmt: str, quality: int, repeats: int) -> tuple[float, float, int]:
    from PIL import Image

    img = Image.fromarray((x * 255).round().astype(np.uint8))

    def enc():
        buf = io.BytesIO()
        img.save(buf, fmt, quality=quality)
        return buf.getvalue()

    t_enc, data = timed(enc, repeats)
    t_dec, _ = timed(lambda: np.asarray(Image.open(io.BytesIO(data)).convert("L")), repeats)
    return t_enc, t_dec, len(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--N", type=int, default=128)
    parser.add_argument("--M", type=int, default=192)
    parser.add_argument("--train-steps", type=int, default=0)
    parser.add_argument("--aux-steps", type=int, default=0, help="fit the quantiles first")
    parser.add_argument("--ckpt", help="a trained mvmic checkpoint instead of random weights")
    args = parser.parse_args(argv)

    x = images(args.images, args.size)
    if args.ckpt:
        from mvmic.modules import load_module

        codec = load_module(args.ckpt).codec
        if codec.in_channels == 3:
            x = x.expand(-1, 3, -1, -1).contiguous()
        weights = f"checkpoint {args.ckpt}"
    else:
        torch.manual_seed(0)
        codec = HyperpriorCodec("bmshj2018-hyperprior", N=args.N, M=args.M, in_channels=1)
        train_briefly(codec, x, args.train_steps)
        weights = (
            f"random init, {args.train_steps} training steps"
            if args.train_steps
            else "random init (untrained)"
        )
    if args.aux_steps:
        fit_aux(codec, args.aux_steps)
        weights += f", {args.aux_steps} aux-loss steps"
    codec.eval()
    codec.update(force=True)
    model = codec.model
    print(
        f"codec: {codec.name} N={args.N} M={args.M}, {weights}; threads: "
        f"{torch.get_num_threads()}; {len(x)} images {args.size}x{args.size}"
    )

    rows = []
    for i in range(len(x)):
        xi = x[i : i + 1]
        # (a) mvmic path vs CompressAI's own calls on the same tensor (512 needs no padding),
        # interleaved so that load from other processes hits both alike.
        t = {"c_mv": [], "d_mv": [], "c_raw": [], "d_raw": []}
        with torch.no_grad():
            for r in range(args.repeats):
                warm = r == 0  # the first round warms up and is not counted
                tc, data = once(lambda xi=xi: codec.compress(xi).to_bytes(), warm)
                td, x_hat = once(lambda data=data: codec.decompress(data), warm)
                tcr, enc = once(lambda xi=xi: model.compress(xi), warm)
                tdr, raw = once(lambda e=enc: model.decompress(e["strings"], e["shape"]), warm)
                for k, v in zip(t, (tc, td, tcr, tdr)):
                    t[k].append(v)
            est = codec(xi)
        t_c_mv, t_d_mv, t_c_raw, t_d_raw = (min(v) for v in t.values())
        assert torch.equal(x_hat, raw["x_hat"].clamp(0, 1)), "mvmic and CompressAI disagree"
        bs = Bitstream.from_bytes(data)
        npix = args.size * args.size
        est_bits = float(likelihoods_bpp(est.likelihoods, npix)) * npix
        per = {k: float(likelihoods_bpp({k: v}, 1)) for k, v in est.likelihoods.items()}
        y_len, z_len = (len(s_) for s_ in bs.frames[0])
        jpeg = pillow(xi[0, 0].numpy(), "JPEG", 75, args.repeats)
        webp = pillow(xi[0, 0].numpy(), "WEBP", 75, args.repeats)
        rows.append(
            {
                "ratio": (t_c_mv + t_d_mv) / (t_c_raw + t_d_raw),
                "real/est": 8 * bs.payload_bytes / est_bits,
                "y real/est": 8 * y_len / per["y"],
                "z real/est": 8 * z_len / per["z"],
                "overhead": len(data) - bs.payload_bytes,
                "bpp": 8 * len(data) / npix,
                "mv_enc": npix / t_c_mv / 1e6,
                "mv_dec": npix / t_d_mv / 1e6,
                "jpeg_enc": npix / jpeg[0] / 1e6,
                "jpeg_dec": npix / jpeg[1] / 1e6,
                "jpeg_bpp": 8 * jpeg[2] / npix,
                "webp_enc": npix / webp[0] / 1e6,
                "webp_dec": npix / webp[1] / 1e6,
                "webp_bpp": 8 * webp[2] / npix,
            }
        )
    keys = list(rows[0])
    print("| image | " + " | ".join(keys) + " |")
    print("|" + "---|" * (len(keys) + 1))
    for i, r in enumerate(rows):
        print(f"| {i} | " + " | ".join(f"{r[k]:.4g}" for k in keys) + " |")
    mean = {k: statistics.mean(r[k] for r in rows) for k in keys}
    print("| mean | " + " | ".join(f"{mean[k]:.4g}" for k in keys) + " |")
    print()
    print(f"(a) mvmic / CompressAI compress+decompress time: {mean['ratio']:.3f} (goal <= 1.05)")
    print(f"(b) real bits / estimated bits: {mean['real/est']:.4f} (goal <= 1.02)")
    print(f"(c) container overhead: {mean['overhead']:.0f} bytes per image")
    print(
        f"(d) MP/s encode/decode: mvmic {mean['mv_enc']:.2f}/{mean['mv_dec']:.2f}, "
        f"JPEG q75 {mean['jpeg_enc']:.1f}/{mean['jpeg_dec']:.1f}, "
        f"WebP q75 {mean['webp_enc']:.1f}/{mean['webp_dec']:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

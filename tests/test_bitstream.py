"""The .mvmic container: round trips, every class of bad file, fuzzing, determinism."""

from __future__ import annotations

import hashlib
import random
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
import torch

from mvmic.codecs import Bitstream, BitstreamError, HyperpriorCodec
from mvmic.codecs import base as codec_base

ROOT = Path(__file__).resolve().parents[1]

#: SHA-256 of the bytes that the seeded model below makes for ``fixed_image()``. Changes when
#: the container layout, CompressAI's coder or the model's initialisation change: then check
#: that old files still decode before updating it.
PINNED_SHA256 = "ca1afb6dc742851d561435d031e93b28705ce6116a1fe5b71213d70ac3fb062e"


def seeded_codec(seed: int = 0, name: str = "bmshj2018-hyperprior") -> HyperpriorCodec:
    torch.manual_seed(seed)
    codec = HyperpriorCodec(name, N=16, M=24, in_channels=1).eval()
    codec.update(force=True)
    return codec


def fixed_image(h: int = 64, w: int = 96) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    x = (torch.sin(12 * xx) * torch.cos(9 * yy) + 1) / 2 * 0.8 + 0.2 * torch.rand(h, w, generator=g)
    return x.view(1, 1, h, w)


@pytest.fixture(scope="module")
def codec() -> HyperpriorCodec:
    return seeded_codec()


@pytest.fixture(scope="module")
def data(codec) -> bytes:
    return codec.compress(fixed_image()).to_bytes()


def with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


# -- round trips ----------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(1, 1), (17, 333), (64, 64), (65, 3)])
def test_round_trip_any_size(codec, size):
    x = torch.rand(1, 1, *size, generator=torch.Generator().manual_seed(1))
    bs = codec.compress(x, bit_depth=12)
    data = bs.to_bytes()
    parsed = Bitstream.from_bytes(data)
    assert (parsed.height, parsed.width, parsed.channels, parsed.bit_depth) == (*size, 1, 12)
    assert parsed.frames == bs.frames
    y = codec.decompress(data)
    assert y.shape == (1, 1, *size)
    assert 0 <= y.min() and y.max() <= 1


def test_slices_round_trip_frame_by_frame(codec):
    x = torch.rand(3, 1, 20, 30, generator=torch.Generator().manual_seed(2))
    bs = codec.compress(x)
    assert len(bs.frames) == 3
    y = codec.decompress(bs.to_bytes())
    # Decoding the stack equals decoding each slice alone: frames are independent.
    for i in range(3):
        alone = codec.decompress(codec.compress(x[i : i + 1]).to_bytes())
        assert torch.equal(y[i : i + 1], alone)


def test_one_image_overhead_is_at_most_32_bytes(codec, data):
    bs = Bitstream.from_bytes(data)
    # 16 fixed bytes, depth, frame count, string count, two 1-byte lengths (< 128), CRC32
    assert [len(s) < 128 for s in bs.frames[0]] == [True, True]
    assert len(data) - bs.payload_bytes == 16 + 3 + 2 + 4 <= 32


def test_pinned_bitstream_hash(data):
    assert hashlib.sha256(data).hexdigest() == PINNED_SHA256


# -- bad files: each says which -------------------------------------------------------------
def expect_error(codec, data: bytes, words: str) -> None:
    with pytest.raises(BitstreamError, match=words):
        codec.decompress(data)


def test_empty(codec):
    expect_error(codec, b"", "empty")


@pytest.mark.parametrize("keep", [1, 3, 4, 10, 17, 20, -5, -1])
def test_truncated(codec, data, keep):
    expect_error(codec, data[:keep], "truncated|corrupted")


def test_truncated_inside_payload_says_truncated(codec, data):
    expect_error(codec, data[:-10], "truncated")


@pytest.mark.parametrize("pos", [5, 9, 11, 16, 30, -6, -1])
def test_corrupted_byte(codec, data, pos):
    bad = bytearray(data)
    bad[pos] ^= 0x10
    expect_error(codec, bytes(bad), "corrupted|truncated")


def test_corrupted_payload_says_checksum(codec, data):
    bad = bytearray(data)
    bad[30] ^= 0xFF
    expect_error(codec, bytes(bad), r"checksum \(CRC32\)")


def test_foreign_file(codec):
    png = b"\x89PNG\r\n\x1a\n" + bytes(40)
    expect_error(codec, png, "not an mvmic bitstream")


def test_wrong_version(codec, data):
    body = bytearray(data[:-4])
    body[4] = 2
    expect_error(codec, with_crc(bytes(body)), "format version 2")


def test_damaged_version_byte_is_corruption_not_a_version(codec, data):
    bad = bytearray(data)
    bad[4] = 7
    expect_error(codec, bytes(bad), "corrupted")


def test_different_checkpoint(data):
    expect_error(seeded_codec(seed=1), data, "different checkpoint")


def test_different_codec(data):
    expect_error(seeded_codec(name="mbt2018-mean"), data, "made by codec 'bmshj2018-hyperprior'")


def test_trailing_bytes(codec, data):
    body = data[:-4] + b"xx"
    expect_error(codec, with_crc(body), "trailing bytes")


def test_not_bytes(codec):
    expect_error(codec, "MVMC", "expected bytes")


def crafted(codec, frames, h=64, w=96, channels=1) -> bytes:
    """A file with a valid checksum and this model's hash: only the deeper checks can stop it."""
    return Bitstream(codec.name, codec.weights_hash(), h, w, channels, 8, frames).to_bytes()


def test_decompression_bomb_is_refused(codec, data, monkeypatch):
    frames = Bitstream.from_bytes(data).frames
    expect_error(codec, crafted(codec, frames, 65535, 65535), "budget")
    monkeypatch.setattr(codec_base, "MAX_TOTAL_PIXELS", 64 * 128 * 2)
    expect_error(codec, crafted(codec, frames * 3), "budget")


@pytest.mark.parametrize("lengths", [(0, 48), (8, 6), (3, 8)])
def test_string_that_is_not_rans_never_reaches_the_decoder(codec, lengths):
    frames = [[bytes(n) for n in lengths]]
    expect_error(codec, crafted(codec, frames), "not a rANS stream")


def test_wrong_string_count(codec, data):
    y, z = Bitstream.from_bytes(data).frames[0]
    expect_error(codec, crafted(codec, [[y, z, z]]), "expected 2")


def test_wrong_channel_count(codec, data):
    frames = Bitstream.from_bytes(data).frames
    expect_error(codec, crafted(codec, frames, channels=3), "3 channels, model takes 1")


def test_garbage_payload_with_valid_checksum_decodes_safely(codec):
    # An attacker can recompute the CRC; the padded rANS decoder must still stay in bounds.
    rng = random.Random(0)
    for fill in (b"\xff", b"\x00", None):
        frames = []
        for n in (8, 64, 512):
            s = fill * n if fill else rng.randbytes(n)
            frames.append([s, s])
        y = codec.decompress(crafted(codec, frames))
        assert y.shape == (3, 1, 64, 96) and torch.isfinite(y).all()


def test_load_missing_file(tmp_path):
    with pytest.raises(BitstreamError, match="no such file"):
        Bitstream.load(tmp_path / "none.mvmic")


def test_fuzz_random_damage_always_gives_bitstream_error(codec, data):
    rng = random.Random(1234)
    start = time.perf_counter()
    outcomes = {"error": 0}
    for _ in range(300):
        bad = bytearray(data)
        kind = rng.randrange(4)
        if kind == 0:  # flip 1-8 random bits
            for _ in range(rng.randint(1, 8)):
                bad[rng.randrange(len(bad))] ^= 1 << rng.randrange(8)
        elif kind == 1:  # truncate
            bad = bad[: rng.randrange(len(bad))]
        elif kind == 2:  # insert random bytes
            pos = rng.randrange(len(bad) + 1)
            bad[pos:pos] = rng.randbytes(rng.randint(1, 16))
        else:  # delete a run
            pos = rng.randrange(len(bad))
            del bad[pos : pos + rng.randint(1, 16)]
        if bytes(bad) == data:
            continue
        with pytest.raises(BitstreamError):
            codec.decompress(bytes(bad))
        outcomes["error"] += 1
    assert outcomes["error"] >= 290
    assert time.perf_counter() - start < 15


# -- determinism ----------------------------------------------------------------------------
DECODE_SCRIPT = """
import hashlib, sys, torch
sys.path.insert(0, {tests!r})
from test_bitstream import seeded_codec
for path, name in zip(sys.argv[1::2], sys.argv[2::2]):
    codec = seeded_codec(0, name)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        y = codec.decompress(open(path, "rb").read())
        print(name, threads, hashlib.sha256(y.numpy().tobytes()).hexdigest())
"""


@pytest.mark.slow  # two fresh interpreters: ~12 s
def test_fresh_process_decodes_the_same_bytes_with_1_or_2_threads(tmp_path):
    args, expected = [], []
    old = torch.get_num_threads()
    torch.set_num_threads(2)  # encode and decode here with 2 threads
    try:
        for name in ("bmshj2018-hyperprior", "mbt2018-mean"):
            codec = seeded_codec(0, name)
            data = codec.compress(fixed_image(96, 128)).to_bytes()
            local = hashlib.sha256(codec.decompress(data).numpy().tobytes()).hexdigest()
            path = tmp_path / f"{name}.mvmic"
            path.write_bytes(data)
            args += [str(path), name]
            expected += [f"{name} {t} {local}" for t in (1, 2)]
    finally:
        torch.set_num_threads(old)
    out = subprocess.run(
        [sys.executable, "-c", DECODE_SCRIPT.format(tests=str(ROOT / "tests")), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2", "PATH": ""},
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines() == expected


@pytest.mark.parametrize("name", ["bmshj2018-hyperprior", "mbt2018-mean", "cheng2020-anchor"])
def test_padding_for_the_rans_decoder_changes_nothing_on_valid_files(name):
    codec = seeded_codec(0, name)
    x = fixed_image(64, 64)
    bs = codec.compress(x)
    y, z = bs.frames[0]
    with torch.no_grad():
        raw = codec.model.decompress([[y], [z]], (1, 1))["x_hat"].clamp(0, 1)
    assert torch.equal(codec.decompress(bs.to_bytes()), raw)

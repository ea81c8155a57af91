"""Standard codecs for volumes, as anchors of 3D rate curves: H.264 and HEVC, JPEG 2000.

A volume is a ``D×H×W`` ``uint8`` array (axial slices along D, as ``data_modules.hvsmr`` hands
them). ``h264`` and ``hevc`` code it as a video of its slices (inter prediction across slices,
PyAV's bundled FFmpeg with libx264 / libx265, preset ``medium``, one thread), lossy at a constant
rate factor. x265 then gives the same bytes every run; x264 still varies by a few bytes on some
volumes between runs (seen: 1331-1340 B for one 32³ volume), so a point's bpp counts the bytes
that run produced; ``jpeg2000`` codes each slice as a J2K
codestream (OpenJPEG via Pillow, target PSNR in dB).

Grey stays grey: both video encoders take FFmpeg's ``gray`` pixel format (4:0:0, luma only; no
chroma planes are coded), so nothing of the rate goes to flat colour planes. yuv420p is not used.
Odd heights/widths are padded by edge replication to even (FFmpeg's frame size rule), and for
HEVC slices under 64 px to 64 (x265 crashes on smaller frames); decoding crops back.

What the bytes are (every byte counts in ``bpp = 8·len(data) / voxels``): a 6-byte header
(D, H, W as big-endian uint16, the only container overhead), then for ``h264``/``hevc`` the whole
Annex-B elementary stream (parameter sets, SEI and every slice NAL unit; no MP4/MKV box), for
``jpeg2000`` per slice a 4-byte length and its codestream (headers included).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from mvmic.codecs.standard import STANDARD_CODECS, CodecUnavailableError

_HEADER = struct.Struct(">HHH")
#: libx264 / libx265 encoder and FFmpeg decoder of each video codec
_VIDEO = {"h264": ("libx264", "h264"), "hevc": ("libx265", "hevc")}


@dataclass(frozen=True)
class VolumeCodec:
    """One volume codec: ``encode(volume, quality) -> bytes``, ``decode(bytes) -> volume``.

    Attributes:
        name: registry and record name (``h264``, ``hevc``, ``jpeg2000``).
        qualities: default grid, ascending (quality grows with the rate).
        quality_meaning: what the number means (shown in records and docs).
    """

    name: str
    _encode: Callable[[np.ndarray, float], bytes]
    _decode: Callable[[bytes, tuple[int, int, int]], np.ndarray]
    qualities: tuple[float, ...]
    quality_meaning: str

    def encode(self, volume: np.ndarray, quality: float) -> bytes:
        """A ``D×H×W`` uint8 volume at ``quality`` -> header + stream bytes."""
        volume = np.asarray(volume)
        if volume.dtype != np.uint8 or volume.ndim != 3 or min(volume.shape) < 1:
            raise ValueError(
                f"{self.name}: volume codecs take D×H×W uint8 arrays, got {volume.dtype} "
                f"{volume.shape}; quantise the volume to 8 bits (mvmic anchors --bit_depth 8)"
            )
        if max(volume.shape) > 0xFFFF:
            raise ValueError(f"{self.name}: volume {volume.shape} exceeds 65535 along an axis")
        return _HEADER.pack(*volume.shape) + self._encode(np.ascontiguousarray(volume), quality)

    def decode(self, data: bytes) -> np.ndarray:
        """Bytes from :meth:`encode` -> the ``D×H×W`` uint8 volume (the input's shape)."""
        if len(data) < _HEADER.size:
            raise ValueError(f"{self.name}: {len(data)} bytes is not a coded volume")
        shape = _HEADER.unpack(data[: _HEADER.size])
        out = self._decode(data[_HEADER.size :], shape)
        if out.shape != shape:
            raise ValueError(f"{self.name}: decoded {out.shape}, header says {shape}; corrupt")
        return out


def _av(encoder: str):
    try:
        import av
    except ImportError as err:  # pragma: no cover - av is a dependency
        raise CodecUnavailableError("video anchors need PyAV: pip install av") from err
    if encoder not in av.codecs_available:
        raise CodecUnavailableError(f"this PyAV's FFmpeg has no {encoder} encoder")
    return av


def _video_encode(name: str, volume: np.ndarray, quality: float) -> bytes:
    encoder = _VIDEO[name][0]
    av = _av(encoder)
    d, h, w = volume.shape
    # x265 (PyAV 18's bundled build) corrupts its heap on frames under 64 px (its CTU size):
    # pad those to 64, as every odd size to even, by edge replication (cheap to predict).
    least = 64 if encoder == "libx265" else 2
    ph, pw = (max(least, n + (n & 1)) for n in (h, w))
    volume = np.pad(volume, ((0, 0), (0, ph - h), (0, pw - w)), mode="edge")
    ctx = av.CodecContext.create(encoder, "w")
    ctx.width, ctx.height, ctx.pix_fmt = volume.shape[2], volume.shape[1], "gray"
    ctx.time_base, ctx.framerate = Fraction(1, 25), Fraction(25, 1)
    crf = str(max(0, min(51, round(51 - quality))))
    options = {"crf": crf, "preset": "medium"}
    if encoder == "libx265":
        # one thread everywhere, lookahead included: with lookahead slices x265's bytes vary
        # when the CPU is loaded (2 of 30 encodes differed under two parallel jobs)
        options["x265-params"] = (
            "log-level=error:pools=none:frame-threads=1:no-wpp=1:"
            "lookahead-slices=0:lookahead-threads=0"
        )
    else:
        options["threads"] = "1"
    ctx.options = options
    ctx.thread_count = 1
    packets = []
    for z in range(d):
        frame = av.VideoFrame.from_ndarray(volume[z], format="gray")
        frame.pts = z
        packets += ctx.encode(frame)
    packets += ctx.encode(None)
    return b"".join(bytes(p) for p in packets)


def _video_decode(name: str, data: bytes, shape: tuple[int, int, int]) -> np.ndarray:
    av = _av(_VIDEO[name][0])
    ctx = av.CodecContext.create(_VIDEO[name][1], "r")
    ctx.thread_count = 1
    frames = []
    for packet in ctx.parse(data) + ctx.parse(None):
        frames += ctx.decode(packet)
    frames += ctx.decode(None)
    d, h, w = shape
    if len(frames) != d:
        raise ValueError(f"{name}: decoded {len(frames)} slices, expected {d}; corrupt stream")
    return np.stack([f.to_ndarray(format="gray")[:h, :w] for f in frames])


def _j2k_encode(volume: np.ndarray, quality: float) -> bytes:
    j2k = STANDARD_CODECS["jpeg2000"]
    parts = [j2k.encode(s, quality) for s in volume]
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


def _j2k_decode(data: bytes, shape: tuple[int, int, int]) -> np.ndarray:
    j2k, pos, slices = STANDARD_CODECS["jpeg2000"], 0, []
    while pos + 4 <= len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        slices.append(j2k.decode(data[pos + 4 : pos + 4 + n]))
        pos += 4 + n
    if len(slices) != shape[0] or pos != len(data):
        raise ValueError(f"jpeg2000: {len(slices)} slices in the data, expected {shape[0]}")
    return np.stack(slices)


VOLUME_CODECS: dict[str, VolumeCodec] = {
    "h264": VolumeCodec(
        "h264",
        lambda v, q: _video_encode("h264", v, q),
        lambda b, s: _video_decode("h264", b, s),
        (0, 4, 8, 12, 16, 21),
        "51 - x264 CRF (video of the slices, gray 4:0:0)",
    ),
    "hevc": VolumeCodec(
        "hevc",
        lambda v, q: _video_encode("hevc", v, q),
        lambda b, s: _video_decode("hevc", b, s),
        (0, 4, 8, 12, 16, 21),
        "51 - x265 CRF (video of the slices, gray 4:0:0)",
    ),
    "jpeg2000": VolumeCodec(
        "jpeg2000",
        _j2k_encode,
        _j2k_decode,
        (22, 26, 30, 34, 38),
        "OpenJPEG target PSNR in dB, slice by slice",
    ),
}


def get_volume_codec(name: str) -> VolumeCodec:
    """The volume codec ``name``; a clear error if unknown or its encoder is missing here."""
    key = name.lower().replace("-", "").replace("_", "")
    key = {"j2k": "jpeg2000", "jpeg2k": "jpeg2000", "h265": "hevc", "x264": "h264"}.get(key, key)
    if key not in VOLUME_CODECS:
        raise ValueError(
            f"{name!r} has no volume version; 3D anchors are {sorted(VOLUME_CODECS)} "
            "(pass them with --codecs)"
        )
    if key in _VIDEO:
        _av(_VIDEO[key][0])
    return VOLUME_CODECS[key]

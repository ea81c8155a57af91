"""Standard image codecs as rate-curve anchors: JPEG, JPEG 2000, WebP, AVIF, HEVC, H.264.

Every codec here is a :class:`StandardCodec` with ``encode(img, quality) -> bytes`` and
``decode(data) -> ndarray``. Images are ``H×W`` (grey) or ``H×W×3`` (RGB) arrays of ``uint8``
or ``uint16``; ``decode`` gives back the same shape and dtype. ``quality`` always grows with the
rate (more bytes), so a list of qualities gives a rate curve from low to high.

What the rate counts (``payload_bytes``; ``len(data)`` is the whole file):

============ ======================================================================================
codec        counted in ``payload_bytes``
============ ======================================================================================
jpeg         the whole JFIF file. Nothing is stripped: the quantisation and Huffman tables are
             needed to decode; only the 18-byte JFIF APP0 marker is optional. Huffman tables are
             optimised (``optimize=True``) so they are as small as Pillow makes them.
jpeg2000     the raw J2K codestream (``no_jp2=True``: no JP2 boxes at all), headers included.
             Quality is the target PSNR in dB of OpenJPEG's ``quality_mode="dB"``; RGB uses the
             multiple-component transform (``mct=1``).
webp         the VP8/VP8L chunk payload: the 12-byte RIFF header and the 8-byte chunk header
             (and VP8X/ALPH chunks, if any) are container and are not counted.
avif         the ``mdat`` box payload (the AV1 bitstream): the ISOBMFF ``ftyp``/``meta`` boxes
             (≈ 300 bytes, holding item properties and the ``av1C`` decoder configuration) are
             not counted.
hevc         as avif, the ``mdat`` payload of the HEIF file (HEVC intra, the BPG equivalent;
             x265 via pillow-heif); the VPS/SPS/PPS live in ``hvcC`` inside ``meta`` and are
             not counted, much as BPG's own small header would be.
h264         the Annex-B H.264 stream from PyAV/libx264 (one IDR frame, parameter sets
             included). Only if PyAV with libx264 is installed.
============ ======================================================================================

Bit depth and channels: JPEG, WebP and AVIF (Pillow) are 8-bit only; WebP has no grey mode, so a
grey image is coded as RGB with three equal planes (its chroma planes are flat and cost almost
nothing) and ``decode(data, channels=1)`` returns the luma. JPEG 2000 codes 16-bit grey
losslessly-capable at full 16 bits (Pillow has no 16-bit RGB mode). HEVC codes 16-bit grey and
RGB at 12 bits (the top 12 bits; the lowest 4 bits are lost even at the highest quality).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, features


class CodecUnavailableError(RuntimeError):
    """A standard codec whose library is not installed here (the message says what to install)."""


@dataclass
class StandardCodec:
    """One standard codec: encode/decode functions and what it supports.

    Attributes:
        name: registry name ("jpeg", "jpeg2000", …); also the method name in results records.
        qualities: default qualities for a low-rate curve (ascending; quality grows with rate).
        bit_depths: supported input bit depths per channel count, e.g. ``{1: (8, 16), 3: (8,)}``.
        quality_meaning: what the number means for this codec (shown in the docs/records).
    """

    name: str
    _encode: Callable[[np.ndarray, float], bytes]
    _decode: Callable[[bytes], np.ndarray]
    _payload: Callable[[bytes], int]
    qualities: tuple[float, ...]
    bit_depths: dict[int, tuple[int, ...]] = field(default_factory=dict)
    quality_meaning: str = ""

    def supports(self, img: np.ndarray) -> bool:
        """Whether this codec can code ``img`` (by channel count and bit depth)."""
        channels = 1 if img.ndim == 2 else img.shape[2]
        depth = 16 if img.dtype == np.uint16 else 8
        return depth in self.bit_depths.get(channels, ())

    def encode(self, img: np.ndarray, quality: float) -> bytes:
        """Encode an ``H×W`` / ``H×W×3`` uint8/uint16 image at ``quality`` into file bytes."""
        img = _check_image(img)
        if not self.supports(img):
            channels = 1 if img.ndim == 2 else img.shape[2]
            raise ValueError(
                f"{self.name}: cannot code {channels}-channel {img.dtype} images "
                f"(supported: {self.bit_depths}); convert the image or pick another codec"
            )
        return self._encode(img, quality)

    def decode(self, data: bytes, channels: int | None = None) -> np.ndarray:
        """Decode file bytes into an ``H×W`` / ``H×W×3`` array (same dtype as encoded).

        Args:
            data: the bytes :meth:`encode` returned.
            channels: 1 to get a grey image back from codecs that coded it as RGB (WebP).
        """
        out = self._decode(data)
        if channels == 1 and out.ndim == 3:
            out = np.asarray(Image.fromarray(out).convert("L")).copy()
        return out

    def payload_bytes(self, data: bytes) -> int:
        """Bytes that count for the rate (see the module docstring for what is excluded)."""
        return self._payload(data)


def _check_image(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"image dtype {img.dtype} not supported; pass uint8 or uint16 arrays")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        raise ValueError(f"image shape {img.shape} not supported; pass H×W or H×W×3")
    return np.ascontiguousarray(img)


def _to_pil(img: np.ndarray) -> Image.Image:
    if img.dtype == np.uint16:
        if img.ndim != 2:
            raise ValueError("Pillow has no 16-bit RGB mode; use hevc for 16-bit RGB")
        h, w = img.shape
        return Image.frombytes("I;16", (w, h), img.astype("<u2").tobytes())
    return Image.fromarray(img)


def _from_pil(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        return np.asarray(im).astype(np.uint16)
    if im.mode not in ("L", "RGB"):
        im = im.convert("RGB")
    return np.asarray(im).copy()


def _pil_save(im: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _whole(data: bytes) -> int:
    return len(data)


def _isobmff_mdat_payload(data: bytes) -> int:
    """Size of the payload of the top-level ``mdat`` boxes of an ISOBMFF (HEIF/AVIF) file."""
    pos, total = 0, 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        header = 8
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
            header = 16
        elif size == 0:
            size = len(data) - pos
        if size < header:
            raise ValueError("corrupt ISOBMFF box structure; re-encode the image")
        if kind == b"mdat":
            total += size - header
        pos += size
    if total == 0:
        raise ValueError("no 'mdat' box found in the HEIF/AVIF file; re-encode the image")
    return total


def _riff_payload(data: bytes) -> int:
    """Size of the VP8/VP8L image chunk(s) of a WebP file, without RIFF/chunk headers."""
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise ValueError("not a WebP RIFF file; re-encode the image")
    pos, total = 12, 0
    while pos + 8 <= len(data):
        kind, size = struct.unpack("<4sI", data[pos : pos + 8])
        if kind in (b"VP8 ", b"VP8L"):
            total += size
        pos += 8 + size + (size & 1)
    return total


# --- JPEG ------------------------------------------------------------------------------------


def _jpeg_encode(img: np.ndarray, quality: float) -> bytes:
    return _pil_save(_to_pil(img), "JPEG", quality=int(quality), optimize=True)


def _pil_decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return _from_pil(im)


# --- JPEG 2000 -------------------------------------------------------------------------------


def _j2k_encode(img: np.ndarray, quality: float) -> bytes:
    kwargs = {"no_jp2": True, "quality_mode": "dB", "quality_layers": [float(quality)]}
    if img.ndim == 3:
        kwargs["mct"] = 1  # RGB -> YCbCr-like decorrelation, as JPEG 2000 anchors are usually run
    return _pil_save(_to_pil(img), "JPEG2000", **kwargs)


# --- WebP ------------------------------------------------------------------------------------


def _webp_encode(img: np.ndarray, quality: float) -> bytes:
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)  # WebP has no grey mode
    return _pil_save(Image.fromarray(img), "WEBP", quality=int(quality), method=6)


# --- AVIF (Pillow >= 11.2 has a native AVIF plugin) -----------------------------------------


def _avif_encode(img: np.ndarray, quality: float) -> bytes:
    if not features.check("avif"):
        raise CodecUnavailableError("avif: this Pillow has no AVIF support; install Pillow >= 11.2")
    return _pil_save(_to_pil(img), "AVIF", quality=int(quality), speed=6, max_threads=1)


# --- HEVC intra (pillow-heif / x265), the BPG equivalent -------------------------------------


def _heif():
    try:
        import pillow_heif
    except ImportError as err:  # pragma: no cover - pillow-heif is a dependency
        raise CodecUnavailableError("hevc: install pillow-heif (pip install pillow-heif)") from err
    return pillow_heif


def _hevc_encode(img: np.ndarray, quality: float) -> bytes:
    ph = _heif()
    if img.dtype == np.uint16:
        mode = "I;16" if img.ndim == 2 else "RGB;16"
        data = img.astype("<u2").tobytes()
    else:
        mode = "L" if img.ndim == 2 else "RGB"
        data = img.tobytes()
    heif = ph.from_bytes(mode=mode, size=(img.shape[1], img.shape[0]), data=data)
    buf = io.BytesIO()
    old = ph.options.SAVE_HDR_TO_12_BIT
    ph.options.SAVE_HDR_TO_12_BIT = True  # 16-bit input -> 12-bit HEVC (the most x265 keeps)
    try:
        heif.save(buf, quality=int(quality), save_nclx_profile=False)
    finally:
        ph.options.SAVE_HDR_TO_12_BIT = old
    return buf.getvalue()


def _hevc_decode(data: bytes) -> np.ndarray:
    ph = _heif()
    heif = ph.open_heif(io.BytesIO(data), convert_hdr_to_8bit=False)
    arr = np.asarray(heif)
    if arr.dtype == np.uint16:
        return arr.astype(np.uint16)
    return arr.copy()


# --- H.264 intra (PyAV + libx264, optional) ---------------------------------------------------


def _av():
    try:
        import av
    except ImportError as err:
        raise CodecUnavailableError(
            "h264: PyAV is not installed; `pip install av` (its wheels bundle FFmpeg with libx264)"
        ) from err
    if "libx264" not in av.codecs_available:
        raise CodecUnavailableError("h264: this PyAV's FFmpeg has no libx264 encoder")
    return av


def _h264_encode(img: np.ndarray, quality: float) -> bytes:
    av = _av()
    h, w = img.shape[:2]
    rgb = img if img.ndim == 3 else np.repeat(img[:, :, None], 3, axis=2)
    # yuv420p needs even sizes; pad by edge replication and keep the true size in 4 bytes.
    ph, pw = h + (h & 1), w + (w & 1)
    rgb = np.pad(rgb, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = pw, ph, "yuv444p"
    ctx.options = {"crf": str(max(0, 51 - int(quality))), "preset": "medium", "tune": "stillimage"}
    ctx.gop_size = 1
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv444p")
    stream = b"".join(bytes(p) for p in ctx.encode(frame)) + b"".join(
        bytes(p) for p in ctx.encode(None)
    )
    return struct.pack(">HH", h, w) + bytes([img.ndim]) + stream


def _h264_decode(data: bytes) -> np.ndarray:
    av = _av()
    h, w = struct.unpack(">HH", data[:4])
    ndim = data[4]
    ctx = av.CodecContext.create("h264", "r")
    frames = []
    for packet in ctx.parse(data[5:]) + ctx.parse(None):
        frames.extend(ctx.decode(packet))
    if not frames:
        raise ValueError("h264: no frame decoded; the stream is corrupt")
    rgb = frames[0].to_ndarray(format="rgb24")[:h, :w]
    return rgb[:, :, 0].copy() if ndim == 2 else rgb


def _h264_payload(data: bytes) -> int:
    return len(data) - 5  # our 5-byte size prefix is not part of the H.264 stream


STANDARD_CODECS: dict[str, StandardCodec] = {
    "jpeg": StandardCodec(
        "jpeg",
        _jpeg_encode,
        _pil_decode,
        _whole,
        (5, 10, 20, 30, 50, 75, 90),
        {1: (8,), 3: (8,)},
        "libjpeg quality 1-95",
    ),
    "jpeg2000": StandardCodec(
        "jpeg2000",
        _j2k_encode,
        _pil_decode,
        _whole,
        (22, 26, 30, 34, 38, 42),
        {1: (8, 16), 3: (8,)},
        "OpenJPEG target PSNR in dB",
    ),
    "webp": StandardCodec(
        "webp",
        _webp_encode,
        _pil_decode,
        _riff_payload,
        (1, 5, 15, 30, 50, 75, 90),
        {1: (8,), 3: (8,)},
        "libwebp quality 0-100",
    ),
    "avif": StandardCodec(
        "avif",
        _avif_encode,
        _pil_decode,
        _isobmff_mdat_payload,
        (5, 15, 30, 45, 60, 75),
        {1: (8,), 3: (8,)},
        "libavif quality 0-100",
    ),
    "hevc": StandardCodec(
        "hevc",
        _hevc_encode,
        _hevc_decode,
        _isobmff_mdat_payload,
        (5, 15, 30, 45, 60, 75),
        {1: (8, 16), 3: (8, 16)},
        "x265 quality 0-100 (pillow-heif)",
    ),
    "h264": StandardCodec(
        "h264",
        _h264_encode,
        _h264_decode,
        _h264_payload,
        (5, 11, 17, 23, 29, 35),
        {1: (8,), 3: (8,)},
        "51 - x264 CRF",
    ),
}


def codec_available(name: str) -> str | None:
    """None if codec ``name`` works here, else the reason it does not."""
    try:
        if name == "h264":
            _av()
        elif name == "avif" and not features.check("avif"):
            return "avif: this Pillow has no AVIF support; install Pillow >= 11.2"
        elif name == "hevc":
            _heif()
        elif name == "jpeg2000" and not features.check("jpg_2000"):
            return "jpeg2000: this Pillow was built without OpenJPEG"
        elif name == "webp" and not features.check("webp"):
            return "webp: this Pillow was built without libwebp"
    except CodecUnavailableError as err:
        return str(err)
    return None


def get_standard_codec(name: str) -> StandardCodec:
    """The codec called ``name``; a clear error if unknown or not installed."""
    key = name.lower().replace("-", "").replace("_", "")
    key = {"jpeg2k": "jpeg2000", "j2k": "jpeg2000", "heic": "hevc", "bpg": "hevc"}.get(key, key)
    if key not in STANDARD_CODECS:
        raise ValueError(f"unknown standard codec {name!r}; choose from {sorted(STANDARD_CODECS)}")
    reason = codec_available(key)
    if reason:
        raise CodecUnavailableError(reason)
    return STANDARD_CODECS[key]


def available_codecs(names: Sequence[str] | None = None) -> list[str]:
    """The names (of ``names``, default all) that work in this environment."""
    return [n for n in (names or STANDARD_CODECS) if codec_available(n) is None]

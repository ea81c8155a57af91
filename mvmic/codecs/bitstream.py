"""The on-disk container for one compressed image (or a stack of slices).

Byte layout, version 1 (all integers little-endian; "varint" is unsigned LEB128):

    offset  size  field
    0       4     magic  b"MVMC"
    4       1     format version (1)
    5       1     codec id (see ``CODEC_IDS``)
    6       4     model hash: first 4 bytes of SHA-256 over the weights decoding depends on
    10      2     height of the original image (uint16)
    12      2     width of the original image (uint16)
    14      1     channels (1 or 3)
    15      1     bit depth of the source image (1..16)
    16      var   depth D of the original volume (varint; 1 for a 2D image or slice stack)
            var   number of frames F (varint; 1 for one image or one 3D code, else slices)
            var   per frame: number of strings S (varint), then S string lengths (varint)
            ...   payload: every string of every frame, in order, concatenated
    end-4   4     CRC32 (zlib) of every byte before it

One image with a two-string hyperprior code costs 16 + 1 + 1 + 1 + 2·2 + 4 = 27 bytes of overhead
when each string is shorter than 16 KiB.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

MAGIC = b"MVMC"
FORMAT_VERSION = 1
_FIXED = struct.Struct("<4sBB4sHHBB")  # magic, version, codec id, hash, H, W, C, bit depth
_CRC = struct.Struct("<I")
MAX_FRAMES = 1 << 16
MAX_STRINGS = 16

#: Stable one-byte identifiers of the codecs; never renumber, only append.
CODEC_IDS: dict[str, int] = {
    "bmshj2018-hyperprior": 1,
    "mbt2018-mean": 2,
    "cheng2020-anchor": 3,
    "liu2020-binary": 16,
}
_CODEC_NAMES = {v: k for k, v in CODEC_IDS.items()}


class BitstreamError(ValueError):
    """A file or byte string is not a valid mvmic bitstream for this model."""


def _put_varint(n: int, out: bytearray) -> None:
    if n < 0:
        raise ValueError(f"varint must be non-negative, got {n}")
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def _get_varint(data: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end:
            raise BitstreamError(f"truncated: the file ends inside the {what}")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 35:
            raise BitstreamError(f"corrupted: the {what} is not a valid number")


@dataclass
class Bitstream:
    """A compressed image: header fields plus the entropy-coded strings of each frame."""

    codec: str
    model_hash: bytes
    height: int
    width: int
    channels: int
    bit_depth: int = 8
    frames: list[list[bytes]] = field(default_factory=list)
    depth: int = 1

    @property
    def payload_bytes(self) -> int:
        """Bytes of entropy-coded data, without the container's header and checksum."""
        return sum(len(s) for frame in self.frames for s in frame)

    def to_bytes(self) -> bytes:
        if self.codec not in CODEC_IDS:
            raise BitstreamError(f"codec {self.codec!r} has no id; known: {sorted(CODEC_IDS)}")
        if not (1 <= self.height <= 0xFFFF and 1 <= self.width <= 0xFFFF):
            raise BitstreamError(f"image size {self.height}x{self.width} must be 1..65535 a side")
        if self.channels not in (1, 3) or not 1 <= self.bit_depth <= 16:
            raise BitstreamError(
                f"channels={self.channels}, bit depth={self.bit_depth} unsupported"
            )
        if len(self.model_hash) != 4:
            raise BitstreamError("model hash must be 4 bytes")
        if self.depth < 1:
            raise BitstreamError(f"depth must be >= 1, got {self.depth}")
        out = bytearray(
            _FIXED.pack(
                MAGIC,
                FORMAT_VERSION,
                CODEC_IDS[self.codec],
                self.model_hash,
                self.height,
                self.width,
                self.channels,
                self.bit_depth,
            )
        )
        _put_varint(self.depth, out)
        _put_varint(len(self.frames), out)
        for frame in self.frames:
            _put_varint(len(frame), out)
            for s in frame:
                _put_varint(len(s), out)
        for frame in self.frames:
            for s in frame:
                out += s
        out += _CRC.pack(zlib.crc32(out))
        return bytes(out)

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        *,
        expect_codec: str | None = None,
        expect_hash: bytes | None = None,
        source: str = "bitstream",
    ) -> Bitstream:
        """Parse and fully validate ``data``; every failure is a :class:`BitstreamError`.

        Nothing is returned unless the checksum matches, so no unchecked byte can reach the
        entropy decoder. ``expect_codec``/``expect_hash`` reject files made by another model.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise BitstreamError(f"{source}: expected bytes, got {type(data).__name__}")
        data = bytes(data)
        n = len(data)
        if n == 0:
            raise BitstreamError(f"{source}: empty file (0 bytes)")
        if n < 4 or data[:4] != MAGIC:
            if MAGIC.startswith(bytes(data[:4])) and n < 4:
                raise BitstreamError(f"{source}: truncated: only {n} bytes")
            raise BitstreamError(
                f"{source}: not an mvmic bitstream (magic {bytes(data[:4])!r}, expected {MAGIC!r})"
            )
        if n < 5:
            raise BitstreamError(f"{source}: truncated: only {n} bytes")
        if data[4] != FORMAT_VERSION:
            if n < 8 or zlib.crc32(data[:-4]) != _CRC.unpack_from(data, n - 4)[0]:
                # A damaged version byte, not a file from another release.
                raise BitstreamError(
                    f"{source}: corrupted: version byte {data[4]} and checksum both wrong"
                )
            raise BitstreamError(
                f"{source}: format version {data[4]}, this mvmic reads version {FORMAT_VERSION}; "
                "decode it with the mvmic release that wrote it"
            )
        if n < _FIXED.size + 2 + _CRC.size:
            raise BitstreamError(f"{source}: truncated: {n} bytes is shorter than any header")
        end = n - _CRC.size
        try:
            _, _, codec_id, model_hash, h, w, c, bit_depth = _FIXED.unpack_from(data, 0)
            pos = _FIXED.size
            depth, pos = _get_varint(data, pos, end, "depth")
            if not 1 <= depth <= 0xFFFF:
                raise BitstreamError(f"corrupted: depth {depth}")
            n_frames, pos = _get_varint(data, pos, end, "frame count")
            if not 1 <= n_frames <= MAX_FRAMES:
                raise BitstreamError(f"corrupted: frame count {n_frames}")
            lengths: list[list[int]] = []
            for _ in range(n_frames):
                n_str, pos = _get_varint(data, pos, end, "string count")
                if not 1 <= n_str <= MAX_STRINGS:
                    raise BitstreamError(f"corrupted: string count {n_str}")
                frame_lengths = []
                for _ in range(n_str):
                    length, pos = _get_varint(data, pos, end, "string length")
                    frame_lengths.append(length)
                lengths.append(frame_lengths)
            declared = pos + sum(map(sum, lengths))
        except BitstreamError as err:
            crc_ok = zlib.crc32(data[:end]) == _CRC.unpack_from(data, end)[0]
            raise BitstreamError(
                f"{source}: {err}" if crc_ok else f"{source}: {_damage(err)}"
            ) from None
        if declared != end:
            if declared > end:
                raise BitstreamError(
                    f"{source}: truncated: header declares {declared + _CRC.size} bytes, "
                    f"file has {n}"
                )
            if zlib.crc32(data[:end]) != _CRC.unpack_from(data, end)[0]:
                raise BitstreamError(f"{source}: corrupted: checksum (CRC32) mismatch")
            raise BitstreamError(f"{source}: {n - declared - _CRC.size} unexpected trailing bytes")
        if zlib.crc32(data[:end]) != _CRC.unpack_from(data, end)[0]:
            raise BitstreamError(f"{source}: corrupted: checksum (CRC32) mismatch")
        if codec_id not in _CODEC_NAMES:
            raise BitstreamError(f"{source}: unknown codec id {codec_id}")
        codec = _CODEC_NAMES[codec_id]
        if h < 1 or w < 1 or c not in (1, 3) or not 1 <= bit_depth <= 16:
            raise BitstreamError(
                f"{source}: invalid header (size {h}x{w}, {c} ch, {bit_depth} bit)"
            )
        if expect_codec is not None and codec != expect_codec:
            raise BitstreamError(
                f"{source}: made by codec {codec!r}, but this model is {expect_codec!r}"
            )
        if expect_hash is not None and model_hash != expect_hash:
            raise BitstreamError(
                f"{source}: made by a different checkpoint (weights hash {model_hash.hex()}, "
                f"this model {expect_hash.hex()}); decode with the checkpoint that encoded it"
            )
        frames = []
        for frame_lengths in lengths:
            strings = []
            for length in frame_lengths:
                strings.append(bytes(data[pos : pos + length]))
                pos += length
            frames.append(strings)
        return cls(codec, bytes(model_hash), h, w, c, bit_depth, frames, depth)

    def save(self, path: str | Path) -> int:
        data = self.to_bytes()
        Path(path).write_bytes(data)
        return len(data)

    @classmethod
    def load(cls, path: str | Path, **expect) -> Bitstream:
        path = Path(path)
        if not path.is_file():
            raise BitstreamError(f"{path}: no such file")
        return cls.from_bytes(path.read_bytes(), source=str(path), **expect)


def _damage(err: BitstreamError) -> str:
    # The checksum failed too, so the parse error is a symptom of damage: say so.
    msg = str(err)
    return msg if msg.startswith(("truncated", "corrupted")) else f"corrupted: {msg}"

"""Bytes in, task output out: the one place where the service decodes and predicts.

:class:`Service` wraps a module loaded by the safe checkpoint loader. It turns a request body
(a ``.mvmic`` container, or a PNG/JPEG upload for the baseline) into what the task network
reads, runs the task (on one item, or on a micro-batch of decoded items), and returns what
the answer is made of (masks and detections are encoded by :mod:`mvmic.io.task_outputs`, the
writer of ``mvmic decompress --task``; the reconstruction here). Every refusal is a
:class:`Refusal` carrying the HTTP status; nothing here knows about HTTP beyond that number.

The decode → predict path is ``codec.decompress`` followed by the module's ``task_output``,
the same two calls that ``mvmic predict`` (``BaseModule.predict_step``) and
``mvmic decompress --task`` make, so a served mask equals theirs for the same file.
"""

from __future__ import annotations

import gzip
import io
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mvmic.codecs import base as codec_base
from mvmic.codecs.bitstream import Bitstream, BitstreamError
from mvmic.io.task_outputs import detection_records, mask_codes
from mvmic.serve.api import (  # noqa: F401 - re-exported: the service's vocabulary
    JPEG,
    JSON,
    MVMIC,
    NIFTI,
    PNG,
    TIFF,
    UPLOADS,
    Refusal,
)


@dataclass
class Decoded:
    """What the task network reads for one request, and what it cost to get it."""

    #: the codec's output (F×C×H×W, or 1×C×D×H×W for a volumetric codec), or the image
    tensor: Tensor
    bit_depth: int
    #: whether ``tensor`` is a volume (B×C×D×H×W)
    volume: bool
    decode_ms: float
    #: for a ``.mvmic`` body: the container's header (shape and bit depth only)
    bitstream: Bitstream | None = None

    @property
    def frames(self) -> int:
        """Frames of the mask this request gets (slices of a volume or of a stack)."""
        return self.tensor.shape[2] * self.tensor.shape[0] if self.volume else self.tensor.shape[0]


@dataclass
class Prediction:
    """The task output of one request: a mask (N×H×W class indices) or detections."""

    mask: np.ndarray | None = None
    detections: list[dict[str, list]] = field(default_factory=list)
    task_ms: float = 0.0
    batch_size: int = 1


def _decodes_images(codec: nn.Module) -> bool:
    # The codec contract says it: Liu et al.'s g outputs a feature map for the segmentor; the
    # other codecs decode images, which the task network can also read raw.
    return bool(codec.decodes_image)


class Service:
    """A loaded checkpoint ready to serve: decoder, task network, their identity.

    Args:
        module: an mvmic module with a codec and a task network (``load_module``'s result).
        source: where it came from (shown in ``/v1/model``).

    Raises:
        ValueError: the module has no codec or no task network.
    """

    def __init__(self, module: nn.Module, source: str = "") -> None:
        from mvmic.coding import resolve_model

        try:
            codec, task = resolve_model(module)
        except TypeError as err:
            raise ValueError(f"{source}: {err}; mvmic serve needs a codec checkpoint") from None
        if task is None or not hasattr(module, "task_output"):
            raise ValueError(f"{source}: the checkpoint has no task network to serve")
        self.module, self.codec, self.task = module.eval(), codec.eval(), task
        self.source = source
        codec.update()  # tables before hashing: files carry the hash of updated tables
        self.weights_hash = codec.weights_hash()
        self.kind = getattr(task, "task", "segmentation")

    @classmethod
    def load(cls, ckpt: str | Path) -> Service:
        """Load ``ckpt`` with the safe loader (``mvmic.modules.load_module``)."""
        from mvmic.modules import load_module

        return cls(load_module(ckpt), str(ckpt))

    # -- identity ----------------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        names = getattr(self.task, "class_names", None)
        if names:
            return [str(n) for n in names]
        hp = getattr(self.module, "hparams", {})
        k = int(getattr(self.task, "num_classes", 0) or hp.get("num_classes", 2))
        return ["background"] + [f"class{i}" for i in range(1, k)]

    def info(self) -> dict[str, Any]:
        """What ``GET /v1/model`` answers: enough for a client to check it has this model."""
        import mvmic

        outputs = [JSON] if self.kind == "detection" else [PNG, NIFTI]
        uploads = ["application/octet-stream (.mvmic)"]
        if _decodes_images(self.codec) and self.codec.spatial_dims == 2:
            uploads += [PNG, JPEG]
        return {
            "codec": self.codec.name,
            "weights_hash": self.weights_hash.hex(),
            "task": self.kind,
            "classes": self.class_names,
            "module": type(self.module).__name__,
            "channels": int(self.codec.in_channels),
            "spatial_dims": int(self.codec.spatial_dims),
            "bit_depths": list(range(1, 17)),
            "uploads": uploads,
            "outputs": outputs,
            "mvmic_version": mvmic.__version__,
        }

    # -- decoding ----------------------------------------------------------------------
    def decode(
        self, data: bytes, source: str = "request body", max_pixels: int | None = None
    ) -> Decoded:
        """Decode a ``.mvmic`` body; a :class:`Refusal` (400, 409 or 413) if it cannot be.

        ``max_pixels``: the service's own limit on frames × H × W (× D), below the decoder's
        budget; checked from the header, before any decoding.
        """
        t0 = time.perf_counter()
        try:
            header = Bitstream.from_bytes(data, source=source)
        except BitstreamError as err:
            raise Refusal(400, "bad_bitstream", str(err)) from None
        if header.codec != self.codec.name or header.model_hash != self.weights_hash:
            raise Refusal(
                409,
                "other_model",
                f"{source}: made by codec {header.codec!r} with weights hash "
                f"{header.model_hash.hex()}, but this server runs {self.codec.name!r} with "
                f"weights hash {self.weights_hash.hex()}; compress with the server's checkpoint "
                "(GET /v1/model names it)",
            )
        self._check_budget(header, source, max_pixels)
        try:
            tensor = self.codec.decompress(header, source=source)
        except BitstreamError as err:
            raise Refusal(400, "bad_bitstream", str(err)) from None
        ms = 1e3 * (time.perf_counter() - t0)
        return Decoded(tensor, header.bit_depth, self.codec.spatial_dims == 3, ms, header)

    def _check_budget(self, bs: Bitstream, source: str, max_pixels: int | None) -> None:
        # The decoder refuses these too (a BitstreamError); here they are told apart as 413.
        size = (bs.depth, bs.height, bs.width)[3 - self.codec.spatial_dims :]
        shown = f"{len(bs.frames)} frame(s) of {'x'.join(map(str, size))}"
        stride = self.codec.stride
        frame = math.prod(-(-s // stride) * stride for s in size)
        total = frame * len(bs.frames)
        if frame > codec_base.MAX_FRAME_PIXELS or total > codec_base.MAX_TOTAL_PIXELS:
            raise Refusal(
                413,
                "too_large",
                f"{source}: {shown} exceed the decoder's budget "
                f"({codec_base.MAX_FRAME_PIXELS} px per frame, "
                f"{codec_base.MAX_TOTAL_PIXELS} in all)",
            )
        pixels = math.prod(size) * len(bs.frames)
        if max_pixels is not None and pixels > max_pixels:
            raise Refusal(
                413,
                "too_large",
                f"{source}: {shown} ({pixels} px) exceed this server's limit of {max_pixels} "
                "px (mvmic serve --max-pixels)",
            )

    def decode_image(self, data: bytes, kind: str, max_pixels: int | None = None) -> Decoded:
        """Read a PNG or JPEG upload (the baseline of Liu et al.'s Table 2) for the task."""
        from PIL import Image, UnidentifiedImageError

        from mvmic.io import ImageReadError, match_channels, read_image

        if not _decodes_images(self.codec) or self.codec.spatial_dims != 2:
            raise Refusal(
                415,
                "unsupported_media_type",
                f"this model's task network reads the {self.codec.name} decoder's output, not "
                "images: upload a .mvmic (Content-Type: application/octet-stream)",
            )
        t0 = time.perf_counter()
        try:
            with Image.open(io.BytesIO(data)) as img:  # the header only: size before pixels
                w, h = img.size
                fmt = (img.format or "").lower()
        except (UnidentifiedImageError, OSError, ValueError) as err:
            raise Refusal(400, "bad_image", f"request body: not a {kind.upper()} ({err})") from None
        if fmt != kind:
            raise Refusal(
                400, "bad_image", f"request body: Content-Type says {kind}, the data is {fmt!r}"
            )
        limit = min(codec_base.MAX_FRAME_PIXELS, max_pixels or codec_base.MAX_FRAME_PIXELS)
        if w * h > limit:
            raise Refusal(
                413, "too_large", f"request body: a {w}x{h} image exceeds the limit of {limit} px"
            )
        with tempfile.TemporaryDirectory(prefix="mvmic-serve-") as tmp:
            path = Path(tmp) / f"upload.{'png' if kind == 'png' else 'jpg'}"
            path.write_bytes(data)
            try:  # the project's reader: exact 8/16-bit codes, as `mvmic compress` reads files
                x, bits, _ = read_image(path)
            except (ImageReadError, ValueError) as err:
                msg = str(err).replace(str(path), "request body")
                raise Refusal(400, "bad_image", msg) from None
        x = torch.from_numpy(x)
        x = match_channels(x if x.dim() == 4 else x[None], self.codec.in_channels)
        ms = 1e3 * (time.perf_counter() - t0)
        return Decoded(x.contiguous(), bits, False, ms)

    # -- the task ----------------------------------------------------------------------
    @torch.inference_mode()
    def predict(self, items: list[Decoded]) -> list[Prediction]:
        """Run the task network on several decoded items as one batch (same shapes only)."""
        tensors = [d.tensor for d in items]
        if any(t.shape[1:] != tensors[0].shape[1:] for t in tensors):
            raise ValueError("predict() batches items of one shape; group them first")
        t0 = time.perf_counter()
        out = self.module.task_output(torch.cat(tensors) if len(tensors) > 1 else tensors[0])
        ms = 1e3 * (time.perf_counter() - t0)
        results, start = [], 0
        for t in tensors:
            n = t.shape[0]
            if isinstance(out, Tensor):  # class indices: F×H×W, or B×D×H×W for volumes
                mask = mask_codes(out[start : start + n])
                results.append(Prediction(mask=mask, task_ms=ms, batch_size=len(items)))
            else:
                dets = detection_records(list(out[start : start + n]))
                results.append(Prediction(detections=dets, task_ms=ms, batch_size=len(items)))
            start += n
        return results

    def warm_up(self) -> Service:
        """One request's worth of work on random data, so the first real one is not slow."""
        g = torch.Generator().manual_seed(0)
        c = self.codec.in_channels
        shape = (1, c, 64, 64) if self.codec.spatial_dims == 2 else (1, c, 16, 32, 32)
        with torch.inference_mode():
            data = self.codec.compress(torch.rand(*shape, generator=g)).to_bytes()
        self.predict([self.decode(data, source="warm-up")])
        return self


# -- answers ----------------------------------------------------------------------------
def read_mask(data: bytes, media_type: str) -> np.ndarray:
    """The N×H×W mask of a PNG or NIfTI answer (what :func:`mvmic.io.task_outputs.mask_files`
    made)."""
    if media_type == PNG:
        from PIL import Image

        return np.asarray(Image.open(io.BytesIO(data)))[None]
    import nibabel as nib

    from mvmic.io import nifti_to_frames

    img = nib.Nifti1Image.from_bytes(gzip.decompress(data))
    a = np.asanyarray(img.dataobj)
    return nifti_to_frames(a[..., None] if a.ndim == 2 else a)


def reconstruction(decoded: Decoded) -> tuple[bytes, str, str]:
    """The decoded image as ``(bytes, media type, file name)``: PNG for one frame, NIfTI for
    grey stacks and volumes, multi-page TIFF for colour stacks (as ``mvmic decompress``)."""
    from mvmic.coding import as_frames
    from mvmic.io import write_image

    x = as_frames(decoded.tensor)
    if x.shape[0] == 1:
        name, media = "reconstruction.png", PNG
    elif x.shape[1] == 1:
        name, media = "reconstruction.nii.gz", NIFTI
    else:
        name, media = "reconstruction.tif", TIFF
    with tempfile.TemporaryDirectory(prefix="mvmic-serve-") as tmp:
        path = Path(tmp) / name
        write_image(path, x, decoded.bit_depth)
        return path.read_bytes(), media, name

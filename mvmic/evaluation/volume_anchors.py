"""``mvmic anchors`` on a 3D data module: whole volumes through H.264, HEVC and JPEG 2000.

Each test volume, exactly as the data module hands it to the 3D designs (1×D×H×W in [0, 1]), is
quantised to 8 bits, coded by a volume codec (:mod:`mvmic.codecs.volume`: a video of its slices,
or JPEG 2000 slice by slice), decoded, and segmented by the task network of a checkpoint (D1's
segmentor: MONAI sliding-window inference over the whole volume, as the 3D test runs it). One
point per (codec, quality): ``bpp`` = 8·(every byte of the coded volume) / voxels, averaged over
volumes (``bpp_container`` is the same number: the 6-byte shape header is the only container),
``psnr``, the task's Dice/IoU per class, ``per_image`` (per-volume confusion counts) and
``per_volume`` (per-volume scores for Liu's Table 1, :mod:`mvmic.evaluation.liu_table`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mvmic.codecs.volume import VOLUME_CODECS, get_volume_codec
from mvmic.evaluation.anchor_readout import TaskReadout

#: what ``mvmic anchors`` codes a 3D data module with when ``--codecs`` is not given
DEFAULT_VOLUME_CODECS = tuple(VOLUME_CODECS)


def is_volumetric(loader: Any) -> bool:
    """Whether the (listed) test batches hold volumes B×C×D×H×W."""
    return bool(loader) and loader[0]["image"].dim() == 5


def _to_uint8(volume: torch.Tensor) -> np.ndarray:
    """1×D×H×W floats in [0, 1] -> D×H×W uint8."""
    if volume.shape[0] != 1:
        raise ValueError(
            f"volume anchors code grey volumes; this one has {volume.shape[0]} channels"
        )
    return (volume[0].detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def volume_roundtrip(codec_name: str, volume: torch.Tensor, quality: float) -> tuple[Any, int]:
    """One 1×D×H×W volume through a volume codec: the decoded volume and its bytes."""
    codec = get_volume_codec(codec_name)
    data = codec.encode(_to_uint8(volume), quality)
    out = torch.from_numpy(codec.decode(data).astype(np.float32) / 255)[None]
    return out.to(volume.dtype), len(data)


@torch.inference_mode()
def evaluate_volume_codec(
    codec_name: str,
    quality: float,
    tasks: Sequence[torch.nn.Module],
    loader: Any,
    bit_depth: int = 8,
) -> list[dict[str, Any]]:
    """One operating point per task net: code every test volume once, segment it with each
    net, average the metrics."""
    from mvmic.metrics import image_quality_metrics

    if bit_depth != 8:
        raise ValueError("volume anchors code 8-bit volumes; run mvmic anchors --bit_depth 8")
    codec = get_volume_codec(codec_name)
    readouts = [TaskReadout(task, volumes=True) for task in tasks]
    psnr = image_quality_metrics()["psnr"]
    totals = dict.fromkeys(("bpp", "bytes", "pixels", "depth", "height", "width"), 0.0)
    times = dict.fromkeys(("enc_ms", "dec_ms"), 0.0)
    for batch in loader:
        x = batch["image"]
        decoded, nbytes = [], []
        for volume in x:
            arr = _to_uint8(volume)
            t0 = time.perf_counter()
            data = codec.encode(arr, quality)
            t1 = time.perf_counter()
            out = codec.decode(data)
            times["enc_ms"] += 1e3 * (t1 - t0)
            times["dec_ms"] += 1e3 * (time.perf_counter() - t1)
            nbytes.append(len(data))
            totals["bpp"] += 8.0 * len(data) / arr.size
            totals["bytes"] += len(data)
            totals["pixels"] += arr.size
            for key, size in zip(("depth", "height", "width"), arr.shape):
                totals[key] += size
            decoded.append(torch.from_numpy(out.astype(np.float32) / 255)[None])
        x_hat = torch.stack(decoded).to(x.dtype)
        for readout in readouts:
            readout.read(x_hat, batch, nbytes)
        psnr.update(x_hat, x)
    # every byte is counted already: the container is the payload
    totals.update(bpp_container=totals["bpp"], file_bytes=totals["bytes"])
    shared = {"quality": float(quality), "psnr": float(psnr.compute())}
    return [readout.point(shared, totals, times) for readout in readouts]

"""``mvmic send``: compress here, upload to ``mvmic serve``, write what it answers.

    mvmic send --url http://HOST:8000 --ckpt best.ckpt scan.dcm mask.dcm
    mvmic send --url URL --ckpt CKPT in_folder/ out_folder/ [--concurrency 4]
               [--token-file FILE] [--bandwidth 10Mbit] [--overwrite]

The server's ``/v1/model`` hash is checked against the checkpoint before anything is
uploaded. Only what is safe to retry is retried: a refused connection (nothing reached the
server) and 503 (not ready); never a 4xx. ``--bandwidth`` paces the upload, so the time it
takes is a real transfer at that rate.

Outputs by suffix: ``.png`` (one frame; ``name_0000.png`` … for several), ``.nii.gz``/``.nii``
(with the source's affine when the source is NIfTI), ``.npy``, ``.dcm`` (a DICOM
Segmentation referencing a DICOM source), ``.json`` (detections). A folder gets ``.dcm`` for
DICOM inputs, ``.nii.gz`` for NIfTI, ``.png`` otherwise (``.json`` for detection).
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from email import message_from_bytes
from email.policy import HTTP
from pathlib import Path
from typing import Any

import numpy as np

from mvmic.serve import inference as inf

MASK_SUFFIXES = (".png", ".nii", ".nii.gz", ".npy", ".dcm")
DICOM_SUFFIXES = (".dcm", ".dicom")


def _usage_error(message: str) -> Exception:
    from mvmic.coding import UsageError

    return UsageError(message)


def parse_server_timing(header: str | None) -> dict[str, float]:
    """``Server-Timing: decode;dur=1.2, task;dur=3.4`` → ``{"decode": 1.2, "task": 3.4}``."""
    out: dict[str, float] = {}
    for metric in (header or "").split(","):
        name, *params = (p.strip() for p in metric.split(";"))
        for p in params:
            key, _, value = p.partition("=")
            if name and key == "dur":
                try:
                    out[name] = float(value)
                except ValueError:
                    pass
    return out


class PacedUpload:
    """The body as chunks released no faster than ``bps`` bits per second.

    Chunk ``k`` is handed to the socket when the link would have delivered its last bit, so
    the server holds the whole body ``len(data) · 8 / bps`` seconds after the first chunk:
    a link emulated in time, not a formula. ``bps=None``: as fast as the socket takes it.
    """

    def __init__(self, data: bytes, bps: float | None = None) -> None:
        self.data, self.bps = data, bps
        self.started = self.finished = 0.0

    def __iter__(self) -> Iterator[bytes]:
        self.started = time.perf_counter()
        n = len(self.data)
        chunk = max(1024, int(self.bps / 8 / 100)) if self.bps else 1 << 20  # 10 ms of link
        sent = 0
        for off in range(0, n, chunk):
            piece = self.data[off : off + chunk]
            sent += len(piece)
            if self.bps:
                delay = self.started + sent * 8 / self.bps - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            yield piece
        self.finished = time.perf_counter()

    @property
    def upload_ms(self) -> float:
        return 1e3 * (self.finished - self.started)


@dataclass
class Answer:
    """One ``/v1/infer`` exchange as the client saw it."""

    status: int
    media_type: str
    content: bytes
    headers: dict[str, str]
    upload_ms: float
    total_ms: float
    attempts: int
    timing: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == 200

    def refusal(self) -> str:
        """The server's ``{"error", "detail"}`` as one line."""
        import json

        try:
            body = json.loads(self.content)
            return f"{self.status} {body.get('error')}: {body.get('detail')}"
        except (ValueError, AttributeError):
            return f"{self.status}: {self.content[:200]!r}"

    def parts(self) -> dict[str, tuple[str, bytes]]:
        """A ``multipart/mixed`` answer (``?reconstruct=1``): file name → (media type, bytes)."""
        head = f"Content-Type: {self.headers.get('content-type', '')}\r\n\r\n".encode()
        msg = message_from_bytes(head + self.content, policy=HTTP)
        return {
            p.get_filename(): (p.get_content_type(), p.get_payload(decode=True))
            for p in msg.iter_parts()
        }


class Client:
    """An httpx client for one ``mvmic serve`` (thread-safe; one connection pool).

    Args:
        url: the server, e.g. ``http://127.0.0.1:8000``.
        token: the bearer token, if the server has ``--token-file``.
        timeout: seconds to connect, and to wait for each read/write.
        retries: retries of a refused connection or a 503 (back-off 0.5 s, doubling).
        bandwidth: bits per second to pace uploads at (None: unpaced).
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = 60.0,
        retries: int = 4,
        backoff: float = 0.5,
        bandwidth: float | None = None,
    ) -> None:
        import httpx

        self.url, self.retries, self.backoff, self.bandwidth = url, retries, backoff, bandwidth
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # Headers and body go out as separate writes; without TCP_NODELAY, Nagle's algorithm
        # can hold the body back until the server's delayed ACK of the headers.
        nodelay = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
        transport = httpx.HTTPTransport(socket_options=nodelay)
        self.http = httpx.Client(
            base_url=url, headers=headers, timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, make_body=None, **kwargs: Any):  # noqa: ANN001
        """``(response, attempts, upload)``; retries only refused connections and 503."""
        import httpx

        for attempt in range(self.retries + 1):
            upload = make_body() if make_body else None
            try:
                if upload is not None:
                    kwargs["content"] = upload
                response = self.http.request(method, path, **kwargs)
            except httpx.ConnectError as err:  # nothing reached the server: safe to retry
                if attempt == self.retries:
                    raise _usage_error(
                        f"cannot reach {self.url} ({err}); is `mvmic serve` running there?"
                    ) from None
                time.sleep(self.backoff * 2**attempt)
                continue
            except httpx.TimeoutException as err:
                raise _usage_error(
                    f"{self.url}{path}: no answer in time ({type(err).__name__}); raise --timeout"
                ) from None
            except httpx.TransportError as err:
                raise _usage_error(f"{self.url}{path}: {type(err).__name__}: {err}") from None
            if response.status_code == 503 and attempt < self.retries:
                wait_s = self.backoff * 2**attempt
                after = response.headers.get("retry-after", "")
                if after.isdigit():
                    wait_s = min(max(wait_s, float(after)), 30.0)
                time.sleep(wait_s)
                continue
            return response, attempt + 1, upload
        raise AssertionError("unreachable")

    def model(self) -> dict[str, Any]:
        """``GET /v1/model``: the server's codec, weights hash, task and classes."""
        response, _, _ = self._request("GET", "/v1/model")
        if response.status_code != 200:
            answer = Answer(response.status_code, "", response.content, {}, 0, 0, 1)
            raise _usage_error(f"{self.url}/v1/model: {answer.refusal()}")
        return response.json()

    def infer(
        self,
        data: bytes,
        accept: str | None = None,
        *,
        content_type: str = inf.MVMIC,
        reconstruct: bool = False,
    ) -> Answer:
        """``POST /v1/infer`` one body (paced at ``bandwidth``); never raises on a 4xx."""
        headers = {"Content-Type": content_type, "Content-Length": str(len(data))}
        if accept:
            headers["Accept"] = accept
        t0 = time.perf_counter()
        response, attempts, upload = self._request(
            "POST",
            "/v1/infer",
            make_body=lambda: PacedUpload(data, self.bandwidth),
            headers=headers,
            params={"reconstruct": "1"} if reconstruct else None,
        )
        total = 1e3 * (time.perf_counter() - t0)
        return Answer(
            response.status_code,
            response.headers.get("content-type", "").split(";")[0].strip(),
            response.content,
            dict(response.headers),
            upload.upload_ms,
            total,
            attempts,
            parse_server_timing(response.headers.get("server-timing")),
        )


def check_model(info: dict[str, Any], codec, url: str, ckpt: str) -> None:  # noqa: ANN001
    """Refuse, before any upload, a server that runs another checkpoint than ``ckpt``."""
    mine = codec.weights_hash().hex()
    if info.get("codec") != codec.name or info.get("weights_hash") != mine:
        raise _usage_error(
            f"{url} serves {info.get('codec')!r} with weights hash {info.get('weights_hash')}, "
            f"but --ckpt {ckpt} is {codec.name!r} with weights hash {mine}; send with the "
            "checkpoint the server runs"
        )


# -- the command -------------------------------------------------------------------------
def default_suffix(src: Path, kind: str) -> str:
    """The output suffix for ``src`` in folder mode."""
    from mvmic.io import suffix_of

    if kind == "detection":
        return ".json"
    suffix = suffix_of(src)
    if suffix in DICOM_SUFFIXES:
        return ".dcm"
    return ".nii.gz" if suffix in (".nii", ".nii.gz") else ".png"


def _check_output(dst: Path, src: Path, kind: str) -> None:
    from mvmic.io import suffix_of

    suffix = suffix_of(dst)
    allowed = (".json",) if kind == "detection" else MASK_SUFFIXES
    if suffix not in allowed:
        raise _usage_error(
            f"{dst}: a {kind} answer is written as {', '.join(allowed)}; rename the output"
        )
    if suffix == ".dcm" and suffix_of(src) not in DICOM_SUFFIXES:
        raise _usage_error(
            f"{dst}: a DICOM Segmentation references its source DICOM, and {src} is not one; "
            "write .png or .nii.gz"
        )


def write_answer(
    dst: Path,
    src: Path,
    answer: Answer,
    meta: dict[str, Any],
    class_names: list[str],
    parameters: dict[str, str],
    overwrite: bool,
) -> list[Path]:
    """Write a 200 answer to ``dst`` in the format its suffix names."""
    from mvmic.io import atomic_outputs, frames_to_nifti, output_paths, suffix_of

    suffix = suffix_of(dst)
    if suffix == ".json":
        with atomic_outputs([dst], overwrite) as (tmp,):
            tmp.write_bytes(answer.content)
        return [dst]
    mask = inf.read_mask(answer.content, answer.media_type)
    if suffix == ".dcm":
        from mvmic.serve.dicom import write_segmentation

        return write_segmentation(
            dst, src, mask, class_names, parameters=parameters, overwrite=overwrite
        )
    paths = output_paths(dst, len(mask)) if suffix == ".png" else [dst]
    with atomic_outputs(paths, overwrite) as tmps:
        if suffix == ".png" and answer.media_type == inf.PNG:
            tmps[0].write_bytes(answer.content)  # the server's PNG, byte for byte
        elif suffix == ".png":
            from PIL import Image

            for m, tmp in zip(mask, tmps, strict=True):
                Image.fromarray(m).save(tmp)
        elif suffix == ".npy":
            with open(tmps[0], "wb") as f:
                np.save(f, mask[0] if len(mask) == 1 else mask)
        else:
            import nibabel as nib

            # The bitstream carries no geometry; the source NIfTI's affine goes back on here.
            affine = np.asarray(meta["affine"]) if meta.get("format") == "nifti" else np.eye(4)
            nib.save(nib.Nifti1Image(frames_to_nifti(mask), affine), tmps[0])
    return paths


@dataclass
class _Job:
    src: Path
    dst: Path
    meta: dict[str, Any]
    paths: list[Path]
    sent: int
    encode_ms: float


def _send_cli(argv: list[str]) -> int:
    import httpx
    import torch
    from tqdm import tqdm

    from mvmic.coding import (
        UsageError,
        _Outputs,
        _overwrite_arg,
        _pairs,
        _Parser,
        _resolve_cli,
        encode,
        load_model,
    )
    from mvmic.evaluation.latency import parse_bandwidth
    from mvmic.io import ImageReadError, is_supported, output_paths, read_image, suffix_of
    from mvmic.serve.api import read_token

    parser = _Parser(
        prog="mvmic send",
        description="Compress files here and get the task output from a `mvmic serve`.",
    )
    parser.add_argument("--url", required=True, help="the server, e.g. http://HOST:8000")
    parser.add_argument("--ckpt", required=True, help="the checkpoint the server runs")
    parser.add_argument("input", type=Path, help="a file, or a folder (searched recursively)")
    parser.add_argument("output", type=Path, help="a mask/detections file, or a folder")
    parser.add_argument("--token-file", type=Path, help="the server's bearer token")
    parser.add_argument("--bandwidth", help="pace uploads to emulate a link, e.g. 10Mbit")
    parser.add_argument("--concurrency", type=int, default=1, help="uploads in flight")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    parser.add_argument("--retries", type=int, default=4, help="retries of refused/503")
    _overwrite_arg(parser)
    args = parser.parse_args(argv)
    url = httpx.URL(args.url) if "://" in args.url else None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise UsageError(f"--url {args.url!r}: give http://HOST:PORT (or https://)")
    if args.concurrency < 1:
        raise UsageError(f"--concurrency must be >= 1, got {args.concurrency}")
    if args.retries < 0 or args.timeout <= 0:
        raise UsageError("--retries must be >= 0 and --timeout positive")
    try:
        bps = parse_bandwidth(args.bandwidth) if args.bandwidth else None
        token = read_token(args.token_file) if args.token_file else None
    except ValueError as err:
        raise UsageError(str(err)) from None

    model = load_model(args.ckpt)
    codec, task = _resolve_cli(model, args.ckpt)
    if task is None:
        raise UsageError(f"checkpoint {args.ckpt} has no task network")
    kind = getattr(task, "task", "segmentation")
    if args.input.is_dir():
        pairs = _pairs(args.input, args.output, is_supported, "")
        pairs = [(s, d.with_name(d.name + default_suffix(s, kind))) for s, d in pairs]
    else:
        pairs = _pairs(args.input, args.output, is_supported, default_suffix(args.input, kind))
    for src, dst in pairs:
        _check_output(dst, src, kind)
    protected = [src for src, _ in pairs] + [Path(args.ckpt)]
    outputs = _Outputs(protected + ([args.token_file] if args.token_file else []), args.overwrite)
    outputs.plan(pairs, existing=True)

    client = Client(str(url).rstrip("/"), token, timeout=args.timeout, retries=args.retries,
                    bandwidth=bps)  # fmt: skip
    with client:
        info = client.model()
        check_model(info, codec, args.url, args.ckpt)
        names = info.get("classes") or []
        params = {"codec": codec.name, "weights_hash": info["weights_hash"]}
        bar = tqdm(total=len(pairs), desc="send", unit="file", file=sys.stderr,
                   disable=len(pairs) < 2)  # fmt: skip
        failed = 0

        def fail(src: Path, message: str) -> None:
            nonlocal failed
            if len(pairs) == 1:
                raise UsageError(message)
            bar.write(f"mvmic send: error: {message}", file=sys.stderr)
            failed += 1
            bar.update(1)

        def finish(job: _Job, fut: Future) -> None:
            try:
                answer: Answer = fut.result()
            except UsageError as err:
                fail(job.src, f"{job.src}: {err}")
                return
            if not answer.ok:
                fail(job.src, f"{job.src}: the server refused it: {answer.refusal()}")
                return
            try:
                written = outputs.write(
                    job.src, job.paths, write_answer, job.dst, job.src, answer, job.meta,
                    names, params, args.overwrite,
                )  # fmt: skip
            except UsageError as err:
                fail(job.src, str(err))
                return
            t = answer.timing
            bar.write(
                f"{job.src} -> {', '.join(map(str, written))}: {job.sent} bytes; encode "
                f"{job.encode_ms:.1f} ms, upload {answer.upload_ms:.1f} ms, server decode "
                f"{t.get('decode', float('nan')):.1f} ms + task {t.get('task', float('nan')):.1f}"
                f" ms; {job.encode_ms + answer.total_ms:.1f} ms in all"
            )
            bar.update(1)

        inflight: dict[Future, _Job] = {}
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            for src, dst in pairs:
                try:
                    x, bits, meta = read_image(src)
                    t0 = time.perf_counter()
                    bitstream = encode(torch.from_numpy(x), codec, bits)
                    data = bitstream.to_bytes()
                    encode_ms = 1e3 * (time.perf_counter() - t0)
                except (ImageReadError, ValueError) as err:
                    fail(src, str(err))
                    continue
                frames = len(bitstream.frames) * (bitstream.depth if codec.spatial_dims == 3 else 1)
                if kind == "detection":
                    accept = inf.JSON
                elif frames == 1 and suffix_of(dst) == ".png":
                    accept = inf.PNG
                else:
                    accept = inf.NIFTI
                paths = output_paths(dst, frames) if suffix_of(dst) == ".png" else [dst]
                job = _Job(src, dst, meta, paths, len(data), encode_ms)
                inflight[pool.submit(client.infer, data, accept)] = job
                while len(inflight) >= args.concurrency:
                    done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                    for fut in done:
                        finish(inflight.pop(fut), fut)
            while inflight:
                done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                for fut in done:
                    finish(inflight.pop(fut), fut)
        bar.close()
    if failed:
        print(f"mvmic send: {failed} of {len(pairs)} files failed", file=sys.stderr)
        return 2
    return 0


def send_main(argv: list[str] | None = None) -> int:
    """``mvmic send --url URL --ckpt CKPT IN OUT [options]``; returns the exit status."""
    from mvmic.coding import _run

    return _run("send", _send_cli, argv)


if __name__ == "__main__":
    sys.exit(send_main())

"""The HTTP client of ``mvmic serve`` (httpx): paced uploads, retries, the server's answer.

Only what is safe to retry is retried: a refused connection (nothing reached the server) and
503 (not ready); never a 4xx. ``bandwidth`` paces the upload, so the time it takes is a real
transfer at that rate. The ``mvmic send`` command built on it is :mod:`mvmic.serve.send`.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.policy import HTTP
from typing import Any

from mvmic.serve import inference as inf


def usage_error(message: str) -> Exception:
    """A one-line :class:`~mvmic.cli_common.UsageError` (imported late: it brings PyTorch)."""
    from mvmic.cli_common import UsageError

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
                    raise usage_error(
                        f"cannot reach {self.url} ({err}); is `mvmic serve` running there?"
                    ) from None
                time.sleep(self.backoff * 2**attempt)
                continue
            except httpx.TimeoutException as err:
                raise usage_error(
                    f"{self.url}{path}: no answer in time ({type(err).__name__}); raise --timeout"
                ) from None
            except httpx.TransportError as err:
                raise usage_error(f"{self.url}{path}: {type(err).__name__}: {err}") from None
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
            raise usage_error(f"{self.url}/v1/model: {answer.refusal()}")
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
        raise usage_error(
            f"{url} serves {info.get('codec')!r} with weights hash {info.get('weights_hash')}, "
            f"but --ckpt {ckpt} is {codec.name!r} with weights hash {mine}; send with the "
            "checkpoint the server runs"
        )

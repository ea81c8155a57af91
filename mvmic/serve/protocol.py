"""HTTP plumbing of the service: JSON refusals, ``Accept`` negotiation, ``multipart/mixed``
answers, and reading a request body under a size limit and a deadline."""

from __future__ import annotations

import asyncio
import secrets
import time

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from mvmic.serve.api import Refusal

#: a refused body is read (and dropped) up to this many bytes, so the client, which sends its
#: whole body before it reads the answer, gets the JSON refusal rather than a reset connection
DRAIN_BYTES = 1 << 20
DRAIN_SECONDS = 2.0


def refusal_response(r: Refusal, close: bool = False) -> JSONResponse:
    headers = dict(r.headers)
    if close:
        headers["Connection"] = "close"
    return JSONResponse({"error": r.error, "detail": r.detail}, r.status, headers=headers)


# -- Accept ------------------------------------------------------------------------------
def negotiate(accept: str | None, offers: list[str]) -> str | None:
    """The first of ``offers`` with the highest quality in an ``Accept`` header (None: none)."""
    if not accept or not accept.strip():
        return offers[0] if offers else None
    ranges = []
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for p in params:
            key, _, value = p.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        ranges.append((media.lower(), q))
    best, best_q = None, 0.0
    for offer in offers:
        kind = offer.split("/")[0]
        # the most specific range that matches decides the offer's quality (RFC 9110)
        matches = [(3 if m == offer else 2 if m == f"{kind}/*" else 1, q) for m, q in ranges
                   if m in (offer, f"{kind}/*", "*/*")]  # fmt: skip
        if matches:
            q = max(matches)[1]
            if q > best_q:
                best, best_q = offer, q
    return best


def multipart(parts: list[tuple[bytes, str, str]]) -> tuple[bytes, str]:
    """A ``multipart/mixed`` body of ``(data, media type, file name)`` parts (RFC 2046)."""
    while True:
        boundary = secrets.token_hex(16)
        if not any(boundary.encode() in data for data, _, _ in parts):
            break
    out = bytearray()
    for data, media, name in parts:
        out += f"--{boundary}\r\nContent-Type: {media}\r\n".encode()
        out += f'Content-Disposition: attachment; filename="{name}"\r\n'.encode()
        out += f"Content-Length: {len(data)}\r\n\r\n".encode() + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/mixed; boundary={boundary}"


# -- the request body --------------------------------------------------------------------
class Body:
    """Reads a request body under a size limit and a deadline, counting as it goes."""

    def __init__(self, request: Request, max_bytes: int, timeout: float) -> None:
        self.request, self.max_bytes, self.timeout = request, max_bytes, timeout
        self.complete = False
        self.timed_out = False
        self.read_ms = 0.0

    def _declared(self) -> int | None:
        value = self.request.headers.get("content-length")
        if value is None:
            return None
        if not value.isdigit():
            raise Refusal(400, "bad_request", f"Content-Length {value!r} is not a number")
        return int(value)

    async def read(self) -> bytes:
        """The whole body, or a :class:`Refusal`: 413 as soon as it is too long, 408 late."""
        declared = self._declared()
        if declared is not None and declared > self.max_bytes:
            raise Refusal(
                413,
                "too_large",
                f"body of {declared} bytes exceeds this server's limit of {self.max_bytes} "
                "bytes (mvmic serve --max-bytes)",
            )
        t0 = time.perf_counter()
        buf = bytearray()
        try:
            async with asyncio.timeout(self.timeout):
                async for chunk in self.request.stream():
                    buf += chunk
                    if len(buf) > self.max_bytes:
                        raise Refusal(
                            413,
                            "too_large",
                            f"body exceeds this server's limit of {self.max_bytes} bytes "
                            "(mvmic serve --max-bytes); stopped reading there",
                        )
        except TimeoutError:
            self.timed_out = True
            raise Refusal(
                408,
                "timeout",
                f"the body did not arrive within {self.timeout:g} s "
                f"({len(buf)} bytes received); send it faster or raise mvmic serve --timeout",
            ) from None
        except ClientDisconnect:
            raise Refusal(400, "client_disconnected", "the client went away mid-body") from None
        self.complete = True
        self.read_ms = 1e3 * (time.perf_counter() - t0)
        return bytes(buf)

    async def drain(self) -> None:
        """Read and drop what is left of a refused body, within bounds (see DRAIN_BYTES)."""
        if self.complete or self.timed_out:  # a slow client is not waited for twice
            return
        declared = self._declared_quiet()
        if declared is not None and declared > DRAIN_BYTES:
            return  # too much to swallow: the connection is closed instead
        seen = 0
        try:
            async with asyncio.timeout(DRAIN_SECONDS):
                async for chunk in self.request.stream():
                    seen += len(chunk)
                    if seen > DRAIN_BYTES:
                        return
        except (TimeoutError, ClientDisconnect, RuntimeError):
            return  # RuntimeError: the stream was consumed, or broken off by a Refusal
        self.complete = True

    def _declared_quiet(self) -> int | None:
        try:
            return self._declared()
        except Refusal:
            return None

"""The ASGI app (FastAPI): ``/healthz``, ``/v1/model``, ``/v1/infer``.

``create_app(settings)`` builds it; ``app_from_env()`` is the import-string factory that each
uvicorn worker calls (``mvmic serve --workers N``), reading the settings that ``mvmic serve``
put in the environment. The model is loaded in a background thread when the app starts, so
``/healthz`` answers 503 until it is ready; all model work (loading, decoding, the task
network) runs on one thread per worker, and the event loop only moves bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from mvmic.serve import api
from mvmic.serve.api import Refusal, Settings, read_token

if TYPE_CHECKING:
    from mvmic.serve.inference import Decoded, Prediction, Service

#: a refused body is read (and dropped) up to this many bytes, so the client, which sends its
#: whole body before it reads the answer, gets the JSON refusal rather than a reset connection
DRAIN_BYTES = 1 << 20
DRAIN_SECONDS = 2.0
log = logging.getLogger("mvmic.serve")


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


# -- micro-batching ----------------------------------------------------------------------
class MicroBatcher:
    """Collects decoded requests for up to ``max_wait`` s (or ``max_batch`` of them) and runs
    the task network once per group of equal shapes. Decoding stays one request at a time:
    the entropy decoder is only bit-exact at batch 1."""

    def __init__(
        self, service: Service, executor: ThreadPoolExecutor, max_batch: int, max_wait: float
    ) -> None:
        self.service, self.executor = service, executor
        self.max_batch, self.max_wait = max_batch, max_wait
        self.pending: deque[tuple[Decoded, asyncio.Future, float]] = deque()
        self.arrived = asyncio.Event()
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass

    async def submit(self, decoded: Decoded) -> tuple[Prediction, float]:
        """The prediction for ``decoded`` and the ms it waited for its batch."""
        fut = asyncio.get_running_loop().create_future()
        self.pending.append((decoded, fut, time.perf_counter()))
        self.arrived.set()
        return await fut

    async def _next_batch(self) -> list[tuple[Decoded, asyncio.Future, float]]:
        while not self.pending:
            self.arrived.clear()
            await self.arrived.wait()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        batch = [self.pending.popleft()]
        while len(batch) < self.max_batch:
            if self.pending:
                batch.append(self.pending.popleft())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self.arrived.clear()  # no await since the check above: nothing can slip between
            try:
                await asyncio.wait_for(self.arrived.wait(), remaining)
            except TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            groups: dict[tuple, list] = {}
            for item in batch:
                key = (tuple(item[0].tensor.shape[1:]), item[0].volume)
                groups.setdefault(key, []).append(item)
            for group in groups.values():
                started = time.perf_counter()
                try:
                    preds = await loop.run_in_executor(
                        self.executor, self.service.predict, [d for d, _, _ in group]
                    )
                except Exception as err:  # noqa: BLE001 - handed to each waiting request
                    for _, fut, _ in group:
                        if not fut.done():
                            fut.set_exception(err)
                    continue
                for (_, fut, queued), pred in zip(group, preds):
                    if not fut.done():  # its client may have gone
                        fut.set_result((pred, 1e3 * (started - queued)))


# -- the app -----------------------------------------------------------------------------
class _State:
    def __init__(self) -> None:
        self.service: Service | None = None
        self.error: str | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mvmic-model")
        self.batcher: MicroBatcher | None = None


def _load(settings: Settings) -> Service:
    import torch

    from mvmic.serve.inference import Service

    if settings.threads:
        torch.set_num_threads(settings.threads)
    return Service.load(settings.ckpt).warm_up()


def create_app(settings: Settings, loader: Callable[[], Service] | None = None) -> FastAPI:
    """The service's ASGI app.

    Args:
        settings: limits, token file, batching (see :class:`Settings`).
        loader: returns the ready :class:`~mvmic.serve.inference.Service`; it runs on the
            model thread once the app starts (default: load ``settings.ckpt`` and warm up).
    """
    from mvmic.serve import inference as answers  # PyTorch: after the worker's health pings

    token = read_token(settings.token_file) if settings.token_file else None
    digest = hashlib.sha256(token.encode()).digest() if token else None
    state = _State()
    load = loader or (lambda: _load(settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loop = asyncio.get_running_loop()

        def loaded(fut: asyncio.Future) -> None:
            if fut.cancelled():
                return
            if fut.exception() is not None:
                err = fut.exception()
                state.error = f"{type(err).__name__}: {err}"
                log.error("mvmic serve: cannot load %s: %s", settings.ckpt, state.error)
                return
            state.service = fut.result()
            if settings.max_batch > 1:
                state.batcher = MicroBatcher(
                    state.service, state.executor, settings.max_batch, settings.max_wait_ms / 1e3
                )
                state.batcher.start()
            log.info("mvmic serve: model ready (%s)", state.service.weights_hash.hex())

        loop.run_in_executor(state.executor, load).add_done_callback(loaded)
        try:
            yield
        finally:
            if state.batcher is not None:
                await state.batcher.stop()
            state.executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="mvmic remote inference",
        version="1",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.mvmic = state

    def authorize(request: Request) -> None:
        if digest is None:
            return
        auth = request.headers.get("authorization", "")
        scheme, _, given = auth.partition(" ")
        if not auth or scheme.lower() != "bearer" or not given.strip():
            raise Refusal(
                401,
                "unauthorized",
                "this server needs a bearer token: send 'Authorization: Bearer <token>' "
                "(mvmic send --token-file FILE)",
                {"WWW-Authenticate": 'Bearer realm="mvmic"'},
            )
        # Digests of equal length, compared in constant time: neither content nor length leaks.
        if not hmac.compare_digest(hashlib.sha256(given.strip().encode()).digest(), digest):
            raise Refusal(403, "forbidden", "the bearer token is not this server's")

    def ready() -> Service:
        if state.service is None:
            if state.error:
                raise Refusal(503, "load_failed", f"the model did not load: {state.error}")
            raise Refusal(503, "not_ready", "the model is loading", {"Retry-After": "1"})
        return state.service

    @app.exception_handler(Refusal)
    async def _refused(request: Request, exc: Refusal) -> JSONResponse:
        return refusal_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        names = {404: "not_found", 405: "method_not_allowed"}
        detail = f"{request.method} {request.url.path}: {exc.detail}"
        if exc.status_code == 404:
            detail += "; the API is GET /healthz, GET /v1/model, POST /v1/infer"
        body = {"error": names.get(exc.status_code, f"http_{exc.status_code}"), "detail": detail}
        return JSONResponse(body, exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": "bad_request", "detail": str(exc)[:500]}, 400)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("mvmic serve: unexpected error")
        detail = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        return JSONResponse({"error": "internal", "detail": detail}, 500)

    @app.get("/healthz")
    async def healthz() -> Any:
        if state.service is None:
            error = "load_failed" if state.error else "not_ready"
            detail = state.error or "the model is loading"
            return JSONResponse({"error": error, "detail": detail}, 503, {"Retry-After": "1"})
        return {"status": "ok"}

    @app.get("/v1/model")
    async def model(request: Request) -> Any:
        authorize(request)
        info = ready().info()
        info["limits"] = {
            "max_bytes": settings.max_bytes,
            "max_pixels": settings.max_pixels,
            "max_batch": settings.max_batch,
            "max_wait_ms": settings.max_wait_ms,
            "timeout_s": settings.timeout,
        }
        return info

    @app.post("/v1/infer")
    async def infer(request: Request) -> Response:
        t_start = time.perf_counter()
        body = Body(request, settings.max_bytes, settings.timeout)
        try:
            authorize(request)
            service = ready()
            reconstruct = _flag(request.query_params.get("reconstruct", "0"), "reconstruct")
            media = request.headers.get("content-type", api.MVMIC).split(";")[0].strip().lower()
            kind = api.UPLOADS.get(media or api.MVMIC)
            if kind is None:
                raise Refusal(
                    415,
                    "unsupported_media_type",
                    f"Content-Type {media!r}: send a .mvmic as application/octet-stream "
                    "(or a PNG/JPEG as image/png, image/jpeg)",
                )
            data = await body.read()
            loop = asyncio.get_running_loop()
            if kind == "mvmic":
                decoded = await loop.run_in_executor(
                    state.executor, service.decode, data, "request body", settings.max_pixels
                )
            else:
                decoded = await loop.run_in_executor(
                    state.executor, service.decode_image, data, kind, settings.max_pixels
                )
            offers = _offers(service, decoded)
            chosen = negotiate(request.headers.get("accept"), offers)
            if chosen is None:
                raise Refusal(
                    406,
                    "not_acceptable",
                    f"Accept {request.headers.get('accept')!r}: this answer can be "
                    f"{', '.join(offers)}"
                    + ("; a mask of several frames is NIfTI only" if api.PNG not in offers else ""),
                )
            if state.batcher is not None:
                pred, queue_ms = await state.batcher.submit(decoded)
            else:
                (pred,) = await loop.run_in_executor(state.executor, service.predict, [decoded])
                queue_ms = 0.0
        except Refusal as r:
            await body.drain()
            return refusal_response(r, close=not body.complete)
        answer = _answer(pred, chosen)
        if reconstruct:
            rec = await loop.run_in_executor(state.executor, answers.reconstruction, decoded)
            content, media_type = multipart([answer, rec])
        else:
            content, media_type = answer[0], answer[1]
        total = 1e3 * (time.perf_counter() - t_start)
        timing = (
            f"read;dur={body.read_ms:.2f}, decode;dur={decoded.decode_ms:.2f}, "
            f"queue;dur={queue_ms:.2f}, task;dur={pred.task_ms:.2f}, total;dur={total:.2f}"
        )
        headers = {
            "Server-Timing": timing,
            "X-Mvmic-Batch-Size": str(pred.batch_size),
            "Cache-Control": "no-store",
        }
        return Response(content, media_type=media_type, headers=headers)

    return app


def _flag(value: str, name: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes"):
        return True
    if v in ("", "0", "false", "no"):
        return False
    raise Refusal(400, "bad_request", f"?{name}={value!r}: use 1 or 0")


def _offers(service: Service, decoded: Decoded) -> list[str]:
    if service.kind == "detection":
        return [api.JSON]
    return [api.PNG, api.NIFTI] if decoded.frames == 1 else [api.NIFTI]


def _answer(pred: Prediction, media: str) -> tuple[bytes, str, str]:
    from mvmic.serve import inference as answers

    if media == api.JSON:
        return answers.detections_json(pred.detections), api.JSON, "detections.json"
    if media == api.PNG:
        return answers.mask_png(pred.mask), api.PNG, "mask.png"
    return answers.mask_nifti(pred.mask), api.NIFTI, "mask.nii.gz"


def app_from_env() -> FastAPI:
    """The app of one ``mvmic serve --workers N`` worker (uvicorn's ``factory=True``)."""
    return create_app(Settings.from_env())

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
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from mvmic.serve import api
from mvmic.serve.api import Refusal, Settings, read_token
from mvmic.serve.batching import MicroBatcher
from mvmic.serve.protocol import Body, multipart, negotiate, refusal_response

if TYPE_CHECKING:
    from mvmic.serve.inference import Decoded, Prediction, Service

log = logging.getLogger("mvmic.serve")


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
    """The answer's bytes: the files ``mvmic decompress --task`` writes (one PNG frame, or
    a NIfTI volume with an identity affine, which the client replaces with its source's)."""
    from mvmic.io.task_outputs import detections_json, mask_files

    if media == api.JSON:
        return detections_json(pred.detections), api.JSON, "detections.json"
    if media == api.PNG:
        return mask_files(pred.mask[:1], ".png")[0], api.PNG, "mask.png"
    return mask_files(pred.mask, ".nii.gz")[0], api.NIFTI, "mask.nii.gz"


def app_from_env() -> FastAPI:
    """The app of one ``mvmic serve --workers N`` worker (uvicorn's ``factory=True``)."""
    return create_app(Settings.from_env())

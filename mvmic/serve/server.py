"""``mvmic serve``: the remote inference service on uvicorn.

    mvmic serve --ckpt best.ckpt [--host 127.0.0.1] [--port 8000] [--workers N]
                [--token-file FILE] [--max-bytes N] [--max-pixels N]
                [--max-batch N --max-wait-ms T]
                [--timeout S] [--threads T] [--log-level info]

The checkpoint is loaded (safe loader) and warmed up before the port opens, so a bad one is
one line and exit status 2. One worker serves that module. With ``--workers N`` it is checked
in a short-lived child instead (the supervisor imports no PyTorch and holds no model), and
uvicorn's supervisor starts N processes on the same socket, each loading the checkpoint
itself (their ``/healthz`` says 503 until it is loaded).
"""

from __future__ import annotations

import inspect
import os
import socket
import sys
from pathlib import Path

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from mvmic.cli_common import Parser, UsageError  # no PyTorch: see mvmic.cli_common
from mvmic.serve.api import Settings

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def _request_timeout() -> float:
    try:
        return float(Settings.from_env().timeout)
    except (RuntimeError, ValueError, TypeError):
        return Settings.timeout


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on the request line and headers.

    uvicorn times out idle keep-alive connections only after a response, and any byte resets
    that timer; a client that connects and sends nothing, or trickles its headers, would hold
    the connection forever. Here a connection must start a request within ``--timeout``
    seconds of opening or of its last response; the body has the app's own deadline.
    """

    def connection_made(self, transport) -> None:  # noqa: ANN001 - asyncio's signature
        super().connection_made(transport)
        self._arm_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_deadline()

    def _arm_deadline(self) -> None:
        self.loop.call_later(_request_timeout(), self._deadline, self.cycle)

    def _deadline(self, cycle) -> None:  # noqa: ANN001 - uvicorn's RequestResponseCycle
        idle = cycle is None or cycle.response_complete
        if self.cycle is cycle and idle and not self.transport.is_closing():
            try:
                self.conn.send(h11.ConnectionClosed())
            except h11.LocalProtocolError:
                pass
            self.transport.close()


def _check_port(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as err:
            raise UsageError(
                f"cannot listen on {host}:{port}: {err.strerror or err}; "
                "choose another --port or --host"
            ) from None


def _positive(name: str, value: float, zero: bool = False) -> None:
    if value < 0 or (value == 0 and not zero):
        raise UsageError(f"{name} must be {'>= 0' if zero else 'positive'}, got {value:g}")


def _load_service(ckpt: str):  # noqa: ANN202 - a Service (imported late: PyTorch)
    """The checkpoint, loaded safely and warmed up; a UsageError for a bad one."""
    from mvmic.cli_common import load_model
    from mvmic.serve.inference import Service

    try:
        service = Service(load_model(ckpt), str(ckpt))
    except ValueError as err:
        raise UsageError(str(err)) from None
    return service.warm_up()


def _check_child(ckpt: str, threads: int, conn) -> None:  # noqa: ANN001 - a Pipe end
    import torch

    torch.set_num_threads(threads)
    try:
        conn.send(("ok", _load_service(ckpt).info()))
    except ValueError as err:  # UsageError included
        conn.send(("error", str(err)))


def _check_in_child(ckpt: str, threads: int) -> dict:
    """Load and warm up ``ckpt`` in a spawned process; its ``/v1/model`` info, or UsageError."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_check_child, args=(ckpt, threads, child), daemon=True)
    proc.start()
    child.close()
    try:
        status, value = parent.recv()
    except EOFError:
        raise UsageError(f"cannot load checkpoint {ckpt}: the loading process died") from None
    finally:
        proc.join(30)
    if status != "ok":
        raise UsageError(value)
    return value


def _serve_cli(argv: list[str]) -> int:
    from mvmic.serve.api import read_token
    from mvmic.serve.app import create_app

    parser = Parser(
        prog="mvmic serve",
        description="Serve a checkpoint over HTTP: POST a .mvmic to /v1/infer, get the task "
        "output (see docs/remote_inference.md).",
    )
    parser.add_argument("--ckpt", required=True, help="checkpoint of MVMICNet or GanSegmentation")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1, help="server processes (one model each)")
    parser.add_argument("--token-file", type=Path, help="require 'Authorization: Bearer <token>'")
    parser.add_argument(
        "--max-bytes", type=int, default=Settings.max_bytes, help="largest request body (413)"
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        help="largest decoded request in pixels, frames x H x W (413 from the header, before "
        "decoding; default: the decoder's budget, 2**30)",
    )
    parser.add_argument(
        "--max-batch",
        type=int,
        default=1,
        help="run up to N decoded requests through the task network at once (1: off)",
    )
    parser.add_argument(
        "--max-wait-ms",
        type=float,
        default=Settings.max_wait_ms,
        help="how long a request waits for others to share its batch",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=Settings.timeout,
        help="seconds a client has to send its headers, and then its body (slow clients: "
        "connection closed, or 408)",
    )
    parser.add_argument(
        "--threads", type=int, help="PyTorch threads per worker (default: CPU cores / workers)"
    )
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="info")
    args = parser.parse_args(argv)
    if not Path(args.ckpt).is_file():
        raise UsageError(f"checkpoint {args.ckpt} does not exist")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: use 0..65535")
    _positive("--workers", args.workers)
    _positive("--max-bytes", args.max_bytes)
    _positive("--max-batch", args.max_batch)
    if args.max_pixels is not None:
        _positive("--max-pixels", args.max_pixels)
    _positive("--max-wait-ms", args.max_wait_ms, zero=True)
    _positive("--timeout", args.timeout)
    if args.threads is not None:
        _positive("--threads", args.threads)
    if args.token_file is not None:
        try:
            read_token(args.token_file)
        except ValueError as err:
            raise UsageError(str(err)) from None
    _check_port(args.host, args.port)

    threads = args.threads or max(1, (os.cpu_count() or 1) // args.workers)
    if args.workers == 1:
        import torch

        torch.set_num_threads(threads)
        service = _load_service(args.ckpt)
        info = service.info()
    else:  # checked in a child that exits, so the supervisor holds no copy of the model
        service, info = None, _check_in_child(args.ckpt, threads)
    settings = Settings(
        ckpt=str(Path(args.ckpt).resolve()),
        token_file=str(args.token_file.resolve()) if args.token_file else None,
        max_bytes=args.max_bytes,
        max_pixels=args.max_pixels,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        timeout=args.timeout,
        threads=threads,
    )
    settings.to_env()  # the protocol's deadline, and every worker's settings
    print(
        f"mvmic serve: {info['codec']} weights {info['weights_hash']}, {info['task']} "
        f"({', '.join(info['classes'])}) on http://{args.host}:{args.port} with "
        f"{args.workers} worker(s), {threads} thread(s) each",
        file=sys.stderr,
        flush=True,
    )
    import uvicorn

    options = dict(
        host=args.host,
        port=args.port,
        http=TimedH11Protocol,
        ws="none",
        lifespan="on",
        log_level=args.log_level,
        access_log=args.log_level in ("info", "debug"),
        timeout_keep_alive=5,
        timeout_graceful_shutdown=10,
    )
    if "timeout_worker_healthcheck" in inspect.signature(uvicorn.Config).parameters:
        # A worker answers its supervisor's pings while it imports PyTorch and loads the
        # model, which can hold the interpreter for longer than uvicorn's default 5 s.
        options["timeout_worker_healthcheck"] = 120
    if args.workers == 1:
        app = create_app(settings, loader=lambda ready=service: ready)
        uvicorn.Server(uvicorn.Config(app, **options)).run()
        return 0
    uvicorn.run("mvmic.serve.app:app_from_env", factory=True, workers=args.workers, **options)
    return 0


def serve_main(argv: list[str] | None = None) -> int:
    """``mvmic serve --ckpt CKPT [options]``; returns the exit status."""
    try:
        return _serve_cli(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as err:  # --help
        return int(err.code or 0)
    except UsageError as err:
        print(f"mvmic serve: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(serve_main())

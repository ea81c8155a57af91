"""``mvmic serve`` as a child process: its own process group, ready when ``/healthz`` says
so, stopped by its PID (the service tests and ``tools/bench_service.py``)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``python -m mvmic.cli serve --ckpt CKPT --port P FLAGS`` with its output in ``log``.

    Args:
        ckpt: the checkpoint to serve.
        flags: further ``mvmic serve`` options (``--workers 2``, ``--token-file F``, …).
        log: the file its stdout and stderr go to (appended).
        env: its environment (default: this process's).
        ready_s: how long it may take to answer ``/healthz`` with 200.
        healthy: consecutive 200s that make it ready (a few per worker: each has its own).

    Raises:
        RuntimeError: it exited or was not ready in time (with the end of its log).
    """

    def __init__(
        self,
        ckpt: str | Path,
        *flags: str,
        log: Path,
        env: dict[str, str] | None = None,
        ready_s: float = 300,
        healthy: int = 1,
    ) -> None:
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(log)
        cmd = [sys.executable, "-m", "mvmic.cli", "serve", "--ckpt", str(ckpt),
               "--port", str(self.port), "--log-level", "warning", *flags]  # fmt: skip
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: workers go with it
            )  # fmt: skip
        deadline = time.monotonic() + ready_s
        ok = 0
        while ok < healthy:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server not ready in {ready_s:g} s: {self.tail()}")
            try:
                up = httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200
            except httpx.TransportError:
                up = False
            ok = ok + 1 if up else 0
            if ok < healthy:
                time.sleep(0.2)

    def tail(self) -> str:
        """The end of its log."""
        return self.log.read_text(errors="replace")[-3000:]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM to its process group, SIGKILL after 30 s."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

"""The service's vocabulary, importable without PyTorch: media types, refusals, settings.

uvicorn starts each worker by unpickling its config (which names the HTTP protocol class)
and then answers its supervisor's health pings; nothing on that path may spend seconds
importing PyTorch, so the model code (:mod:`mvmic.serve.inference`) is imported later.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

#: media types of the answers
PNG = "image/png"
JPEG = "image/jpeg"
TIFF = "image/tiff"
NIFTI = "application/x-nifti"  # a gzipped single-file NIfTI-1 (.nii.gz)
JSON = "application/json"
MVMIC = "application/octet-stream"
#: the uploads /v1/infer accepts: the container, and images for the PNG/JPEG baseline
UPLOADS = {MVMIC: "mvmic", "application/x-mvmic": "mvmic", PNG: "png", JPEG: "jpeg"}
#: the environment variable that carries :class:`Settings` to uvicorn's workers
ENV = "MVMIC_SERVE_SETTINGS"


class Refusal(Exception):
    """A request the service refuses: HTTP ``status``, a short ``error`` code, a ``detail``."""

    def __init__(
        self, status: int, error: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail
        self.headers = headers or {}


@dataclass
class Settings:
    """What a worker needs to serve (``mvmic serve``'s options)."""

    ckpt: str
    token_file: str | None = None
    max_bytes: int = 64 << 20
    #: largest decoded request (frames × H × W, × D for volumes); None: the decoder's budget
    max_pixels: int | None = None
    max_batch: int = 1
    max_wait_ms: float = 5.0
    #: seconds a client has to send its request line and headers, and then its body
    timeout: float = 30.0
    #: intra-op threads of each worker's model (None: leave PyTorch's setting)
    threads: int | None = None

    def to_env(self) -> None:
        """Put the settings where the workers (and the HTTP protocol) read them."""
        os.environ[ENV] = json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> Settings:
        raw = os.environ.get(ENV)
        if not raw:
            raise RuntimeError(f"{ENV} is not set; start workers with `mvmic serve`")
        return cls(**json.loads(raw))


def read_token(path: str | Path) -> str:
    """The bearer token in ``path`` (one line; surrounding whitespace dropped).

    Raises:
        ValueError: the file is unreadable, empty, or holds more than one word.
    """
    path = Path(path)
    try:
        token = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"--token-file {path}: cannot read it ({err})") from None
    if not token or any(c.isspace() for c in token):
        raise ValueError(
            f"--token-file {path}: must hold one token without spaces (e.g. the output of "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    return token

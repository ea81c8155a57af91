"""The remote inference service: a real `mvmic serve` process on 127.0.0.1, real HTTP (httpx).

Every endpoint and every refusal of issue 17, slow clients, `mvmic send` round trips (PNG
folder, DICOM → DICOM SEG, NIfTI volume with a 3D GAN), micro-batching, 503 before the model
is ready, and a 2-worker server. Servers are stopped by their PID in fixture finalisers.
"""

from __future__ import annotations

import io
import json
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from pydicom.data import get_testdata_file

import mvmic
from mvmic import coding
from mvmic.cli import main
from mvmic.codecs.bitstream import Bitstream
from mvmic.io import frames_to_nifti, read_image, to_codes
from mvmic.modules import MVMICNet, TaskModule, load_module
from mvmic.serve import inference as inf
from mvmic.serve.client import Answer, Client, PacedUpload, parse_server_timing
from mvmic.serve.process import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "test-token-0123456789"
MV = dict(
    task="segmentation",
    arch="Unet",
    encoder="resnet18",
    num_classes=2,
    in_channels=1,
    codec="mbt2018-mean",
    N=8,
    M=12,
    task_args={"encoder_depth": 3, "decoder_channels": [32, 16, 8]},
)


# -- helpers ------------------------------------------------------------------------------
def save_checkpoint(model: torch.nn.Module, path: Path) -> Path:
    """What Lightning writes, minus the trainer state: weights, hparams, mvmic's class."""
    ckpt = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    model.on_save_checkpoint(ckpt)
    torch.save(ckpt, path)
    return path


def tiny_mvmic(seed: int = 0, **overrides) -> MVMICNet:
    torch.manual_seed(seed)
    return MVMICNet(**{**MV, **overrides})


class Server(ServerProcess):
    """A `python -m mvmic.cli serve` subprocess; ``stop()`` ends it (and its workers) by PID."""

    def __init__(self, ckpt: Path, folder: Path, *flags: str, ready_s: float = 300) -> None:
        env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline",
               "PATH": os.environ.get("PATH", "")}  # fmt: skip
        log = folder / f"server-{time.monotonic_ns()}.log"
        super().__init__(ckpt, *flags, log=log, env=env, ready_s=ready_s)


class LocalServer:
    """The same app under uvicorn in a thread of this process (for states a subprocess cannot
    be held in: not yet loaded, a micro-batch window), still over real HTTP."""

    def __init__(self, settings, loader) -> None:  # noqa: ANN001
        import uvicorn

        from mvmic.serve.app import create_app
        from mvmic.serve.server import TimedH11Protocol

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(settings, loader=loader), host="127.0.0.1", port=self.port,
            http=TimedH11Protocol, ws="none", log_level="warning", lifespan="on",
        )  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert time.monotonic() < deadline, "in-process server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def png_file(path: Path, size=(40, 52), seed: int = 0) -> Path:
    a = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8)
    Image.fromarray(a).save(path)
    return path


def local_mask(model, src) -> np.ndarray:  # noqa: ANN001
    """What the server should answer for ``src``: the same encode → decode → task here."""
    x, bits, _ = read_image(src)
    data = coding.encode(torch.from_numpy(x), model, bits).to_bytes()
    with torch.inference_mode():
        out = model.task_output(mvmic.decompress(data, model)).numpy()
    return out.reshape(-1, *out.shape[-2:])


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def refusal(r: httpx.Response, status: int, error: str, *words: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error", "detail"} and body["error"] == error, body
    for w in words:
        assert w in body["detail"], (w, body["detail"])


# -- fixtures -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("serve")


@pytest.fixture(scope="module")
def ckpts(folder) -> dict[str, Path]:
    out = {"seg": save_checkpoint(tiny_mvmic(0), folder / "seg.ckpt")}
    out["other"] = save_checkpoint(tiny_mvmic(1), folder / "other.ckpt")
    (folder / "token").write_text(TOKEN + "\n")
    return out


@pytest.fixture(scope="module")
def model(ckpts):
    return load_module(ckpts["seg"])


@pytest.fixture(scope="module")
def server(ckpts, folder):
    srv = Server(
        ckpts["seg"], folder, "--token-file", str(folder / "token"),
        "--max-bytes", "200000", "--max-pixels", "1000000", "--timeout", "2",
    )  # fmt: skip
    yield srv
    srv.stop()


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.url, headers=auth(), timeout=60) as client:
        yield client


# -- the endpoints ------------------------------------------------------------------------
@pytest.mark.slow  # starts the server process (a fresh interpreter: ~12 s)
def test_healthz_and_model_describe_the_checkpoint(server, http, model):
    r = httpx.get(f"{server.url}/healthz")  # no token needed: load balancers probe it
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    info = http.get("/v1/model").json()
    assert info["codec"] == "mbt2018-mean"
    assert info["weights_hash"] == model.codec.weights_hash().hex()
    assert info["task"] == "segmentation" and info["classes"] == ["background", "class1"]
    assert info["channels"] == 1 and info["spatial_dims"] == 2
    assert info["bit_depths"] == list(range(1, 17))
    assert info["mvmic_version"] == mvmic.__version__
    assert info["limits"]["max_bytes"] == 200000 and info["limits"]["max_pixels"] == 1000000


@pytest.mark.slow  # starts the server process (a fresh interpreter: ~12 s)
def test_infer_answers_the_mask_of_the_real_decode(server, http, model, tmp_path):
    src = png_file(tmp_path / "a.png")
    data = mvmic.compress(src, model)
    r = http.post("/v1/infer", content=data)
    assert r.status_code == 200 and r.headers["content-type"] == inf.PNG
    mask = np.asarray(Image.open(io.BytesIO(r.content)))
    assert np.array_equal(mask[None], local_mask(model, src))
    timing = parse_server_timing(r.headers["server-timing"])
    assert {"read", "decode", "queue", "task", "total"} <= set(timing)
    assert timing["decode"] > 0 and timing["task"] > 0 and timing["total"] >= timing["task"]
    # NIfTI on request; a stack of frames is NIfTI by default and never PNG.
    r = http.post("/v1/infer", content=data, headers={"Accept": inf.NIFTI})
    assert r.headers["content-type"] == inf.NIFTI
    assert np.array_equal(inf.read_mask(r.content, inf.NIFTI), mask[None])
    g = torch.Generator().manual_seed(0)
    stack = mvmic.compress(torch.rand(3, 1, 33, 20, generator=g), model)
    r = http.post("/v1/infer", content=stack)
    assert r.status_code == 200 and r.headers["content-type"] == inf.NIFTI
    assert inf.read_mask(r.content, inf.NIFTI).shape == (3, 33, 20)
    refusal(http.post("/v1/infer", content=stack, headers={"Accept": inf.PNG}), 406,
            "not_acceptable", "NIfTI only")  # fmt: skip


@pytest.mark.slow  # starts the server process (a fresh interpreter: ~12 s)
def test_reconstruct_returns_the_decoded_image_beside_the_mask(http, model, tmp_path):
    src = png_file(tmp_path / "a.png", seed=3)
    data = mvmic.compress(src, model)
    r = http.post("/v1/infer", content=data, params={"reconstruct": "1"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("multipart/mixed")
    answer = Answer(200, "multipart/mixed", r.content, dict(r.headers), 0, 0, 1)
    parts = answer.parts()
    assert set(parts) == {"mask.png", "reconstruction.png"}
    media, rec = parts["reconstruction.png"]
    assert media == inf.PNG
    expect = to_codes(mvmic.decompress(data, model), 8)[0, 0]
    got = np.asarray(Image.open(io.BytesIO(rec)))
    assert np.array_equal(got, expect)
    assert np.array_equal(inf.read_mask(parts["mask.png"][1], inf.PNG), local_mask(model, src))


@pytest.mark.slow  # starts the server process (a fresh interpreter: ~12 s)
def test_png_and_jpeg_uploads_are_the_baseline(http, model, tmp_path):
    src = png_file(tmp_path / "a.png", seed=4)
    r = http.post("/v1/infer", content=src.read_bytes(), headers={"Content-Type": inf.PNG})
    assert r.status_code == 200
    x = torch.from_numpy(read_image(src)[0])[None]
    with torch.inference_mode():
        expect = model.task_output(x).numpy()
    assert np.array_equal(inf.read_mask(r.content, inf.PNG), expect)
    Image.open(src).save(tmp_path / "a.jpg", quality=90)
    jpg = (tmp_path / "a.jpg").read_bytes()
    r = http.post("/v1/infer", content=jpg, headers={"Content-Type": inf.JPEG})
    assert r.status_code == 200 and inf.read_mask(r.content, inf.PNG).shape == (1, 40, 52)
    refusal(http.post("/v1/infer", content=jpg, headers={"Content-Type": inf.PNG}), 400,
            "bad_image", "the data is 'jpeg'")  # fmt: skip
    refusal(http.post("/v1/infer", content=b"\x89PNG nope", headers={"Content-Type": inf.PNG}),
            400, "bad_image")  # fmt: skip


def _bodies(model, ckpts) -> dict[str, tuple[bytes, int, str, tuple[str, ...]]]:
    x = torch.rand(1, 1, 30, 40, generator=torch.Generator().manual_seed(1))
    good = mvmic.compress(x, model)
    bs = Bitstream.from_bytes(good)
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x10
    rgb = Bitstream(bs.codec, bs.model_hash, bs.height, bs.width, 3, 8, bs.frames).to_bytes()
    huge = Bitstream(bs.codec, bs.model_hash, 65535, 65535, 1, 8, bs.frames).to_bytes()
    wide = Bitstream(bs.codec, bs.model_hash, 1000, 1001, 1, 8, bs.frames).to_bytes()
    other = mvmic.compress(x, load_module(ckpts["other"]))
    mine, theirs = model.codec.weights_hash().hex(), Bitstream.from_bytes(other).model_hash.hex()
    return {
        "not a .mvmic": (b"GIF89a not ours", 400, "bad_bitstream", ("not an mvmic bitstream",)),
        "empty": (b"", 400, "bad_bitstream", ("empty",)),
        "truncated": (good[:-7], 400, "bad_bitstream", ("truncated",)),
        "damaged": (bytes(flipped), 400, "bad_bitstream", ("corrupted",)),
        "other channels": (rgb, 400, "bad_bitstream", ("3 channels",)),
        "another checkpoint": (other, 409, "other_model", (mine, theirs)),
        "decoder budget": (huge, 413, "too_large", ("65535x65535", "budget")),
        "over --max-pixels": (wide, 413, "too_large", ("1000x1001", "--max-pixels")),
        "over --max-bytes": (b"\0" * 250_000, 413, "too_large", ("250000 bytes", "200000")),
    }


@pytest.mark.slow  # starts the server process (a fresh interpreter: ~12 s)
def test_every_bad_body_is_refused_and_the_server_keeps_serving(server, http, model, ckpts):
    for name, (body, status, error, words) in _bodies(model, ckpts).items():
        r = http.post("/v1/infer", content=body)
        assert r.status_code == status, name
        refusal(r, status, error, *words)
    # Streamed (chunked, no Content-Length): refused while reading, not after buffering.
    r = http.post("/v1/infer", content=iter([b"\0" * 65536] * 5))
    refusal(r, 413, "too_large", "stopped reading")
    refusal(http.post("/v1/infer", content=b"x", headers={"Content-Type": "text/plain"}), 415,
            "unsupported_media_type")  # fmt: skip
    refusal(http.post("/v1/infer?reconstruct=maybe", content=b"x"), 400, "bad_request")
    refusal(http.get("/v1/infer"), 405, "method_not_allowed")
    refusal(http.get("/v2/nothing"), 404, "not_found", "/v1/infer")
    good = mvmic.compress(torch.rand(1, 1, 24, 24), model)
    assert http.post("/v1/infer", content=good).status_code == 200
    assert server.proc.poll() is None


@pytest.mark.slow  # starts the server process (a fresh interpreter: ~12 s)
def test_tokens_are_required_and_checked(server, model):
    good = mvmic.compress(torch.rand(1, 1, 24, 24), model)
    for path, call in (("/v1/model", "get"), ("/v1/infer", "post")):
        kwargs = {"content": good} if call == "post" else {}
        r = getattr(httpx, call)(server.url + path, **kwargs)
        refusal(r, 401, "unauthorized", "Bearer")
        assert r.headers["www-authenticate"].startswith("Bearer")
        r = getattr(httpx, call)(server.url + path, headers=auth("wrong-token"), **kwargs)
        refusal(r, 403, "forbidden")
        r = getattr(httpx, call)(server.url + path, headers={"Authorization": "Basic abc"},
                                 **kwargs)  # fmt: skip
        refusal(r, 401, "unauthorized")


def _recv_all(sock: socket.socket, limit_s: float) -> tuple[bytes, float]:
    sock.settimeout(limit_s)
    t0, data = time.monotonic(), b""
    while True:
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            return data, float("inf")
        if not chunk:
            return data, time.monotonic() - t0
        data += chunk


@pytest.mark.slow  # starts the server process (a fresh interpreter: ~12 s)
def test_slow_clients_are_timed_out_and_freed(server, http):
    # --timeout 2: a silent connection and one trickling its headers are closed...
    for opening in (b"", b"POST /v1/infer HTTP/1.1\r\nHost: x\r\n"):
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            s.sendall(opening)
            data, took = _recv_all(s, 15)
            assert data == b"" and took < 10, (opening, took)
    # ... and a body that stalls gets 408 and the connection closed.
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(
            b"POST /v1/infer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
            + b"\r\nContent-Length: 1000\r\n\r\n0123456789"
        )  # fmt: skip
        data, took = _recv_all(s, 15)
    assert data.startswith(b"HTTP/1.1 408") and b'"error":"timeout"' in data and took < 10
    assert http.get("/healthz").status_code == 200


# -- mvmic send ---------------------------------------------------------------------------
def _send(*args: str) -> int:
    return main(["send", *args])


def _flags(server: Server, ckpts: dict[str, Path], folder: Path) -> list[str]:
    return ["--url", server.url, "--ckpt", str(ckpts["seg"]), "--token-file", str(folder / "token")]


@pytest.mark.slow  # starts the server process (a fresh interpreter: ~12 s)
def test_send_folder_round_trip_paced_and_concurrent(server, ckpts, model, folder, tmp_path,
                                                     capsys):  # fmt: skip
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    png_file(src / "a.png", seed=5)
    png_file(src / "sub" / "b.png", size=(33, 47), seed=6)
    out = tmp_path / "out"
    flags = _flags(server, ckpts, folder)
    rc = _send(*flags, str(src), str(out), "--bandwidth", "1Mbit", "--concurrency", "2")
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    for rel in ("a.png", "sub/b.png"):
        got = np.asarray(Image.open(out / rel))
        assert np.array_equal(got[None], local_mask(model, src / rel)), rel
    assert "upload" in captured.out and "server decode" in captured.out
    # Existing outputs are never replaced without --overwrite; nothing was sent.
    assert _send(*flags, str(src), str(out)) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_paced_upload_takes_the_link_time():
    data = bytes(25_000)  # 200 kbit at 1 Mbit/s: 0.2 s
    up = PacedUpload(data, 1e6)
    assert b"".join(up) == data
    assert 190 <= up.upload_ms < 400


@pytest.mark.slow  # starts the server process (a fresh interpreter: ~12 s)
@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_send_dicom_writes_a_dicom_seg_referencing_the_source(
    name, server, ckpts, model, folder, tmp_path
):
    import highdicom as hd
    import pydicom

    src = Path(get_testdata_file(name))
    out = tmp_path / "mask.dcm"
    flags = _flags(server, ckpts, folder)
    assert _send(*flags, str(src), str(out)) == 0
    ds = pydicom.dcmread(src)
    seg = hd.seg.segread(out)
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage
    assert seg.StudyInstanceUID == ds.StudyInstanceUID
    ref = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
    assert ref.ReferencedSOPInstanceUID == ds.SOPInstanceUID
    frames = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[ds.SOPInstanceUID], combine_segments=True
    )
    assert np.array_equal(frames, local_mask(model, src))
    # The server never saw the patient: the bitstream holds shape and bit depth only.
    x, bits, _ = read_image(src)
    data = coding.encode(torch.from_numpy(x), model, bits).to_bytes()
    for phi in (str(ds.PatientName), str(ds.PatientID), str(ds.StudyInstanceUID)):
        assert phi.encode() not in data


def test_dicom_seg_writer_keeps_every_class(tmp_path):
    from mvmic.serve.dicom import write_segmentation

    src = Path(get_testdata_file("MR_small.dcm"))
    mask = np.zeros((1, 64, 64), np.uint8)
    mask[0, 5:20, 5:30], mask[0, 40:60, 30:50] = 1, 2
    out = tmp_path / "seg.dcm"
    write_segmentation(out, src, mask, ["background", "myocardium", "blood pool"])
    import highdicom as hd

    seg = hd.seg.segread(out)
    labels = [s.SegmentLabel for s in seg.SegmentSequence]
    assert labels == ["myocardium", "blood pool"]
    uid = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
    got = seg.get_pixels_by_source_instance(source_sop_instance_uids=[uid], combine_segments=True)
    assert np.array_equal(got, mask)
    with pytest.raises(ValueError, match="does not fit"):
        write_segmentation(tmp_path / "x.dcm", src, mask[:, :32], ["background", "a"])


@pytest.mark.slow  # starts the server process (a fresh interpreter: ~12 s)
def test_send_refuses_another_checkpoint_before_any_upload(server, ckpts, folder, tmp_path,
                                                           monkeypatch, capsys):  # fmt: skip
    calls = []
    real = httpx.Client.request

    def spy(self, method, url, *args, **kwargs):
        calls.append((method, str(url)))
        return real(self, method, url, *args, **kwargs)

    monkeypatch.setattr(httpx.Client, "request", spy)
    src = png_file(tmp_path / "a.png")
    rc = _send("--url", server.url, "--ckpt", str(ckpts["other"]), "--token-file",
               str(folder / "token"), str(src), str(tmp_path / "m.png"))  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    theirs = load_module(ckpts["other"]).codec.weights_hash().hex()
    assert load_module(ckpts["seg"]).codec.weights_hash().hex() in err and theirs in err
    assert calls == [("GET", "/v1/model")] and not (tmp_path / "m.png").exists()


@pytest.mark.slow  # starts the server process (a fresh interpreter: ~12 s)
def test_send_retries_refused_connections_but_never_a_4xx(server, ckpts, tmp_path, monkeypatch,
                                                          capsys):  # fmt: skip
    calls = []
    real = httpx.Client.request

    def spy(self, method, url, *args, **kwargs):
        calls.append(method)
        return real(self, method, url, *args, **kwargs)

    monkeypatch.setattr(httpx.Client, "request", spy)
    src = png_file(tmp_path / "a.png")
    bad_token = tmp_path / "bad"
    bad_token.write_text("not-the-token")
    out = str(tmp_path / "m.png")
    assert _send("--url", server.url, "--ckpt", str(ckpts["seg"]), "--token-file",
                 str(bad_token), str(src), out) == 2  # fmt: skip
    assert "403 forbidden" in capsys.readouterr().err and calls == ["GET"]
    calls.clear()
    nobody = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    assert _send("--url", nobody, "--ckpt", str(ckpts["seg"]), "--retries", "2", str(src), out) == 2
    assert "cannot reach" in capsys.readouterr().err
    assert calls == ["GET"] * 3 and time.monotonic() - t0 >= 1.4  # back-off 0.5 s + 1 s


@pytest.mark.slow  # starts the server process (a fresh interpreter: ~12 s)
def test_send_usage_errors_are_one_line(server, ckpts, tmp_path, capsys):
    src = png_file(tmp_path / "a.png")
    cases = [
        (["--url", "ftp://x", str(src), str(tmp_path / "m.png")], "--url"),
        (["--url", server.url, str(src), str(tmp_path / "m.dcm")], "DICOM Segmentation"),
        (["--url", server.url, str(src), str(tmp_path / "m.txt")], ".png"),
        (["--url", server.url, "--bandwidth", "fast", str(src), str(tmp_path / "m.png")],
         "bandwidth"),
    ]  # fmt: skip
    for args, words in cases:
        assert _send("--ckpt", str(ckpts["seg"]), *args) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err


def test_serve_usage_errors_are_one_line(ckpts, tmp_path, capsys):
    task = TaskModule(task="segmentation", arch="Unet", encoder="resnet18", num_classes=2,
                      in_channels=1, task_args=MV["task_args"])  # fmt: skip
    task_ckpt = save_checkpoint(task, tmp_path / "task.ckpt")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = str(busy.getsockname()[1])
        cases = [
            (["--ckpt", str(tmp_path / "none.ckpt")], "does not exist"),
            (["--ckpt", str(task_ckpt)], "codec"),
            (["--ckpt", str(ckpts["seg"]), "--token-file", str(empty)], "--token-file"),
            (["--ckpt", str(ckpts["seg"]), "--port", taken], "cannot listen"),
            (["--ckpt", str(ckpts["seg"]), "--max-batch", "0"], "--max-batch"),
        ]
        for args, words in cases:
            assert main(["serve", *args]) == 2, args
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and words in err, err


# -- in-process: not ready yet, micro-batches ---------------------------------------------
def test_503_until_the_model_is_loaded_and_send_waits_for_it(model, folder):
    from mvmic.serve.api import Settings

    release = threading.Event()

    def loader():
        release.wait(60)
        return inf.Service(model, "test")

    srv = LocalServer(Settings(ckpt="unused"), loader)
    try:
        r = httpx.get(f"{srv.url}/healthz")
        refusal(r, 503, "not_ready", "loading")
        data = mvmic.compress(torch.rand(1, 1, 24, 24), model)
        refusal(httpx.post(f"{srv.url}/v1/infer", content=data), 503, "not_ready")
        threading.Timer(1.0, release.set).start()
        with Client(srv.url, retries=6, backoff=0.25) as client:
            answer = client.infer(data, inf.PNG)  # retried while 503, then answered
        assert answer.ok and answer.attempts > 1
        assert httpx.get(f"{srv.url}/healthz").json() == {"status": "ok"}
    finally:
        release.set()
        srv.stop()


def patterns(folder: Path, size=(36, 44)) -> list[Path]:
    """Flat, bright, ramp and stripes: inputs an untrained codec still tells apart."""
    h, w = size
    ramp = np.broadcast_to(np.linspace(0, 255, w), size)
    arrays = [np.zeros(size), np.full(size, 255.0), ramp, (np.arange(h * w).reshape(size) % 7) * 42]
    paths = []
    for i, a in enumerate(arrays):
        Image.fromarray(a.astype(np.uint8)).save(folder / f"p{i}.png")
        paths.append(folder / f"p{i}.png")
    return paths


def test_micro_batching_runs_requests_through_the_task_as_one_batch(model, tmp_path):
    from mvmic.serve.api import Settings

    service = inf.Service(model, "test")
    srv = LocalServer(Settings(ckpt="unused", max_batch=4, max_wait_ms=1500), lambda: service)
    try:
        files = patterns(tmp_path)
        bodies = [mvmic.compress(f, model) for f in files]
        with Client(srv.url) as client, ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda b: client.infer(b, inf.PNG), bodies))
        assert all(a.ok for a in answers)
        assert max(int(a.headers["x-mvmic-batch-size"]) for a in answers) > 1
        masks = [inf.read_mask(a.content, inf.PNG) for a in answers]
        assert len({m.tobytes() for m in masks}) > 1  # the check below can tell them apart
        for mask, f in zip(masks, files):  # batched, yet each mask is its own image's
            assert np.array_equal(mask, local_mask(model, f))
        assert any(a.timing["queue"] > 0 for a in answers)
    finally:
        srv.stop()


def test_accept_negotiation_and_server_timing_parsing():
    from mvmic.serve.app import negotiate

    offers = [inf.PNG, inf.NIFTI]
    assert negotiate(None, offers) == inf.PNG
    assert negotiate("*/*", offers) == inf.PNG
    assert negotiate("application/x-nifti", offers) == inf.NIFTI
    assert negotiate("image/*;q=0.2, application/*;q=0.9", offers) == inf.NIFTI
    assert negotiate("image/png;q=0, */*", offers) == inf.NIFTI
    assert negotiate("text/html", offers) is None
    assert parse_server_timing("decode;dur=1.5, task;dur=2, x") == {"decode": 1.5, "task": 2.0}


# -- slow: other models, more workers -----------------------------------------------------
@pytest.mark.slow
def test_3d_gan_volume_round_trip_as_nifti(folder, tmp_path):
    from mvmic.modules.gan_seg import GanSegmentation

    torch.manual_seed(0)
    gan = GanSegmentation(
        design="D2", dims=3, in_channels=1, num_classes=3, arch="UNet", code_channels=4,
        codec_width=8, roi_size=[16, 16, 16], sw_batch_size=1,
        class_names=["background", "myocardium", "blood_pool"],
        seg_args={"channels": [8, 16], "strides": [2], "num_res_units": 0},
    )  # fmt: skip
    ckpt = save_checkpoint(gan, tmp_path / "gan3d.ckpt")
    srv = Server(ckpt, tmp_path)
    try:
        vol = np.random.default_rng(0).integers(0, 1000, (21, 19, 13)).astype(np.int16)
        affine = np.diag([0.8, 0.9, 1.5, 1.0])
        nib.save(nib.Nifti1Image(vol, affine), tmp_path / "v.nii.gz")
        out = tmp_path / "mask.nii.gz"
        assert _send("--url", srv.url, "--ckpt", str(ckpt), str(tmp_path / "v.nii.gz"),
                     str(out)) == 0  # fmt: skip
        img = nib.load(out)
        mask = np.asarray(img.dataobj)
        model = load_module(ckpt)
        expect = frames_to_nifti(local_mask(model, tmp_path / "v.nii.gz"))  # frames → x, y, z
        assert mask.shape == vol.shape and np.array_equal(mask, expect)
        assert np.allclose(img.affine, affine)  # the client put the source geometry back
        info = httpx.get(f"{srv.url}/v1/model").json()
        assert info["spatial_dims"] == 3 and info["classes"][1] == "myocardium"
        png = png_file(tmp_path / "a.png")
        r = httpx.post(f"{srv.url}/v1/infer", content=png.read_bytes(),
                       headers={"Content-Type": inf.PNG})  # fmt: skip
        refusal(r, 415, "unsupported_media_type", ".mvmic")
    finally:
        srv.stop()


@pytest.mark.slow
def test_detection_answers_json_boxes(tmp_path):
    det = tiny_mvmic(
        0, task="detection", arch="fasterrcnn_mobilenet_v3_large_fpn", encoder=None,
        num_classes=3, task_args={"min_size": 64, "max_size": 64},
    )  # fmt: skip
    ckpt = save_checkpoint(det, tmp_path / "det.ckpt")
    srv = Server(ckpt, tmp_path)
    try:
        src = png_file(tmp_path / "a.png", size=(64, 64))
        model = load_module(ckpt)
        data = mvmic.compress(src, model)
        r = httpx.post(f"{srv.url}/v1/infer", content=data, params={"reconstruct": "1"})
        assert r.status_code == 200
        parts = Answer(200, "", r.content, dict(r.headers), 0, 0, 1).parts()
        media, body = parts["detections.json"]
        got = json.loads(body)
        with torch.inference_mode():
            (expect,) = model.task_output(mvmic.decompress(data, model))
        assert media == inf.JSON and set(got) == {"boxes", "labels", "scores"}
        assert np.allclose(got["scores"], expect["scores"].numpy(), atol=1e-5)
        assert "reconstruction.png" in parts
        out = tmp_path / "a.json"
        assert _send("--url", srv.url, "--ckpt", str(ckpt), str(src), str(out)) == 0
        assert json.loads(out.read_text())["labels"] == expect["labels"].tolist()
    finally:
        srv.stop()


@pytest.mark.slow
def test_two_workers_answer(ckpts, model, folder, tmp_path):
    srv = Server(ckpts["seg"], tmp_path, "--workers", "2")
    try:
        files = patterns(tmp_path)
        with Client(srv.url) as client, ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda f: client.infer(mvmic.compress(f, model), inf.PNG),
                                    files))  # fmt: skip
        for a, f in zip(answers, files):
            assert a.ok and np.array_equal(inf.read_mask(a.content, inf.PNG), local_mask(model, f))
    finally:
        srv.stop()


@pytest.mark.slow
def test_a_bad_checkpoint_with_workers_is_one_line_too(tmp_path, capsys):
    task = TaskModule(task="segmentation", arch="Unet", encoder="resnet18", num_classes=2,
                      in_channels=1, task_args=MV["task_args"])  # fmt: skip
    ckpt = save_checkpoint(task, tmp_path / "task.ckpt")
    # Checked in a child process (the supervisor keeps no model), still one line, status 2.
    assert main(["serve", "--ckpt", str(ckpt), "--workers", "2", "--port", str(free_port())]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "codec" in err, err

"""`analysis.download.fetch` against a local HTTP server (127.0.0.1, a thread) that serves
PIL-made JPEGs, Range requests, a 404, 503s, truncated bodies and slow responses."""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import numpy as np
import pytest
import requests
from PIL import Image

from analysis.data import download
from analysis.data.download import DownloadError, fetch, part_path

FAST = dict(retries=3, backoff_s=0.01, timeout_s=2.0, progress=False)


def make_jpeg(seed: int, size: tuple[int, int] = (64, 48)) -> bytes:
    """A noisy RGB JPEG (noise keeps it tens of KB, so halves and ranges are meaningful)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, "JPEG", quality=95)
    return buf.getvalue()


@dataclass
class Route:
    """What the server does for one path. ``kind`` names the fault; the first ``faults`` requests
    get it (None: every request), the rest are served normally, with Range support.

    kinds: ok, norange (ignores Range), notfound, unavailable (503), truncate (announces the full
    Content-Length, sends half, closes), slow (sleeps ``delay`` before the headers), stall (sends
    half the body, sleeps ``delay``, sends the rest)."""

    body: bytes = b""
    kind: str = "ok"
    faults: int | None = None
    delay: float = 0.0


class FileServer:
    """A threaded HTTP server on 127.0.0.1 serving ``routes``; ``log`` records (path, Range)."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.log: list[tuple[str, str | None]] = []
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True  # a sleeping "slow" handler must not block shutdown
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}{path}"

    def requests_for(self, path: str) -> list[str | None]:
        """The Range header of each request for ``path``, in order (None: no Range)."""
        with self._lock:
            return [rng for p, rng in self.log if p == path]

    def record(self, path: str, rng: str | None) -> int:
        with self._lock:
            n = sum(p == path for p, _ in self.log)
            self.log.append((path, rng))
            return n


def _handler(server: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:
            rng = self.headers.get("Range")
            n = server.record(self.path, rng)
            route = server.routes.get(self.path)
            if route is None or route.kind == "notfound":
                self.send_error(404, "Not Found")
                return
            faulty = route.kind != "ok" and (route.faults is None or n < route.faults)
            try:
                if faulty and route.kind == "unavailable":
                    self.send_error(503, "Service Unavailable")
                    return
                if faulty and route.kind == "slow":
                    time.sleep(route.delay)
                self._serve(route, rng if not (faulty and route.kind == "norange") else None,
                            faulty)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout test): nothing to do

        def _serve(self, route: Route, rng: str | None, faulty: bool) -> None:
            body, start = route.body, 0
            if rng:
                start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            piece = body[start:]
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(piece)))
            self.end_headers()
            half = len(piece) // 2
            if faulty and route.kind == "truncate":
                self.wfile.write(piece[:half])
                return  # HTTP/1.0: the connection closes with the body short
            if faulty and route.kind == "stall":
                self.wfile.write(piece[:half])
                self.wfile.flush()
                time.sleep(route.delay)
                self.wfile.write(piece[half:])
                return
            self.wfile.write(piece)

    return Handler


@contextlib.contextmanager
def serving() -> Iterator[FileServer]:
    """A running `FileServer`, shut down on exit."""
    srv = FileServer()
    srv.thread.start()
    try:
        yield srv
    finally:
        srv.httpd.shutdown()
        srv.httpd.server_close()


@pytest.fixture
def server():
    with serving() as srv:
        yield srv


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    return make_jpeg(0, (160, 120))


def test_fetch_writes_exact_bytes_and_leaves_no_part(server, jpeg, tmp_path):
    server.routes["/a.jpg"] = Route(jpeg)
    dest = tmp_path / "sub" / "a.jpg"
    out = fetch(server.url("/a.jpg"), dest, sha256=hashlib.sha256(jpeg).hexdigest(), **FAST)
    assert out == dest
    assert dest.read_bytes() == jpeg
    assert not part_path(dest).exists()
    assert server.requests_for("/a.jpg") == [None]


def test_part_path_appends_suffix(tmp_path):
    assert part_path(tmp_path / "x.jpg").name == "x.jpg.part"
    assert part_path(tmp_path / "train.jsonl.download").name == "train.jsonl.download.part"


def test_fetch_resumes_a_part_file_with_a_range_request(server, jpeg, tmp_path):
    server.routes["/a.jpg"] = Route(jpeg)
    dest = tmp_path / "a.jpg"
    half = len(jpeg) // 2
    part_path(dest).write_bytes(jpeg[:half])
    fetch(server.url("/a.jpg"), dest, **FAST)
    assert server.requests_for("/a.jpg") == [f"bytes={half}-"]
    assert dest.read_bytes() == jpeg


def test_fetch_restarts_when_the_server_ignores_range(server, jpeg, tmp_path):
    server.routes["/a.jpg"] = Route(jpeg, kind="norange")
    dest = tmp_path / "a.jpg"
    stale = b"\0" * (len(jpeg) // 3)  # not a prefix of the file: appending to it would corrupt it
    part_path(dest).write_bytes(stale)
    fetch(server.url("/a.jpg"), dest, **FAST)
    assert server.requests_for("/a.jpg") == [f"bytes={len(stale)}-"]
    assert dest.read_bytes() == jpeg


def test_fetch_finishes_a_complete_part_on_416(server, jpeg, tmp_path):
    server.routes["/a.jpg"] = Route(jpeg)
    dest = tmp_path / "a.jpg"
    part_path(dest).write_bytes(jpeg)
    fetch(server.url("/a.jpg"), dest, **FAST)
    assert server.requests_for("/a.jpg") == [f"bytes={len(jpeg)}-"]
    assert dest.read_bytes() == jpeg


def test_404_fails_at_once_naming_url_and_status(server, tmp_path):
    url = server.url("/nope.jpg")
    with pytest.raises(DownloadError) as err:
        fetch(url, tmp_path / "nope.jpg", **FAST)
    assert url in str(err.value) and "404" in str(err.value)
    assert len(server.requests_for("/nope.jpg")) == 1  # not retried
    assert not (tmp_path / "nope.jpg").exists()


def test_5xx_is_retried_with_exponential_backoff(server, jpeg, tmp_path, monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr(download.time, "sleep", waits.append)
    server.routes["/a.jpg"] = Route(jpeg, kind="unavailable", faults=3)
    dest = tmp_path / "a.jpg"
    fetch(server.url("/a.jpg"), dest, retries=5, backoff_s=0.5, timeout_s=2.0, progress=False)
    assert waits == [0.5, 1.0, 2.0]
    assert len(server.requests_for("/a.jpg")) == 4
    assert dest.read_bytes() == jpeg


def test_5xx_gives_up_after_retries(server, jpeg, tmp_path):
    server.routes["/a.jpg"] = Route(jpeg, kind="unavailable")
    url = server.url("/a.jpg")
    with pytest.raises(DownloadError, match="503") as err:
        fetch(url, tmp_path / "a.jpg", **{**FAST, "retries": 2})
    assert url in str(err.value) and "3 attempts" in str(err.value)
    assert len(server.requests_for("/a.jpg")) == 3


def test_truncated_body_is_resumed_on_retry(server, jpeg, tmp_path):
    server.routes["/a.jpg"] = Route(jpeg, kind="truncate", faults=1)
    dest = tmp_path / "a.jpg"
    fetch(server.url("/a.jpg"), dest, **FAST)
    half = len(jpeg) // 2
    assert server.requests_for("/a.jpg") == [None, f"bytes={half}-"]
    assert dest.read_bytes() == jpeg


def test_always_truncated_body_is_an_error_naming_truncation(server, jpeg, tmp_path):
    server.routes["/a.jpg"] = Route(jpeg, kind="truncate")
    url = server.url("/a.jpg")
    dest = tmp_path / "a.jpg"
    with pytest.raises(DownloadError, match="truncated") as err:
        fetch(url, dest, **{**FAST, "retries": 1})
    assert url in str(err.value)
    assert not dest.exists()
    # each attempt got half of what was left; the partial bytes stay for the next run
    half = len(jpeg) // 2
    got = half + (len(jpeg) - half) // 2
    assert part_path(dest).read_bytes() == jpeg[:got]
    assert server.requests_for("/a.jpg") == [None, f"bytes={half}-"]


def test_slow_response_times_out_and_is_retried(server, jpeg, tmp_path):
    server.routes["/a.jpg"] = Route(jpeg, kind="slow", faults=1, delay=1.0)
    dest = tmp_path / "a.jpg"
    start = time.perf_counter()
    fetch(server.url("/a.jpg"), dest, retries=2, backoff_s=0.01, timeout_s=0.25, progress=False)
    assert time.perf_counter() - start < 1.0  # did not wait for the slow reply
    assert len(server.requests_for("/a.jpg")) == 2
    assert dest.read_bytes() == jpeg


def test_always_slow_response_is_a_timeout_error(server, jpeg, tmp_path):
    server.routes["/a.jpg"] = Route(jpeg, kind="slow", delay=1.0)
    url = server.url("/a.jpg")
    with pytest.raises(DownloadError, match="(?i)timeout|timed out") as err:
        fetch(url, tmp_path / "a.jpg", retries=1, backoff_s=0.01, timeout_s=0.2, progress=False)
    assert url in str(err.value)
    assert len(server.requests_for("/a.jpg")) == 2


def test_stall_mid_body_times_out_and_resumes(server, jpeg, tmp_path):
    server.routes["/a.jpg"] = Route(jpeg, kind="stall", faults=1, delay=1.0)
    dest = tmp_path / "a.jpg"
    fetch(server.url("/a.jpg"), dest, retries=2, backoff_s=0.01, timeout_s=0.25, progress=False)
    ranges = server.requests_for("/a.jpg")
    assert ranges[0] is None and len(ranges) == 2
    resumed_at = int(re.fullmatch(r"bytes=(\d+)-", ranges[1]).group(1))
    assert 0 < resumed_at < len(jpeg)
    assert dest.read_bytes() == jpeg


def test_sha256_mismatch_names_expected_and_actual(server, jpeg, tmp_path):
    server.routes["/a.jpg"] = Route(jpeg)
    url = server.url("/a.jpg")
    dest = tmp_path / "a.jpg"
    wrong = "0" * 64
    with pytest.raises(DownloadError) as err:
        fetch(url, dest, sha256=wrong, **FAST)
    msg = str(err.value)
    assert url in msg and wrong in msg and hashlib.sha256(jpeg).hexdigest() in msg
    assert not dest.exists() and not part_path(dest).exists()


def test_existing_dest_is_kept_when_it_matches_and_refetched_when_not(server, jpeg, tmp_path):
    server.routes["/a.jpg"] = Route(jpeg)
    dest = tmp_path / "a.jpg"
    dest.write_bytes(jpeg)
    fetch(server.url("/a.jpg"), dest, sha256=hashlib.sha256(jpeg).hexdigest(), **FAST)
    fetch(server.url("/a.jpg"), dest, **FAST)
    assert server.requests_for("/a.jpg") == []  # no request at all
    dest.write_bytes(b"stale")
    fetch(server.url("/a.jpg"), dest, sha256=hashlib.sha256(jpeg).hexdigest(), **FAST)
    assert dest.read_bytes() == jpeg
    assert server.requests_for("/a.jpg") == [None]


def test_connection_refused_is_retried_then_reported(tmp_path, monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr(download.time, "sleep", waits.append)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = srv.server_port
    srv.server_close()  # nothing listens on the port now
    url = f"http://127.0.0.1:{port}/a.jpg"
    with pytest.raises(DownloadError, match="ConnectionError") as err:
        fetch(url, tmp_path / "a.jpg", retries=2, backoff_s=0.1, timeout_s=1.0, progress=False)
    assert url in str(err.value)
    assert waits == [0.1, 0.2]


def test_caller_session_is_used_and_left_open(server, jpeg, tmp_path):
    server.routes["/a.jpg"] = Route(jpeg)
    with requests.Session() as session:
        fetch(server.url("/a.jpg"), tmp_path / "a.jpg", session=session, **FAST)
        fetch(server.url("/a.jpg"), tmp_path / "b.jpg", session=session, **FAST)
    assert (tmp_path / "b.jpg").read_bytes() == jpeg


def test_bad_url_is_a_download_error(tmp_path):
    with pytest.raises(DownloadError, match="not-a-url"):
        fetch("not-a-url", tmp_path / "a.jpg", **FAST)


def test_progress_bar_runs(server, jpeg, tmp_path, capsys):
    server.routes["/a.jpg"] = Route(jpeg)
    fetch(server.url("/a.jpg"), tmp_path / "a.jpg", **{**FAST, "progress": True})
    assert "a.jpg" in capsys.readouterr().err


def test_an_unresolvable_host_fails_at_once_naming_the_url(tmp_path, monkeypatch):
    """Offline (DNS fails): no retries with backoff, a DownloadError marked offline."""
    slept = []
    monkeypatch.setattr(download.time, "sleep", slept.append)
    url = "http://vsr-host.invalid/data/train.jsonl"
    with pytest.raises(DownloadError) as err:
        fetch(url, tmp_path / "train.jsonl", retries=5, progress=False)
    assert err.value.offline and url in str(err.value) and "no network" in str(err.value)
    assert slept == []

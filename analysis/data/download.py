"""Resumable single-file HTTP download: retries with exponential backoff, HTTP Range resume of a
``.part`` file, Content-Length and sha256 checks, and an atomic rename onto the destination."""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path

import requests
import urllib3
from tqdm import tqdm

from analysis.common.errors import UserError
from analysis.common.io import sha256_file

log = logging.getLogger("download")

CHUNK = 1 << 16
MAX_BACKOFF_S = 60.0
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes\s+\*/(\d+)")


class DownloadError(UserError, RuntimeError):
    """A download failed for good; the message names the URL and what went wrong. ``offline``:
    the host name could not be resolved (no network: retrying cannot help)."""

    def __init__(self, url: str, problem: str, offline: bool = False) -> None:
        super().__init__(f"{url}: {problem}")
        self.url = url
        self.problem = problem
        self.offline = offline


def _unresolvable(exc: BaseException) -> bool:
    """Whether a connection error is a failed DNS lookup (socket.gaierror somewhere in the chain)."""
    import socket

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, socket.gaierror) or "NameResolutionError" in type(exc).__name__:
            return True
        if "Failed to resolve" in str(exc) or "Name or service not known" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__ or (exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else None)
    return False


# what a dropped or stalled connection raises while the body streams (urllib3 raises its own)
_NETWORK_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, ConnectionError,
                   TimeoutError)


class _Retryable(Exception):
    """A failure worth another attempt (connection error, timeout, 5xx, truncated body)."""


def part_path(dest: Path) -> Path:
    """Where the bytes go while downloading (kept between runs so a download resumes)."""
    return dest.with_suffix(dest.suffix + ".part")


def fetch(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    retries: int = 5,
    backoff_s: float = 1.0,
    timeout_s: float = 60.0,
    progress: bool = True,
    session: requests.Session | None = None,
) -> Path:
    """Download ``url`` to ``dest`` and return ``dest``.

    An existing ``dest`` is returned as is when ``sha256`` is None or matches (it only ever
    appears by atomic rename of a complete download). Bytes land in ``dest.part`` first; an
    existing ``.part`` is resumed with a Range request (a server that ignores Range and answers
    200 restarts it). Connection errors, timeouts, 408/429/5xx and truncated bodies are retried
    ``retries`` times, sleeping ``backoff_s * 2**k`` between attempts; other HTTP errors (404 ...)
    fail at once. ``timeout_s`` bounds the connect and every read, not the whole transfer.
    """
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    dest = Path(dest)
    want = sha256.lower() if sha256 else None
    if dest.is_file():
        if want is None or sha256_file(dest) == want:
            return dest
        log.warning("%s exists but its sha256 differs from the pin: downloading again", dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    own_session = session is None
    session = session or requests.Session()
    try:
        for attempt in range(retries + 1):
            try:
                _attempt(session, url, part, timeout_s, progress)
            except _Retryable as exc:
                if attempt == retries:
                    kept = f"; {part.stat().st_size} bytes kept in {part}" if part.is_file() else ""
                    raise DownloadError(url, f"{exc} (gave up after {retries + 1} attempts{kept})"
                                        ) from None
                wait = min(backoff_s * 2 ** attempt, MAX_BACKOFF_S)
                log.warning("%s: %s; retry %d/%d in %.1fs", url, exc, attempt + 1, retries, wait)
                time.sleep(wait)
                continue
            if want is not None:
                actual = sha256_file(part)
                if actual != want:
                    part.unlink(missing_ok=True)
                    raise DownloadError(url, f"sha256 mismatch: expected {want}, got {actual} "
                                             "(download discarded)")
            os.replace(part, dest)
            return dest
    finally:
        if own_session:
            session.close()
    raise AssertionError("unreachable")  # the loop returns or raises


def _attempt(session: requests.Session, url: str, part: Path, timeout_s: float,
             progress: bool) -> None:
    """One request: stream the (rest of the) body into ``part``; raise `_Retryable` or
    `DownloadError`. Returns when ``part`` holds exactly the advertised number of bytes."""
    have = part.stat().st_size if part.is_file() else 0
    # identity: Content-Length and Range then count the file's own bytes, not gzip'd ones
    headers = {"Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = session.get(url, headers=headers, stream=True, timeout=timeout_s)
    except (requests.ConnectionError, requests.Timeout) as exc:
        if _unresolvable(exc):
            host = requests.utils.urlparse(url).hostname
            raise DownloadError(url, f"cannot resolve {host}: no network (not retried)",
                                offline=True) from None
        raise _Retryable(f"{type(exc).__name__}: {exc}") from None
    except requests.RequestException as exc:  # a malformed URL, too many redirects, ...
        raise DownloadError(url, f"{type(exc).__name__}: {exc}") from None
    with resp:
        if resp.status_code == 416 and have:
            m = _UNSATISFIED_RANGE.match(resp.headers.get("Content-Range", ""))
            if m and int(m.group(1)) == have:
                return  # the .part already holds the whole file
            part.unlink()
            raise _Retryable(f"HTTP 416 for a resume from byte {have}: restarting from scratch")
        if resp.status_code in RETRY_STATUS:
            raise _Retryable(f"HTTP {resp.status_code} {resp.reason}")
        if resp.status_code not in (200, 206):
            raise DownloadError(url, f"HTTP {resp.status_code} {resp.reason}")
        if resp.status_code == 206:
            start, total = _content_range(resp, part, have)
        else:
            if have:
                log.info("%s: server ignored the Range request (HTTP 200): restarting", url)
            start = 0
            length = resp.headers.get("Content-Length")
            total = int(length) if length is not None else None
        written = start
        try:
            with part.open("r+b" if start else "wb") as fh, tqdm(
                total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                desc=part.name[:-5], disable=not progress, leave=False,
            ) as bar:
                fh.seek(start)
                fh.truncate()
                # read1 hands over whatever has arrived, so a stall loses nothing already received
                while block := resp.raw.read1(CHUNK, decode_content=False):
                    fh.write(block)
                    written += len(block)
                    bar.update(len(block))
        except _NETWORK_ERRORS as exc:  # mid-body; a local disk error (other OSError) propagates
            got = f"{written} of {total}" if total is not None else f"{written}"
            raise _Retryable(f"body truncated: connection lost after {got} bytes "
                             f"({type(exc).__name__})") from None
    if total is not None and written < total:
        raise _Retryable(f"body truncated: got {written} of {total} bytes")
    if total is not None and written > total:
        part.unlink()
        raise DownloadError(url, f"server sent {written} bytes, more than the {total} it announced")


def _content_range(resp: requests.Response, part: Path, have: int) -> tuple[int, int | None]:
    """(first byte, total size) of a 206 reply; it must continue exactly where ``.part`` ends."""
    header = resp.headers.get("Content-Range", "")
    m = _CONTENT_RANGE.match(header)
    if not m or int(m.group(1)) != have:
        resp.close()
        part.unlink()
        raise _Retryable(f"asked for bytes {have}- but got Content-Range {header!r}: restarting "
                         "from scratch")
    return have, None if m.group(3) == "*" else int(m.group(3))

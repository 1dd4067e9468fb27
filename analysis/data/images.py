"""Stage `images`: fetch each distinct COCO image the VSR splits use (or take it from the folder
`images.dir`), decode-check it, and write `results/images/manifest.csv`.

Runs only when an image condition (clip_image, clip_concat) is selected; otherwise it writes a
header-only manifest so downstream stages can always depend on it. Missing (download failed, or
absent from `images.dir`) and corrupt (PIL cannot decode) images are counted, logged and listed
in the manifest with the reason; they are never replaced, and `embed` excludes their rows.

With `images.dir`, each image is hard-linked (copied where the folder is on another file system)
into `data/images/`, so the manifest and `.verified.json` name only `data/images/<image>` (no
author path reaches the pushed outputs) and `dvc status` sees a changed or deleted image as a
changed `data/images` output. Downloads go to `data/images/` with `images.workers` threads, each file retried with backoff and
resumed from its `.part` (`analysis.download.fetch`). Files already verified on an earlier run
(same size and mtime, recorded in `data/images/.verified.json`) are not read again, so a second
run takes seconds. A downloaded file that fails the decode check is fetched again on the next run.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable

import pandas as pd
import requests
from PIL import Image
from tqdm import tqdm

from analysis.common import store
from analysis.common.cli import stage_parser
from analysis.data.download import DownloadError, fetch
from analysis.common.io import read_json, sha256_file, write_csv, write_json
from analysis.common.errors import UserError
from analysis.common.params import Settings, condition_sets, load_params, stage_settings

log = logging.getLogger("images")

MANIFEST_COLUMNS = ["image", "path", "sha256", "bytes", "status", "error"]
STATUSES = ("ok", "missing", "corrupt")
VERIFIED_CACHE = store.IMAGES_DIR / ".verified.json"
MAX_LOGGED = 100  # bad images listed one per line in the log; the manifest lists them all


class ImagesError(UserError, ValueError):
    """Bad input to the stage; the message names the setting, split or row at fault."""


class ImagesSettings(Settings):
    """Section `images` (used only when an image condition is selected)."""

    dir: str | None = None
    """folder of COCO images named as VSR's `image` field, instead of downloading"""
    splits: tuple[str, ...]
    """split keys ('<variant>/<split>') whose images are needed"""
    workers: int = 8
    """parallel downloads / decode checks"""
    retries: int = 5
    """attempts per image after the first"""
    backoff_s: float = 1.0
    """first retry delay (doubles each attempt)"""
    timeout_s: float = 60.0
    """per-request timeout"""


# --------------------------------------------------------------------------- pure functions


def needs_images(conditions: Iterable[str]) -> bool:
    return any(store.is_image_condition(c) for c in conditions)


def collect_images(tables: dict[str, pd.DataFrame]) -> dict[str, str]:
    """Distinct image file name -> its ``image_link`` over the given split tables (key: split).

    A name must be a plain file name (it becomes a path under ``data/images``), and one name
    must not come with two different links."""
    links: dict[str, str] = {}
    where: dict[str, str] = {}
    for key, df in tables.items():
        for row_id, image, link in zip(df["row_id"], df["image"], df["image_link"]):
            if not isinstance(image, str) or not _plain_name(image):
                raise ImagesError(f"{key} row {row_id}: field 'image' is not a plain file name: "
                                  f"{image!r}")
            link = link if isinstance(link, str) else ""
            if image in links and links[image] != link:
                raise ImagesError(f"{key} row {row_id}: image {image} has image_link {link!r}, "
                                  f"but {where[image]} gave {links[image]!r}")
            if image not in links:
                links[image], where[image] = link, f"{key} row {row_id}"
    return links


def _plain_name(name: str) -> bool:
    return bool(name) and name not in {".", ".."} and PurePosixPath(name).name == name \
        and "\\" not in name


def decode_error(path: Path) -> str | None:
    """None when PIL decodes the whole image to RGB; otherwise why it could not."""
    try:
        with Image.open(path) as im:
            im.convert("RGB")  # forces a full decode: a truncated JPEG raises here
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, ... for bad bytes
        return f"{type(exc).__name__}: {exc}"
    return None


def inspect_file(image: str, path: Path, shown: str) -> dict[str, Any]:
    """The manifest row for a file on disk: its checksum, size and decode status."""
    if not path.is_file():
        return manifest_row(image, shown, "missing", f"file not found: {path}")
    err = decode_error(path)
    return manifest_row(image, shown, "corrupt" if err else "ok", err or "",
                        sha256=sha256_file(path), size=path.stat().st_size)


def manifest_row(image: str, path: str, status: str, error: str = "", *,
                 sha256: str | None = None, size: int | None = None) -> dict[str, Any]:
    return {"image": image, "path": path, "sha256": sha256, "bytes": size, "status": status,
            "error": error}


def build_manifest(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows -> the manifest table (ARCHITECTURE.md): the fixed columns, sorted by image."""
    df = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    bad = set(df["status"]) - set(STATUSES)
    if bad:
        raise ValueError(f"unknown image status {sorted(bad)}")
    df["bytes"] = df["bytes"].astype("Int64")
    return df.sort_values("image", kind="stable").reset_index(drop=True)


def summarize(manifest: pd.DataFrame) -> dict[str, int]:
    counts = manifest["status"].value_counts()
    return {s: int(counts.get(s, 0)) for s in STATUSES}


# --------------------------------------------------------------------------- checks and downloads


class VerifiedCache:
    """Files already decode-checked, keyed by the manifest path, valid while size and mtime hold."""

    def __init__(self, path: Path = VERIFIED_CACHE) -> None:
        self.path = path
        try:
            self.old: dict[str, dict[str, Any]] = read_json(path) if path.is_file() else {}
        except ValueError:
            log.warning("%s is not valid JSON: every image is checked again", path)
            self.old = {}
        self.new: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def lookup(self, image: str, path: Path, shown: str) -> dict[str, Any] | None:
        entry = self.old.get(shown)
        try:
            st = path.stat()
        except OSError:
            return None
        if entry and entry.get("bytes") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns:
            with self._lock:
                self.new[shown] = entry
            return manifest_row(image, shown, "ok", sha256=entry["sha256"], size=st.st_size)
        return None

    def record(self, row: dict[str, Any], path: Path) -> None:
        if row["status"] == "ok":
            with self._lock:
                self.new[row["path"]] = {"sha256": row["sha256"], "bytes": row["bytes"],
                                         "mtime_ns": path.stat().st_mtime_ns}

    def save(self) -> None:
        write_json(self.path, self.new)


def link_into(src: Path, dest: Path) -> str:
    """Put ``src`` at ``dest`` as a hard link (a copy across file systems), replacing what was
    there unless it already is ``src``; returns "linked", "copied" or "present"."""
    if dest.exists() and os.path.samefile(src, dest):
        return "present"
    tmp = dest.with_name(f".{dest.name}.link")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
        how = "linked"
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, tmp)
        how = "copied"
    os.replace(tmp, dest)
    return how


def check_local(image: str, folder: Path, dest_dir: Path, cache: VerifiedCache,
                shown_dir: str) -> dict[str, Any]:
    """Manifest row for ``image`` from ``folder`` (``images.dir``, named ``shown_dir`` in
    messages), linked into ``dest_dir``; the manifest path is ``dest_dir/<image>``."""
    src, dest = folder / image, dest_dir / image
    shown = dest.as_posix()
    if not src.is_file():  # an older file at dest (a download) is left alone, not used
        return manifest_row(image, shown, "missing", f"not in images.dir {shown_dir}")
    link_into(src, dest)
    row = cache.lookup(image, dest, shown)
    if row is None:
        row = inspect_file(image, dest, shown)
        cache.record(row, dest)
    return row


def fetch_one(image: str, link: str, dest_dir: Path, cache: VerifiedCache,
              get: Callable[[str, Path], Path]) -> dict[str, Any]:
    """Manifest row for ``image`` downloaded from ``link`` into ``dest_dir`` with ``get``.

    An unverified file already there is decode-checked and kept when ok; a corrupt one is
    deleted and fetched again."""
    dest = dest_dir / image
    shown = dest.as_posix()
    row = cache.lookup(image, dest, shown)
    if row is not None:
        return row
    if dest.is_file():
        row = inspect_file(image, dest, shown)
        if row["status"] == "ok":
            cache.record(row, dest)
            return row
        log.info("%s: existing file is corrupt (%s): fetching again", dest, row["error"])
        dest.unlink()
    if not link:
        return manifest_row(image, shown, "missing", "no image_link in the VSR row")
    try:
        get(link, dest)
    except DownloadError as exc:
        if exc.offline:  # no network: every other image would fail the same way
            raise ImagesError(f"{exc}\nOffline? Set images.dir in the params file to a folder "
                              "of COCO 2017 images named as VSR's `image` field (e.g. an "
                              "unpacked train2017 + val2017).") from None
        return manifest_row(image, shown, "missing", str(exc))
    row = inspect_file(image, dest, shown)
    cache.record(row, dest)
    return row


def run_parallel(jobs: dict[str, Callable[[], dict[str, Any]]], workers: int,
                 desc: str) -> list[dict[str, Any]]:
    """Run each image's job on ``workers`` threads under one progress bar with live counts."""
    rows: list[dict[str, Any]] = []
    counts = dict.fromkeys(STATUSES, 0)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, \
            tqdm(total=len(jobs), desc=desc, unit="img") as bar:
        futures = {pool.submit(job): image for image, job in jobs.items()}
        for fut in as_completed(futures):
            try:
                row = fut.result()
            except ImagesError:
                for other in futures:
                    other.cancel()  # the queued jobs; running ones finish their attempt
                raise
            rows.append(row)
            counts[row["status"]] += 1
            bar.set_postfix(counts, refresh=False)
            bar.update(1)
    return rows


class _ThreadSessions:
    """One `requests.Session` per worker thread (a Session is not documented thread-safe)."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._all: list[requests.Session] = []
        self._lock = threading.Lock()

    def get(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
            with self._lock:
                self._all.append(s)
        return s

    def close(self) -> None:
        for s in self._all:
            s.close()


def acquire(links: dict[str, str], cfg: ImagesSettings, params_path: str | Path,
            images_dir: Path = store.IMAGES_DIR) -> list[dict[str, Any]]:
    """Manifest rows for every image: from ``images.dir`` when set, else downloaded."""
    images_dir.mkdir(parents=True, exist_ok=True)  # a DVC out, even when images.dir is used
    cache = VerifiedCache(images_dir / VERIFIED_CACHE.name)
    workers = max(cfg.workers, 1)
    if cfg.dir:
        folder = Path(cfg.dir).resolve()
        if not folder.is_dir():
            raise ImagesError(f"{params_path}: images.dir {cfg.dir!r} is not a directory")
        jobs = {im: (lambda im=im: check_local(im, folder, images_dir, cache, cfg.dir))
                for im in links}
        rows = run_parallel(jobs, workers, "images (check)")
    else:
        sessions = _ThreadSessions()

        def get(url: str, dest: Path) -> Path:
            return fetch(url, dest, retries=cfg.retries, backoff_s=cfg.backoff_s,
                         timeout_s=cfg.timeout_s, progress=False,
                         session=sessions.get())

        jobs = {im: (lambda im=im, link=link: fetch_one(im, link, images_dir, cache, get))
                for im, link in links.items()}
        try:
            rows = run_parallel(jobs, workers, "images (download)")
        finally:
            sessions.close()
    cache.save()
    return rows


# --------------------------------------------------------------------------- stage


def load_tables(splits: Iterable[str], params_path: str | Path) -> dict[str, pd.DataFrame]:
    tables = {}
    for key in splits:
        try:
            variant, split = store.parse_split_key(key)
        except ValueError as exc:
            raise ImagesError(f"{params_path}: images.splits: {exc}") from None
        if variant not in store.VARIANTS:
            raise ImagesError(f"{params_path}: images.splits: {key} has no images")
        tables[key] = store.load_split(variant, split)
    return tables


def report(manifest: pd.DataFrame) -> None:
    bad = manifest[manifest["status"] != "ok"]
    for row in bad.head(MAX_LOGGED).itertuples():
        log.warning("%s %s: %s", row.status, row.image, row.error)
    if len(bad) > MAX_LOGGED:
        log.warning("... and %d more missing/corrupt images, all listed in %s",
                    len(bad) - MAX_LOGGED, store.IMAGE_MANIFEST)


def main(argv: list[str] | None = None) -> int:
    args = stage_parser("images", __doc__.splitlines()[0]).parse_args(argv)
    params = load_params(args.params)
    cfg = stage_settings(ImagesSettings, params, "images", args.params)
    conditions = condition_sets(params, args.params).image
    if not needs_images(conditions):
        store.IMAGES_DIR.mkdir(parents=True, exist_ok=True)
        write_csv(store.IMAGE_MANIFEST, build_manifest([]))
        write_csv(store.IMAGE_UNUSABLE, store.unusable_images(build_manifest([])))
        log.info("no image condition selected (conditions: %s): skipped; wrote the header-only "
                 "%s", ", ".join(conditions) or "none", store.IMAGE_MANIFEST)
        return 0
    splits = list(cfg.splits)
    if not splits:
        raise ImagesError(f"{args.params}: images.splits is empty")
    links = collect_images(load_tables(splits, args.params))
    log.info("%d distinct images over %s", len(links), ", ".join(splits))
    manifest = build_manifest(acquire(links, cfg, args.params))
    write_csv(store.IMAGE_MANIFEST, manifest)
    write_csv(store.IMAGE_UNUSABLE, store.unusable_images(manifest))
    report(manifest)
    counts = summarize(manifest)
    log.info("summary: %d ok, %d missing, %d corrupt (of %d); manifest %s", counts["ok"],
             counts["missing"], counts["corrupt"], len(manifest), store.IMAGE_MANIFEST)
    if links and counts["ok"] == 0:
        log.error("no image could be used: offline? set images.dir to a folder of COCO images")
        return 1
    return 0

"""Stage `vsr`: fetch the VSR splits, verify their sha256, validate every row, parse subject and
object from each caption, attach the VSR meta-category, and write one normalized table per split
(row rules: `analysis/data/vsr_format.py`; meta-categories: `analysis/data/relations.py`).

Sources (params `data`): the folder `data.mirror` ({variant}/{split}.jsonl) when set; otherwise
the upstream GitHub repository at a pinned commit (raw file URLs) or the Hugging Face hub datasets
(`data.hf.datasets`, at `data.hf.revision`: one revision, or one per variant). The meta-category
decisions are recorded in ``results/vsr/report.json``.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from tqdm import tqdm

from analysis.common import store
from analysis.common.cli import stage_parser
from analysis.common.errors import UserError
from analysis.common.io import atomic_path, replace_dir, sha256_file, write_json, write_parquet
from analysis.common.params import Settings, load_params, stage_settings
from analysis.data.relations import load_meta_categories
from analysis.data.vsr_format import ChecksumError, VSRDataError, normalize, read_split, split_summary

log = logging.getLogger("vsr")

GITHUB_RAW = "https://raw.githubusercontent.com/{repo}/{commit}/data/splits/{variant}/{split}.jsonl"
OFFLINE_HINT = ("Offline? Put the VSR files in a folder laid out {variant}/{split}.jsonl and set "
                "data.mirror to it in the params file (the data.sha256 pins still apply), or use "
                "data.source: hf with a Hugging Face cache that holds the datasets and "
                "HF_HUB_OFFLINE=1.")


# --------------------------------------------------------------------------- settings


class GithubPin(Settings):
    repo: str
    """owner/name of the upstream repository"""
    commit: str
    """the pinned commit whose data/splits files are fetched"""


class HubPin(Settings):
    datasets: dict[str, str]
    """variant -> Hugging Face dataset id"""
    revision: str | dict[str, str] | None = None
    """one revision for every variant, or one per variant"""


class VsrSettings(Settings):
    """Section `data` of the params file: where the VSR splits come from and their pins."""

    mirror: str | None = None
    """folder laid out {variant}/{split}.jsonl to copy instead of downloading"""
    source: Literal["github", "hf"] = "github"
    """where to download from when no mirror is set"""
    github: GithubPin | None = None
    hf: HubPin | None = None
    variants: tuple[str, ...]
    """VSR variants to fetch (random, zeroshot)"""
    splits: tuple[str, ...]
    """splits of each variant (train, dev, test)"""
    sha256: dict[str, str]
    """'<variant>/<split>' -> pinned sha256 of the JSONL file; every split must be pinned"""


# --------------------------------------------------------------------------- I/O


@dataclass(frozen=True)
class Source:
    """Where the raw split files come from, read from params `data`."""

    kind: str  # mirror | github | hf
    mirror: Path | None = None
    repo: str | None = None
    commit: str | None = None
    hf_datasets: dict[str, str] | None = None
    hf_revision: str | dict[str, str] | None = None

    @classmethod
    def from_settings(cls, cfg: VsrSettings, params_path: str) -> "Source":
        if cfg.mirror:
            return cls("mirror", mirror=Path(cfg.mirror))
        pin = cfg.github if cfg.source == "github" else cfg.hf
        if pin is None:
            raise VSRDataError(f"{params_path}: data.source is {cfg.source!r} but section "
                               f"'data.{cfg.source}' is not set")
        if cfg.source == "github":
            return cls("github", repo=pin.repo, commit=pin.commit)
        return cls("hf", hf_datasets=dict(pin.datasets), hf_revision=pin.revision)

    def describe(self) -> str:
        if self.kind == "mirror":
            return f"mirror:{self.mirror}"
        if self.kind == "github":
            return f"github:{self.repo}@{self.commit}"
        return f"hf:{self.hf_datasets}@{self.hf_revision}"

    def _hf(self, variant: str) -> tuple[str, str | None]:
        if variant not in self.hf_datasets:
            raise VSRDataError(f"data.hf.datasets has no dataset for variant '{variant}'")
        rev = self.hf_revision
        return self.hf_datasets[variant], rev.get(variant) if isinstance(rev, dict) else rev

    def origin(self, variant: str, split: str) -> str:
        """Where one split comes from (a path or URL), for messages."""
        if self.kind == "mirror":
            return str(self.mirror / variant / f"{split}.jsonl")
        if self.kind == "github":
            return GITHUB_RAW.format(repo=self.repo, commit=self.commit, variant=variant,
                                     split=split)
        repo, rev = self._hf(variant)
        return f"hf://datasets/{repo}@{rev}/{split}.jsonl"

    def fetch_to(self, variant: str, split: str, dest: Path) -> None:
        """Put the split's bytes at ``dest`` (unverified)."""
        if self.kind == "mirror":
            src = self.mirror / variant / f"{split}.jsonl"
            if not src.is_file():
                raise VSRDataError(f"data.mirror: {src} not found "
                                   "(layout {variant}/{split}.jsonl)")
            shutil.copyfile(src, dest)
        elif self.kind == "github":
            from analysis.data.download import fetch
            try:
                fetch(self.origin(variant, split), dest)
            except UserError as exc:  # a DownloadError: the URL and what went wrong
                raise VSRDataError(f"{exc}\n{OFFLINE_HINT}") from None
        else:
            from huggingface_hub import hf_hub_download
            from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
            repo, rev = self._hf(variant)
            try:
                cached = hf_hub_download(repo_id=repo, filename=f"{split}.jsonl",
                                         repo_type="dataset", revision=rev)
            except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
                raise VSRDataError(f"hf://datasets/{repo}@{rev}/{split}.jsonl: "
                                   f"{type(exc).__name__}: {str(exc).splitlines()[0]}\n"
                                   f"{OFFLINE_HINT}") from None
            shutil.copyfile(cached, dest)


def verify_sha256(path: Path, expected: str | None, name: str, origin: str) -> str:
    """The file's sha256; raise `ChecksumError` (file, expected, actual) when it differs."""
    if not expected:
        raise VSRDataError(f"{origin}: data.sha256['{name}'] is not set: "
                           "every split must be pinned")
    actual = sha256_file(path)
    if actual != expected.lower():
        raise ChecksumError(f"{origin}: sha256 mismatch for {name}: expected {expected}, "
                            f"got {actual}")
    return actual


def acquire(source: Source, variant: str, split: str, expected: str | None,
            root: Path = store.VSR_DIR) -> Path:
    """Verified raw split at `store.raw_split_path` under ``root``; an already verified copy
    there is reused. A partial download waits in `store.PARTIAL_DIR` (outside the stage's
    output folder, which is replaced whole), so an interrupted one resumes."""
    name = store.split_key(variant, split)
    raw = store.raw_split_path(variant, split, root)
    if raw.is_file() and expected and sha256_file(raw) == expected.lower():
        log.info("%s: verified copy already at %s", name, store.raw_split_path(variant, split))
        return raw
    raw.parent.mkdir(parents=True, exist_ok=True)
    partial = store.PARTIAL_DIR / "vsr" / variant / f"{split}.jsonl.download"
    partial.parent.mkdir(parents=True, exist_ok=True)
    source.fetch_to(variant, split, partial)
    try:
        verify_sha256(partial, expected, name, source.origin(variant, split))
    except ChecksumError:
        partial.unlink(missing_ok=True)
        raise
    with atomic_path(raw) as tmp:
        shutil.move(partial, tmp)
    return raw


def caption_overlap(train: pd.DataFrame, test: pd.DataFrame) -> dict[str, Any]:
    """How many test rows have a caption that also occurs in train, and of those how many have
    a training row of the opposite label (any; and a majority of their training rows): a truth
    probe on the caption alone can pass such rows by memorising captions, and fail them by the
    same (why VSR's random split misleads)."""
    seen = train.groupby("caption")["label"].mean()
    shared = test["caption"].isin(seen.index)
    p = seen.reindex(test.loc[shared, "caption"]).to_numpy()
    y = test.loc[shared, "label"].to_numpy(dtype=float)
    n, k = len(test), int(shared.sum())
    anyo = int((np.where(y == 1, p < 1, p > 0)).sum())
    most = int((np.abs(p - y) > 0.5).sum())
    return {"test_rows": n, "caption_in_train": k, "share_in_train": k / n if n else None,
            "opposite_label_in_train": anyo, "share_opposite_of_shared": anyo / k if k else None,
            "majority_opposite_in_train": most,
            "share_majority_opposite_of_shared": most / k if k else None}


def main(argv: list[str] | None = None) -> int:
    args = stage_parser("vsr", __doc__.splitlines()[0]).parse_args(argv)
    cfg = stage_settings(VsrSettings, load_params(args.params), "data", args.params)
    source = Source.from_settings(cfg, args.params)
    pins = cfg.sha256
    meta, decisions = load_meta_categories()
    keys = [(v, s) for v in cfg.variants for s in cfg.splits]
    for v, s in keys:  # check names and pins before any download
        store.parse_split_key(store.split_key(v, s))
        if not pins.get(store.split_key(v, s)):
            raise VSRDataError(f"{args.params}: data.sha256['{v}/{s}'] is not set: every split "
                               "must be pinned")

    splits: dict[str, Any] = {}
    raws = [store.raw_split_path(v, s, Path(".")).as_posix() for v, s in keys]
    with replace_dir(store.VSR_DIR, keep=raws) as out:  # verified copies are kept, not fetched again
        for variant, split in tqdm(keys, desc="vsr splits", unit="split"):
            name = store.split_key(variant, split)
            raw = acquire(source, variant, split, pins.get(name), root=out)
            with raw.open("rb") as fh:
                rows = read_split(fh, meta, file=source.origin(variant, split))
            df = normalize(rows, variant, split)
            write_parquet(store.table_path(variant, split, out), df)
            splits[name] = split_summary(df, pins[name].lower())
            log.info("%s: %d rows, %d unparsed captions", name, len(df), splits[name]["unparsed"])

        overlap = {}
        for variant in cfg.variants:  # test captions already seen in train (whole-split stat)
            if {"train", "test"} <= set(cfg.splits):
                tables = [pd.read_parquet(store.table_path(variant, s, out)) for s in ("train", "test")]
                overlap[variant] = caption_overlap(*tables)
                log.info("%s/test: %.0f%% of rows have a caption seen in train, %.0f%% of those "
                         "with the opposite label", variant,
                         100 * (overlap[variant]["share_in_train"] or 0),
                         100 * (overlap[variant]["share_opposite_of_shared"] or 0))

    total = sum(s["rows"] for s in splits.values())
    unparsed = sum(s["unparsed"] for s in splits.values())
    totals = {"rows": total, "unparsed": unparsed, "parse_rate": (total - unparsed) / total}
    write_json(store.VSR_REPORT, {"source": source.describe(), "meta_category_decisions": decisions,
                             "totals": totals, "splits": splits,
                             "test_caption_overlap": overlap})
    write_json(store.VSR_METRICS, totals)  # per-split counts stay in results/vsr/report.json
    return 0

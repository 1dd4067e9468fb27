"""On-disk layout of every stage's outputs, and loaders for them.

One place knows where things live, so stages and the paper never build paths by hand.
All paths are relative to the repository root (the directory DVC runs stages in).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.common.errors import UserError
from analysis.common.io import read_json, write_json, write_npy

VARIANTS = ("random", "zeroshot")
SPLITS = ("train", "dev", "test")

VSR_DIR = Path("data/vsr")
PARTIAL_DIR = Path("data/.partial")  # interrupted downloads, resumed on the next run (not an output)
TEMPLATES_DIR = Path("data/templates")
TEMPLATES_KEY = "templates/all"  # the controlled template set, embedded like a split
SPATIAL_KEY = "templates/spatial"  # the controlled spatial set (form pairs, converses, swaps)
TEMPLATE_KEYS = (TEMPLATES_KEY, SPATIAL_KEY)  # text-only sets the templates stage writes
IMAGES_DIR = Path("data/images")
IMAGE_MANIFEST = Path("results/images/manifest.csv")
# The manifest's unusable images (missing, corrupt) alone: what grounded-truth rows depend on, so
# toggling an image condition changes it (and re-runs the text probes) only if an image is lacking
IMAGE_UNUSABLE = Path("results/images/unusable.csv")
EMBED_DIR = Path("results/embeddings")
PROBES_DIR = Path("results/probes")
REPLICATION_DIR = PROBES_DIR / "replication"
SUITE_DIR = PROBES_DIR / "suite"  # one folder per unit (a DVC stage each): SuiteUnit
STATS_DIR = Path("results/stats")
RSA_DIR = Path("results/rsa")
RUNTIMES_DIR = Path("results/runtimes")  # per-stage wall time (not compared by `verify`)
VSR_REPORT = Path("results/vsr/report.json")
VSR_METRICS = Path("results/metrics/vsr.json")  # the few numbers `dvc metrics show` lists
REPLICATION_METRICS = Path("results/metrics/replication.json")
STATS_METRICS = Path("results/metrics.json")

# The normalized VSR table (one row per JSONL line; ARCHITECTURE.md); the template set has the
# same columns plus TEMPLATE_EXTRA.
VSR_COLUMNS = ["row_id", "line", "image", "image_link", "caption", "label", "relation", "subject",
               "object", "parsed", "meta_category", "annotator_id", "reference_frame"]
TEMPLATE_EXTRA = ["pair_id", "order"]

# Out-of-fold predictions of the probe suite (results/probes/suite/<unit>/oof/<task>.parquet): one row
# per (task, condition, layer, target, repeat, row); layer -1 is the primary view.
OOF_COLUMNS = ["task", "condition", "layer", "target", "repeat", "row_id", "group", "fold",
               "y_true", "y_pred", "score", "C"]
# Tidy score tables (suite scores.csv, results/stats/*.csv): these columns first, extras after.
TIDY_COLUMNS = ["task", "condition", "layer", "target", "metric", "estimate", "ci_low", "ci_high",
                "n", "chance", "p_value", "p_holm", "p_bh"]
PRIMARY_LAYER = -1

# The vector each condition contributes to the replication probe (the original project's choice).
# A zoo condition (zoo_<name>, analysis/embed/zoo.py) has no entry: its sidecar's `primary` names it.
PRIMARY_VIEW = {
    "sbert": "mean",
    "clip_text": "pooler_output",
    "clip_image": "image_embeds",
    "clip_concat": "concat",
}
IMAGE_CONDITIONS = frozenset({"clip_image", "clip_concat"})
LAYERS_VIEW = "layers"  # (L, N, D): embedding output and every hidden layer


def base_condition(condition: str) -> str:
    """'clip_text_random_s3' -> 'clip_text': random-weight baselines share their model's views."""
    return re.sub(r"_random(_s\d+)?$", "", condition)


def is_extra_seed(condition: str) -> bool:
    """'sbert_random_s2' -> True: a random-weight twin's seed beyond the first (``_random`` is
    seed ``models.random_seed``), run for the spread across seeds only."""
    return re.search(r"_random_s\d+$", condition) is not None


def primary_view(condition: str) -> str:
    return PRIMARY_VIEW[base_condition(condition)]


def is_image_condition(condition: str) -> bool:
    return base_condition(condition) in IMAGE_CONDITIONS


def split_key(variant: str, split: str) -> str:
    return f"{variant}/{split}"


def parse_split_key(key: str) -> tuple[str, str]:
    """'random/train' -> ('random', 'train'); also the template set 'templates/all'."""
    parts = key.split("/")
    if key in TEMPLATE_KEYS:
        return parts[0], parts[1]
    if len(parts) != 2 or parts[0] not in VARIANTS or parts[1] not in SPLITS:
        raise ValueError(
            f"bad split key {key!r}: expected '<variant>/<split>' with variant in {VARIANTS} "
            f"and split in {SPLITS}, or one of {list(TEMPLATE_KEYS)}"
        )
    return parts[0], parts[1]


def raw_split_path(variant: str, split: str, root: Path = VSR_DIR) -> Path:
    return root / "raw" / variant / f"{split}.jsonl"


def table_path(variant: str, split: str, root: Path = VSR_DIR) -> Path:
    if variant == "templates":
        return TEMPLATES_DIR / f"{split}.parquet"
    return root / variant / f"{split}.parquet"


def load_split(variant: str, split: str, root: Path = VSR_DIR) -> pd.DataFrame:
    """The normalized table the ``vsr`` stage wrote for one split (one row per VSR row)."""
    path = table_path(variant, split, root)
    if not path.exists():
        stage = "templates" if variant == "templates" else "vsr"
        raise FileNotFoundError(f"{path} not found: run the '{stage}' stage first (dvc repro {stage})")
    return pd.read_parquet(path)


def embedding_dir(condition: str, variant: str, split: str, root: Path = EMBED_DIR) -> Path:
    return root / condition / variant / split


class EmbeddingsError(UserError, ValueError):
    """Stored embeddings that cannot be used (non-finite values, shape and sidecar disagree)."""


@dataclass(frozen=True)
class Embeddings:
    """Vectors for the rows in ``row_ids`` (same order), plus the sidecar metadata."""

    X: np.ndarray
    row_ids: np.ndarray
    meta: dict[str, Any]


def save_embeddings(
    condition: str,
    variant: str,
    split: str,
    views: dict[str, np.ndarray],
    meta: dict[str, Any],
    root: Path = EMBED_DIR,
    condition_dir: Path | None = None,
) -> Path:
    """Write each view as float32 ``<view>.npy`` and the sidecar ``meta.json`` (written last,
    so a directory with a sidecar is complete). Views are (N, D); ``layers`` is (L, N, D).
    ``condition_dir``: write under this folder instead of ``root/<condition>`` (the embed
    stage's temporary folder, swapped in whole when every split is done)."""
    out = (condition_dir / variant / split if condition_dir is not None
           else embedding_dir(condition, variant, split, root))
    n = len(meta["row_ids"])
    for name, arr in views.items():
        row_axis = 1 if name == LAYERS_VIEW else 0
        if arr.ndim != row_axis + 2 or arr.shape[row_axis] != n:
            raise ValueError(f"{condition} {variant}/{split} view {name}: shape {arr.shape}, "
                             f"sidecar lists {n} row ids (rows on axis {row_axis})")
        other = tuple(a for a in range(arr.ndim) if a != row_axis)
        bad = np.flatnonzero(~np.isfinite(arr).all(axis=other))
        if len(bad):
            raise EmbeddingsError(f"{condition} {variant}/{split} view {name}: the encoder gave NaN "
                                  f"or Inf for {len(bad)} rows, e.g. "
                                  f"{[meta['row_ids'][i] for i in bad[:10]]}: nothing was written "
                                  "(float16 overflow? set embed.dtype: float32)")
        write_npy(out / f"{name}.npy", np.ascontiguousarray(arr, dtype=np.float32))
    write_json(out / "meta.json", {**meta, "views": sorted(views)})
    return out


def load_embeddings(
    condition: str, variant: str, split: str, view: str | None = None, root: Path = EMBED_DIR
) -> Embeddings:
    """Load one view (default: the condition's primary view: the sidecar's ``primary`` where it
    names one, as a zoo condition's does, else ``PRIMARY_VIEW``) with its row ids."""
    d = embedding_dir(condition, variant, split, root)
    meta_path = d / "meta.json"
    if not meta_path.exists():
        raise FileNotFoundError(
            f"no embeddings for condition '{condition}' on {variant}/{split} ({meta_path} missing): "
            f"add it to 'conditions' in params.yaml and run 'dvc repro'"
        )
    meta = read_json(meta_path)
    view = view or meta.get("primary") or primary_view(condition)
    if view not in meta["views"]:
        raise KeyError(f"{d}: no view '{view}' (has {meta['views']})")
    X = np.load(d / f"{view}.npy", mmap_mode=None)
    row_ids = np.asarray(meta["row_ids"])
    row_axis = 1 if view == LAYERS_VIEW else 0
    if X.ndim != row_axis + 2 or X.shape[row_axis] != len(row_ids):
        raise EmbeddingsError(f"{d / (view + '.npy')}: shape {X.shape} does not match the "
                              f"{len(row_ids)} row ids of {meta_path} (re-run 'dvc repro embed@{condition}')")
    finite = np.isfinite(X).all(axis=tuple(a for a in range(X.ndim) if a != row_axis))
    if not finite.all():
        bad = row_ids[~finite]
        raise EmbeddingsError(f"{d / (view + '.npy')} (condition {condition}, {variant}/{split}): "
                              f"{len(bad)} rows hold NaN or Inf, e.g. {bad[:5].tolist()}: the "
                              f"file is damaged or was not written by this version; re-run "
                              f"'dvc repro embed@{condition}'")
    return Embeddings(X=X, row_ids=row_ids, meta=meta)


def has_view(condition: str, variant: str, split: str, view: str, root: Path = EMBED_DIR) -> bool:
    """Whether the condition's embeddings on this split include ``view`` (reads the sidecar only)."""
    meta_path = embedding_dir(condition, variant, split, root) / "meta.json"
    return meta_path.exists() and view in read_json(meta_path).get("views", [])


def available_conditions(variant: str, split: str, root: Path = EMBED_DIR) -> list[str]:
    """Conditions whose embeddings exist for this split, in a stable order."""
    if not root.exists():
        return []
    return sorted(p.name for p in root.iterdir()
                  if (embedding_dir(p.name, variant, split, root) / "meta.json").exists())


# --------------------------------------------------------------------------- probe suite


@dataclass(frozen=True)
class SuiteUnit:
    """One unit of the probe suite (a text condition, ``bow``, or an image/text pair): its own
    DVC stage and folder ``results/probes/suite/<unit>/``, so a condition's probes re-run only
    when its own inputs change."""

    name: str
    root: Path = SUITE_DIR

    @property
    def dir(self) -> Path:
        return self.root / self.name

    @property
    def oof_dir(self) -> Path:  # out-of-fold predictions, one parquet per task
        return self.dir / "oof"

    @property
    def null_path(self) -> Path:  # label-permutation null scores (optional)
        return self.dir / "null.parquet"

    @property
    def scores_path(self) -> Path:
        return self.dir / "scores.csv"


def suite_units(names: list[str] | tuple[str, ...], root: Path = SUITE_DIR) -> list[SuiteUnit]:
    """The units of ``names`` (the selected conditions' units) whose output exists; a selected
    unit without output is an error naming its stage. Folders of units no longer selected
    (DVC keeps a removed stage's outputs) are not read."""
    units = [SuiteUnit(n, root) for n in names]
    absent = [u.name for u in units if not u.scores_path.exists()]
    if absent:
        raise FileNotFoundError(f"probe suite units without output in {root}: {absent}; run "
                                "their stages first (dvc repro probe_suite probe_suite_bow "
                                "probe_suite_pairs)")
    return units


def read_suite_scores(units: list[SuiteUnit]) -> pd.DataFrame:
    """Every unit's ``scores.csv`` as one table."""
    return pd.concat([pd.read_csv(u.scores_path) for u in units], ignore_index=True)


# --------------------------------------------------------------------------- images


def read_image_manifest(path: Path = IMAGE_MANIFEST) -> pd.DataFrame:
    """The images stage's manifest: one row per image with its path and status (ok, missing,
    corrupt)."""
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run the 'images' stage first (dvc repro images)")
    manifest = pd.read_csv(path, dtype={"image": str, "path": str, "status": str, "error": str})
    missing = {"image", "path", "status"} - set(manifest.columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
    return manifest


def image_rows(table: pd.DataFrame, manifest: pd.DataFrame) -> tuple[np.ndarray, list[str], list[dict]]:
    """Which rows have a usable image: (keep mask, image path per kept row, excluded entries).
    Rows whose image is not ``ok`` in the manifest, or absent from it, are excluded with a reason."""
    by_image = manifest.drop_duplicates("image").set_index("image")
    status = table["image"].map(by_image["status"])
    keep = (status == "ok").to_numpy()
    errors = table["image"].map(by_image["error"]) if "error" in by_image else pd.Series(None, index=table.index)
    excluded = []
    for row_id, image, st, err in zip(table["row_id"][~keep], table["image"][~keep], status[~keep], errors[~keep]):
        if not isinstance(st, str):
            reason = "not in images manifest"
        else:
            reason = f"image {st}" + (f": {err}" if isinstance(err, str) and err else "")
        excluded.append({"row_id": str(row_id), "image": str(image), "reason": reason})
    paths = table["image"][keep].map(by_image["path"]).astype(str).tolist()
    return keep, paths, excluded



def unusable_images(manifest: pd.DataFrame) -> pd.DataFrame:
    """The manifest's images that are not usable (``IMAGE_UNUSABLE``)."""
    return manifest.loc[manifest["status"] != "ok", ["image", "status", "error"]]


def t3_row_mask(table: pd.DataFrame, unusable: pd.DataFrame | None) -> np.ndarray:
    """Rows the grounded-truth probes use, the same for every condition: those whose image is
    not unusable (every row when no image condition ran)."""
    if unusable is None or unusable.empty:
        return np.ones(len(table), dtype=bool)
    return ~table["image"].isin(set(unusable["image"])).to_numpy()


# --------------------------------------------------------------------------- alignment
# Embeddings are stored in their own row order (meta.json row_ids); analyses need them in a
# table's order. These are the only two ways rows are matched.


def table_in_embedding_order(emb: Embeddings, table: pd.DataFrame, where: str) -> pd.DataFrame:
    """The table's rows in the embeddings' row order (the replication probe reproduces the
    original exactly, which depends on row order). An embedding row absent from the table is an
    error (stale embeddings)."""
    pos = pd.Index(table["row_id"]).get_indexer(emb.row_ids)
    if (pos < 0).any():
        missing = emb.row_ids[pos < 0][:5].tolist()
        raise ValueError(f"{where}: embedding row ids not in the table: {missing}")
    return table.iloc[pos]


def in_table_order(emb: Embeddings, table: pd.DataFrame, where: str,
                   layered: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The vectors in the table's row order and which table rows they cover (rows an image
    condition excluded are False; their vectors are placeholders that callers must mask out).
    ``layered``: ``emb.X`` is (L, N, D) and is indexed on its row axis. An embedding row absent
    from the table is an error (stale embeddings)."""
    extra = np.setdiff1d(emb.row_ids, table["row_id"])
    if extra.size:
        raise ValueError(f"{where}: {extra.size} embedding row ids are not in the table, e.g. "
                         f"{extra[:3].tolist()} (stale embeddings? re-run embed)")
    pos = pd.Index(emb.row_ids).get_indexer(table["row_id"])
    covered = pos >= 0
    take = np.where(covered, pos, 0)
    X = emb.X[:, take] if layered else emb.X[take]
    return X, covered

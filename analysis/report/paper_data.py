"""What the paper's code cells read: pipeline outputs under ``results/`` (relative to the repo
root, wherever the kernel runs), their provenance from ``dvc.lock`` and git, and small
formatters so every number in the prose is computed, never typed.

Required outputs raise `MissingOutput` (naming the file and the stage that makes it) so a paper
cannot render without them; optional ones (stages that may not have run yet) return ``None``
and the text says they are absent.
"""

from __future__ import annotations

import functools
import json
import math
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import yaml

ROOT_ENV = "SPATIAL_PAPER_ROOT"  # set by tests / paper_check to read another copy of the layout

# Outputs without which the paper is meaningless; `paper_check` and the first cell check them.
REQUIRED = (
    "results/vsr/report.json",
    "results/probes/replication/summary.csv",
    "results/probes/replication/comparison.csv",
)

# Which stage writes what (longest prefix wins), to make "missing" errors actionable.
PRODUCERS = {
    "results/vsr": "vsr",
    "results/metrics/vsr.json": "vsr",
    "results/images": "images",
    "results/embeddings": "embed",
    "results/probes/replication": "probe_replication",
    "results/metrics/replication.json": "probe_replication",
    "results/probes/suite": "probe_suite",
    "results/stats": "stats",
    "results/metrics.json": "stats",
    "results/rsa": "rsa",
}

REPLICATION_COLUMNS = ("relation", "n_samples", "n_positive", "n_negative", "accuracy_mean",
                       "f1_macro_mean", "f1_macro_std", "collapsed")
SUMMARY_COLUMNS = ("condition", "mean", "std", "median", "min", "max", "n_relations",
                   "n_collapsed")
TIDY_COLUMNS = ("task", "condition", "layer", "target", "metric", "estimate", "ci_low",
                "ci_high", "n", "chance")
RSA_COLUMNS = ("comparison", "method", "estimate", "ci_low", "ci_high", "n_stimuli")

CONDITION_ORDER = ("sbert", "clip_text", "clip_image", "clip_concat")
CONDITION_LABELS = {
    "sbert": "SBERT",
    "clip_text": "CLIP text",
    "clip_image": "CLIP image",
    "clip_concat": "CLIP image+text",
    "sbert_random": "SBERT (random weights)",
    "clip_text_random": "CLIP text (random weights)",
    "clip_image_random": "CLIP image (random weights)",
    "clip_concat_random": "CLIP image+text (random weights)",
    "bow": "bag of words",
    "clip_interaction": "CLIP interaction features",
    "clip_zeroshot": "CLIP zero-shot score",
    "clip_random_concat": "CLIP image+text (random weights)",
    "clip_random_interaction": "CLIP interaction features (random weights)",
    "clip_random_zeroshot": "CLIP zero-shot score (random weights)",
}


# Mean macro F1 over 36 relations reported by the original class project's README (the numbers
# the replication is compared against; quoted from that source, not computed here).
ORIGINAL_REPORTED = {"sbert": 0.710, "clip_text": 0.589, "clip_concat": 0.514,
                     "clip_image": 0.493}

# How the suite's task names are recognised (case-insensitive prefix or keyword).
TASK_KEYS = {
    "T1": ("t1", "relation"),
    "T2": ("t2", "axis", "polarity"),
    "T3": ("t3", "truth", "grounded"),
}
F1_METRICS = ("macro_f1", "f1_macro")


class MissingOutput(FileNotFoundError):
    """A required pipeline output is absent; the message names it and its stage."""


# --------------------------------------------------------------------------- locations


def repo_root() -> Path:
    """The repository the results belong to: ``$SPATIAL_PAPER_ROOT`` if set, else the first
    ancestor of the working directory holding ``dvc.yaml`` (the paper runs from ``paper/``)."""
    if os.environ.get(ROOT_ENV):
        return Path(os.environ[ROOT_ENV]).resolve()
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / "dvc.yaml").exists():
            return candidate
    raise FileNotFoundError(f"no dvc.yaml in {here} or its parents: run from inside the repo "
                            f"or set {ROOT_ENV}")


def producer(rel: str) -> str:
    matches = [p for p in PRODUCERS if rel == p or rel.startswith(p.rstrip("/") + "/")]
    return PRODUCERS[max(matches, key=len)] if matches else "unknown"


def require(rel: str) -> Path:
    path = repo_root() / rel
    if not path.exists():
        stage = producer(rel)
        raise MissingOutput(f"required output {rel} is missing (made by stage '{stage}': run "
                            f"'dvc pull' or 'dvc repro {stage}')")
    return path


def optional(rel: str) -> Path | None:
    path = repo_root() / rel
    return path if path.exists() else None


def missing_required() -> list[str]:
    return [rel for rel in REQUIRED if not (repo_root() / rel).exists()]


def _check_columns(df: pd.DataFrame, columns: Iterable[str], rel: str) -> pd.DataFrame:
    absent = [c for c in columns if c not in df.columns]
    if absent:
        raise ValueError(f"{rel}: missing columns {absent} (has {list(df.columns)})")
    return df


def read_csv(rel: str, columns: Iterable[str] = (), required: bool = True) -> pd.DataFrame | None:
    path = require(rel) if required else optional(rel)
    if path is None:
        return None
    return _check_columns(pd.read_csv(path), columns, rel)


def read_json(rel: str, required: bool = True) -> Any:
    path = require(rel) if required else optional(rel)
    return None if path is None else json.loads(path.read_text())


# --------------------------------------------------------------------------- loaders


def vsr_report() -> dict[str, Any]:
    return read_json("results/vsr/report.json")


@dataclass
class Replication:
    """The original probe's outputs: summary per condition, relation x condition F1, and the
    per-relation tables of the conditions that ran."""

    summary: pd.DataFrame
    comparison: pd.DataFrame
    per_condition: dict[str, pd.DataFrame]
    metrics: dict[str, Any] | None
    missing: list[str] = field(default_factory=list)  # conditions expected but not run

    @property
    def conditions(self) -> list[str]:
        return list(self.per_condition)

    def long(self) -> pd.DataFrame:
        """One row per (condition, relation) with every per-relation column."""
        return pd.concat([df.assign(condition=c) for c, df in self.per_condition.items()],
                         ignore_index=True)


def replication(expected: Iterable[str] = CONDITION_ORDER) -> Replication:
    base = "results/probes/replication"
    summary = read_csv(f"{base}/summary.csv", SUMMARY_COLUMNS)
    comparison = read_csv(f"{base}/comparison.csv", ("relation",))
    ran = order_conditions(summary["condition"])
    per_condition = {c: read_csv(f"{base}/{c}.csv", REPLICATION_COLUMNS) for c in ran}
    summary = summary.set_index("condition").loc[ran].reset_index()
    metrics = read_json("results/metrics/replication.json", required=False)
    missing = [c for c in expected if c not in ran]
    return Replication(summary, comparison, per_condition, metrics, missing)


def order_conditions(conditions: Iterable[str]) -> list[str]:
    """Known conditions in the study's order, then any others alphabetically."""
    conditions = list(dict.fromkeys(conditions))
    known = [c for c in CONDITION_ORDER if c in conditions]
    return known + sorted(c for c in conditions if c not in CONDITION_ORDER)


def suite_scores() -> pd.DataFrame | None:
    return read_csv("results/probes/suite/scores.csv", TIDY_COLUMNS, required=False)


def stats_table(name: str, columns: Iterable[str] = TIDY_COLUMNS) -> pd.DataFrame | None:
    return read_csv(f"results/stats/{name}.csv", columns, required=False)


def rsa_tables() -> pd.DataFrame | None:
    """Every tidy ``results/rsa/*.csv`` (those with the comparison/method/estimate/CI columns)
    with a ``table`` column naming its file; None if there is none. Other tables there (e.g.
    layer x layer CKA maps) are for figures of their own and are left out here."""
    root = optional("results/rsa")
    if root is None:
        return None
    frames = []
    for p in sorted(root.glob("*.csv")):
        df = pd.read_csv(p)
        if all(c in df.columns for c in RSA_COLUMNS):
            frames.append(df.assign(table=p.stem))
    return pd.concat(frames, ignore_index=True) if frames else None


def cka_layers() -> pd.DataFrame | None:
    """Layer x layer linear CKA between encoders (``results/rsa/cka_layers.csv``), or None."""
    return read_csv("results/rsa/cka_layers.csv",
                    ["stimuli", "condition_a", "layer_a", "condition_b", "layer_b", "cka"],
                    required=False)


def prefer(df: pd.DataFrame, column: str, *values: str) -> pd.DataFrame:
    """Rows whose ``column`` is the first of ``values`` present (all rows if the column is
    absent or none of the values occurs): picks one stimulus set / distance where several exist."""
    if column not in df.columns:
        return df
    for v in values:
        if (df[column] == v).any():
            return df[df[column] == v]
    return df


def embedding_sidecars() -> pd.DataFrame:
    """One row per embedded (condition, variant, split): model, revision, device, dtype,
    dataset checksum, rows, exclusions, library versions. Empty when nothing was embedded."""
    rows = []
    root = repo_root() / "results/embeddings"
    for meta_path in sorted(root.glob("*/*/*/meta.json")):
        meta = json.loads(meta_path.read_text())
        rel = meta_path.parent.relative_to(root).parts
        rows.append({
            "condition": meta.get("condition", rel[0]), "split": f"{rel[1]}/{rel[2]}",
            "model_id": meta.get("model_id"), "revision": meta.get("revision"),
            "pooling": meta.get("pooling"), "device": meta.get("device"),
            "dtype": meta.get("dtype"), "dataset_sha256": meta.get("dataset_sha256"),
            "rows": len(meta.get("row_ids", [])), "excluded": len(meta.get("excluded", [])),
            "versions": meta.get("versions", {}),
        })
    return pd.DataFrame(rows, columns=["condition", "split", "model_id", "revision", "pooling",
                                       "device", "dtype", "dataset_sha256", "rows", "excluded",
                                       "versions"])


def meta_categories() -> dict[str, str]:
    """Relation -> VSR meta-category, from the dictionary the `vsr` stage uses."""
    from analysis.data.relations import load_meta_categories
    return load_meta_categories()[0]


def task_rows(df: pd.DataFrame | None, task: str) -> pd.DataFrame:
    """Rows of a tidy table whose ``task`` is the study's T1/T2/T3 (by name prefix/keyword)."""
    if df is None or df.empty:
        return pd.DataFrame(columns=list(TIDY_COLUMNS))
    keys = TASK_KEYS[task]
    names = df["task"].astype(str).str.lower()
    hit = names.str.startswith(keys[0]) | names.apply(lambda n: any(k in n for k in keys[1:]))
    return df[hit & ~names.str.contains("control")]  # control tasks feed selectivity only


def same_pair(comparison: str, a: str, b: str) -> int:
    """+1 if ``comparison`` is "a - b" (any spacing), -1 if it is "b - a", else 0."""
    norm = str(comparison).replace(" ", "")
    return 1 if norm == f"{a}-{b}" else -1 if norm == f"{b}-{a}" else 0


def f1_rows(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["metric"].isin(F1_METRICS)] if "metric" in df else df


def runtimes() -> dict[str, float] | None:
    """Seconds per stage (``results/runtimes/<stage>.json``, each written by its stage), or
    None when no stage recorded one."""
    root = optional("results/runtimes")
    if root is None:
        return None
    out = {}
    for path in sorted(root.glob("*.json")):
        doc = json.loads(path.read_text())
        out[doc.get("stage", path.stem)] = float(doc["runtime"]["seconds"])
    return out or None


# --------------------------------------------------------------------------- provenance


@dataclass(frozen=True)
class Provenance:
    path: str
    stage: str | None  # None: not tracked in dvc.lock
    md5: str | None
    commit: str

    def caption(self) -> str:
        if self.stage is None:
            return f"`{self.path}` (not tracked in dvc.lock)"
        return f"DVC stage `{self.stage}`, `{self.path}` md5 `{self.md5[:12]}`"


@functools.lru_cache(maxsize=8)
def _lock(root: Path) -> dict[str, Any]:
    path = root / "dvc.lock"
    if not path.exists():
        return {}
    return (yaml.safe_load(path.read_text()) or {}).get("stages", {})


def lock_outputs() -> dict[str, tuple[str, str]]:
    """Output path -> (stage, md5) for every output recorded in dvc.lock."""
    outs: dict[str, tuple[str, str]] = {}
    for stage, entry in _lock(repo_root()).items():
        for out in entry.get("outs", []) or []:
            outs[out["path"].rstrip("/")] = (stage, out.get("md5") or out.get("hash", ""))
    return outs


@functools.lru_cache(maxsize=8)
def _git_commit(root: Path) -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=root,
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{sha}+dirty" if dirty.strip() else sha


def stage_params(stage: str) -> dict[str, Any]:
    """The params a stage's outputs were made with (dvc.lock), else params.yaml's values for the
    stage's own section and ``conditions``; {} when neither knows the stage."""
    recorded = _lock(repo_root()).get(stage, {}).get("params") or {}
    merged: dict[str, Any] = {}
    for values in recorded.values():
        merged.update(values)
    if merged:
        return merged
    path = repo_root() / "params.yaml"
    if not path.exists():
        return {}
    params = yaml.safe_load(path.read_text()) or {}
    return {k: params[k] for k in (stage, "conditions") if k in params}


def absent(rel: str, what: str) -> Txt:
    """The sentence a section shows instead of numbers when an optional output is missing, or
    present without the rows the section needs (a condition it compares was not run)."""
    if optional(rel) is not None:
        return Txt(f"{what} is not reported: `{rel}` has no rows for it in this build (a "
                   f"condition it needs was not run).")
    return Txt(f"{what} is not reported: `{rel}` is absent from this build (stage "
               f"`{producer(rel)}` has not run).")


def git_commit() -> str:
    return _git_commit(repo_root())


def provenance(rel: str) -> list[Provenance]:
    """The dvc.lock output(s) behind ``rel``: the output containing it (the file itself or a
    tracked directory above it), else every output inside it (``rel`` a folder of several
    stages' outputs, e.g. one per embedding condition), else one untracked entry."""
    rel = rel.rstrip("/")
    outs = lock_outputs()
    commit = git_commit()
    containing = [p for p in outs if rel == p or rel.startswith(p + "/")]
    if containing:
        best = max(containing, key=len)
        return [Provenance(best, outs[best][0], outs[best][1], commit)]
    inside = sorted(p for p in outs if p.startswith(rel + "/"))
    if inside:
        return [Provenance(p, outs[p][0], outs[p][1], commit) for p in inside]
    return [Provenance(rel, None, None, commit)]


def source_note(*rels: str) -> "Txt":
    """Caption tail naming, for each output read, its DVC stage, its hash in dvc.lock and the
    git commit: 'Source: stage `s`, `path` md5 `…`, commit `…`.'"""
    seen = list(dict.fromkeys(p for r in rels for p in provenance(r)))
    return Txt("Source: " + "; ".join(p.caption() for p in seen)
               + f"; git commit `{git_commit()}`.")


# --------------------------------------------------------------------------- formatting


class Txt(str):
    """A string that renders without quotes both as text/plain and text/markdown, so an inline
    ``{python} expr`` shows the value itself whichever mime type Quarto picks."""

    def __repr__(self) -> str:
        return str(self)

    def __add__(self, other: str) -> "Txt":
        return Txt(str(self) + str(other))

    def __radd__(self, other: str) -> "Txt":
        return Txt(str(other) + str(self))

    def _repr_markdown_(self) -> str:
        return str(self)


def num(x: float | None, digits: int = 3) -> Txt:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return Txt("n/a")
    return Txt(f"{x:.{digits}f}")


def count(n: int) -> Txt:
    return Txt(f"{int(n):,}")


def pct(x: float, digits: int = 1) -> Txt:
    return Txt(f"{100 * x:.{digits}f}%")


def ci(est: float, lo: float, hi: float, digits: int = 3) -> Txt:
    """'0.712 [0.690, 0.731]'; without an interval (NaN bounds) says so instead of 'nan'."""
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in (lo, hi)):
        return Txt(f"{num(est, digits)} (no interval)")
    return Txt(f"{est:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]")


def pvalue(p: float | None) -> Txt:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return Txt("n/a")
    return Txt("< 0.001" if p < 0.001 else f"{p:.3f}")


def label(condition: str) -> str:
    return CONDITION_LABELS.get(condition, condition)


def listing(items: Iterable[str], conj: str = "and") -> Txt:
    items = [str(i) for i in items]
    if not items:
        return Txt("none")
    if len(items) == 1:
        return Txt(items[0])
    return Txt(", ".join(items[:-1]) + f" {conj} " + items[-1])


def md_table(df: pd.DataFrame, digits: int = 3) -> str:
    """A pipe table (no extra dependency): floats rounded, pipes escaped."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.{digits}f}"
        return str(v).replace("|", "\\|")

    header = "| " + " | ".join(map(str, df.columns)) + " |"
    align = "|" + "|".join("---:" if pd.api.types.is_numeric_dtype(df[c]) else ":---"
                          for c in df.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, align, *body])


def table(df: pd.DataFrame, digits: int = 3):
    """Display ``df`` as a Markdown table (Quarto turns it into a real table in HTML and PDF)."""
    from IPython.display import Markdown
    return Markdown(md_table(df, digits))

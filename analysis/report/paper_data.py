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
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from analysis.common.io import load_yaml

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

# The one mapping from the pipeline's names (conditions, tasks, targets, RSA methods and
# hypothesis models) to what readers see, in prose, tables and figure axes alike; `label` reads
# it. A key "<task>:<target>" overrides a target's label within one task.
LABELS = {
    # conditions
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
    "sbert_clip_concat": "SBERT text + CLIP image",
    "sbert_clip_interaction": "SBERT text × CLIP image interaction features",
    # the model zoo (models.zoo; analysis/embed/zoo.py)
    "zoo_roberta": "RoBERTa-base",
    "zoo_xlm_roberta": "XLM-R-base",
    "zoo_bert": "BERT-base",
    "zoo_openclip_roberta": "OpenCLIP RoBERTa tower",
    "zoo_openclip_xlm_roberta": "OpenCLIP XLM-R tower",
    "zoo_blip": "BLIP text encoder",
    "zoo_openclip_vit": "OpenCLIP ViT-B/32 text (LAION-2B)",
    "zoo_siglip": "SigLIP text",
    "roberta": "RoBERTa → OpenCLIP",
    "xlm_roberta": "XLM-R → OpenCLIP",
    "bert": "BERT → BLIP",
    # tasks
    "T1": "T1 relation identity",
    "T1_ovr": "T1 one-vs-rest",
    "T1_control": "T1 control task",
    "T1_control_ovr": "T1 control task, one-vs-rest",
    "T2_axis": "T2 spatial axis",
    "T2_polarity": "T2 polarity",
    "M_polarity": "matched polarity",
    "C_polarity": "controlled polarity",
    "C_scene": "controlled scene",
    "T3": "T3 truth, cross-validated",
    "T3_holdout_random": "T3 truth, random train→test",
    "T3_holdout_zeroshot": "T3 truth, zeroshot train→test",
    # targets
    "__all__": "all relations",
    "T2_axis:__all__": "all axes",
    "T2_polarity:__all__": "all polarities",
    "T3:__all__": "all captions",
    "T3_holdout_random:__all__": "all captions",
    "T3_holdout_zeroshot:__all__": "all captions",
    "vertical - horizontal": "vertical − horizontal",
    # representational geometry: methods and hypothesis models
    "spearman": "Spearman ρ",
    "tau_a": "Kendall τa",
    "linear_cka": "linear CKA",
    "linear_cka_debiased": "linear CKA (debiased)",
    "linear_cka_biased": "linear CKA (plug-in)",
    "axis": "axis model",
    "polarity": "polarity model",
    "meta_category": "meta-category model",
    "same_relation": "same-relation model",
    "noun_overlap": "noun-overlap model",
    "lexical_overlap": "lexical-overlap model",
}
CONDITION_LABELS = {k: LABELS[k] for k in (
    "sbert", "clip_text", "clip_image", "clip_concat", "sbert_random", "clip_text_random",
    "clip_image_random", "clip_concat_random", "bow", "clip_interaction", "clip_zeroshot",
    "clip_random_concat", "clip_random_interaction", "clip_random_zeroshot", "sbert_clip_concat",
    "sbert_clip_interaction")}


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
    """The suite's point estimates, every unit's ``scores.csv`` together (where `stats` has not
    run); None when no unit has run."""
    root = optional("results/probes/suite")
    paths = sorted(root.glob("*/scores.csv")) if root else []
    if not paths:
        return None
    return _check_columns(pd.concat([pd.read_csv(p) for p in paths], ignore_index=True),
                          TIDY_COLUMNS, "results/probes/suite/*/scores.csv")


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


def short_revision(revision: Any) -> str:
    """A model revision for a table cell: a hub commit's first 12 hex digits; for local model
    folders ('local-sha256:<hash>') 'local files' and the first 12 digits of their hash."""
    rev = cell_text(revision)
    if not rev:
        return ""
    kind, _, digest = rev.rpartition(":")
    if kind.startswith("local"):
        return f"local files `{digest[:12]}`"
    return f"`{rev[:12]}`"


def pooling_text(condition: str, pooling: Any) -> str:
    """How a condition's vector is made, for a table cell: the sidecar's description of the
    condition's primary view (the vector the probes read), e.g. "`mean`: sentence-transformers
    mean pooling ...", not the whole view -> description mapping."""
    if not isinstance(pooling, dict):
        return cell_text(pooling)
    try:
        from analysis.common.store import primary_view
        view = primary_view(condition)
    except (ImportError, KeyError):  # a zoo condition: its primary is `trained` where the model has one, else `mean`
        view = next((v for v in ("trained", "mean") if v in pooling), None)
    if view not in pooling:
        view = next((v for v in pooling if v != "layers"), None)
    return f"`{view}`: {pooling[view]}" if view is not None else ""


_ZOO_NAME = r"(?<![A-Za-z0-9])zoo_"


def seed_study(df: pd.DataFrame | None) -> pd.DataFrame | None:
    """The rows of the seed study's conditions (the zoo has its own section, `_zoo.qmd`): drops
    a row whose condition, or either side of a comparison, is a zoo condition (``zoo_<name>``)."""
    if df is None:
        return None
    cols = [c for c in ("condition", "comparison", "condition_a", "condition_b") if c in df.columns]
    mask = np.zeros(len(df), bool)
    for c in cols:
        mask |= df[c].astype(str).str.contains(_ZOO_NAME, regex=True).to_numpy()
    return df[~mask]


GROUNDED_FAMILIES = ("open_clip", "blip_text", "siglip")  # zoo families trained against images


def encoder_kinds() -> dict[str, str]:
    """Embedded text condition -> "grounded" (trained against images), "text-only" or "random
    weights", from the sidecars (a zoo condition's `zoo.family`; SBERT and CLIP by name)."""
    out = {}
    for meta_path in sorted((repo_root() / "results/embeddings").glob("*/*/*/meta.json")):
        meta = json.loads(meta_path.read_text())
        cond = meta.get("condition", meta_path.parts[-4])
        if cond in out:
            continue
        if meta.get("random_seed") is not None or re.search(r"_random(_s\d+)?$", cond):
            out[cond] = "random weights"
        elif isinstance(meta.get("zoo"), dict):
            out[cond] = "grounded" if meta["zoo"].get("family") in GROUNDED_FAMILIES else "text-only"
        elif cond.startswith("clip"):
            out[cond] = "grounded"
        elif cond == "sbert":
            out[cond] = "text-only"
    return out


def fixture_conditions() -> list[str]:
    """Embedded conditions made from the tiny random-weight test models (tests/fixtures/models):
    their numbers test the pipeline and carry no information about the question."""
    out = set()
    for meta_path in (repo_root() / "results/embeddings").glob("*/*/*/meta.json"):
        meta = json.loads(meta_path.read_text())
        if str(meta.get("model_path") or "").startswith("tests/fixtures/"):
            out.add(meta.get("condition", meta_path.parts[-4]))
    return sorted(out)


# What each zoo family was trained to read out (analysis/embed/zoo.py, view `trained`), for the zoo
# table where a condition was not run (a run's sidecar carries the encoder's own description).
ZOO_TRAINED_POOLING = {
    "hf_text": "none trained for sentences (masked-LM pre-training): `mean` is its vector",
    "hf_text:bert": "`pooler_output`: [CLS] through the NSP-trained dense + tanh pooler",
    "open_clip": "`encode_text`: the tower's pooler (RoBERTa/XLM-R towers: mean over tokens; "
                 "OpenAI-style: the EOS token after the final layer norm) and its projection",
    "blip_text": "the unimodal text encoder's [CLS] state through `text_proj` (BLIP's image-text contrast)",
    "siglip": "`get_text_features`: the last position after the final layer norm, through `head`",
}


def zoo_table() -> pd.DataFrame:
    """One row per zoo model of params `models.zoo`: condition, hub id, its role in a matched
    pair, the trained readout, the view the probes read, and the revision embedded (or "not
    run in this build")."""
    zoo = params_section("models").get("zoo") or {}
    matched = params_section("conditions").get("matched") or {}
    views = params_section("probe_suite").get("views") or {}
    role = {}
    for name, m in matched.items():
        role[m["before"]] = f"before ({label(name)})"
        role[m["after"]] = f"after ({label(name)})"
    side = sidecars_by_condition()
    rows = []
    for name, spec in zoo.items():
        cond = f"zoo_{name}"
        fam = spec.get("family", "")
        meta = side.get(cond, {})
        key = "hf_text:bert" if fam == "hf_text" and "bert" in name and "roberta" not in name else fam
        pooling = meta.get("pooling") if isinstance(meta.get("pooling"), dict) else {}
        rows.append({"condition": str(label(cond)), "hub id": f"`{spec.get('hub_id')}`"
                     + (f" (`{spec['pretrained']}`)" if spec.get("pretrained") else ""),
                     "role": role.get(cond, "unmatched"),
                     "trained readout": pooling.get("trained") or ZOO_TRAINED_POOLING.get(key, ""),
                     "probed": f"`{views.get(cond) or meta.get('primary') or ('trained' if key != 'hf_text' else 'mean')}`",
                     "embedded": short_revision(meta.get("revision")) if meta else "not run in this build"})
    return pd.DataFrame(rows)


def sidecars_by_condition() -> dict[str, dict[str, Any]]:
    """Condition -> the sidecar (meta.json) of its first embedded split."""
    out: dict[str, dict[str, Any]] = {}
    for meta_path in sorted((repo_root() / "results/embeddings").glob("*/*/*/meta.json")):
        out.setdefault(meta_path.parts[-4], json.loads(meta_path.read_text()))
    return out


def zoo_conditions_run() -> tuple[list[str], list[str]]:
    """The model zoo (params `models.zoo`): trained conditions ``zoo_<name>`` embedded in this
    build, and those not run."""
    zoo = (params_section("models").get("zoo") or {})
    names = [f"zoo_{k}" for k in zoo]
    root = repo_root() / "results/embeddings"
    ran = [c for c in names if any((root / c).glob("*/*/meta.json"))]
    return ran, [c for c in names if c not in ran]


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
    return (load_yaml(path.read_text()) or {}).get("stages", {})


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
    lock = _lock(repo_root())
    entry = lock.get(stage) or next((v for k, v in lock.items() if k.startswith(stage + "@")), {})
    recorded = entry.get("params") or {}  # a foreach stage: any of its runs (same params)
    merged: dict[str, Any] = {}
    for values in recorded.values():
        merged.update(values)
    if merged:
        return merged
    path = repo_root() / "params.yaml"
    if not path.exists():
        return {}
    params = load_yaml(path.read_text()) or {}
    return {k: params[k] for k in (stage, "conditions") if k in params}


def params_section(name: str) -> dict[str, Any]:
    """A params section as the outputs were made with it: from whichever dvc.lock stage
    recorded it (e.g. ``models`` from an ``embed@...`` stage), else from params.yaml; {} when
    neither has it."""
    for entry in _lock(repo_root()).values():
        for values in (entry.get("params") or {}).values():
            if name in values:
                return values[name] or {}
    path = repo_root() / "params.yaml"
    if not path.exists():
        return {}
    return (load_yaml(path.read_text()) or {}).get(name) or {}


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


PREREGISTRATION = "paper/preregistration.md"
PREREGISTRATION_ZOO = "paper/preregistration_zoo.md"


def preregistration_commit(path: str = PREREGISTRATION) -> str:
    """The commit that added a pre-registration (its date of record), ``short-sha (date)``;
    "uncommitted" outside a git checkout or before it is committed."""
    try:
        out = subprocess.run(["git", "log", "--diff-filter=A", "--format=%h %as", "--",
                              path], cwd=repo_root(), capture_output=True, text=True,
                             check=True).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "uncommitted"
    lines = [x for x in out if x.strip()]
    if not lines:
        return "uncommitted"
    sha, date = lines[-1].split(" ", 1)
    return f"{sha} ({date})"


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


# What an empty inline value renders as: an empty Pandoc span (nothing in HTML, PDF or
# notebooks). Quarto prints an inline expression's *source* when its value is empty, so no inline
# value may ever be the empty string (`paper_check` fails on one).
EMPTY_MARKDOWN = "[]{}"


class Txt(str):
    """A string that renders without quotes both as text/plain and text/markdown, so an inline
    ``{python} expr`` shows the value itself whichever mime type Quarto picks; an empty one
    renders as nothing (`EMPTY_MARKDOWN`) instead of leaking the expression's source."""

    def __repr__(self) -> str:
        return str(self) or EMPTY_MARKDOWN

    def __add__(self, other: str) -> "Txt":
        return Txt(str(self) + str(other))

    def __radd__(self, other: str) -> "Txt":
        return Txt(str(other) + str(self))

    def _repr_markdown_(self) -> str:
        return str(self) or EMPTY_MARKDOWN


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


def label(name: Any, task: str | None = None) -> Txt:
    """What a reader sees for a pipeline name (`LABELS`): conditions ('clip_text' -> 'CLIP text',
    'sbert_random_s3' -> 'SBERT (random weights, seed 3)'), tasks ('T1_ovr' -> 'T1 one-vs-rest'),
    targets ('__all__' -> 'all relations', per ``task`` where it differs; 'meta:Projective' ->
    'Projective (meta-category)'), methods and models ('model:axis' -> 'axis model'), and
    comparisons of those ('clip_text - sbert' -> 'CLIP text − SBERT', 'a vs b'). Other names are
    returned as they are."""
    name = str(name).strip()
    if task is not None and f"{task}:{name}" in LABELS:
        return Txt(LABELS[f"{task}:{name}"])
    if name in LABELS:
        return Txt(LABELS[name])
    if m := re.fullmatch(r"(\w+)_random_s(\d+)", name):
        base = LABELS.get(m.group(1), m.group(1))
        return Txt(f"{base} (random weights, seed {m.group(2)})")
    if m := re.fullmatch(r"(zoo_\w+)_random", name):
        return Txt(f"{LABELS.get(m.group(1), m.group(1))} (random weights)")
    if name.startswith("meta:"):
        return Txt(f"{name[5:]} (meta-category)")
    if name.startswith("model:"):
        return label(name[6:], task)
    if m := re.fullmatch(r"\((.+)\) - \((.+)\)", name):
        return Txt(f"({label(m.group(1), task)}) − ({label(m.group(2), task)})")
    for sep, shown in ((" vs ", " vs "), (": ", ": "), (" - ", " − ")):
        if sep in name:
            return Txt(shown.join(str(label(part, task)) for part in name.split(sep)))
    return Txt(name)


_SMALL = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
          "fourteen fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def words(n: int) -> Txt:
    """A count as a reader writes it: 'seven', 'twenty-one'; 100 and above as digits ('1,234')."""
    n = int(n)
    if 0 <= n < 20:
        return Txt(_SMALL[n])
    if 20 <= n < 100:
        tens, ones = divmod(n, 10)
        return Txt(_TENS[tens] + (f"-{_SMALL[ones]}" if ones else ""))
    return count(n)


def times(n: int) -> Txt:
    """'once', 'twice', 'three times'."""
    n = int(n)
    return Txt({1: "once", 2: "twice"}.get(n, f"{words(n)} times"))


def plural(n: int, noun: str, plural_form: str | None = None) -> Txt:
    """'seven conditions', 'one condition' (the count in words)."""
    return Txt(f"{words(n)} {noun if int(n) == 1 else plural_form or noun + 's'}")


def listing(items: Iterable[str], conj: str = "and") -> Txt:
    items = [str(i) for i in items]
    if not items:
        return Txt("none")
    if len(items) == 1:
        return Txt(items[0])
    return Txt(", ".join(items[:-1]) + f" {conj} " + items[-1])


def cell_text(v: Any, digits: int = 3) -> str:
    """One table cell as a reader reads it: floats rounded, missing values blank, mappings and
    lists spelled out ('a: x; b: y') rather than printed as Python."""
    if v is None:
        return ""
    if pd.api.types.is_scalar(v) and not isinstance(v, str) and pd.isna(v):
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.{digits}f}"
    if isinstance(v, dict):
        return "; ".join(f"{k}: {cell_text(x, digits)}" for k, x in v.items())
    if isinstance(v, (list, tuple, set)):
        return ", ".join(cell_text(x, digits) for x in v)
    if hasattr(v, "tolist") and not isinstance(v, str):  # numpy scalars and arrays
        return cell_text(v.tolist(), digits)
    return str(v)


# A wide table's width in characters of its text (the PDF's 17 cm at the tables' 8.5 pt) and the
# characters a cell's padding takes (paper/_quarto.yml sets both sizes).
TABLE_CHARS = 110
CELL_PADDING = 3


def column_widths(columns: list[list[str]], total: int = TABLE_CHARS) -> list[int]:
    """Width of each column, in characters, for a table ``total`` wide: every column gets its
    longest unbreakable word (monospace counts wider) and the padding, so short columns never
    collide; the rest of the width goes to the columns whose longest cell needs more, in
    proportion to how much more (long text wraps there)."""
    def chars(text: str) -> float:
        return len(text.replace("`", "")) * (1.2 if "`" in text else 1.0)

    need, want = [], []
    for cells in columns:
        words = [w for c in cells for w in re.split(r"[\s/-]+", c) if w]
        need.append(max((chars(w) for w in words), default=1) + CELL_PADDING)
        want.append(max((chars(c) for c in cells), default=1) + CELL_PADDING)
    if sum(want) <= total:
        return [round(w) for w in want]
    spare = max(total - sum(need), 0)
    extra = [w - n for w, n in zip(want, need)]
    return [round(n + spare * e / sum(extra)) if sum(extra) else round(n)
            for n, e in zip(need, extra)]


def md_table(df: pd.DataFrame, digits: int = 3) -> str:
    """A pipe table (no extra dependency): floats rounded, pipes escaped, no Python reprs. The
    separator's dashes are the `column_widths`, which Pandoc turns into relative column widths
    for wide tables: short columns keep their words whole, long text wraps, and the PDF keeps
    the page's width."""
    def cell(v: Any) -> str:
        return cell_text(v, digits).replace("|", "\\|").replace("\n", " ")

    header = [str(c) for c in df.columns]
    body = [[cell(v) for v in row] for row in df.itertuples(index=False)]
    width = column_widths([[h, *(r[i] for r in body)] for i, h in enumerate(header)])
    align = "|" + "|".join(("-" * max(w, 3) + ":") if pd.api.types.is_numeric_dtype(df[c])
                          else (":" + "-" * max(w, 3))
                          for c, w in zip(df.columns, width)) + "|"
    lines = ["| " + " | ".join(header) + " |", align]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


class Table:
    """A table's content: the pipe table, the same in every output format."""

    def __init__(self, df: pd.DataFrame, digits: int = 3):
        if df.empty or not len(df.columns):
            raise ValueError("table: no rows to show (pass a one-row note frame instead)")
        self.df, self.digits = df, digits

    def markdown(self, fmt: str | None = None) -> str:
        return md_table(self.df, self.digits)

    def _repr_markdown_(self) -> str:
        return self.markdown()


def table(df: pd.DataFrame, digits: int = 3) -> Table:
    """``df`` as a table (Quarto turns the pipe table into a real table in HTML and PDF); put it
    in a `captioned` float to number and caption it."""
    return Table(df, digits)


def not_available(what: str = "Not available in this build.") -> Txt:
    """The body of a figure or table whose data this build lacks (the prose says why)."""
    return Txt(f"*{what}*")


FLOAT_LABEL = re.compile(r"(fig|tbl)-[A-Za-z0-9][\w-]*")


def _body(content: Any, fmt: str | None) -> str:
    if isinstance(content, str):  # Markdown text (a Txt's empty placeholder does not count)
        return str(content)
    if hasattr(content, "markdown"):
        return content.markdown(fmt)
    if hasattr(content, "_repr_markdown_"):
        return content._repr_markdown_()
    if hasattr(content, "data") and isinstance(content.data, str):  # IPython.display.Markdown
        return content.data
    return str(content)


class Captioned:
    """A numbered, captioned figure or table that one code cell emits whole, as Markdown:
    ``::: {#fig-x}`` + the content for the format being rendered + the caption + ``:::``.

    Why not a ``::: {#fig-x}`` div in the document around the cell: in a Quarto *manuscript*
    the notebook renderings (the article notebook, its embeds) wrap every Markdown cell in a div
    of its own, which closes a float that opens in one Markdown cell and ends in another; Quarto
    then crashes (floatreftarget.lua: field 'content' is nil) or drops the caption. A float that
    lives inside one cell's output is whole in every rendering."""

    def __init__(self, label: str, content: Any, caption: str):
        if not FLOAT_LABEL.fullmatch(label):
            raise ValueError(f"float label {label!r} must look like fig-name or tbl-name")
        if not str(caption).strip():
            raise ValueError(f"{label}: a figure or table needs a caption")
        self.label, self.content, self.caption = label, content, str(caption).strip()

    def markdown(self, fmt: str | None = None) -> str:
        body = _body(self.content, fmt).strip()
        if not body:
            raise ValueError(f"{label_text(self.label)} {self.label} has no content")
        return f"::: {{#{self.label}}}\n\n{body}\n\n{self.caption}\n\n:::\n"

    def _repr_mimebundle_(self, include=None, exclude=None):
        from analysis.report.figures import output_format

        fmt = output_format()
        bundle = {"text/plain": f"<{self.label}>", "text/markdown": self.markdown(fmt)}
        if fmt is None:  # outside Quarto (paper_check): build the HTML variant too, to check it
            bundle["text/html"] = self.markdown("html")
        return bundle


def label_text(float_label: str) -> str:
    return "figure" if float_label.startswith("fig-") else "table"


def captioned(label: str, content: Any, caption: str) -> Captioned:
    """Figure or table ``label`` ('fig-…'/'tbl-…', what ``@label`` refers to) showing
    ``content`` (a `figures.render` result, a `table`, or Markdown such as `not_available`)
    with ``caption`` (Markdown: citations and inline code work; end it with a `source_note`)."""
    return Captioned(label, content, caption)

"""Stage `probe_replication`: the original class project's probe, reproduced exactly.

For each relation r with at least `min_count` rows, a binary probe decodes "is this row's
relation r?" from the frozen embedding of every row of the split, with
``LogisticRegression(C=1, lbfgs, max_iter=1000, random_state=42)`` under
``StratifiedKFold(5, shuffle=True, random_state=42)``. This decodes which relation *word* a
caption contains and, with C=1 on unit-norm vectors, many probes predict the majority class on
every fold; we keep the design as is (it is the replication condition) and flag those probes
(`collapsed`) and report the F1 a majority-class predictor gets on the same folds.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score
from sklearn.model_selection import StratifiedKFold

from analysis.common import store
from analysis.common.cli import stage_parser
from analysis.common.io import replace_dir, write_csv, write_json
from analysis.common.errors import UserError
from analysis.common.params import Settings, conditions as read_conditions, load_params, stage_settings

log = logging.getLogger("probe_replication")

METRICS = {
    "accuracy": lambda y, p: accuracy_score(y, p),
    "f1_macro": lambda y, p: f1_score(y, p, average="macro", zero_division=0),
    "f1_weighted": lambda y, p: f1_score(y, p, average="weighted", zero_division=0),
    "precision_macro": lambda y, p: precision_score(y, p, average="macro", zero_division=0),
    "recall_macro": lambda y, p: recall_score(y, p, average="macro", zero_division=0),
}


class ReplicationSettings(Settings):
    """Section `probe_replication`: the original project's settings (keep them to replicate)."""

    variant: str
    """VSR variant probed (the original: random)"""
    split: str
    """... and split (the original: train)"""
    min_count: int
    """relations with at least this many rows get a probe"""
    C: float
    """inverse L2 penalty of LogisticRegression"""
    solver: str
    max_iter: int
    random_state: int
    """seed of the probe and of the StratifiedKFold shuffle"""
    n_splits: int
    """cross-validation folds"""


def make_probe(cfg: ReplicationSettings) -> LogisticRegression:
    return LogisticRegression(C=cfg.C, solver=cfg.solver, max_iter=cfg.max_iter,
                              random_state=cfg.random_state)


def make_folds(cfg: ReplicationSettings) -> StratifiedKFold:
    return StratifiedKFold(n_splits=cfg.n_splits, shuffle=True, random_state=cfg.random_state)


def probe_one_relation(X: np.ndarray, y: np.ndarray, cfg: ReplicationSettings) -> dict:
    """Cross-validated metrics (mean and population std over folds, as the original's
    ``np.std``), whether the probe predicted a single class on every test fold, and the
    macro F1 of a majority-class predictor on the same folds."""
    scores: dict[str, list[float]] = {m: [] for m in METRICS}
    single_class, majority_f1 = [], []
    for train, test in make_folds(cfg).split(X, y):
        probe = clone(make_probe(cfg)).fit(X[train], y[train])
        pred = probe.predict(X[test])
        for name, fn in METRICS.items():
            scores[name].append(fn(y[test], pred))
        single_class.append(np.unique(pred).size == 1)
        majority = np.full_like(y[test], np.bincount(y[train]).argmax())
        majority_f1.append(METRICS["f1_macro"](y[test], majority))
    row: dict = {}
    for name, vals in scores.items():
        row[f"{name}_mean"] = float(np.mean(vals))
        row[f"{name}_std"] = float(np.std(vals))
    row["collapsed"] = bool(all(single_class))
    row["f1_macro_majority"] = float(np.mean(majority_f1))
    return row


def replication_probes(
    X: np.ndarray, relations: np.ndarray, labels: np.ndarray, cfg: ReplicationSettings, n_jobs: int = 1
) -> pd.DataFrame:
    """One row per relation with at least ``cfg.min_count`` rows; sorted by macro F1."""
    relations = np.asarray(relations)
    labels = np.asarray(labels)
    names, counts = np.unique(relations, return_counts=True)
    kept = [r for r, c in zip(names, counts) if c >= cfg.min_count]
    if not kept:
        raise ValueError(f"no relation has at least min_count={cfg.min_count} rows")
    targets = [(relations == r).astype(int) for r in kept]
    results = Parallel(n_jobs=n_jobs)(delayed(probe_one_relation)(X, y, cfg) for y in targets)
    rows = []
    for rel, y, res in zip(kept, targets, results):
        mask = y == 1
        rows.append({
            "relation": rel,
            "n_samples": int(mask.sum()),
            "n_positive": int((labels[mask] == 1).sum()),
            "n_negative": int((labels[mask] == 0).sum()),
            **res,
        })
    df = pd.DataFrame(rows)
    return df.sort_values(["f1_macro_mean", "relation"], ascending=[False, True],
                          ignore_index=True)


def summarize(per_condition: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per condition: mean, std, median, min, max macro F1 over relations (as the original
    README's table), number of relations and of collapsed probes."""
    rows = []
    for cond, df in per_condition.items():
        f1 = df["f1_macro_mean"]
        rows.append({"condition": cond, "mean": f1.mean(), "std": f1.std(ddof=1),
                     "median": f1.median(), "min": f1.min(), "max": f1.max(),
                     "n_relations": len(df), "n_collapsed": int(df["collapsed"].sum()),
                     "n_rows": int(df.attrs.get("n_rows", 0))})
    return pd.DataFrame(rows)


def compare(per_condition: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Relations x conditions macro F1 (columns ``<condition>_f1``), sorted by the mean over
    conditions, as the original's ``model_comparison_table``."""
    merged = None
    for cond, df in per_condition.items():
        part = df[["relation", "f1_macro_mean"]].rename(columns={"f1_macro_mean": f"{cond}_f1"})
        merged = part if merged is None else merged.merge(part, on="relation", how="outer")
    cols = [f"{c}_f1" for c in per_condition]
    order = merged[cols].mean(axis=1).sort_values(ascending=False, kind="stable").index
    return merged.loc[order].reset_index(drop=True)


def aligned_inputs(condition: str, table: pd.DataFrame, variant: str, split: str):
    """Embeddings of one condition, with the relation and label of each of its rows (in the
    embeddings' own row order, as the original)."""
    emb = store.load_embeddings(condition, variant, split)
    rows = store.table_in_embedding_order(emb, table, f"{condition} {variant}/{split}")
    return emb.X, rows["relation"].to_numpy(), rows["label"].to_numpy()


def run(inputs: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], cfg: ReplicationSettings,
        missing: list[str], n_jobs: int = 1) -> dict[str, pd.DataFrame | dict]:
    """Every condition's per-relation table, the summary, the relation x condition comparison
    and the headline metrics, from (X, relations, labels) per condition."""
    per_condition: dict[str, pd.DataFrame] = {}
    for cond, (X, relations, labels) in inputs.items():
        log.info("%s: %d rows x %d dims", cond, *X.shape)
        df = replication_probes(X, relations, labels, cfg, n_jobs=n_jobs)
        df.attrs["n_rows"] = len(X)
        per_condition[cond] = df
        log.info("%s: mean macro F1 %.3f over %d relations (%d collapsed)", cond,
                 df["f1_macro_mean"].mean(), len(df), int(df["collapsed"].sum()))
    summary = summarize(per_condition)
    # `dvc metrics show` lists these; relation and collapse counts stay in summary.csv
    metrics = {"missing_conditions": missing,
               "mean_f1_macro": {r.condition: round(float(r.mean), 6) for r in summary.itertuples()}}
    return {"per_condition": per_condition, "summary": summary,
            "comparison": compare(per_condition), "metrics": metrics}


class NoEmbeddingsError(UserError):
    """None of the selected conditions has embeddings for the probed split."""


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("probe_replication", __doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=-1, help="parallel relations (joblib)")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    cfg = stage_settings(ReplicationSettings, params, "probe_replication", args.params)
    conditions = read_conditions(params, args.params)
    table = store.load_split(cfg.variant, cfg.split)
    present = store.available_conditions(cfg.variant, cfg.split)
    missing = [c for c in conditions if c not in present]
    if missing:
        log.warning("no embeddings for %s on %s/%s: left out of the replication", missing,
                    cfg.variant, cfg.split)
    selected = [c for c in conditions if c in present]
    if not selected:
        raise NoEmbeddingsError(f"no embeddings for any of {list(conditions)} on "
                                f"{cfg.variant}/{cfg.split}: run the embed stage first")
    inputs = {c: aligned_inputs(c, table, cfg.variant, cfg.split) for c in selected}
    out = run(inputs, cfg, missing, n_jobs=args.jobs)
    with replace_dir(store.REPLICATION_DIR) as folder:
        for cond, df in out["per_condition"].items():
            write_csv(folder / f"{cond}.csv", df)
        write_csv(folder / "summary.csv", out["summary"])
        write_csv(folder / "comparison.csv", out["comparison"])
    write_json(store.REPLICATION_METRICS, out["metrics"])
    return 0

"""Stage `stats`: confidence intervals, paired tests and contrasts from the probe suite's
out-of-fold predictions (``results/probes/suite/<unit>/oof/*.parquet``, every selected unit).

For every probe (task, condition, layer, target): macro F1 / AUPRC / accuracy with grouped,
stratified bootstrap CIs and chance levels; for every pair of conditions: the paired difference
with a bootstrap CI and a paired permutation p-value, Holm and BH across targets; meta-category
means; the pre-specified asymmetry contrast (CLIP − SBERT on vertical) − (CLIP − SBERT on
horizontal); selectivity (task − control task). Missing conditions are reported, never filled.
"""

from __future__ import annotations

import itertools
import json
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pandas.api.types import union_categoricals
from statsmodels.stats.multitest import multipletests
from tqdm import tqdm

from analysis.inference import confirmatory as C
from analysis.inference import grounding as G
from analysis.inference import resampling as stats
from analysis.common import store
from analysis.common.cli import stage_parser
from analysis.common.io import replace_dir, write_csv, write_json
from analysis.common.params import Settings, condition_sets, load_params, stage_settings

log = logging.getLogger("stats")

STATS_DIR = store.STATS_DIR
METRICS_PATH = store.STATS_METRICS

USED_COLUMNS = ["task", "condition", "layer", "target", "repeat", "row_id", "group", "y_true",
                "y_pred", "score"]  # fold and C are not needed for statistics
CATEGORICAL = ("task", "condition", "target", "row_id", "group")
NULL_COLUMNS = ("task", "condition", "layer", "target", "metric", "estimate", "observed", "exact",
                "scheme")
CONTROL_TOKEN = "_control"  # T1_control, T1_control_ovr: control tasks of T1, T1_ovr
PRIMARY_LAYER = store.PRIMARY_LAYER
TIDY = store.TIDY_COLUMNS

ProbeKey = tuple[str, str, int, str]  # task, condition, layer, target
Metric = Literal["macro_f1", "auprc", "accuracy"]


class Sides(Settings):
    vertical: tuple[str, ...]
    horizontal: tuple[str, ...]


class PartialSides(Settings):
    vertical: tuple[str, ...] | None = None
    horizontal: tuple[str, ...] | None = None


class AsymmetrySettings(Settings):
    """The pre-specified contrast (grounded - distributional | vertical) - (... | horizontal)."""

    grounded: str
    distributional: str
    tasks: tuple[str, ...]
    """probe_suite task names the contrast is computed on"""
    vertical: tuple[str, ...]
    """targets (relations) on the vertical side"""
    horizontal: tuple[str, ...]
    per_task: dict[str, PartialSides] | None = None
    """task -> its own sides, where its targets are not relations"""
    alternative: Literal["greater", "two-sided"] = "greater"
    """the seed's hypothesis is directional: grounding helps vertical relations more"""


class HeadlineSettings(Settings):
    """What DVC's own views show: the few numbers `dvc metrics show` / `dvc exp show` compare
    across experiments (every other number stays in the tables) and the data of `dvc plots`."""

    tasks: tuple[str, ...] = ("T2_polarity", "T3_holdout_zeroshot")
    """tasks whose per-condition mean score (primary layer) is a headline metric"""
    metric: Metric = "macro_f1"
    """the one metric of scores, the grounded - distributional comparison and the asymmetry"""
    relation_task: str = "T1_ovr"
    """task whose per-relation scores `dvc plots show` draws (results/stats/plots/relations.csv)"""


class MatchedTaskSettings(Settings):
    """What both pre-registered analyses of the matched task share: the task, its axes, the
    asymmetry contrast, the interval level and the two-sided level of the test."""

    task: str = "M_polarity"
    axes: tuple[str, ...] = ("vertical", "horizontal", "depth")
    asymmetry: tuple[str, str] = ("vertical", "horizontal")
    ci: float = 0.95
    alpha: float = 0.05
    """two-sided level of the pre-registered test(s)"""


class ConfirmatorySettings(MatchedTaskSettings):
    """The pre-registered primary analysis (paper/preregistration.md; a test keeps the two
    equal): the training contrast on the matched task (`analysis/inference/confirmatory.py`)."""

    grounded: str = "clip_text"
    distributional: str = "sbert"
    min_seeds: int = 5
    """random-weight seeds each architecture needs before the contrast is computed"""


class GroundingSettings(MatchedTaskSettings):
    """The pre-registered grounding effect on matched encoder pairs (paper/preregistration_zoo.md;
    a test keeps the two equal): after - before per pair, and across pairs by a mixed model
    (`analysis/inference/grounding.py`; G1 and G2 Holm-adjusted at ``alpha``). The pairs are
    `conditions.matched`."""

    min_pairs: int = 2
    """matched pairs that must have run before the across-pair test is computed"""


class StatsSettings(Settings):
    """Section `stats`."""

    n_resamples: int
    """grouped, stratified bootstrap resamples per interval"""
    n_permutations: int
    """paired-permutation (and asymmetry) permutations per test"""
    ci_level: float
    ci_method: Literal["percentile", "bca"]
    seed: int
    metrics: tuple[Metric, ...]
    """at the primary layer (-1)"""
    layer_metrics: tuple[Metric, ...]
    """at the other hidden layers (layer-wise probes)"""
    contrast_metrics: tuple[Metric, ...]
    """for comparisons, meta-categories, asymmetry, selectivity"""
    contrast_layers: Literal["primary", "all"]
    pairs: Literal["all"] | tuple[tuple[str, str], ...]
    """[a, b]: a - b on identical rows/folds ("all": every pair present)"""
    condition_order: tuple[str, ...]
    asymmetry: AsymmetrySettings
    headline: HeadlineSettings = HeadlineSettings()
    confirmatory: ConfirmatorySettings | None = None
    grounding: GroundingSettings | None = None

    @property
    def level(self) -> float:
        return self.ci_level

    @property
    def grounded(self) -> str:
        return self.asymmetry.grounded

    @property
    def distributional(self) -> str:
        return self.asymmetry.distributional

    @property
    def asymmetry_tasks(self) -> tuple[str, ...]:
        return self.asymmetry.tasks

    @property
    def sides(self) -> dict[str, dict[str, tuple[str, ...]]]:
        a = self.asymmetry
        out = {"default": {"vertical": a.vertical, "horizontal": a.horizontal}}
        for task, override in (a.per_task or {}).items():
            out[task] = {k: getattr(override, k) or out["default"][k] for k in ("vertical", "horizontal")}
        return out

    def seed_for(self, *key: Any) -> list[int]:
        """A seed that depends on the item, not on the order items are processed in. Bootstrap
        seeds name the rows (task, target), so every condition, layer and metric on those rows
        shares one set of resamples (differences between them stay paired)."""
        return [self.seed, zlib.crc32("|".join(map(str, key)).encode())]

    def metrics_for(self, layer: int, contrast: bool = False) -> tuple[str, ...]:
        """Scores: `metrics` at the primary layer, `layer_metrics` elsewhere; comparisons and
        contrasts: `contrast_metrics`, further limited to `layer_metrics` off the primary layer."""
        base = self.metrics if layer == PRIMARY_LAYER else self.layer_metrics
        return tuple(m for m in self.contrast_metrics if m in base) if contrast else base

    def contrast_layer(self, layer: int) -> bool:
        return self.contrast_layers == "all" or layer == PRIMARY_LAYER


# ---------------------------------------------------------------------------------------------
# reading OOF predictions


def oof_files(units: list[store.SuiteUnit]) -> list[Path]:
    """Every unit's OOF files (one per task; `bundles` groups a task's files across units)."""
    files = sorted((p for u in units for p in u.oof_dir.glob("*.parquet")),
                   key=lambda p: (p.stem, p.parent.parent.name))
    if not files:
        raise FileNotFoundError(f"no OOF predictions in {store.SUITE_DIR}/*/oof: run the probe "
                                "suite's stages first (dvc repro probe_suite)")
    return files


def read_nulls(units: list[store.SuiteUnit]) -> pd.DataFrame | None:
    """The units' label-permutation null scores (optional files), as one table."""
    parts = []
    for u in units:
        if u.null_path.exists():
            null = pd.read_parquet(u.null_path)
            absent = [c for c in NULL_COLUMNS if c not in null.columns]
            if absent:
                raise ValueError(f"{u.null_path}: missing columns {absent} (expected {list(NULL_COLUMNS)})")
            parts.append(null)
    return pd.concat(parts, ignore_index=True) if parts else None


def bundles(files: list[Path]) -> list[list[Path]]:
    """Files analysed together: a task with its control tasks (oof/T1_ovr + oof/T1_control_ovr),
    so memory holds one task family at a time."""
    by_base: dict[str, list[Path]] = {}
    for path in files:
        by_base.setdefault(base_task(path.stem) or path.stem, []).append(path)
    return [by_base[k] for k in sorted(by_base)]


def read_oof(paths: Path | list[Path]) -> pd.DataFrame:
    """OOF files (a directory: every parquet in it), checked against the contract in ARCHITECTURE.md.
    Only the columns statistics need are loaded, strings as categoricals sharing one coding
    across the files (layer-wise OOF tables run to millions of rows)."""
    if not isinstance(paths, list):
        paths = sorted(Path(paths).glob("*.parquet")) if Path(paths).is_dir() else [Path(paths)]
    frames = []
    for path in paths:
        try:
            names = pq.read_schema(path).names
            missing = [c for c in store.OOF_COLUMNS if c not in names]
            if missing:
                raise ValueError(f"{path}: missing columns {missing} (expected {list(store.OOF_COLUMNS)})")
            table = pq.read_table(path, columns=USED_COLUMNS,
                                  read_dictionary=[c for c in CATEGORICAL if c in names])
            df = table.to_pandas(strings_to_categorical=True, self_destruct=True)
            del table
        except (OSError, pa.ArrowException) as exc:
            raise ValueError(f"{path}: not a readable parquet file ({exc})") from exc
        for col in ("y_true", "y_pred", "row_id", "group", "repeat", "layer"):
            bad = df[col].isna().to_numpy()
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ValueError(f"{path}: {bad.sum()} rows with missing {col}, first at row {i} "
                                 f"(row_id {df['row_id'].iloc[i]})")
        for col in CATEGORICAL:
            if not isinstance(df[col].dtype, pd.CategoricalDtype):
                df[col] = df[col].astype(str).astype("category")
        frames.append(df.astype({"layer": np.int32, "repeat": np.int32, "y_true": np.int32,
                                 "y_pred": np.int32, "score": np.float64}))
    if len(frames) > 1:
        cats = {c: union_categoricals([f[c] for f in frames]).categories for c in CATEGORICAL}
        frames = [f.assign(**{c: pd.Categorical(f[c], categories=cats[c]) for c in CATEGORICAL})
                  for f in frames]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def to_predictions(df: pd.DataFrame, key: ProbeKey) -> stats.Predictions:
    """One probe's OOF rows as items sorted by (repeat, row). A repeat is an outer-CV seed
    (every row once) or, in T2, a held-out-word assignment (its own test rows). Rows and
    groups are carried as their categorical codes (one coding per `read_oof` call)."""
    rows = df["row_id"].cat.codes.to_numpy(np.int64)
    repeat = df["repeat"].to_numpy(np.int64)
    order = np.lexsort((rows, repeat))
    rows, repeat = rows[order], repeat[order]
    dup = np.flatnonzero((np.diff(rows) == 0) & (np.diff(repeat) == 0))
    if len(dup):
        raise ValueError(f"probe {key}: row_id {df['row_id'].iloc[order[dup[0]]]} appears twice in "
                         f"repeat {repeat[dup[0]]}")
    y_true = df["y_true"].to_numpy(np.int32)[order]
    groups = df["group"].cat.codes.to_numpy(np.int32)[order]
    by_row = np.argsort(rows, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(rows[by_row]) != 0])
    for values, what in ((y_true, "y_true"), (groups, "group")):
        v = values[by_row]
        varies = np.minimum.reduceat(v, starts) != np.maximum.reduceat(v, starts)
        if varies.any() and what == "y_true":
            row = df["row_id"].iloc[order[by_row[starts[np.flatnonzero(varies)[0]]]]]
            raise ValueError(f"probe {key}: y_true of row {row} differs between repeats")
        if varies.any():  # a row in different groups across repeats: link them
            groups = stats.merge_groups(groups, rows).astype(np.int32)
    return stats.Predictions(y_true, df["y_pred"].to_numpy(np.int32)[order], df["score"].to_numpy(np.float64)[order],
                             groups, repeat.astype(np.int32), rows.astype(np.int32))


def item_keys(pred: stats.Predictions) -> np.ndarray:
    """One int64 per (repeat, row) item (rows are categorical codes, < 2**32)."""
    return pred.repeat.astype(np.int64) * (1 << 32) + pred.rows.astype(np.int64)


def relation_table(row_ids: Iterable[str], vsr_root: Path = store.VSR_DIR) -> tuple[pd.DataFrame, list[str]]:
    """relation, meta_category and reference_frame for the OOF rows, from the VSR tables their
    row ids name;
    returns the table and the split keys that could not be loaded (reported)."""
    ids = pd.Series(pd.unique(pd.Series(list(row_ids), dtype=str)))
    keys = ids.str.rsplit("/", n=1).str[0].unique()
    frames, missing = [], []
    for key in keys:
        try:
            variant, split = store.parse_split_key(key)
            tab = store.load_split(variant, split, vsr_root)
            part = tab[["row_id", "relation", "meta_category"]]
            frames.append(part.assign(reference_frame=tab.get("reference_frame")))  # optional
        except (ValueError, FileNotFoundError, KeyError) as exc:
            missing.append(f"{key}: {exc}")
    table = (pd.concat(frames, ignore_index=True) if frames
             else pd.DataFrame(columns=["row_id", "relation", "meta_category", "reference_frame"]))
    return table, missing


# ---------------------------------------------------------------------------------------------
# the analyses: each returns tidy rows


@dataclass(frozen=True)
class Null:
    """One probe's permutation null from the suite: the statistic (mean over all repeats) under
    every permutation, the observed value, whether the permutations are exhaustive (they then
    include the observed labelling) and the scheme (what the permutation exchanges)."""

    values: np.ndarray
    observed: float
    exact: bool
    scheme: str

    def pvalue(self) -> float:
        """One-sided ("above chance")."""
        return stats.permutation_pvalue(self.observed, self.values, self.exact)

    @property
    def min_p(self) -> float:
        return stats.min_attainable_p(len(self.values), self.exact)


def null_scores(null: pd.DataFrame | None) -> dict[tuple, Null]:
    """(task, condition, layer, target, metric) -> the probe_suite's permutation null."""
    if null is None or null.empty:
        return {}
    keys = ["task", "condition", "layer", "target", "metric"]
    return {(str(t), str(c), int(layer), str(g), str(m)):
            Null(df["estimate"].to_numpy(float), float(df["observed"].iloc[0]),
                 bool(df["exact"].iloc[0]), str(df["scheme"].iloc[0]))
            for (t, c, layer, g, m), df in null.groupby(keys, observed=True)}


CHANCE_COLUMNS = ("chance", "chance_majority", "chance_stratified")


def chance_levels(scores: pd.DataFrame | None) -> dict[tuple, dict[str, float]]:
    """(task, condition, layer, target, metric) -> the chance levels the suite computed on the
    probe's own rows and folds (trivial predictors trained on each fold's training rows): the
    one definition of chance, used by every table. macro F1: the better of the majority-class
    and the prior-guessing predictor; accuracy: majority class; AUPRC: the positive rate."""
    if scores is None or scores.empty:
        return {}
    key = ["task", "condition", "layer", "target"]
    out: dict[tuple, dict[str, float]] = {}
    wide = scores.pivot_table(index=key, columns="metric", values="estimate", aggfunc="first")
    for r in scores[scores["metric"].isin(stats.METRICS)].itertuples(index=False):
        k = (str(r.task), str(r.condition), int(r.layer), str(r.target))
        entry = {"chance": float(r.chance)}
        if r.metric == "macro_f1" and k in wide.index:
            for name, col in (("chance_majority", "macro_f1_majority"),
                              ("chance_stratified", "macro_f1_stratified")):
                if col in wide.columns:
                    entry[name] = float(wide.loc[k, col])
        out[(*k, str(r.metric))] = entry
    return out


def score_rows(probes: dict[ProbeKey, stats.Predictions], cfg: StatsSettings,
               null: dict[tuple, Null], chance: dict[tuple, dict[str, float]],
               missing: list[str]) -> pd.DataFrame:
    rows = []
    order = sorted(probes, key=lambda k: (k[0], k[2], k[3], k[1]))  # conditions of a target together
    for key in tqdm(order, desc="stats: scores", unit="probe"):
        pred = probes[key]
        task, cond, layer, target = key
        for metric in cfg.metrics_for(layer):
            if metric == "auprc" and not stats.is_binary(pred):
                continue  # multiclass: the OOF score is P(true class), no precision–recall curve
            est = stats.bootstrap_ci(pred, metric, cfg.n_resamples, cfg.seed_for(task, target),
                                     cfg.level, cfg.ci_method)
            nul = null.get((*key, metric))
            p, extra = float("nan"), {"n_null": 0}
            if nul is not None:  # the suite's null is of the printed statistic (all repeats)
                if abs(nul.observed - est.estimate) > 1e-6:
                    raise ValueError(f"probe {key} {metric}: the permutation null's observed "
                                     f"value {nul.observed} is not the estimate {est.estimate}")
                p = nul.pvalue()
                extra = {"n_null": len(nul.values), "null_exact": nul.exact,
                         "null_scheme": nul.scheme, "min_attainable_p": nul.min_p}
            ch = chance.get((*key, metric))
            if ch is None:
                missing.append(f"chance level of {key} {metric}: not in the suite's scores.csv")
                ch = {"chance": float("nan")}
            rows.append({"task": task, "condition": cond, "layer": layer, "target": target,
                         **est.as_row(), "p_value": p, **extra, "n_repeats": pred.n_repeats, **ch})
    return _adjust(pd.DataFrame(rows), ["task", "condition", "layer", "metric"])


def order_pair(a: str, b: str, order: tuple[str, ...]) -> tuple[str, str]:
    """(first, second) in the study's order (grounded before distributional), unknown last."""
    rank = {c: i for i, c in enumerate(order)}
    return tuple(sorted((a, b), key=lambda c: (rank.get(c, len(rank)), c)))  # type: ignore[return-value]


def condition_pairs(conditions: Iterable[str], cfg: StatsSettings) -> list[tuple[str, str]]:
    present = sorted(set(conditions))
    if cfg.pairs == "all":
        return [order_pair(a, b, cfg.condition_order) for a, b in itertools.combinations(present, 2)]
    return [tuple(p) for p in cfg.pairs]  # type: ignore[misc]


def paired(preds: dict[ProbeKey, stats.Predictions], ka: ProbeKey, kb: ProbeKey,
           ) -> tuple[stats.Predictions, stats.Predictions, int]:
    """Two probes on their common (repeat, row) items, and how many items only one has."""
    a, b = preds[ka], preds[kb]
    _, ia, ib = np.intersect1d(item_keys(a), item_keys(b), assume_unique=True, return_indices=True)
    return a.take(ia), b.take(ib), a.n_items + b.n_items - 2 * len(ia)


def base_task(task: str) -> str | None:
    """The task a control task controls for ('T1_control_ovr' -> 'T1_ovr'); None otherwise."""
    return task.replace(CONTROL_TOKEN, "", 1) if CONTROL_TOKEN in task else None


def comparison_rows(preds, cfg: StatsSettings, missing: list[str]) -> pd.DataFrame:
    rows = []
    by_cell: dict[tuple[str, int, str], set[str]] = {}
    for task, cond, layer, target in preds:
        if base_task(task) is None and cfg.contrast_layer(layer):
            by_cell.setdefault((task, layer, target), set()).add(cond)
    jobs, absent = [], {}
    for (task, layer, target), conds in by_cell.items():
        for a, b in condition_pairs(conds, cfg):
            if (a in conds) != (b in conds):
                absent.setdefault((task, a, b, a if a not in conds else b), []).append(f"{target}@{layer}")
            if a in conds and b in conds:
                jobs.append((task, layer, target, a, b))
    missing += [f"comparison {a} - {b} on {task}: {c} has no predictions for {len(cells)} target/layer "
                f"cells (e.g. {cells[0]})" for (task, a, b, c), cells in sorted(absent.items())]
    for task, layer, target, a, b in tqdm(jobs, desc="stats: comparisons", unit="pair"):
        pa, pb, unpaired = paired(preds, (task, a, layer, target), (task, b, layer, target))
        if pa.n_items == 0 or not np.array_equal(pa.y_true, pb.y_true):
            missing.append(f"comparison {a} vs {b}: {task} layer {layer} target {target}: "
                           f"no common rows with identical labels")
            continue
        for metric in cfg.metrics_for(layer, contrast=True):
            if metric == "auprc" and not (stats.is_binary(pa) and stats.is_binary(pb)):
                continue
            est = stats.paired_bootstrap_ci(pa, pb, metric, cfg.n_resamples, cfg.seed_for(task, target),
                                            cfg.level, cfg.ci_method)
            p = stats.paired_permutation_pvalue(pa, pb, metric, cfg.n_permutations,
                                                cfg.seed_for(task, layer, target, a, b, metric, "swap"))
            rows.append({"task": task, "condition": f"{a} - {b}", "comparison": f"{a} - {b}",
                         "condition_a": a, "condition_b": b, "layer": layer, "target": target,
                         **est.as_row(), "p_value": p, "n_permutations": cfg.n_permutations,
                         "n_unpaired": unpaired, "chance": np.nan,
                         "estimate_a": stats.metric_point(metric, pa),
                         "estimate_b": stats.metric_point(metric, pb)})
    return _adjust(pd.DataFrame(rows), ["task", "comparison", "layer", "metric"])


def meta_category_rows(preds, relations: pd.DataFrame, cfg: StatsSettings,
                       chance: dict[tuple, dict[str, float]]) -> pd.DataFrame:
    """Mean score over the relations of each VSR meta-category (targets named by relation), per
    condition and, for each pair of conditions, the mean paired difference."""
    meta = (relations.dropna(subset=["relation", "meta_category"]).drop_duplicates("relation")
            .set_index("relation")["meta_category"])
    families: dict[tuple[str, int, str], dict[str, dict[str, stats.Predictions]]] = {}
    for (task, cond, layer, target), pred in preds.items():
        if target in meta.index and cfg.contrast_layer(layer) and base_task(task) is None:
            families.setdefault((task, layer, meta[target]), {}).setdefault(cond, {})[target] = pred
    rows = []
    for (task, layer, category), by_cond in tqdm(sorted(families.items()), desc="stats: meta-categories",
                                                 unit="family"):
        jobs = [(c, None, sorted(t)) for c, t in by_cond.items()]
        for a, b in condition_pairs(by_cond, cfg):
            common = sorted(set(by_cond.get(a, {})) & set(by_cond.get(b, {})))
            if common:
                jobs.append((a, b, common))
        for a, b, targets in jobs:
            if b is None:
                ps, base = [by_cond[a][t] for t in targets], None
            else:
                ps, base = map(list, zip(*(paired(preds, (task, a, layer, t), (task, b, layer, t))[:2]
                                           for t in targets)))
                if any(p.n_items == 0 or not np.array_equal(p.y_true, q.y_true) for p, q in zip(ps, base)):
                    continue  # not paired: comparison_rows reports it per target
            for metric in cfg.metrics_for(layer, contrast=True):
                if metric == "auprc" and not all(stats.is_binary(p) for p in ps + (base or [])):
                    continue
                est = stats.mean_of_targets_ci(ps, metric, cfg.n_resamples, cfg.seed_for(task, category),
                                               cfg.level, cfg.ci_method, baseline=base)
                level = (np.mean([chance.get((task, a, layer, t, metric), {}).get("chance", np.nan)
                                  for t in targets]) if b is None else np.nan)
                rows.append({"task": task, "condition": a if b is None else f"{a} - {b}", "layer": layer,
                             "target": category, **est.as_row(), "chance": level, "n_targets": len(ps),
                             "relations": "|".join(targets)})
    return pd.DataFrame(rows)


def asymmetry_rows(preds, cfg: StatsSettings, missing: list[str]) -> pd.DataFrame:
    """(grounded − distributional on vertical) − (grounded − distributional on horizontal): the
    mean paired difference over each side's targets, each on its own predictions and repeats;
    p-value over exchanges of targets between the sides (`resampling.difference_in_differences`)."""
    g, d = cfg.grounded, cfg.distributional
    rows = []
    tasks = sorted({k[0] for k in preds})
    for task in (t for t in cfg.asymmetry_tasks if t in tasks):  # absent tasks: noted by `run`
        absent = [c for c in (g, d) if not any(k[0] == task and k[1] == c for k in preds)]
        if absent:
            missing.append(f"asymmetry {task}: condition(s) {absent} have no OOF predictions")
            continue
        sides = cfg.sides.get(task, cfg.sides["default"])
        layers = sorted({k[2] for k in preds if k[0] == task and k[1] in (g, d) and cfg.contrast_layer(k[2])})
        for layer in layers:
            per_side, note = {}, None
            for side in ("vertical", "horizontal"):
                targets = [t for t in sides[side] if (task, g, layer, t) in preds and (task, d, layer, t) in preds]
                if not targets:
                    note = (f"asymmetry {task} layer {layer}: no {side} target scored for both {g} and {d} "
                            f"(wanted any of {list(sides[side])})")
                    break
                per_side[side] = (targets, [paired(preds, (task, g, layer, t), (task, d, layer, t))[:2]
                                            for t in targets])
            if note:
                missing.append(note)
                continue
            (tv, pv), (th, ph) = per_side["vertical"], per_side["horizontal"]
            for metric in cfg.metrics_for(layer, contrast=True):
                if metric == "auprc" and not all(stats.is_binary(p) for pair in pv + ph for p in pair):
                    continue
                c = stats.difference_in_differences(pv, ph, metric, cfg.n_resamples, cfg.n_permutations,
                                                    cfg.seed_for(task, layer, "asymmetry"), cfg.level,
                                                    cfg.ci_method, cfg.asymmetry.alternative)
                row = c.as_row()
                row.update({"task": task, "condition": f"{g} - {d}", "comparison": f"{g} - {d}",
                            "layer": layer, "target": "vertical - horizontal", "chance": np.nan,
                            "vertical_diff": row.pop("first_diff"), "horizontal_diff": row.pop("second_diff"),
                            "n_vertical": row.pop("n_first"), "n_horizontal": row.pop("n_second"),
                            "n_vertical_targets": row.pop("n_first_targets"),
                            "n_horizontal_targets": row.pop("n_second_targets"),
                            "vertical_targets": "|".join(tv), "horizontal_targets": "|".join(th)})
                rows.append(row)
    return _adjust(pd.DataFrame(rows), ["layer", "metric"])


def selectivity_rows(preds, cfg: StatsSettings) -> pd.DataFrame:
    """Task score − control-task score (Hewitt & Liang 2019) on the common items, paired CI."""
    rows = []
    keys = [k for k in preds if base_task(k[0]) is not None and cfg.contrast_layer(k[2])]
    for ctrl in tqdm(keys, desc="stats: selectivity", unit="probe"):
        key = (base_task(ctrl[0]), *ctrl[1:])
        if key not in preds:
            continue
        pt, pc, unpaired = paired(preds, key, ctrl)
        if pt.n_items == 0:
            continue
        for metric in cfg.metrics_for(key[2], contrast=True):
            if metric == "auprc" and not (stats.is_binary(pt) and stats.is_binary(pc)):
                continue
            est = stats.paired_bootstrap_ci(pt, pc, metric, cfg.n_resamples, cfg.seed_for(*ctrl),
                                            cfg.level, cfg.ci_method, same_labels=False)
            rows.append({"task": key[0], "control_task": ctrl[0], "condition": key[1], "layer": key[2],
                         "target": key[3], **est.as_row(), "chance": np.nan, "n_unpaired": unpaired,
                         "estimate_task": stats.metric_point(metric, pt),
                         "estimate_control": stats.metric_point(metric, pc)})
    return pd.DataFrame(rows)


def _adjust(df: pd.DataFrame, family: list[str]) -> pd.DataFrame:
    """Holm and BH across the targets of each family (NaN p-values are not in the family)."""
    if df.empty:
        return df.reindex(columns=TIDY)
    df = df.copy()
    df["p_holm"] = df.groupby(family)["p_value"].transform(lambda p: stats.holm(p.to_numpy()))
    df["p_bh"] = df.groupby(family)["p_value"].transform(lambda p: stats.bh(p.to_numpy()))
    return df


def tidy(df: pd.DataFrame) -> pd.DataFrame:
    """Contract columns first, extras after; every contract column present (NaN if n/a)."""
    df = df.reindex(columns=[*TIDY, *[c for c in df.columns if c not in TIDY]])
    return df.sort_values(["task", "condition", "layer", "target", "metric"], kind="stable").reset_index(drop=True)


def headline(scores: pd.DataFrame, comparisons: pd.DataFrame, asymmetry: pd.DataFrame,
             missing: list[str], cfg: StatsSettings,
             grounding: pd.DataFrame | None = None) -> dict[str, Any]:
    """The few numbers `dvc metrics show` tracks (``stats.headline``): per-condition means of
    the headline tasks (the conditions of ``condition_order``: the zoo's many encoders are in
    results/stats/), the grounded - distributional difference on them, each asymmetry contrast
    with its interval, all at the primary layer in one metric; and the matched pairs'
    pre-registered grounding tests (log-odds) where they were computed."""
    want = cfg.headline
    study = f"{cfg.grounded} - {cfg.distributional}"

    def primary(df: pd.DataFrame) -> pd.DataFrame:
        return df[(df["layer"] == PRIMARY_LAYER) & (df["metric"] == want.metric)] if len(df) else df

    out: dict[str, Any] = {"metric": want.metric, "scores": {}, "comparisons": {},
                           "asymmetry": {}, "n_missing": len(missing)}
    prim = primary(scores)
    prim = prim[prim["condition"].isin(cfg.condition_order)] if len(prim) else prim
    for (task, cond), df in prim[prim["task"].isin(want.tasks)].groupby(["task", "condition"]) if len(prim) else []:
        out["scores"].setdefault(task, {})[cond] = round(float(df["estimate"].mean()), 6)
    comp = primary(comparisons)
    for task, df in comp[comp["task"].isin(want.tasks) & (comp["comparison"] == study)].groupby("task") if len(comp) else []:
        out["comparisons"].setdefault(task, {})[study] = round(float(df["estimate"].mean()), 6)
    for _, r in primary(asymmetry).iterrows():
        out["asymmetry"][r["task"]] = {k: round(float(r[k]), 6) for k in ("estimate", "ci_low", "ci_high")}
    if grounding is not None and len(grounding):
        co = grounding[grounding["analysis"].astype(str).str.contains("co-primary")]
        for _, r in co.iterrows():
            out.setdefault("grounding", {})[r["name"]] = {
                k: round(float(r[k]), 6) for k in ("estimate", "ci_low", "ci_high", "p_holm")}
    return {"stats": out}


PLOTS_DIR = "plots"  # inside results/stats: the data of dvc.yaml's `plots:` (long format)


def plot_tables(scores: pd.DataFrame, asymmetry: pd.DataFrame,
                cfg: StatsSettings) -> dict[str, pd.DataFrame]:
    """The data `dvc plots show` / `dvc plots diff` draw (templates in .dvc/plots/), in the
    headline metric: per-relation scores of ``headline.relation_task``, layer curves (the pooled
    score where a task has one, else the mean over its targets) and the asymmetry contrasts."""
    m = cfg.headline.metric
    sc = scores[scores["metric"] == m] if len(scores) else scores
    keep = ["condition", "estimate", "ci_low", "ci_high"]
    rel = sc[(sc["task"] == cfg.headline.relation_task) & (sc["layer"] == PRIMARY_LAYER)]
    relations = rel.rename(columns={"target": "relation"})[["relation", *keep]]
    layered = sc[sc["layer"] >= 0]
    curves = []
    for task, g in layered.groupby("task"):
        pooled = g[g["target"] == "__all__"]
        g = pooled if len(pooled) else g.groupby(["condition", "layer"], as_index=False)["estimate"].mean()
        curves.append(g.assign(task=task)[["task", "condition", "layer", "estimate"]])
    layers = (pd.concat(curves, ignore_index=True) if curves
              else pd.DataFrame(columns=["task", "condition", "layer", "estimate"]))
    layers.insert(0, "series", layers["task"] + " " + layers["condition"])
    asym = asymmetry[(asymmetry["metric"] == m) & (asymmetry["layer"] == PRIMARY_LAYER)] if len(asymmetry) else asymmetry
    contrast = asym[["task", "estimate", "ci_low", "ci_high", "p_value"]] if len(asym) else pd.DataFrame(
        columns=["task", "estimate", "ci_low", "ci_high", "p_value"])
    return {"relations": relations.reset_index(drop=True),
            "layers": layers.sort_values(["series", "layer"]).reset_index(drop=True),
            "asymmetry": contrast.reset_index(drop=True)}


def predictions(oof: pd.DataFrame) -> dict[ProbeKey, stats.Predictions]:
    """Every probe in an OOF table, keyed (task, condition, layer, target)."""
    groups = oof.groupby(["task", "condition", "layer", "target"], sort=True, observed=True)
    preds = {}
    for (t, c, layer, g), df in tqdm(groups, desc="stats: read", unit="probe", total=groups.ngroups):
        key = (str(t), str(c), int(layer), str(g))
        preds[key] = to_predictions(df, key)
    return preds


def run_bundle(preds: dict[ProbeKey, stats.Predictions], cfg: StatsSettings, relations: pd.DataFrame,
               null: dict[tuple, Null], chance: dict[tuple, dict[str, float]]
               ) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """Every table for one task family (a task and its controls): data in, tables out."""
    missing: list[str] = []
    tables = {
        "scores": score_rows(preds, cfg, null, chance, missing),
        "comparisons": comparison_rows(preds, cfg, missing),
        "meta_categories": meta_category_rows(preds, relations, cfg, chance),
        "asymmetry": asymmetry_rows(preds, cfg, missing),
        "selectivity": selectivity_rows(preds, cfg),
    }
    return tables, missing


def run(families: Iterable[pd.DataFrame], cfg: StatsSettings, relations: pd.DataFrame,
        null: pd.DataFrame | None = None, suite_scores: pd.DataFrame | None = None,
        ) -> tuple[dict[str, pd.DataFrame], list[str], dict[str, Any]]:
    """All tables from OOF predictions given one task family at a time (and the suite's scores,
    for its chance levels); returns the tables, what was missing, and a summary."""
    nulls = null_scores(null)
    chance = chance_levels(suite_scores)
    parts: dict[str, list[pd.DataFrame]] = {}
    missing: list[str] = []
    seen: dict[str, set[str]] = {"tasks": set(), "conditions": set()}
    n_probes = 0
    for oof in families:
        seen["tasks"] |= set(map(str, oof["task"].unique()))
        seen["conditions"] |= set(map(str, oof["condition"].unique()))
        preds = predictions(oof)
        del oof  # only the arrays are needed from here on
        n_probes += len(preds)
        tables, notes = run_bundle(preds, cfg, relations, nulls, chance)
        missing += notes
        for name, df in tables.items():
            parts.setdefault(name, []).append(df)
    missing += [f"asymmetry {t}: no OOF predictions for this task" for t in cfg.asymmetry_tasks
                if t not in seen["tasks"]]
    out = {name: pd.concat([d for d in dfs if not d.empty] or [dfs[0]], ignore_index=True)
           for name, dfs in parts.items()}
    out["asymmetry"] = _adjust(out["asymmetry"], ["layer", "metric"])  # one family across tasks
    summary = {"tasks": sorted(seen["tasks"]), "conditions": sorted(seen["conditions"]), "n_probes": n_probes}
    return {name: tidy(df) for name, df in out.items()}, missing, summary


def confirmatory_tables(files: list[Path], relations: pd.DataFrame, units: list[store.SuiteUnit],
                        cfg: ConfirmatorySettings) -> dict[str, pd.DataFrame]:
    """The pre-registered contrast (or why it is not computed), each encoder's own training
    effect where its rows exist, and the per-split table of the matched task."""
    paths = [f for f in files if f.stem == cfg.task]
    oof = pd.concat([pd.read_parquet(f) for f in paths], ignore_index=True) if paths else pd.DataFrame(
        columns=store.OOF_COLUMNS)
    rows = C.matched_rows(oof, relations, cfg.task)
    out, status = [], []
    for enc in (cfg.distributional, cfg.grounded):
        conds = sorted({c for c in rows["condition"] if C.twin(c, enc)})
        seeds = [c for c in conds if C.twin(c, enc) == "random"]
        if enc not in conds or not seeds:
            status.append(f"{enc}: {'no rows' if enc not in conds else 'no random-weight twin'}")
            continue
        out += C.training_effects(rows, enc, cfg.axes, cfg.ci)
        if len(seeds) < cfg.min_seeds:
            status.append(f"{enc}: {len(seeds)} random-weight seeds, the pre-registration asks "
                          f"for {cfg.min_seeds}")
    table = C.contrasts_table(out).assign(analysis="exploratory: one encoder's training effect")
    if not status:
        primary = C.contrasts_table(C.training_contrasts(rows, cfg.grounded, cfg.distributional,
                                                         cfg.axes, cfg.asymmetry, cfg.ci))
        primary["analysis"] = np.where(primary["name"] == "mean over axes", "primary (pre-registered)",
                                       "secondary (pre-registered)")
        second = primary["analysis"].str.startswith("secondary")  # Holm across the secondary four
        primary.loc[second, "p_holm"] = multipletests(primary.loc[second, "p_value"], method="holm")[1]
        primary = primary.sort_values("analysis", kind="stable")  # primary, then secondary
        table = pd.concat([primary, table], ignore_index=True)
    if "p_holm" not in table:
        table["p_holm"] = np.nan
    table["status"] = "; ".join(status) if status else "computed"
    info = {}
    for u in units:
        rep = u.dir / "report.json"
        t2 = json.loads(rep.read_text()).get("t2", {}) if rep.exists() else {}
        for key, val in t2.items():
            if key.startswith(f"{cfg.task}:"):
                for sp in val.get("splits", []):
                    info[(key.split(":", 1)[1], sp["split"])] = " / ".join(
                        sorted(w for p in sp["train_pairs"] for w in p))  # as test_pair
    splits = (rows.groupby(["condition", "axis", "repeat", "cluster"])["correct"]
              .agg(n="size", accuracy="mean").reset_index()
              .rename(columns={"repeat": "split", "cluster": "test_pair"}))
    splits.insert(3, "train_pair", [info.get((a, r), "") for a, r in zip(splits["axis"], splits["split"])])
    # exploratory: the matched task's horizontal items by VSR's recorded reference frame (the
    # field's codes as VSR records them; most rows have none)
    frame = relations.drop_duplicates("row_id").set_index("row_id")["reference_frame"]
    hz = rows[rows["axis"] == "horizontal"]
    frames = (hz.assign(reference_frame=hz["row_id"].map(frame).fillna("not recorded").astype(str))
              .groupby(["condition", "reference_frame"])["correct"].agg(n="size", accuracy="mean")
              .reset_index())
    return {"confirmatory": table, "matched_splits": splits, "reference_frames": frames}


GROUNDING_COLUMNS = ["analysis", "pair", "before", "after", "name", "estimate", "se", "ci_low",
                     "ci_high", "df", "p_value", "p_holm", "n_clusters", "n_rows", "status"]


def grounding_tables(files: list[Path], relations: pd.DataFrame,
                     matched: dict[str, tuple[str, str]], selected: Iterable[str],
                     cfg: GroundingSettings) -> dict[str, pd.DataFrame]:
    """The pre-registered grounding effect: per matched pair (after - before, and the same for
    their random-weight twins where both ran, exploratory), across pairs (G1: mean over axes,
    G2: the asymmetry; Holm across the two; per-axis effects secondary, Holm across them), and
    the cell table the across-pair model reads. A pair whose conditions did not run is a row
    saying so, never an error."""
    paths = [f for f in files if f.stem == cfg.task]
    oof = pd.concat([pd.read_parquet(f) for f in paths], ignore_index=True) if paths else pd.DataFrame(
        columns=store.OOF_COLUMNS)
    rows = C.matched_rows(oof, relations, cfg.task)
    have = set(rows["condition"])
    selected = set(selected)
    out, ran = [], {}

    def row(analysis: str, pair: str, before: str, after: str, status: str, c=None) -> dict:
        d = {"analysis": analysis, "pair": pair, "before": before, "after": after, "status": status}
        return d | ({k: v for k, v in c.as_dict().items() if k != "seed_variance"} if c else {})

    for name, (before, after) in matched.items():
        absent = [c for c in (before, after) if c not in have]
        if absent:
            why = ", ".join(f"{c} {'has no ' + cfg.task + ' rows' if c in selected else 'not in conditions.text'}"
                            for c in absent)
            out.append(row("per pair", name, before, after, f"not run: {why}"))
            continue
        ran[name] = (before, after)
        out += [row("per pair", name, before, after, "computed", c)
                for c in G.pair_effects(rows, before, after, cfg.axes, cfg.asymmetry, cfg.ci)]
        tb, ta = f"{before}_random", f"{after}_random"
        if {tb, ta} <= have:
            out += [row("per pair, random-weight twins (control)", name, tb, ta, "computed", c)
                    for c in G.pair_effects(rows, tb, ta, cfg.axes, cfg.asymmetry, cfg.ci)]
    cells = G.cell_differences(rows, ran, cfg.axes)
    if len(ran) < cfg.min_pairs:
        out.append(row("across pairs", "all", "", "", f"not computed: {len(ran)} matched pair(s) ran, "
                       f"the pre-registration asks for {cfg.min_pairs}"))
    else:
        try:
            across = G.across_pairs(cells, cfg.axes, cfg.asymmetry, cfg.ci)
        except ValueError as exc:
            out.append(row("across pairs", "all", "", "", f"not computed: {exc}"))
        else:
            hi, lo = cfg.asymmetry
            primary = {"mean over axes", f"{hi} - {lo}"}
            rows_a = [row("across pairs: " + ("co-primary (pre-registered)" if c.name in primary else
                                              "secondary (pre-registered)"), "all", "", "", "computed", c)
                      for c in across]
            for group in (True, False):
                part = [r for r in rows_a if (r["name"] in primary) == group]
                for r, p in zip(part, multipletests([r["p_value"] for r in part], method="holm")[1]):
                    r["p_holm"] = p
            out = sorted(rows_a, key=lambda r: r["name"] not in primary) + out
    table = pd.DataFrame(out).reindex(columns=GROUNDING_COLUMNS)
    return {"grounding": table, "grounding_cells": cells}


def controlled_splits(files: list[Path], units: list[store.SuiteUnit]) -> pd.DataFrame:
    """Exploratory: the controlled spatial set's probes (tasks ``C_*``) per held-out form pair,
    the unit the scores' noun-pair intervals hold fixed: accuracy and rows per condition, task,
    axis and split, with the split's training and test form pairs (from the units' reports)."""
    cols = ["task", "condition", "axis", "split", "train_pairs", "test_pair", "n", "accuracy"]
    paths = [f for f in files if f.stem.startswith("C_")]
    if not paths:
        return pd.DataFrame(columns=cols)
    oof = pd.concat([pd.read_parquet(f, columns=["task", "condition", "layer", "target", "repeat",
                                                 "y_true", "y_pred"]) for f in paths],
                    ignore_index=True)
    oof = oof[oof["layer"] == store.PRIMARY_LAYER]
    info = {}
    for u in units:
        rep = u.dir / "report.json"
        ctl = json.loads(rep.read_text()).get("controlled", {}) if rep.exists() else {}
        for key, val in ctl.items():
            for sp in val.get("splits", []):
                info[(*key.split(":", 1), sp["split"])] = (" + ".join(sp["train_pairs"]), sp["test_pair"])
    out = (oof.assign(correct=oof["y_true"] == oof["y_pred"])
           .groupby(["task", "condition", "target", "repeat"])["correct"]
           .agg(n="size", accuracy="mean").reset_index()
           .rename(columns={"target": "axis", "repeat": "split"}))
    names = [info.get((t, a, r), ("", "")) for t, a, r in zip(out["task"], out["axis"], out["split"])]
    out["train_pairs"] = [n[0] for n in names]
    out["test_pair"] = [n[1] for n in names]
    return out[cols]


def dimension_controls(units: list[store.SuiteUnit], cfg: StatsSettings) -> pd.DataFrame:
    """Exploratory: the dimension controls (`probe_suite.dimension`) per task, condition, axis,
    method and size: accuracy over every projection seed's OOF rows (their mean) with an
    interval over noun-pair groups, and the spread of the per-seed accuracies."""
    cols = ["task", "condition", "target", "method", "size", "estimate", "ci_low", "ci_high",
            "n", "n_groups", "n_seeds", "seed_sd", "ci_level", "ci_method"]
    paths = [u.dir / "controls" / "dimension.parquet" for u in units]
    frames = [pd.read_parquet(p) for p in paths if p.exists()]
    if not frames:
        return pd.DataFrame(columns=cols)
    df = pd.concat(frames, ignore_index=True)
    rows = []
    for (task, cond, target, method, size), part in df.groupby(
            ["task", "condition", "target", "method", "size"], sort=True):
        # each seed's repeats as repeats of one probe: the estimate is the mean over seeds
        part = part.assign(repeat=part["seed"] * 1_000_000 + part["repeat"],
                           row_id=part["row_id"].astype("category"),
                           group=part["group"].astype(str).astype("category"))
        key = (task, cond, -1, target)
        est = stats.bootstrap_ci(to_predictions(part, key), "accuracy", cfg.n_resamples,
                                 cfg.seed_for(task, target), cfg.level, cfg.ci_method)
        per_seed = (part["y_true"] == part["y_pred"]).groupby(part["seed"]).mean()
        rows.append({"task": task, "condition": cond, "target": target, "method": method,
                     "size": int(size), "estimate": est.estimate, "ci_low": est.ci_low,
                     "ci_high": est.ci_high, "n": est.n, "n_groups": est.n_groups,
                     "n_seeds": int(per_seed.size),
                     "seed_sd": float(per_seed.std(ddof=1)) if per_seed.size > 1 else np.nan,
                     "ci_level": cfg.level, "ci_method": cfg.ci_method})
    return pd.DataFrame(rows, columns=cols)


def code_lengths(units: list[store.SuiteUnit]) -> pd.DataFrame:
    """Exploratory: the online code lengths (`probe_suite.mdl`) of every unit, in bits."""
    paths = [u.dir / "controls" / "mdl.csv" for u in units]
    frames = [pd.read_csv(p) for p in paths if p.exists()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def main(argv: list[str] | None = None) -> int:
    args = stage_parser("stats", __doc__.splitlines()[0]).parse_args(argv)
    params = load_params(args.params)
    cfg = stage_settings(StatsSettings, params, "stats", args.params)
    units = store.suite_units(condition_sets(params, args.params).units())
    files = oof_files(units)
    null = read_nulls(units)
    if null is None:
        log.warning("no null.parquet in the suite's units: score p-values (label-permutation "
                    "null) left empty")
    row_ids = np.unique(np.concatenate([pq.read_table(f, columns=["row_id"]).column(0).unique()
                                        .to_numpy(zero_copy_only=False).astype(str) for f in files]))
    relations, unloaded = relation_table(row_ids)
    suite_scores = store.read_suite_scores(units)
    tables, missing, summary = run((read_oof(paths) for paths in bundles(files)), cfg, relations,
                                   null, suite_scores)
    missing += [f"meta-categories: VSR table not loaded for {m}" for m in unloaded]
    for note in missing:
        log.warning("missing: %s", note)
    with replace_dir(STATS_DIR) as out:
        for name, df in tables.items():
            write_csv(out / f"{name}.csv", df)
            log.info("wrote %s (%d rows)", STATS_DIR / f"{name}.csv", len(df))
        for name, df in plot_tables(tables["scores"], tables["asymmetry"], cfg).items():
            write_csv(out / PLOTS_DIR / f"{name}.csv", df)
        if cfg.confirmatory is not None:
            for name, df in confirmatory_tables(files, relations, units, cfg.confirmatory).items():
                write_csv(out / f"{name}.csv", df)
                log.info("wrote %s (%d rows)", STATS_DIR / f"{name}.csv", len(df))
        grounding = None
        if cfg.grounding is not None:
            sets = condition_sets(params, args.params)
            matched = {k: (m.before, m.after) for k, m in sets.matched.items()}
            for name, df in grounding_tables(files, relations, matched, sets.text, cfg.grounding).items():
                write_csv(out / f"{name}.csv", df)
                log.info("wrote %s (%d rows)", STATS_DIR / f"{name}.csv", len(df))
                grounding = df if name == "grounding" else grounding
        for name, df in (("dimension_controls", dimension_controls(units, cfg)),
                         ("code_lengths", code_lengths(units))):
            if len(df):
                write_csv(out / f"{name}.csv", df)
                log.info("wrote %s (%d rows)", STATS_DIR / f"{name}.csv", len(df))
        ctl = controlled_splits(files, units)
        if len(ctl):
            write_csv(out / "controlled_splits.csv", ctl)
            log.info("wrote %s (%d rows)", STATS_DIR / "controlled_splits.csv", len(ctl))
        write_json(out / "report.json", {
            "missing": missing, **summary, "null_scores": null is not None,
            "units": [u.name for u in units],
            "settings": cfg.model_dump(mode="json")})
    write_json(METRICS_PATH, headline(tables["scores"], tables["comparisons"], tables["asymmetry"],
                                      missing, cfg, grounding))
    return 0

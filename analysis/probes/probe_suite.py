"""Stage `probe_suite`: the sound probing design (T1 relation identity, T2 axis/polarity on
held-out words, T3 grounded truth), with nested-CV-tuned batched probes, baselines (bag of
words, random-weight encoders, CLIP zero-shot), control tasks, permutation nulls and layer-wise
probes. Writes out-of-fold predictions (``oof/{task}.parquet``, the contract in ARCHITECTURE.md)
and point-estimate scores (``scores.csv``); the `stats` stage adds CIs and paired tests.

Every fit (inner and outer) standardizes its features with the mean and sd of its own training
rows, and the bag-of-words probes keep the n-grams in ``bow.min_df`` of their training rows
(`features.fold_scale`; the global standardization here only conditions the solver).
The stage runs one *unit* at a time (``--unit NAME``, one DVC stage each): a text condition
(T1, T2, caption-only T3, its layers), ``bow``, or an image/text pair of ``conditions.pairs``
(grounded T3); each writes ``results/probes/suite/<unit>/`` and `stats` reads them together.
Grounded-truth rows are the same for every unit: those with a usable image in the images
manifest (`store.t3_row_mask` on ``results/images/unusable.csv``), so units can be compared row for row.
Settings: `analysis/probes/settings.py`; tasks and folds: `tasks.py`, `folds.py`; the nested CV
and the solver: `nested_cv.py`, `engine.py`. This module loads (`SuiteData`), orchestrates
(`run_suite`) and writes (`main`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from analysis.common import store
from analysis.common.cli import note_runtime_parts, stage_parser
from analysis.common.io import replace_dir, write_csv, write_json, write_parquet
from analysis.common.errors import UserError
from analysis.common.params import CONDITION_NAME, condition_sets, load_params, stage_settings
from analysis.common.store import OOF_COLUMNS, TIDY_COLUMNS
from analysis.probes.controls import mdl_table, pca_fold_problems, random_projection
from analysis.probes.features import bow_features, common_width, cosine, interaction, standardize
from analysis.probes.nested_cv import engine_options, run_per_fold, run_problems, zeroshot_oof
from analysis.probes.settings import SuiteSettings
from analysis.probes.tasks import (Problem, controlled_problems, matched_problems, t1_problems,
                                   t2_problems, t3_holdout_problems, t3_problems)

log = logging.getLogger("probe_suite")

SUITE_DIR = store.SUITE_DIR


@dataclass(frozen=True)
class Pair:
    """A named image/text pair (``conditions.pairs``) for the grounded truth probes."""

    name: str
    text: str
    image: str
    text_view: str | None = None
    image_view: str | None = None
    image_only: bool = True


# --------------------------------------------------------------------------- inputs


@dataclass
class SuiteData:
    """Every read of the stage: VSR tables and embeddings, aligned to the table's rows."""

    embed_root: Path = store.EMBED_DIR
    vsr_root: Path = store.VSR_DIR
    unusable_path: Path = store.IMAGE_UNUSABLE
    templates_root: Path = store.TEMPLATES_DIR

    def table(self, variant: str, split: str) -> pd.DataFrame:
        if variant == "templates":
            path = self.templates_root / f"{split}.parquet"
            if not path.exists():
                raise FileNotFoundError(f"{path} not found: run the 'templates' stage first "
                                        "(dvc repro templates)")
            return pd.read_parquet(path)
        return store.load_split(variant, split, self.vsr_root)

    def present(self, variant: str, split: str) -> list[str]:
        return store.available_conditions(variant, split, self.embed_root)

    def vectors(self, condition: str, variant: str, split: str, view: str | None,
                table: pd.DataFrame, layered: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(vectors in the table's row order, which table rows they cover)."""
        emb = store.load_embeddings(condition, variant, split, view=view, root=self.embed_root)
        return store.in_table_order(emb, table, f"{condition} {variant}/{split}", layered=layered)

    def t3_rows(self, table: pd.DataFrame) -> np.ndarray:
        """Grounded-truth rows of ``table`` (`store.t3_row_mask`): with a usable image."""
        if not self.unusable_path.exists():
            raise FileNotFoundError(f"{self.unusable_path} not found: run the 'images' stage "
                                    "first (dvc repro images)")
        return store.t3_row_mask(table, pd.read_csv(self.unusable_path, dtype=str))

    def has_layers(self, condition: str, variant: str, split: str) -> bool:
        return store.has_view(condition, variant, split, store.LAYERS_VIEW, self.embed_root)


@dataclass
class Collected:
    """What the probes produced so far: OOF tables, score tables, null tables, timings."""

    oofs: list[pd.DataFrame] = field(default_factory=list)
    scores: list[pd.DataFrame] = field(default_factory=list)
    nulls: list[pd.DataFrame] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    dimension: list[pd.DataFrame] = field(default_factory=list)  # reduced-width OOF rows
    dimension_scores: list[pd.DataFrame] = field(default_factory=list)
    mdl: list[pd.DataFrame] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def add(self, result: tuple) -> None:
        self.oofs.append(result[0])
        self.scores.append(result[1])
        if len(result) > 2 and len(result[2]):
            self.nulls.append(result[2])

    def time(self, key: str, start: float) -> float:
        self.timings[key] = round(time.perf_counter() - start, 1)
        return self.timings[key]


def _view(cfg: SuiteSettings, condition: str) -> str | None:
    return cfg.views.get(condition)


# --------------------------------------------------------------------------- task families


def probe_text(c: Collected, feats: dict[str, np.ndarray], t1: list[Problem], t2: list[Problem],
               t3: list[Problem], t3_idx: np.ndarray, row_ids: np.ndarray, t3_ids: np.ndarray,
               cfg: SuiteSettings, eng: dict, permute: list[str],
               bow_occurs: np.ndarray | None = None) -> None:
    """T1, T2 and caption-only T3 on every text feature set (the conditions and bag of words,
    whose n-gram occurrences ``bow_occurs`` choose each fit's vocabulary); the control task
    only for `t1.control_conditions`, caption-only T3 only for `t3.text_conditions` and bag
    of words."""
    t3_text = cfg.t3.text_conditions
    ctl = cfg.t1.control_conditions
    for cond, X in feats.items():
        t1_c = t1 if ctl is None or cond in ctl else [p for p in t1 if not p.task.startswith("T1_control")]
        t3_c = t3 if t3_text is None or cond in t3_text or cond == "bow" else []
        occ = bow_occurs if cond == "bow" else None
        for name, probs, rows, ids in (("T1", t1_c, slice(None), row_ids),
                                       ("T2", t2, slice(None), row_ids),
                                       ("T3", t3_c, t3_idx, t3_ids)):
            if not probs:
                continue
            start = time.perf_counter()
            vocab = {"occurs": None if occ is None else occ[rows], "min_df": cfg.bow.min_df}
            c.add(run_problems(X[rows], probs, ids, cond, -1, cfg.for_t1() if name == "T1" else cfg,
                               eng, f"{cond} {name}", permute,
                               **vocab))
            log.info("%s: %s in %.0fs", cond, name, c.time(f"{cond}:{name}", start))


def probe_controls(c: Collected, cond: str, X: np.ndarray, problems: list[Problem],
                   ids: np.ndarray, cfg: SuiteSettings, eng: dict, where: str,
                   text: bool = True) -> None:
    """The dimension controls (`DimensionSettings`, text conditions only: a bag of words has
    no fixed width) and the online code length (`MdlSettings`) of ``problems`` on ``X``."""
    start = time.perf_counter()
    dim, mdl = cfg.dimension, cfg.mdl
    if dim is not None and text:
        probs = [p for p in problems if p.task in dim.tasks]
        sizes = []
        for size in dim.sizes:
            if probs and size >= X.shape[1]:
                c.skipped.append(f"{cond}: width {X.shape[1]} <= {size}: no reduction to {size}")
            else:
                sizes.append(size)
        runs: list[tuple[str, int, int, pd.DataFrame, pd.DataFrame]] = []
        if "random" in dim.methods:
            for size in sizes:
                for seed in range(dim.seeds):
                    oof, sc, _ = run_problems(random_projection(X, size, seed), probs, ids,
                                              cond, -1, cfg, eng, progress=False)
                    runs.append(("random", size, seed, oof, sc))
        if "pca" in dim.methods:
            for p in probs:
                fewest = min(len(f.train) for f in p.folds)
                fit = [k for k in sizes if k <= fewest]
                c.skipped += [f"{cond}: {p.task} {p.target} trains on {fewest} rows: no PCA to {k}"
                              for k in sizes if k > fewest]
                if not fit:
                    continue
                # one PCA per fold at the largest size serves every smaller one
                for size, sets in pca_fold_problems(X, p, fit).items():
                    oof, sc = run_per_fold(sets, p, ids, cond, -1, cfg, eng)
                    runs.append(("pca", size, 0, oof, sc))
        for method, size, seed, oof, sc in sorted(runs, key=lambda r: (r[1], r[0], r[2])):
            tag = {"method": method, "size": size, "seed": seed}
            c.dimension.append(oof.assign(**tag))
            c.dimension_scores.append(sc.assign(**tag))
    if mdl is not None:
        probs = [p for p in problems if p.task in mdl.tasks]
        if probs:
            c.mdl.append(mdl_table(X, probs, cond, mdl.C, mdl.seed, by_form=mdl.by_form,
                                   max_orders=mdl.max_orders))
    if (dim is not None and text) or mdl is not None:
        log.info("%s: controls on %s in %.0fs", cond, where,
                 c.time(f"{cond}:controls:{where}", start))


def probe_controlled(c: Collected, data: SuiteData, cfg: SuiteSettings, eng: dict,
                     text: list[str], bow: bool, report: dict) -> None:
    """The controlled spatial set's probes (`tasks.controlled_problems`) on each text condition
    and, with ``bow``, its own bag of words; its rows are the set's, not VSR's."""
    if cfg.controlled is None or not (text or bow):
        return
    variant, split = store.parse_split_key(store.SPATIAL_KEY)
    try:
        table = data.table(variant, split)
    except FileNotFoundError as exc:
        raise UserError(f"{exc}; the controlled probes (probe_suite.controlled) need it: set "
                        "templates.spatial and run the templates stage, or set "
                        "probe_suite.controlled: null") from None
    probs = controlled_problems(table, cfg.controlled, cfg.cv)
    ids = table["row_id"].to_numpy()
    report["controlled"] = {f"{p.task}:{p.target}": p.info for p in probs}
    present = data.present(variant, split)
    lacking = [x for x in text if x not in present]
    if lacking:
        raise UserError(f"no embeddings of {lacking} on {store.SPATIAL_KEY} in {data.embed_root}: "
                        f"add {store.SPATIAL_KEY} to embed.splits and re-run their embed stages, "
                        "or set probe_suite.controlled: null")
    sets: list[tuple[str, np.ndarray, np.ndarray | None]] = []
    for cond in text:
        X, covered = data.vectors(cond, variant, split, _view(cfg, cond), table)
        if not covered.all():
            raise ValueError(f"text condition {cond} lacks {int((~covered).sum())} rows of "
                             f"{store.SPATIAL_KEY}: re-run its embed stage")
        sets.append((cond, standardize(X), None))
    if bow and cfg.bow.enabled:
        counts, occurs = bow_features(table["caption"].tolist(), cfg.bow.min_df)
        sets.append(("bow", standardize(counts), occurs))
    for cond, X, occurs in sets:
        start = time.perf_counter()
        c.add(run_problems(X, probs, ids, cond, -1, cfg, eng, f"{cond} controlled", None,
                           occurs=occurs, min_df=cfg.bow.min_df))
        log.info("%s: controlled set in %.0fs", cond, c.time(f"{cond}:controlled", start))
        probe_controls(c, cond, X, probs, ids, cfg, eng, store.SPATIAL_KEY,
                       text=occurs is None)


def probe_pairs(c: Collected, pairs: list[Pair], pair_feats: dict, t3: list[Problem],
                t3_idx: np.ndarray, t3_ids: np.ndarray, cfg: SuiteSettings, eng: dict,
                permute: list[str]) -> None:
    """Grounded T3 per image/text pair (`pair_sets`)."""
    for p in pairs:
        start = time.perf_counter()
        i, t = (a[t3_idx] for a in pair_feats[p.name])
        sets, zs = pair_sets(p, i, t, cfg.cv.seed)
        for cond, X in sets:
            c.add(run_problems(standardize(X), t3, t3_ids, cond, -1, cfg, eng, f"{cond} T3", permute))
        if zs is not None:
            c.add(zeroshot_oof(zs, t3, t3_ids, f"{p.name}_zeroshot"))
        c.time(p.name, start)


def pair_sets(p: Pair, i: np.ndarray, t: np.ndarray, seed: int
              ) -> tuple[list[tuple[str, np.ndarray]], np.ndarray | None]:
    """A pair's feature sets: image only (unless ``image_only`` is false), concatenation,
    interaction; and the zero-shot cosine where image and text share a space (same width).
    Where the widths differ (SBERT text, CLIP image) the interaction's wider side is first
    mapped to the narrower width by a fixed Gaussian random projection (`common_width`:
    data-independent, so no row informs another's features); such a pair has no zero-shot."""
    sets = [(p.image, i)] if p.image_only else []
    sets += [(f"{p.name}_concat", np.hstack([i, t])),
             (f"{p.name}_interaction", interaction(*common_width(i, t, seed)))]
    if i.shape[1] != t.shape[1]:
        log.info("%s: widths %d (image) and %d (text) differ: no zero-shot score", p.name,
                 i.shape[1], t.shape[1])
        return sets, None
    return sets, cosine(i, t)


def holdout_features(data: SuiteData, cfg: SuiteSettings, text: list[str], pairs: list[Pair],
                     variant: str, tabs: list[pd.DataFrame]) -> dict:
    """name -> [(features tuple, covered) for train, test]; text conditions give (X,), pairs
    (image, text). Conditions lacking either split are left out with a warning."""
    out = {}
    specs = [(c, [(c, _view(cfg, c))]) for c in text]
    specs += [(p.name, [(p.image, p.image_view), (p.text, p.text_view)]) for p in pairs]
    for name, parts in specs:
        try:
            per_split = []
            for s, tab in zip(("train", "test"), tabs):
                got = [data.vectors(c, variant, s, v, tab) for c, v in parts]
                per_split.append((tuple(g[0] for g in got),
                                  np.logical_and.reduce([g[1] for g in got])))
        except FileNotFoundError as e:
            log.warning("T3 holdout on %s: %s left out (%s)", variant, name, e)
            continue
        out[name] = per_split
    return out


def probe_holdout(c: Collected, data: SuiteData, cfg: SuiteSettings, eng: dict, text: list[str],
                  pairs: list[Pair]) -> None:
    """T3 trained on a variant's train split and tested on its test split."""
    t3_text = cfg.t3.text_conditions
    for hv in cfg.t3.holdout:
        start = time.perf_counter()
        tabs = [data.table(hv, s) for s in ("train", "test")]
        cond_text = [x for x in text if t3_text is None or x in t3_text or x == "bow"]
        if not cond_text and not pairs:
            return
        sets = holdout_features(data, cfg, cond_text, pairs, hv, tabs)
        if not sets:
            log.warning("T3 holdout on %s: no condition has train and test embeddings", hv)
            continue
        keep = [np.logical_and.reduce([v[k][1] for v in sets.values()]) for k in range(2)]
        images = [data.t3_rows(tab) for tab in tabs]
        short = [f"{name} {s}: {int((images[k] & ~v[k][1]).sum())} rows" for name, v in sets.items()
                 for k, s in enumerate(("train", "test")) if (images[k] & ~v[k][1]).any()]
        if short:
            raise ValueError(f"T3 holdout on {hv}: embeddings lack rows whose image is usable "
                             f"({'; '.join(short)}): re-run their embed stages")
        keep = [k & m for k, m in zip(keep, images)]
        tr_k, te_k = (tab[m].reset_index(drop=True) for tab, m in zip(tabs, keep))
        probs = t3_holdout_problems(tr_k, te_k, cfg.t3, cfg.cv, f"T3_holdout_{hv}")
        ids = np.r_[tr_k["row_id"].to_numpy(), te_k["row_id"].to_numpy()]
        n_tr = len(tr_k)
        for name, ((f_tr, _), (f_te, _)) in sets.items():
            stack = [np.vstack([a[keep[0]], b[keep[1]]]) for a, b in zip(f_tr, f_te)]
            if len(stack) == 1:
                conds = [(name, stack[0])]
            else:
                conds, zs = pair_sets(next(p for p in pairs if p.name == name), *stack,
                                      cfg.cv.seed)
                if zs is not None:
                    c.add(zeroshot_oof(zs, probs, ids, f"{name}_zeroshot"))
            for cond, X in conds:
                c.add(run_problems(standardize(X, np.arange(n_tr)), probs, ids, cond, -1, cfg,
                                   eng, f"{cond} T3 {hv} train->test"))
        c.time(f"T3_holdout_{hv}", start)


def probe_layers(c: Collected, data: SuiteData, cfg: SuiteSettings, eng: dict, table: pd.DataFrame,
                 text: list[str], pairs: list[Pair], pair_feats: dict, t3_table: pd.DataFrame,
                 t3_idx: np.ndarray, t3_ids: np.ndarray) -> list[str]:
    """Layer-wise probes with the cheaper CV of `layers`: T1/T2 on every hidden layer of the
    text conditions, and T3 on [image-tower layer; caption text embedding] per layer. Returns
    the conditions probed."""
    lay = cfg.layers
    lay_cfg = cfg.for_layers()
    variant, split = cfg.variant, cfg.split
    row_ids = table["row_id"].to_numpy()
    lay_conds = [x for x in text if lay.conditions is None or x in lay.conditions]
    lay_text = [x for x in lay_conds if data.has_layers(x, variant, split)]
    if lay.tasks and lay_text:
        probs = []
        if "T1" in lay.tasks:
            probs += t1_problems(table, cfg.t1, lay_cfg.cv,
                                 ovr="derived" if cfg.t1.ovr == "derived" else False)
        if {"T2_axis", "T2_polarity"} & set(lay.tasks):
            probs += [p for p in t2_problems(table, lay_cfg.t2, lay_cfg.cv) if p.task in lay.tasks]
        if "M_polarity" in lay.tasks and cfg.matched is not None:  # its own splits (rotations)
            probs += matched_problems(table, cfg.matched, lay_cfg.cv)
        for cond in lay_text:
            L, _ = data.vectors(cond, variant, split, store.LAYERS_VIEW, table, layered=True)
            start = time.perf_counter()
            for layer in tqdm(range(L.shape[0]), desc=f"{cond} layers", leave=False, disable=None):
                c.add(run_problems(standardize(L[layer]), probs, row_ids, cond, layer, lay_cfg,
                                   eng, f"{cond} layer {layer}"))
            c.time(f"{cond}_layers", start)
    lay_pairs = [p for p in pairs if "T3" in lay.tasks
                 and (lay.conditions is None or p.image in lay.conditions)
                 and data.has_layers(p.image, variant, split)]
    if lay_pairs:
        t3_lay = t3_problems(t3_table, cfg.t3, lay_cfg.cv)
        for p in lay_pairs:
            L, _ = data.vectors(p.image, variant, split, store.LAYERS_VIEW, table, layered=True)
            t = standardize(pair_feats[p.name][1][t3_idx])
            start = time.perf_counter()
            for layer in tqdm(range(L.shape[0]), desc=f"{p.image} layers", leave=False,
                              disable=None):
                X = np.hstack([standardize(L[layer][t3_idx]), t])
                c.add(run_problems(X, t3_lay, t3_ids, f"{p.name}_concat", layer, lay_cfg, eng,
                                   f"{p.name} image layer {layer}"))
            c.time(f"{p.image}_layers", start)
    return lay_text + [p.image for p in lay_pairs]


# --------------------------------------------------------------------------- the suite


def run_suite(cfg: SuiteSettings, data: SuiteData | None = None, text: list[str] | tuple = (),
              pairs: list[Pair] | tuple = (), bow: bool = False):
    """Every task on the given units: text conditions ``text``, image/text ``pairs`` and, with
    ``bow``, bag of words (``cfg.bow``); returns (oof by task, scores, nulls, report). A unit
    without embeddings on the suite's split is an error naming it."""
    data = data or SuiteData()
    eng = engine_options(cfg.engine)
    cv = cfg.cv
    variant, split = cfg.variant, cfg.split
    table = data.table(variant, split)
    row_ids = table["row_id"].to_numpy()
    present = data.present(variant, split)
    report: dict = {"variant": variant, "split": split, "rows": len(table)}
    text, pairs = list(text), list(pairs)
    missing = [x for x in [*text, *(c for p in pairs for c in (p.text, p.image))] if x not in present]
    if missing:
        raise UserError(f"no embeddings of {sorted(set(missing))} on {variant}/{split} in "
                        f"{data.embed_root}: run their embed stages first (dvc repro embed)")
    permute = list(cfg.permutation.targets) if cfg.permutation.n > 0 else []

    feats: dict[str, np.ndarray] = {}
    for cond in text:
        X, covered = data.vectors(cond, variant, split, _view(cfg, cond), table)
        if not covered.all():
            raise ValueError(f"text condition {cond} lacks {int((~covered).sum())} rows of "
                             f"{variant}/{split}, e.g. {row_ids[~covered][:3].tolist()}")
        feats[cond] = standardize(X)
    bow_occurs = None
    if bow and cfg.bow.enabled:
        counts, bow_occurs = bow_features(table["caption"].tolist(), cfg.bow.min_df)
        feats["bow"] = standardize(counts)

    only = None  # every task, except on an extra random seed's unit (`seed_settings`)
    if text and cfg.seed_tasks is not None and all(store.is_extra_seed(x) for x in text):
        cfg, only = seed_settings(cfg), cfg.seed_tasks
        report["seed_tasks"] = list(only)
        permute = []
    t1_cv = cfg.for_t1().cv
    t1 = t1_problems(table, cfg.t1, t1_cv, ovr=cfg.t1.ovr) if _runs(only, "T1") else []
    if cfg.t1.control and t1:
        t1 += t1_problems(table, cfg.t1, t1_cv, control_seed=cfg.t1.control_seed,
                          ovr=cfg.t1.control_ovr)
    t2 = t2_problems(table, cfg.t2, cv) if _runs(only, "T2") else []
    if cfg.matched is not None and _runs(only, "M_polarity"):  # pre-registered, beside T2
        t2 += matched_problems(table, cfg.matched, cv)
    if t1:
        report["t1_unparsed_noun_pairs"] = t1[0].info["unparsed_noun_pairs"]
    report["t2"] = {f"{p.task}:{p.target}": p.info for p in t2}

    # T3 rows: those with a usable image, the same for every unit (compared row for row)
    pair_feats = {}
    t3_mask = data.t3_rows(table)
    for p in pairs:
        i, ci = data.vectors(p.image, variant, split, p.image_view, table)
        t, ct = data.vectors(p.text, variant, split, p.text_view, table)
        lack = t3_mask & ~(ci & ct)
        if lack.any():
            raise ValueError(f"pair {p.name}: {p.image}/{p.text} embeddings lack {int(lack.sum())} "
                             f"rows of {variant}/{split} whose image is usable, e.g. "
                             f"{row_ids[lack][:3].tolist()}: re-run their embed stages")
        pair_feats[p.name] = (i, t)
    report["t3_rows_excluded_missing_image"] = int((~t3_mask).sum())
    t3_table = table[t3_mask].reset_index(drop=True)
    t3_idx = np.flatnonzero(t3_mask)
    t3 = t3_problems(t3_table, cfg.t3, cv) if _runs(only, "T3") or pairs else []
    t3_ids = t3_table["row_id"].to_numpy()
    if t3 and (pairs or (bow and cfg.bow.enabled) or any(
            cfg.t3.text_conditions is None or x in cfg.t3.text_conditions for x in text)):
        report["t3_grouping"] = t3[0].info

    c = Collected()
    probe_text(c, feats, t1, t2, t3, t3_idx, row_ids, t3_ids, cfg, eng, permute, bow_occurs)
    for cond, X in feats.items():
        probe_controls(c, cond, X, t2, row_ids, cfg, eng, f"{variant}/{split}",
                       text=cond != "bow")
    probe_pairs(c, pairs, pair_feats, t3, t3_idx, t3_ids, cfg, eng, permute)
    probe_controlled(c, data, cfg, eng, text, bow, report)
    probe_holdout(c, data, cfg, eng, text, pairs)
    report["layerwise"] = probe_layers(c, data, cfg, eng, table, text, pairs, pair_feats,
                                       t3_table, t3_idx, t3_ids)
    log.info("probe suite parts (seconds): %s", c.timings)
    note_runtime_parts(c.timings)  # to results/runtimes/probe_suite.json, not the hashed outputs

    report["controls_skipped"] = c.skipped
    controls = {name: pd.concat(parts, ignore_index=True) for name, parts in
                (("dimension", c.dimension), ("dimension_scores", c.dimension_scores),
                 ("mdl", c.mdl)) if parts}
    report["controls"] = controls
    if not c.scores:
        return {}, pd.DataFrame(columns=TIDY_COLUMNS), pd.DataFrame(), report
    oof = pd.concat(c.oofs, ignore_index=True)
    sc = pd.concat(c.scores, ignore_index=True)
    for col in ("ci_low", "ci_high", "p_value", "p_holm", "p_bh"):
        if col not in sc:
            sc[col] = np.nan
    sc = sc[TIDY_COLUMNS + [x for x in sc.columns if x not in TIDY_COLUMNS]]
    null = pd.concat(c.nulls, ignore_index=True) if c.nulls else pd.DataFrame()
    probes = sc.drop_duplicates(["task", "condition", "layer", "target"])
    report["probes_with_unconverged_folds"] = int((probes["unconverged_folds"].fillna(0) > 0).sum())
    return {t: g.reset_index(drop=True)[OOF_COLUMNS] for t, g in oof.groupby("task")}, sc, null, report


def _runs(only: tuple[str, ...] | None, family: str) -> bool:
    """Whether a task family ("T1", "T2", "T3", "M_polarity") runs: every one, unless ``only``
    (an extra seed's `seed_tasks`) lists the tasks."""
    return only is None or any(t == family or t.startswith(family + "_") for t in only)


def seed_settings(cfg: SuiteSettings) -> SuiteSettings:
    """The settings of an extra random seed's unit: only ``seed_tasks`` (the controlled set's
    targets among them), no dimension controls, code lengths, caption-only or held-out T3,
    permutation nulls or layers."""
    tasks = cfg.seed_tasks
    ctl = cfg.controlled
    if ctl is not None:
        targets = tuple(t for t in ctl.targets if f"C_{t}" in tasks)
        ctl = ctl.model_copy(update={"targets": targets}) if targets else None
    return cfg.model_copy(update={
        "controlled": ctl, "dimension": None, "mdl": None,
        "t3": cfg.t3.model_copy(update={"holdout": (), "text_conditions": ()}),
        "permutation": cfg.permutation.model_copy(update={"n": 0}),
        "layers": cfg.layers.model_copy(update={"tasks": ()})})


def unit_args(unit: str, params: dict, path) -> dict:
    """``run_suite``'s arguments for ``--unit NAME``: ``bow``, a pair of ``conditions.pairs``
    (the only part of ``conditions`` a unit reads), else a text condition."""
    if unit == "bow":
        return {"bow": True}
    sets = condition_sets(params, path)
    if unit in sets.pairs:
        p = sets.pairs[unit]
        return {"pairs": [Pair(unit, p.text, p.image, p.text_view, p.image_view, p.image_only)]}
    if store.is_image_condition(unit) or not CONDITION_NAME.match(unit):
        raise UserError(f"--unit {unit!r}: not a text condition, 'bow' or a pair of "
                        f"conditions.pairs {list(sets.pairs)} in {path}")
    return {"text": [unit]}


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("probe_suite", __doc__.splitlines()[0])
    parser.add_argument("--unit", required=True,
                        help="a text condition, 'bow', or a pair of conditions.pairs")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    cfg = stage_settings(SuiteSettings, params, "probe_suite", args.params)
    unit = store.SuiteUnit(args.unit, SUITE_DIR)
    oof, scores, null, report = run_suite(cfg, **unit_args(args.unit, params, args.params))
    controls = report.pop("controls", {})
    report["unit"] = args.unit
    with replace_dir(unit.dir) as out:  # the unit's whole folder at once: no stale OOF or null file
        for task, df in oof.items():
            write_parquet(out / "oof" / f"{task}.parquet", df)
        write_csv(out / unit.scores_path.name, scores)
        if len(null):
            write_parquet(out / unit.null_path.name, null)
        for name, df in controls.items():  # dimension controls and code lengths (exploratory)
            if name == "dimension":
                write_parquet(out / "controls" / "dimension.parquet", df)
            else:
                write_csv(out / "controls" / f"{name}.csv", df)
        write_json(out / "report.json", report)
    log.info("probe suite %s: %d score rows, %d OOF rows over %d tasks", args.unit, len(scores),
             sum(len(d) for d in oof.values()), len(oof))
    return 0

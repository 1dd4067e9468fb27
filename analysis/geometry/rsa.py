"""Stage `rsa`: how the encoders organize their spaces, independent of labels.

For each stimulus set (every split of the VSR variant, and the controlled template set) and every
condition whose embeddings exist: item RDMs compared across conditions (Spearman, tau-a, linear
CKA) and with item-level models (noun overlap, same relation); relation RDMs of centroids compared
with hypothesis model RDMs (axis, polarity, VSR meta-category; lexical/noun overlap partialled
out); the vertical-vs-horizontal separation; argument-order sensitivity (template set); layer x
layer CKA maps (debiased linear CKA); for every selected matched before/after-grounding pair
(``conditions.matched``), layer by layer, how far image-text training moved the text tower from
its initialization, next to the random-weight twin (`matched_on_stimuli`). Every estimate has an
interval over stimuli from replicates that never duplicate a stimulus
(`analysis/geometry/resampling.py`): VSR captions subsample half of the noun-pair/caption groups
without replacement; the template set, whose noun pairs cross 10 nouns, drops one noun at a time
(jackknife). One set of replicates is shared by all conditions and analyses of a stimulus set.
p-values carry Holm and BH adjustments per table x stimulus set x metric. Tables go to
``results/rsa/`` (``summary.json``: what ran, what did not and why), RDMs for figures to
``results/rsa/rdms/``. The analyses are `analysis/geometry/comparisons.py`; this module loads
(`load_stimuli`), runs them (`run`) and writes (`write`, `main`).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from pydantic import field_validator

from analysis.common import store
from analysis.common.cli import stage_parser
from analysis.common.io import write_csv, write_json, write_npy
from analysis.common.params import (ConditionSets, Settings, condition_sets, load_params,
                                   stage_settings)
from analysis.common.store import PRIMARY_VIEW, TEMPLATES_KEY
from analysis.data.groups import noun_pair_caption_groups, row_nouns
from analysis.data.relations import load_meta_categories
from analysis.geometry import rdm as geo
from analysis.geometry.comparisons import (COLUMNS, EXTRA_COLUMNS, FAMILY, MATCHED_COLUMNS,
                                           NOISE_CEILING, NOTES, Stimuli, adjust_p, cka_analysis,
                                           converse_analysis, evenly_spaced, figure_items,
                                           item_analysis, layer_cka, matched_layer_analysis,
                                           order_analysis, relation_analysis, relation_codes)
from analysis.geometry.resampling import Resamples, group_subsamples, noun_jackknife

log = logging.getLogger("rsa")

RSA_DIR = store.RSA_DIR


class RsaSettings(Settings):
    """Section `rsa`."""

    extra_seeds: bool = False
    """also the random twins' extra seeds (``<name>_random_s<N>``): every pair of conditions is
    compared, so each adds a row and a column of comparisons; by default seed 0 only"""

    variant: str
    """VSR captions: each split of this variant separately"""
    splits: tuple[str, ...]
    templates: bool = True
    """also the template set (text conditions only)"""
    converse: bool = True
    """also the controlled spatial set's swap-vs-converse distances (`converse_analysis`; text
    conditions embedded on templates/spatial)"""
    metrics: tuple[str, ...]
    """item and relation RDM distances (cosine, correlation)"""
    n_boot: int
    """subsamples per VSR split (the template set's noun jackknife has one replicate per noun)"""
    subsample_fraction: float = 0.5
    """share of the resampling groups each subsample keeps (0.5: half-sampling)"""
    ci: float
    seed: int
    n_jobs: int = 1
    """threads for the bootstrap (numpy releases the GIL)"""
    max_pairs: int | None = None
    """item-RDM pairs sampled for the bootstrap CIs (all when fewer; null: all)"""
    tau_bins: int
    """rank bins per continuous RDM in the tau-a bootstrap"""
    cka_max_items: int
    """the CKA interval holds one n x n float32 Gram matrix per condition"""
    layer_cka_max_items: int
    """items (evenly spaced) for the layer x layer CKA maps and the matched pairs' layer geometry"""
    matched_layers: bool = True
    """for every matched pair of ``conditions.matched`` whose two conditions are selected: CKA
    and item-RDM Spearman between before[l] and after[l] (and before[l] vs its random twin
    ``<before>_random``) for every layer of the ``layers`` view, on the rsa.layer_cka_max_items
    items, with intervals (results/rsa/matched_layers.csv); false: every pair reported as not run"""
    relation_min_count: int
    """VSR-caption relation centroids need this many captions"""
    figure_items: int
    """items (evenly spaced) kept in results/rsa/rdms/*.npy for figures"""
    spatial: dict[str, tuple[str, str]]
    """relation -> [axis, polarity]; unlisted relations are axis "other\""""
    synonyms: tuple[tuple[str, str], ...] = ()
    """relation pairs read as (near-)synonyms, for the order-sensitivity baseline"""

    @field_validator("subsample_fraction")
    @classmethod
    def _a_proper_subset(cls, v: float) -> float:
        if not 0 < v < 1:
            raise ValueError(f"must be between 0 and 1 (exclusive), got {v}")
        return v


# ----------------------------------------------------------------------------- inputs


def load_stimuli(key: str, conditions: list[str], embed_root: Path = store.EMBED_DIR,
                 vsr_root: Path = store.VSR_DIR) -> tuple[Stimuli | None, dict]:
    """Table + every available condition's primary view (and ``layers`` where present), on the
    rows every condition has."""
    variant, split = store.parse_split_key(key)
    table = store.load_split(variant, split, vsr_root)
    embs, layers, missing = {}, {}, []
    for cond in conditions:
        try:
            embs[cond] = store.load_embeddings(cond, variant, split, root=embed_root)
        except FileNotFoundError:
            missing.append(cond)
            continue
        if store.LAYERS_VIEW in embs[cond].meta.get("views", []):
            layers[cond] = store.load_embeddings(cond, variant, split, view=store.LAYERS_VIEW,
                                                 root=embed_root)
    info: dict[str, Any] = {"missing": missing, "present": list(embs),
                            "views": {c: embs[c].meta.get("primary") or PRIMARY_VIEW.get(c) for c in embs}}
    if missing:
        log.warning("%s: no embeddings for %s (%s): left out", key, missing,
                    "text-only set" if key in store.TEMPLATE_KEYS else "not embedded")
    if len(embs) < 2:
        log.warning("%s: %d condition(s) with embeddings: nothing to compare", key, len(embs))
        return None, info
    aligned = {c: store.in_table_order(e, table, f"embeddings of {c} on {key}")
               for c, e in embs.items()}
    keep = np.logical_and.reduce([cov for _, cov in aligned.values()])
    dropped = {c: int((~cov).sum()) for c, (_, cov) in aligned.items()}
    sub = table[keep].reset_index(drop=True)
    X = {c: np.asarray(x, dtype=np.float32)[keep] for c, (x, _) in aligned.items()}
    info["dropped_rows"] = dropped
    info["n_stimuli"] = len(sub)
    if any(dropped.values()):
        log.warning("%s: rows missing from some condition (e.g. no image) are left out of every "
                    "comparison: %s; %d shared rows remain", key, dropped, len(sub))
    lay = {}
    for c, e in layers.items():
        L, _ = store.in_table_order(e, table, f"layers of {c} on {key}", layered=True)
        lay[c] = np.asarray(L, dtype=np.float32)[:, keep]
    if "pair_id" in sub:  # template set: noun pairs cross a few nouns; the nouns are the units
        names, nouns = row_nouns(sub)
        info["nouns"] = names
        return Stimuli(key=key, table=sub, X=X, layers=lay, nouns=nouns), info
    return Stimuli(key=key, table=sub, X=X, layers=lay, groups=noun_pair_caption_groups(sub)), info


def stimulus_keys(cfg: RsaSettings) -> list[str]:
    return [f"{cfg.variant}/{s}" for s in cfg.splits] + ([TEMPLATES_KEY] if cfg.templates else [])


# ----------------------------------------------------------------------------- the analyses


@dataclass
class RsaOutputs:
    """Every output of the stage: tidy tables (name -> table), the figure RDMs and item lists
    under rdms/ (file name -> array or table), the summary."""

    tables: dict[str, pd.DataFrame]
    figures: dict[str, np.ndarray | pd.DataFrame] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


def resamples(st: Stimuli, cfg: RsaSettings, seed: int) -> Resamples:
    """The replicates of one stimulus set, shared by every condition and analysis. Template set:
    delete-one-noun jackknife (a noun pair depends on both its nouns; 10 nouns are too few to
    subsample). VSR captions: ``rsa.n_boot`` subsamples of ``rsa.subsample_fraction`` of the
    noun-pair/caption groups without replacement, redrawn where a relation with a centroid
    (>= rsa.relation_min_count captions) would lose every caption."""
    if st.nouns is not None:
        if (st.nouns < 0).any():
            raise ValueError(f"{st.key}: template rows without both nouns cannot be resampled by noun")
        return noun_jackknife(st.nouns)
    _, codes = relation_codes(st.table, cfg.relation_min_count)
    need = [np.flatnonzero(codes == r) for r in range(int(codes.max()) + 1)] if (codes >= 0).any() else []
    return group_subsamples(st.groups, cfg.n_boot, seed, cfg.subsample_fraction, require=need,
                            unit="noun-pair group")


def analyse(st: Stimuli, cfg: RsaSettings, seed: int, meta: dict[str, str], tables: dict,
            figures: dict, layer_maps: list, rel_rdms: list, info: dict, progress: bool) -> Resamples:
    """Every comparison of one stimulus set, appended to the running tables; the figure RDMs
    (and their item lists) go to ``figures`` (file name under rdms/ -> array or table). Returns
    the set's replicates (for the matched pairs' layers)."""
    res = resamples(st, cfg, seed)
    info["resampling"] = {"scheme": res.kind, "units": res.unit, "n_units": res.n_units,
                          "units_per_replicate": res.m_units, "replicates": len(res),
                          "scale": res.scale, "label": res.label}
    log.info("%s: %d stimuli, %s (%d replicates), conditions %s", st.key, len(st.table), res.label,
             len(res), list(st.X))
    tag = st.key.replace("/", "_")
    fig = figure_items(st, cfg.figure_items)
    figures[f"{tag}__items.csv"] = st.table.iloc[fig][["row_id", "relation", "caption"]]
    for metric in cfg.metrics:
        tables["item_comparisons"] += item_analysis(st, res, metric, cfg, seed, progress)
        for cond, X in st.X.items():
            figures[f"{tag}__{cond}__{metric}.npy"] = geo.square(geo.rdm(X[fig], metric)).astype(np.float32)
        fits, best, asym, rdm_df = relation_analysis(st, res, metric, cfg, meta)
        tables["relation_models"] += fits
        tables["relation_best"] += best
        tables["asymmetry"] += asym
        rel_rdms.append(rdm_df)
        if "pair_id" in st.table:
            tables["order_sensitivity"] += order_analysis(st, res, metric, cfg)
    tables["item_comparisons"] += cka_analysis(st, res, cfg)
    if len(st.layers) >= 1:
        layer_maps.append(layer_cka(st, cfg.layer_cka_max_items))
    else:
        log.info("%s: no 'layers' view: no layer x layer CKA map", st.key)
    return res


# ----------------------------------------------------------------------------- matched pairs


def matched_plan(sets: ConditionSets) -> tuple[dict[str, tuple[str, str]], dict[str, str]]:
    """The matched pairs to analyse (name -> (before, after): both conditions in
    ``conditions.text``) and, for the others, why not."""
    run_ = sets.matched_run()
    pairs = {k: (m.before, m.after) for k, m in run_.items()}
    not_run = {k: f"{', '.join(c for c in (m.before, m.after) if c not in sets.text)} not selected "
                  "in conditions.text" for k, m in sets.matched.items() if k not in run_}
    return pairs, not_run


def matched_on_stimuli(st: Stimuli, res: Resamples, pairs: dict[str, tuple[str, str]],
                       cfg: RsaSettings, seed: int, progress: bool = False
                       ) -> tuple[list[dict], dict[str, dict[str, Any]], dict[str, str]]:
    """The matched pairs' layer geometry on one stimulus set: rows, per analysed pair what ran
    (items, layers, the random reference or why there is none), and per skipped pair why (no
    ``layers`` view of a condition here, or different numbers of layers: never aligned)."""
    rows: list[dict] = []
    done: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    for pair, (before, after) in pairs.items():
        lacking = [c for c in (before, after) if c not in st.layers]
        if lacking:
            skipped[pair] = (f"no 'layers' view of {', '.join(lacking)} on {st.key} (embed.layers.splits; "
                             "or not embedded)")
            continue
        Lb, La = st.layers[before].shape[0], st.layers[after].shape[0]
        if Lb != La:
            skipped[pair] = (f"layer counts differ ({before}: {Lb}, {after}: {La}): layers are not "
                             "aligned, pair skipped")
            continue
        twin = f"{before}_random"
        reference, note = None, None
        if twin not in st.layers:
            note = f"no 'layers' view of {twin} on {st.key} (not selected or not embedded)"
        elif st.layers[twin].shape[0] != Lb:
            note = f"{twin} has {st.layers[twin].shape[0]} layers, {before} {Lb}: no reference"
        else:
            reference = twin
        if note:
            log.warning("rsa.matched_layers %s on %s: %s", pair, st.key, note)
        rows += matched_layer_analysis(st, res, pair, before, after, reference, cfg, seed, progress)
        done[pair] = {"n_layers": Lb, "reference": reference,
                      "n_items": len(evenly_spaced(len(st.table), cfg.layer_cka_max_items)),
                      **({"reference_missing": note} if note else {})}
    for pair, why in skipped.items():
        log.warning("rsa.matched_layers %s on %s: %s", pair, st.key, why)
    return rows, done, skipped


def matched_summary(pairs: dict[str, tuple[str, str]], not_selected: dict[str, str],
                    done: dict[str, dict[str, dict]], skipped: dict[str, dict[str, str]],
                    cfg: RsaSettings) -> dict[str, Any]:
    """summary.json's ``matched_layers``: the pairs analysed (on which sets, with which
    reference), those not run and why, the (pair, set) skips, and a one-line account."""
    analysed = {p: {"before": b, "after": a, "stimuli": {k: d[p] for k, d in done.items() if p in d}}
                for p, (b, a) in pairs.items() if any(p in d for d in done.values())}
    not_run = dict(not_selected)
    for p in pairs:
        if p not in analysed:
            why = "; ".join(f"{k}: {s[p]}" for k, s in skipped.items() if p in s)
            not_run[p] = ("rsa.matched_layers: false" if not cfg.matched_layers else
                          why or "no stimulus set with embeddings of both conditions")
    line = "matched pairs analysed: " + (", ".join(
        f"{p} ({pairs[p][0]} -> {pairs[p][1]}: {', '.join(v['stimuli'])})" for p, v in analysed.items())
        or "none")
    line += "; not run: " + (", ".join(f"{p} ({why})" for p, why in not_run.items()) or "none")
    return {"line": line, "analysed": analysed, "not_run": not_run,
            "skipped": {k: s for k, s in skipped.items() if s},
            "n_skipped": sum(len(s) for s in skipped.values()), "table": "matched_layers.csv",
            "items": f"rsa.layer_cka_max_items = {cfg.layer_cka_max_items}, evenly spaced"}


def run(cfg: RsaSettings, load: Callable[[str], tuple[Stimuli | None, dict]],
        meta: dict[str, str], progress: bool = True,
        matched: dict[str, tuple[str, str]] | None = None,
        matched_not_run: dict[str, str] | None = None) -> RsaOutputs:
    """All tables; ``load(key)`` gives one stimulus set (Stimuli or None, load info), called
    once per set so only one is in memory at a time. ``matched``: the matched pairs to analyse
    layer by layer (name -> (before, after); `matched_plan`), ``matched_not_run``: the others,
    with why (both reported in summary.json)."""
    rows: dict[str, Any] = {"item_comparisons": [], "relation_models": [], "relation_best": [],
                            "asymmetry": [], "order_sensitivity": [], "converse": []}
    figures: dict[str, np.ndarray | pd.DataFrame] = {}
    layer_maps, rel_rdms = [], []
    summary: dict[str, Any] = {"noise_ceiling": NOISE_CEILING, "stimuli": {}}
    pairs = dict(matched or {}) if cfg.matched_layers else {}
    matched_rows: list[dict] = []
    m_done: dict[str, dict[str, dict]] = {}
    m_skipped: dict[str, dict[str, str]] = {}
    for s_idx, key in enumerate(stimulus_keys(cfg)):
        st, info = load(key)
        summary["stimuli"][key] = info
        if st is not None:
            res = analyse(st, cfg, cfg.seed + 1000 * s_idx, meta, rows, figures, layer_maps,
                          rel_rdms, info, progress)
            r, m_done[key], m_skipped[key] = matched_on_stimuli(st, res, pairs, cfg,
                                                                 cfg.seed + 1000 * s_idx, progress)
            matched_rows += r
        elif pairs:
            m_skipped[key] = {p: f"fewer than 2 conditions with embeddings on {key}" for p in pairs}
            log.warning("rsa.matched_layers: %s not loaded: %s skipped", key, list(pairs))
        del st
    if cfg.converse:
        try:
            st, info = load(store.SPATIAL_KEY)
        except FileNotFoundError as exc:  # templates.spatial: null
            log.warning("rsa.converse: %s; no swap-vs-converse table", exc)
            st, info = None, {"missing": str(exc)}
        summary["stimuli"][store.SPATIAL_KEY] = info
        if st is not None:
            res = resamples(st, cfg, cfg.seed)
            info["resampling"] = {"scheme": res.kind, "units": res.unit, "n_units": res.n_units,
                                  "replicates": len(res), "label": res.label}
            for metric in cfg.metrics:
                rows["converse"] += converse_analysis(st, res, metric, cfg.ci)
    tables: dict[str, pd.DataFrame] = {}
    for name, r in rows.items():
        df = pd.DataFrame(r)
        df = adjust_p(df.reindex(columns=COLUMNS + [c for c in df.columns if c not in COLUMNS]))
        first = COLUMNS + EXTRA_COLUMNS
        df = df.reindex(columns=first + [c for c in df.columns if c not in first])
        tables[name] = df.astype({c: "Int64" for c in ("n_stimuli", "n_pairs", "n_boot")})
    tables["matched_layers"] = adjust_p(pd.DataFrame(matched_rows, columns=MATCHED_COLUMNS)).astype(
        {c: "Int64" for c in ("layer", "n_items", "n_pairs", "n_boot", "n_layers")})
    summary["matched_layers"] = matched_summary(dict(matched or {}), dict(matched_not_run or {}),
                                                m_done, m_skipped, cfg)
    log.info("rsa.matched_layers: %s", summary["matched_layers"]["line"])
    tables["cka_layers"] = (pd.concat(layer_maps, ignore_index=True) if layer_maps else
                            pd.DataFrame(columns=["stimuli", "condition_a", "layer_a",
                                                  "condition_b", "layer_b", "cka", "n_stimuli",
                                                  "estimator"]))
    rel = [d for d in rel_rdms if len(d)]
    figures["relations.csv"] = (pd.concat(rel, ignore_index=True) if rel else
                                pd.DataFrame(columns=["stimuli", "condition", "metric", "relation_a",
                                                      "relation_b", "distance", "kind"]))
    summary["settings"] = {"n_boot": cfg.n_boot, "subsample_fraction": cfg.subsample_fraction,
                           "ci": cfg.ci, "seed": cfg.seed, "max_pairs": cfg.max_pairs,
                           "tau_bins": cfg.tau_bins, "cka_max_items": cfg.cka_max_items,
                           "layer_cka_max_items": cfg.layer_cka_max_items,
                           "matched_layers": cfg.matched_layers, "metrics": list(cfg.metrics)}
    summary["multiplicity_family"] = ["table", *FAMILY]
    summary["notes"] = NOTES
    return RsaOutputs(tables, figures, summary)


def write(out: RsaOutputs, out_dir: Path = RSA_DIR) -> None:
    (out_dir / "rdms").mkdir(parents=True, exist_ok=True)
    for name, df in out.tables.items():
        write_csv(out_dir / f"{name}.csv", df)
    for name, obj in out.figures.items():
        (write_npy if name.endswith(".npy") else write_csv)(out_dir / "rdms" / name, obj)
    write_json(out_dir / "summary.json", out.summary)


def main(argv: list[str] | None = None) -> int:
    args = stage_parser("rsa", __doc__.splitlines()[0]).parse_args(argv)
    params = load_params(args.params)
    cfg = stage_settings(RsaSettings, params, "rsa", args.params)
    sets = condition_sets(params, args.params)
    conditions = [c for c in sets.all if cfg.extra_seeds or not re.search(r"_random_s\d+$", c)]
    pairs, not_run = matched_plan(sets)
    meta, _ = load_meta_categories()
    write(run(cfg, lambda key: load_stimuli(key, conditions), meta, matched=pairs,
              matched_not_run=not_run))
    return 0

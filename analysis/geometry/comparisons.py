"""Comparisons of representational geometry on one stimulus set, as pure functions of the
aligned vectors (`Stimuli`) and resampling replicates (`analysis.geometry.resampling.Resamples`:
subsets of the stimuli, never duplicates): item RDMs between conditions and with item-level
models, debiased linear CKA, layer x layer CKA maps, relation RDMs of centroids against
hypothesis models (and which hypothesis fits best, on the pairs they all define), the
vertical-vs-horizontal separation, and argument-order sensitivity. Every estimate comes with an
interval and p-value from the replicates (`summarize`); tables are lists of rows, and
`adjust_p` adds Holm and BH adjusted p-values per family.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.stats
from tqdm.auto import tqdm

from analysis.geometry import cka
from analysis.geometry import rdm as geo
from analysis.geometry.resampling import Resamples, interval
from analysis.inference.resampling import bh, holm

if TYPE_CHECKING:  # settings are read by attribute; the class lives with its stage
    from analysis.geometry.rsa import RsaSettings

log = logging.getLogger("rsa")

COLUMNS = ["stimuli", "metric", "comparison", "method", "relation", "estimate", "ci_low", "ci_high",
           "n_stimuli", "n_pairs", "n_boot", "p_value", "h0"]
EXTRA_COLUMNS = ["p_holm", "p_bh", "family_size", "resampling"]
"""after COLUMNS in every tidy table (then table-specific extras)"""
FAMILY = ("stimuli", "metric")
"""multiplicity family: one table x stimulus set x metric ('features' for CKA)"""
HYPOTHESES = ("axis", "polarity", "meta_category")
UNALLOCATED = "Unallocated"
"""the authors' bin for relations they did not place: missing in the meta-category model"""
FISHER = ("spearman", "tau_a", "partial_spearman", "linear_cka_debiased")
"""correlation-type methods, resampled on Fisher's z scale"""
NOISE_CEILING = (
    "not defined: a noise ceiling needs repeated, noisy measurements of the same stimuli (subjects, "
    "runs). The encoders are deterministic (one exact embedding per stimulus), so there is no "
    "measurement noise to bound the attainable correlation; every comparison here is reported "
    "against its own interval over stimuli instead.")

NOTES = {
    "ci": "no stimulus is ever duplicated: every replicate is a subset of the stimuli, shared by "
          "every condition (so differences between conditions are paired). VSR captions: "
          "m-out-of-G subsampling without replacement of resampling groups (rows linked by a "
          "shared unordered subject/object noun pair or a shared caption, "
          "analysis.data.groups.noun_pair_caption_groups), m = rsa.subsample_fraction x G, "
          "rsa.n_boot subsamples, each keeping every relation with a centroid; interval = "
          "subsampling interval (Politis & Romano 1994): estimate - sqrt(m/(G-m)) x (quantiles "
          "of the replicates' deviations from their mean), the finite-population scale that "
          "makes half-samples (m = G/2, scale 1) match the full sample's variability. Template set: the 45 noun pairs cross 10 nouns, so the nouns "
          "are the units: delete-one-noun jackknife (each replicate drops every item containing "
          "one noun), interval = estimate +- t(N-1) x jackknife SE. Correlation-type statistics "
          "(Spearman, tau-a, partial Spearman, CKA) are resampled on Fisher's z scale and mapped "
          "back, so intervals near +-1 stay inside the bounds; differences, separations, distances "
          "and ratios on their own scale",
    "p_value": "two-sided, for the null in column h0: subsampling: twice the smaller share of "
               "pseudo-replicates (the subsampling distribution of the estimate) on either side of "
               "the null, +1 corrected (floor 2/(n_boot+1)); jackknife: t test with N-1 degrees of "
               "freedom on the jackknife SE",
    "multiplicity": "p_holm (Holm) and p_bh (Benjamini-Hochberg) adjust p_value within a family = "
                    "one table x stimulus set x metric (item CKA rows: metric 'features'); "
                    "family_size says how many tests it holds",
    "cka": "linear_cka_debiased: unbiased HSIC (Song et al. 2012; Kornblith et al. 2019 appendix), "
           "0 in expectation for independent representations, invariant to translation, "
           "orthogonal transforms and isotropic scaling; linear_cka_biased: the plug-in estimator "
           "(point estimate only, for comparison with published values: biased upwards, about "
           "d/(n+d) for independent d-dimensional features). cka_layers.csv: debiased",
    "item_spearman": "estimate on all item pairs; VSR captions: replicates on a fixed random "
                     "subsample of rsa.max_pairs pairs (a replicate keeps the pairs whose two "
                     "items it keeps; the template set's jackknife uses every pair), "
                     "their spread placed around the full estimate; model comparisons and tau-a "
                     "use the subsample (n_pairs says how many pairs); tau-a replicates rank RDMs "
                     "in rsa.tau_bins bins (a near-constant shrinkage the centring removes)",
    "relation_models": "relation RDM = distances among relation centroids (templates: mean over "
                       "noun pairs and both orders; captions: mean over captions), recomputed on "
                       "every replicate of the stimuli; polarity is defined only on same-axis "
                       "pairs, so its fit uses fewer pairs (n_pairs); meta_category treats "
                       "relations the authors left Unallocated as missing (pairs with them are "
                       "not part of its model RDM); partial_spearman regresses lexical overlap "
                       "(and noun overlap for captions) out of the ranks",
    "relation_best": "hypotheses compared on the relation pairs every compared hypothesis defines "
                     "(n_pairs; a hypothesis constant on those pairs, e.g. axis on polarity's "
                     "same-axis pairs, cannot be compared and is listed in 'excluded'), each "
                     "correlated with the same data RDM on the same replicates; estimate = best "
                     "minus runner-up with its interval; p_value tests 'best and runner-up fit "
                     "equally' (two-sided: the winner is chosen from the data); p_best = share of "
                     "subsampling pseudo-replicates in which the best is best (jackknife: not "
                     "defined)",
    "separation": "mean distance between opposite-polarity relations on an axis over the mean "
                  "distance among all relations (1 = as far apart as a random relation pair)",
    "matched_layers": "matched before/after-grounding pairs (conditions.matched), layer by layer (0 = "
                      "embedding output) on the `layers` view: debiased linear CKA and Spearman between "
                      "item RDMs (each rsa.metrics distance) of before[l] vs after[l] (comparison "
                      "'after') and of before[l] vs its random-weight twin <before>_random[l] "
                      "(comparison 'before_random': no training at all), where the twin has a layers "
                      "view; 1 = unchanged. The same rsa.layer_cka_max_items evenly spaced items as "
                      "cka_layers.csv (n_items), every item pair, and the stimulus set's shared "
                      "replicates restricted to those items (intervals and p-values for H0 = 0, i.e. "
                      "unrelated geometry, as in item_comparisons; Holm/BH per stimulus set x metric). "
                      "A pair whose two conditions have different numbers of layers is not aligned: "
                      "it is skipped with its reason in summary.json",
}

# ----------------------------------------------------------------------------- data


@dataclass
class Stimuli:
    """One stimulus set with every available condition's vectors on the rows they all share;
    ``groups`` (VSR captions) or ``nouns`` ((n, 2) noun codes, template set) say how to resample."""

    key: str
    table: pd.DataFrame
    X: dict[str, np.ndarray]
    layers: dict[str, np.ndarray] = field(default_factory=dict)
    groups: np.ndarray | None = None
    nouns: np.ndarray | None = None


# ----------------------------------------------------------------------------- summaries


def summarize(estimate: float, replicates: np.ndarray, res: Resamples, level: float,
              ref: float | None = None, transform: str = "identity",
              null: float = 0.0) -> dict[str, Any]:
    """Estimate, interval and p-value (H0: value == null) from the replicates of ``res``
    (`analysis.geometry.resampling.interval`), with the scheme in column ``resampling``."""
    return {**interval(estimate, replicates, res, level, ref=ref, transform=transform, null=null),
            "resampling": res.label}


def adjust_p(df: pd.DataFrame, family: tuple[str, ...] = FAMILY) -> pd.DataFrame:
    """Holm and Benjamini-Hochberg adjusted p-values (``p_holm``, ``p_bh``) within each family
    (rows sharing the ``family`` columns; NaN p-values are not tests), and ``family_size``."""
    df = df.copy()
    for c in ("p_holm", "p_bh"):
        df[c] = np.nan
    df["family_size"] = pd.array([pd.NA] * len(df), dtype="Int64")
    if not len(df) or "p_value" not in df:
        return df
    keys = df[list(family)].astype(str).agg("\x1f".join, axis=1)
    for _, idx in df.groupby(keys.to_numpy()).groups.items():
        p = df.loc[idx, "p_value"].to_numpy(dtype=float)
        df.loc[idx, "p_holm"] = holm(p)
        df.loc[idx, "p_bh"] = bh(p)
        df.loc[idx, "family_size"] = int(np.isfinite(p).sum())
    return df


def _z(v: np.ndarray) -> np.ndarray:
    v = v.astype(np.float64)
    v -= v.mean()
    v /= np.linalg.norm(v)
    return v.astype(np.float32)


def _dot64(a: np.ndarray, b: np.ndarray, chunk: int = 1 << 22) -> float:
    # float32 storage, float64 accumulation: 29.5M-long dot products stay exact to ~1e-7
    return float(sum(np.dot(a[s:s + chunk].astype(np.float64), b[s:s + chunk])
                     for s in range(0, len(a), chunk)))


# ----------------------------------------------------------------------------- item level


def item_models(table: pd.DataFrame, i: np.ndarray, j: np.ndarray) -> dict[str, np.ndarray]:
    """Item-level model RDMs on pairs (i, j): noun overlap (Jaccard distance of {subject,
    object}) and relation identity: how far the nouns vs. the relation drive item geometry."""
    nouns = pd.concat([table["subject"], table["object"]]).dropna().unique()
    code = {n: k for k, n in enumerate(sorted(map(str, nouns)))}
    parsed = table["parsed"].to_numpy(dtype=bool)
    subj = np.array([code.get(str(s), -1) if p else -1 for s, p in zip(table["subject"], parsed)])
    obj = np.array([code.get(str(o), -1) if p else -1 for o, p in zip(table["object"], parsed)])
    _, rel = np.unique(table["relation"].to_numpy(dtype=str), return_inverse=True)
    return {"model:noun_overlap": geo.noun_overlap_pairs(subj, obj, i, j),
            "model:same_relation": geo.label_pairs(rel, i, j)}


def item_analysis(st: Stimuli, res: Resamples, metric: str, cfg: "RsaSettings", seed: int,
                  progress: bool = True) -> list[dict]:
    """Condition x condition and condition x item-model comparisons of item RDMs, with intervals
    from the replicates ``res`` (each a subset of the stimuli, so of the item pairs)."""
    conds = list(st.X)
    n = len(st.table)
    level = cfg.ci
    n_all = n * (n - 1) // 2
    base = {"stimuli": st.key, "metric": metric, "relation": None, "n_stimuli": n}
    rows: list[dict] = []
    # the jackknife's few replicates (one per noun) afford every pair, and it multiplies replicate
    # differences by sqrt(N - 1), pair-subsample noise included: no subsample there
    k = geo.sample_pairs(n, None if res.kind == "jackknife" else cfg.max_pairs, seed)
    i, j = geo.condensed_to_pairs(k, n)

    # full-pair Spearman estimates: one RDM at a time, keeping only its z-scored ranks and its
    # values on the pair subsample (7,680 items: 118 MB per condition)
    z, sub = {}, {}
    for c in conds:
        d = geo.rdm(st.X[c], metric)
        sub[c] = d[k]
        z[c] = _z(scipy.stats.rankdata(d))
        del d
    full_rho = {(a, b): _dot64(z[a], z[b]) for a, b in itertools.combinations(conds, 2)}
    del z

    models = item_models(st.table, i, j)
    ok = np.logical_and.reduce([np.isfinite(v) for v in models.values()])
    if not ok.all():
        log.warning("%s: %d of %d sampled pairs involve captions without parsed nouns: left out of "
                    "the item-model comparisons and their CIs", st.key, int((~ok).sum()), len(ok))
    k, i, j = k[ok], i[ok], j[ok]
    models = {m: v[ok] for m, v in models.items()}
    names = conds + list(models)
    values = [sub[c][ok] for c in conds] + list(models.values())
    zs = np.stack([_z(scipy.stats.rankdata(v)) for v in values]).astype(np.float64)
    sub_rho = zs @ zs.T  # Spearman on the subsample, unresampled
    del zs
    boot = geo.bootstrap_spearman(values, i, j, res.weights, n_jobs=cfg.n_jobs, progress=progress)

    # replicates are on the pair subsample: their spread around their own mean is placed around
    # the (full-pair) estimate
    cache: dict[tuple[str, str], tuple[float, np.ndarray]] = {}
    for p, q in itertools.combinations(range(len(names)), 2):
        a, b = names[p], names[q]
        if a.startswith("model:") and b.startswith("model:"):
            continue
        est, npairs = (full_rho[(a, b)], n_all) if (a, b) in full_rho else (sub_rho[p, q], len(k))
        rows.append({**base, "comparison": f"{a} vs {b}", "method": "spearman", "n_pairs": npairs,
                     **summarize(est, boot[:, p, q], res, level, transform="fisher")})
        cache[(a, b)] = cache[(b, a)] = (est, boot[:, p, q])

    # differences between comparisons that share a member: is A closer to C than B is?
    for c in names:
        for a, b in itertools.combinations([o for o in conds if o != c], 2):
            (ea, ba), (eb, bb) = cache[(c, a)], cache[(c, b)]
            rows.append({**base, "comparison": f"({a} vs {c}) - ({b} vs {c})",
                         "method": "spearman_difference", "n_pairs": None,
                         **summarize(ea - eb, ba - bb, res, level)})

    # tau-a on the same pairs; the replicates code continuous RDMs in rsa.tau_bins rank bins
    # (2-D histogram per replicate): a near-constant shrinkage that the centring removes
    tau_pairs = [(p, q) for p, q in itertools.combinations(range(len(names)), 2)
                 if not (names[p].startswith("model:") and names[q].startswith("model:"))]
    # a histogram with more cells than pairs costs more than the pairs: at most sqrt(M)/2 bins
    bins = int(max(2, min(cfg.tau_bins, np.sqrt(len(k)) / 2)))
    tboot = geo.bootstrap_tau_a(values, tau_pairs, i, j, res.weights, n_jobs=cfg.n_jobs,
                                progress=progress, max_bins=bins)
    for c, (p, q) in enumerate(tau_pairs):
        est = geo.tau_a(values[p], values[q])
        rows.append({**base, "comparison": f"{names[p]} vs {names[q]}", "method": "tau_a",
                     "n_pairs": len(k), **summarize(est, tboot[:, c], res, level, transform="fisher")})
    return rows


def cka_analysis(st: Stimuli, res: Resamples, cfg: "RsaSettings") -> list[dict]:
    """Debiased linear CKA between conditions with intervals from the replicates ``res`` (exact,
    via zero-diagonal Gram matrices), and the plug-in (biased) CKA as a point estimate only."""
    conds = list(st.X)
    n = len(st.table)
    base = {"stimuli": st.key, "metric": "features", "relation": None, "n_stimuli": n,
            "n_pairs": None}
    pairs = list(itertools.combinations(range(len(conds)), 2))
    est = {(p, q): cka.linear_cka(st.X[conds[p]], st.X[conds[q]]) for p, q in pairs}
    rows = [{**base, "comparison": f"{conds[p]} vs {conds[q]}", "method": "linear_cka_biased",
             **summarize(cka.linear_cka(st.X[conds[p]], st.X[conds[q]], debiased=False),
                         np.array([]), res, cfg.ci), "h0": None, "resampling": None}
            for p, q in pairs]
    if n > cfg.cka_max_items:
        log.warning("%s: %d items > rsa.cka_max_items=%s: CKA without interval", st.key, n,
                    cfg.cka_max_items)
        return rows + [{**base, "comparison": f"{conds[p]} vs {conds[q]}",
                        "method": "linear_cka_debiased",
                        **summarize(est[(p, q)], np.array([]), res, cfg.ci)} for p, q in pairs]
    grams = [cka.centered_gram(st.X[c]) for c in conds]
    boot = cka.subsample_cka(grams, res.weights)
    del grams
    return rows + [{**base, "comparison": f"{conds[p]} vs {conds[q]}", "method": "linear_cka_debiased",
                    **summarize(est[(p, q)], boot[:, p, q], res, cfg.ci, transform="fisher")}
                   for p, q in pairs]


def layer_cka(st: Stimuli, max_items: int) -> pd.DataFrame:
    """Layer x layer debiased linear CKA among the conditions with a ``layers`` view (evenly
    spaced items; U-centred Grams, so unrelated layers score about 0, not d/(n+d))."""
    conds = sorted(st.layers)
    n = len(st.table)
    pick = np.unique(np.linspace(0, n - 1, min(n, max_items)).astype(int))
    grams = {c: cka.layer_grams(st.layers[c][:, pick]) for c in conds}
    out = []
    for a, b in itertools.combinations_with_replacement(conds, 2):
        M = grams[a].astype(np.float64) @ grams[b].astype(np.float64).T
        for la, lb in np.ndindex(M.shape):
            out.append({"stimuli": st.key, "condition_a": a, "layer_a": la, "condition_b": b,
                        "layer_b": lb, "cka": float(M[la, lb]), "n_stimuli": len(pick),
                        "estimator": "debiased"})
    return pd.DataFrame(out)


# ----------------------------------------------------------------------------- matched pairs

MATCHED_COLUMNS = ["pair", "before", "after", "stimuli", "layer", "comparison", "condition", "metric",
                   "method", "estimate", "ci_low", "ci_high", "ci", "n_items", "n_pairs", "n_boot",
                   "n_layers", "p_value", "h0", "resampling"]
"""columns of results/rsa/matched_layers.csv: one row per pair x stimulus set x layer x
comparison ("after" | "before_random"; ``condition`` names the compared condition) x metric
("features" for CKA, else the item-RDM distance, as in item_comparisons.csv); `adjust_p` adds
p_holm, p_bh and family_size"""


def evenly_spaced(n: int, k: int) -> np.ndarray:
    """At most ``k`` evenly spaced indices of ``n`` items (the layer CKA maps' items)."""
    return np.unique(np.linspace(0, n - 1, min(n, k)).astype(int))


def rdm_spearman(X: dict[str, np.ndarray], res: Resamples, metric: str, cfg: "RsaSettings",
                 seed: int, progress: bool = False) -> dict[tuple[str, str], dict[str, Any]]:
    """Spearman between the item RDMs of every two conditions of ``X`` (rows = the items of
    ``res``), computed as `item_analysis` computes its condition x condition rows: the estimate
    on every item pair, replicates on a pair subsample of ``rsa.max_pairs`` (every pair for the
    jackknife), on Fisher's z scale. (a, b) -> n_pairs and `summarize`'s fields."""
    conds = list(X)
    n = len(X[conds[0]])
    k = geo.sample_pairs(n, None if res.kind == "jackknife" else cfg.max_pairs, seed)
    i, j = geo.condensed_to_pairs(k, n)
    z, sub = {}, {}
    for c in conds:
        d = geo.rdm(X[c], metric)
        sub[c] = d[k]
        z[c] = _z(scipy.stats.rankdata(d))
        del d
    boot = geo.bootstrap_spearman([sub[c] for c in conds], i, j, res.weights, n_jobs=cfg.n_jobs,
                                  progress=progress)
    return {(conds[p], conds[q]): {"n_pairs": n * (n - 1) // 2,
                                   **summarize(_dot64(z[conds[p]], z[conds[q]]), boot[:, p, q], res,
                                               cfg.ci, transform="fisher")}
            for p, q in itertools.combinations(range(len(conds)), 2)}


def matched_layer_analysis(st: Stimuli, res: Resamples, pair: str, before: str, after: str,
                           reference: str | None, cfg: "RsaSettings", seed: int,
                           progress: bool = False) -> list[dict]:
    """How far image-text training moved a text tower from its initialization, layer by layer:
    debiased linear CKA (`cka_analysis`) and item-RDM Spearman (`rdm_spearman`, every
    ``rsa.metrics`` distance) between ``before``'s layer l and ``after``'s layer l, and, where
    ``reference`` (the random-weight twin of ``before``) is given, between ``before``'s and the
    twin's layer l. Uses the ``rsa.layer_cka_max_items`` evenly spaced items of `layer_cka` and
    the replicates ``res`` restricted to them. The layers views must have the same number of
    layers (the caller skips pairs that do not: layers are never aligned by guesswork)."""
    conds = [before, after] + ([reference] if reference else [])
    if len(set(conds)) < len(conds):
        raise ValueError(f"{pair}: before, after and reference must differ, got {conds}")
    n_layers = {c: st.layers[c].shape[0] for c in conds}
    if len(set(n_layers.values())) != 1:
        raise ValueError(f"{pair}: layer counts differ {n_layers}: not aligned")
    L = n_layers[before]
    pick = evenly_spaced(len(st.table), cfg.layer_cka_max_items)
    sub_res = Resamples(res.weights[:, pick], res.kind, res.n_units, res.m_units, res.unit)
    table = st.table.iloc[pick].reset_index(drop=True)
    role = {after: "after", **({reference: "before_random"} if reference else {})}
    base = {"pair": pair, "before": before, "after": after, "stimuli": st.key, "ci": cfg.ci,
            "n_items": len(pick), "n_layers": L}
    keep = ("estimate", "ci_low", "ci_high", "n_boot", "p_value", "h0", "resampling")
    rows: list[dict] = []
    for layer in tqdm(range(L), desc=f"{pair} layers ({st.key})", disable=not progress, leave=False):
        X = {c: np.ascontiguousarray(st.layers[c][layer, pick]) for c in conds}
        cka_rows = {r["comparison"]: r for r in cka_analysis(Stimuli(st.key, table, X), sub_res, cfg)
                    if r["method"] == "linear_cka_debiased"}
        for other, name in role.items():
            r = cka_rows[f"{before} vs {other}"]
            rows.append({**base, "layer": layer, "comparison": name, "condition": other,
                         "metric": "features", "method": "linear_cka_debiased", "n_pairs": None,
                         **{c: r[c] for c in keep}})
        for metric in cfg.metrics:
            rho = rdm_spearman(X, sub_res, metric, cfg, seed)
            for other, name in role.items():
                r = rho[(before, other)]
                rows.append({**base, "layer": layer, "comparison": name, "condition": other,
                             "metric": metric, "method": "spearman", "n_pairs": r["n_pairs"],
                             **{c: r[c] for c in keep}})
    return [{c: r[c] for c in MATCHED_COLUMNS} for r in rows]


# ----------------------------------------------------------------------------- relation level


def relation_codes(table: pd.DataFrame, min_count: int) -> tuple[list[str], np.ndarray]:
    """Relations with >= min_count rows (table order of first use) and each row's code (-1 = none)."""
    counts = table["relation"].value_counts()
    rels = [r for r in pd.unique(table["relation"]) if counts[r] >= min_count]
    code = {r: k for k, r in enumerate(rels)}
    return rels, np.array([code.get(r, -1) for r in table["relation"]])


def centroids(X: np.ndarray, codes: np.ndarray, n_rel: int, counts: np.ndarray) -> np.ndarray:
    """(B, R, D) weighted relation centroids of X for every resample (rows of ``counts``)."""
    out = np.empty((len(counts), n_rel, X.shape[1]), dtype=np.float32)
    for r in range(n_rel):
        idx = np.flatnonzero(codes == r)
        C = counts[:, idx].astype(np.float32)
        tot = C.sum(1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, r] = (C @ X[idx]) / np.where(tot > 0, tot, np.nan)
    return out


def batch_rdm(cent: np.ndarray, metric: str) -> np.ndarray:
    """(B, R, R) cosine or correlation distances among centroids of every resample."""
    U = cent.astype(np.float64)
    if metric == "correlation":
        U = U - U.mean(axis=2, keepdims=True)
    U = U / np.linalg.norm(U, axis=2, keepdims=True)
    return 1 - np.einsum("brd,bsd->brs", U, U)


def relation_models(rels: list[str], spatial: dict, meta: dict[str, str],
                    noun_profiles: np.ndarray | None) -> tuple[dict, dict]:
    """Hypothesis model RDMs over relations and the controls to partial out. The meta-category
    model leaves out (NaN) every pair with a relation the authors put in ``Unallocated``: that
    bin is not a category, so two unallocated relations are not "the same category"."""
    axes = [spatial.get(r, [None, None])[0] for r in rels]
    pol = [spatial.get(r, [None, None])[1] for r in rels]
    cats = [None if meta.get(r) in (None, UNALLOCATED) else meta[r] for r in rels]
    missing = [r for r, c in zip(rels, cats) if c is None]
    if missing:
        log.info("meta_category model: %d relation(s) unallocated or unknown, left out: %s",
                 len(missing), missing)
    models = {"axis": geo.axis_rdm(axes), "polarity": geo.polarity_rdm(axes, pol),
              "meta_category": geo.categorical_rdm(cats)}
    controls = {"lexical_overlap": geo.lexical_overlap_rdm(rels)}
    if noun_profiles is not None:
        prof = geo.profile_rdm(noun_profiles)
        if np.ptp(prof) > 1e-9:
            controls["noun_overlap"] = prof
        else:
            log.info("noun overlap is constant across relations (balanced by design): not partialled")
    return models, controls


def _rank_rows(M: np.ndarray) -> np.ndarray:
    return scipy.stats.rankdata(M, axis=-1)


def _row_corr(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    A = A - A.mean(-1, keepdims=True)
    b = b - b.mean()
    with np.errstate(invalid="ignore", divide="ignore"):
        return (A @ b) / (np.linalg.norm(A, axis=-1) * np.linalg.norm(b))


def _rowwise_corr(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Pearson correlation of row r of A with row r of B."""
    A = A - A.mean(-1, keepdims=True)
    B = B - B.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.einsum("rp,rp->r", A, B) / (np.linalg.norm(A, axis=-1) * np.linalg.norm(B, axis=-1))


def _residualize(Y: np.ndarray, Z: np.ndarray) -> np.ndarray:
    """Y (R, P) minus its least-squares fit on Z (R, P, k), replicate by replicate."""
    beta = np.linalg.pinv(Z) @ Y[..., None]
    return Y - (Z @ beta)[..., 0]


def model_fits(vec: np.ndarray, boot: np.ndarray, model: np.ndarray,
               controls: dict[str, np.ndarray], model_rep: np.ndarray | None = None,
               control_reps: dict[str, np.ndarray] | None = None
               ) -> dict[str, tuple[float, np.ndarray, int]]:
    """Spearman, tau-a and partial Spearman (controls regressed out of the ranks) of a relation
    RDM (point ``vec``, replicates ``boot``) with one model RDM, on the pairs the model defines.

    A model or control computed from the stimuli themselves (the noun-overlap profile of the
    captions) is recomputed on every replicate: ``model_rep`` / ``control_reps[name]`` (R, P)
    replace the fixed one in the replicates, so each replicate is the full-sample statistic
    applied to the replicate's stimuli."""
    control_reps = control_reps or {}
    mask = np.isfinite(model)
    m = model[mask]
    out: dict[str, tuple[float, np.ndarray, int]] = {}
    if mask.sum() < 3 or np.ptp(m) == 0:
        return out
    npairs = int(mask.sum())
    v, B = vec[mask], boot[:, mask]
    RB = _rank_rows(B)
    M = None if model_rep is None else model_rep[:, mask]
    if M is None:
        out["spearman"] = (geo.spearman(v, m), _row_corr(RB, scipy.stats.rankdata(m)), npairs)
        out["tau_a"] = (geo.tau_a(v, m), geo.tau_a_rows(B, m), npairs)
    else:
        RM = _rank_rows(M)
        out["spearman"] = (geo.spearman(v, m), _rowwise_corr(RB, RM), npairs)
        out["tau_a"] = (geo.tau_a(v, m), np.array([geo.tau_a(b, mm) for b, mm in zip(B, M)]), npairs)
    names = [k for k, c in controls.items() if np.ptp(c[mask]) > 0]
    if not names:
        return out
    ctrl = [controls[k][mask] for k in names]
    est = geo.partial_spearman(v, m, ctrl)
    if M is None and not any(k in control_reps for k in names):
        Z = np.column_stack([np.ones(npairs)] + [scipy.stats.rankdata(c) for c in ctrl])
        P = np.eye(len(Z)) - Z @ np.linalg.pinv(Z)
        rm = P @ scipy.stats.rankdata(m)
        if np.linalg.norm(rm) > 1e-9:
            out["partial_spearman"] = (est, _row_corr(RB @ P.T, rm), npairs)
        return out
    R = len(B)
    cols = [np.ones((R, npairs))]
    for k, c in zip(names, ctrl):
        rep = control_reps.get(k)
        cols.append(_rank_rows(rep[:, mask]) if rep is not None else
                    np.broadcast_to(scipy.stats.rankdata(c), (R, npairs)))
    Z = np.stack(cols, axis=-1)
    RM = (np.broadcast_to(scipy.stats.rankdata(m), (R, npairs)) if M is None else _rank_rows(M))
    rm = _residualize(np.ascontiguousarray(RM, dtype=np.float64), Z)
    if np.isfinite(est):
        out["partial_spearman"] = (est, _rowwise_corr(_residualize(RB, Z), rm), npairs)
    return out


def profile_rdms(profiles: np.ndarray) -> np.ndarray:
    """(R, P) cosine distances between the count profiles (R, n_rel, k) of every replicate
    (`geo.profile_rdm` replicate by replicate)."""
    P = np.asarray(profiles, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        P = P / np.linalg.norm(P, axis=-1, keepdims=True)
    i, j = np.triu_indices(P.shape[1], 1)
    return 1 - np.einsum("rkd,rkd->rk", P[:, i], P[:, j])


def common_pairs(models: dict[str, np.ndarray], order: tuple[str, ...] = HYPOTHESES
                 ) -> tuple[np.ndarray, list[str], dict[str, str]]:
    """The relation pairs on which hypotheses can be compared: hypotheses are taken in order of
    how many pairs they define (then ``order``), each kept if every hypothesis kept so far,
    and it, still has >= 3 pairs and varies on the pairs they all define. Returns that mask,
    the kept hypotheses and, for the others, why they were left out."""
    mask = None
    kept: list[str] = []
    excluded: dict[str, str] = {}
    names = sorted((h for h in order if h in models),
                   key=lambda h: (-int(np.isfinite(models[h]).sum()), order.index(h)))
    for h in names:
        new = np.isfinite(models[h]) if mask is None else mask & np.isfinite(models[h])
        flat = [g for g in kept + [h] if new.sum() < 3 or np.ptp(models[g][new]) == 0]
        if flat:
            excluded[h] = (f"constant on the {int(new.sum())} pairs {', '.join(kept + [h])} all "
                           f"define" if kept else "defined on fewer than 3 pairs or constant")
            continue
        mask, kept = new, kept + [h]
    return (mask if mask is not None else np.zeros(0, dtype=bool)), kept, excluded


def best_hypothesis(vec: np.ndarray, boot: np.ndarray, models: dict[str, np.ndarray],
                    controls: dict[str, np.ndarray], res: Resamples, level: float,
                    control_reps: dict[str, np.ndarray] | None = None) -> list[dict[str, Any]]:
    """Which hypothesis model fits the relation RDM best, by how much: every comparable
    hypothesis (`common_pairs`) is fit on the same relation pairs, against the same data RDM on
    the same replicates, and the best minus the runner-up gets an interval and a two-sided
    p-value (H0: they fit equally). One row per method (tau-a, partial Spearman)."""
    mask, kept, excluded = common_pairs(models)
    if len(kept) < 2:
        return []
    fits = {h: model_fits(vec, boot, np.where(mask, models[h], np.nan), controls,
                          control_reps=control_reps) for h in kept}
    out = []
    for method in ("tau_a", "partial_spearman"):
        have = [h for h in kept if method in fits[h]]
        if len(have) < 2:
            continue
        est = np.array([fits[h][method][0] for h in have])
        B = np.column_stack([fits[h][method][1] for h in have])
        top, second = np.argsort(-est, kind="stable")[:2]
        p_best = np.nan
        if res.kind == "subsample":  # the same pseudo-replicate for every hypothesis
            ok = np.isfinite(B).all(1)
            P = est[None, :] - res.scale * (B[ok] - est[None, :])
            p_best = float(np.mean(np.argmax(P, axis=1) == top)) if ok.any() else np.nan
        out.append({"method": f"{method}_difference", "n_pairs": int(mask.sum()),
                    "best": have[top], "runner_up": have[second], "p_best": p_best,
                    "best_estimate": float(est[top]), "runner_up_estimate": float(est[second]),
                    "candidates": ", ".join(have),
                    "excluded": "; ".join(f"{h}: {why}" for h, why in excluded.items()) or None,
                    **summarize(est[top] - est[second], B[:, top] - B[:, second], res, level)})
    return out


def separation(D: np.ndarray, rels: list[str], spatial: dict, axis: str) -> np.ndarray:
    """Mean distance between opposite-polarity relations on ``axis`` (above vs below), over the
    mean distance among all relations: how far apart the encoder puts the two directions,
    scale-free. D is (..., R, R); NaN when the axis has no opposite pair."""
    pairs = [(a, b) for a, b in itertools.combinations(range(len(rels)), 2)
             if spatial.get(rels[a], [None])[0] == axis == spatial.get(rels[b], [None])[0]
             and spatial[rels[a]][1] != spatial[rels[b]][1]]
    if not pairs:
        return np.full(D.shape[:-2], np.nan)
    iu = np.triu_indices(len(rels), 1)
    a, b = np.array(pairs).T
    return D[..., a, b].mean(-1) / D[..., iu[0], iu[1]].mean(-1)


def relation_analysis(st: Stimuli, res: Resamples, metric: str, cfg: "RsaSettings",
                      meta: dict[str, str]) -> tuple[list[dict], list[dict], list[dict], pd.DataFrame]:
    """Relation RDMs from centroids vs hypothesis models; best hypothesis; axis asymmetry. The
    centroids are recomputed on every replicate of the stimuli (captions: subsets of noun-pair
    groups, which the caller draws so every relation keeps rows; templates: delete-one-noun)."""
    level = cfg.ci
    min_count = 1 if "pair_id" in st.table else cfg.relation_min_count
    rels, codes = relation_codes(st.table, min_count)
    if len(rels) < 4:
        log.warning("%s: only %d relations with >= %d rows: relation geometry skipped", st.key,
                    len(rels), min_count)
        return [], [], [], pd.DataFrame()
    profiles = None
    control_reps: dict[str, np.ndarray] = {}
    if "pair_id" not in st.table:
        # each relation's noun counts, on all captions and on every replicate's captions
        nouns = sorted(set(st.table["subject"].dropna()) | set(st.table["object"].dropna()))
        col = {n: k for k, n in enumerate(nouns)}
        per_row = np.zeros((len(st.table), len(nouns)), dtype=np.float32)
        for r, (s, o) in enumerate(zip(st.table["subject"], st.table["object"])):
            for noun in (s, o):
                if noun is not None and noun in col:
                    per_row[r, col[noun]] += 1
        rows_of = [np.flatnonzero(codes == r) for r in range(len(rels))]
        profiles = np.stack([per_row[idx].sum(0) for idx in rows_of]).astype(np.float64)
        prof_rep = np.stack([res.weights[:, idx].astype(np.float32) @ per_row[idx] for idx in rows_of],
                            axis=1)
    models, controls = relation_models(rels, cfg.spatial, meta, profiles)
    if "noun_overlap" in controls:  # the control describes the stimuli: recomputed per replicate
        control_reps["noun_overlap"] = profile_rdms(prof_rep)
    iu = np.triu_indices(len(rels), 1)
    ones = np.ones((1, len(st.table)), dtype=np.int32)
    n_stim = int((codes >= 0).sum())
    base = {"stimuli": st.key, "metric": metric, "relation": None, "n_stimuli": n_stim}
    fits, best_rows, asym_rows, rdm_rows = [], [], [], []
    fit_boot: dict[tuple, tuple[float, np.ndarray]] = {}
    asym_boot: dict[tuple, tuple[float, np.ndarray]] = {}
    for cond, X in st.X.items():
        D0 = batch_rdm(centroids(X, codes, len(rels), ones), metric)[0]
        DB = batch_rdm(centroids(X, codes, len(rels), res.weights), metric)
        vec, boot = D0[iu], DB[:, iu[0], iu[1]]
        for a, b in np.ndindex(D0.shape):
            rdm_rows.append({"stimuli": st.key, "condition": cond, "metric": metric,
                             "relation_a": rels[a], "relation_b": rels[b], "distance": float(D0[a, b])})
        for name, model in {**models, **controls}.items():
            other = {k: v for k, v in controls.items() if k != name}
            for method, (est, b, npairs) in model_fits(vec, boot, model, other,
                                                       control_reps.get(name), control_reps).items():
                fits.append({**base, "comparison": f"{cond} vs model:{name}", "method": method,
                             "n_pairs": npairs, **summarize(est, b, res, level, transform="fisher")})
                fit_boot[(cond, name, method)] = (est, b)
        # which hypothesis explains this encoder best, and by how much (on common pairs)
        for row in best_hypothesis(vec, boot, models, controls, res, level, control_reps):
            best_rows.append({**base, "comparison": f"{cond}: {row['best']} - {row['runner_up']}",
                              "condition": cond, **row})
        seps = {ax: (float(separation(D0, rels, cfg.spatial, ax)),
                     separation(DB, rels, cfg.spatial, ax)) for ax in ("vertical", "horizontal", "depth")}
        for ax, (e, b) in seps.items():
            asym_rows.append({**base, "comparison": cond, "method": f"{ax}_separation",
                              "n_pairs": len(vec), **summarize(e, b, res, level, null=1.0)})
        e = seps["vertical"][0] - seps["horizontal"][0]
        b = seps["vertical"][1] - seps["horizontal"][1]
        asym_rows.append({**base, "comparison": cond, "method": "vertical_minus_horizontal",
                          "n_pairs": len(vec), **summarize(e, b, res, level)})
        asym_boot[cond] = (e, b)
    # between conditions: model fits and asymmetry, same replicates
    for a, b in itertools.combinations(list(st.X), 2):
        for name in list(models) + list(controls):
            for method in ("spearman", "tau_a", "partial_spearman"):
                if (a, name, method) in fit_boot and (b, name, method) in fit_boot:
                    (ea, ba), (eb, bb) = fit_boot[(a, name, method)], fit_boot[(b, name, method)]
                    fits.append({**base, "comparison": f"({a} vs model:{name}) - ({b} vs model:{name})",
                                 "method": f"{method}_difference", "n_pairs": None,
                                 **summarize(ea - eb, ba - bb, res, level)})
        (ea, ba), (eb, bb) = asym_boot[a], asym_boot[b]
        asym_rows.append({**base, "comparison": f"{a} - {b}", "method": "vertical_minus_horizontal_difference",
                          "n_pairs": None, **summarize(ea - eb, ba - bb, res, level)})
    model_rows = [{"stimuli": st.key, "model": name, "relation_a": rels[a], "relation_b": rels[b],
                   "value": float(v)} for name, m in {**models, **controls}.items()
                  for (a, b), v in zip(zip(*iu), m)]
    rdm_df = pd.concat([pd.DataFrame(rdm_rows).assign(kind="condition"),
                        pd.DataFrame(model_rows).rename(columns={"model": "condition", "value": "distance"})
                        .assign(kind="model", metric=None)], ignore_index=True)
    return fits, best_rows, asym_rows, rdm_df


# ----------------------------------------------------------------------------- order sensitivity


def pair_distances(X: np.ndarray, a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """Distance between rows a[k] and b[k] (cosine or correlation)."""
    U = geo.unit_rows(X, metric)
    return np.maximum(1 - np.einsum("kd,kd->k", U[a], U[b]).astype(np.float64), 0.0)  # no -1e-8


def converse_analysis(st: Stimuli, res: Resamples, metric: str, level: float) -> list[dict]:
    """Controlled spatial set: per axis, the distance from "A above B" to its swap "B above A"
    (same words, opposite scene) minus the distance to its converse "B below A" (other phrase
    of the form pair, same scene), averaged over phrases and noun pairs. Positive: the encoder
    puts a caption nearer the caption that states the same scene than the one with its words;
    a bag of words gives the swap distance 0, so a negative value. Also each distance alone
    and every difference between conditions (paired on the same replicates)."""
    t = st.table
    pairs = list(pd.unique(t["pair_id"]))
    idx = {(f, r, p, o): k for k, (f, r, p, o) in
           enumerate(zip(t["form_pair"], t["relation"], t["pair_id"], t["order"]))}
    first_row = t.reset_index().groupby("pair_id")["index"].first().reindex(pairs).to_numpy()
    Cp = res.weights[:, first_row].astype(np.float64)  # (R, P): the rows of a pair go together
    base = {"stimuli": st.key, "metric": metric, "n_pairs": len(pairs)}
    per: dict[str, dict[tuple[str, str], tuple[float, np.ndarray]]] = {}
    rows: list[dict] = []
    for cond, X in st.X.items():
        per[cond] = {}
        for axis, part in t.groupby("axis", sort=False):
            forms = list(pd.unique(part["form_pair"]))
            swap, conv = [], []
            for f in forms:
                a, b = f.split(" / ")
                for phrase, partner in ((a, b), (b, a)):
                    for o, other in (("AB", "BA"), ("BA", "AB")):
                        i = np.array([idx[(f, phrase, p, o)] for p in pairs])
                        swap.append(pair_distances(X, i, np.array([idx[(f, phrase, p, other)] for p in pairs]), metric))
                        conv.append(pair_distances(X, i, np.array([idx[(f, partner, p, other)] for p in pairs]), metric))
            S, V = np.stack(swap), np.stack(conv)  # (items per pair, pairs)
            n = int(S.size)
            for name, M in (("swap_distance", S), ("converse_distance", V),
                            ("swap_minus_converse", S - V)):
                e, b = M.mean(), (Cp @ M.mean(0)) / Cp.sum(1)
                per[cond][(axis, name)] = (e, b)
                rows.append({**base, "comparison": cond, "method": name, "relation": axis,
                             "n_stimuli": n, **summarize(e, b, res, level)})
    conds = list(st.X)
    for a, b in itertools.combinations(conds, 2):
        for (axis, name), (ea, ba) in per[a].items():
            if name != "swap_minus_converse":
                continue
            eb, bb = per[b][(axis, name)]
            rows.append({**base, "comparison": f"{a} - {b}", "method": f"{name}_difference",
                         "relation": axis, "n_stimuli": None, **summarize(ea - eb, ba - bb, res, level)})
    return rows


def order_analysis(st: Stimuli, res: Resamples, metric: str, cfg: "RsaSettings") -> list[dict]:
    """Template set: distance between "A rel B" and "B rel A" per relation (can the encoder tell
    the arguments apart?), against the distance between synonymous relations (same arguments) and
    between converses ("A above B" vs "B below A", same meaning)."""
    t = st.table
    level = cfg.ci
    pairs = list(pd.unique(t["pair_id"]))
    rels = list(pd.unique(t["relation"]))
    idx = {(r, p, o): k for k, (r, p, o) in enumerate(zip(t["relation"], t["pair_id"], t["order"]))}
    first_row = t.reset_index().groupby("pair_id")["index"].first().reindex(pairs).to_numpy()
    Cp = res.weights[:, first_row].astype(np.float64)  # (R, P): the rows of a pair go together
    spatial = cfg.spatial

    def dist(X, r1, o1, r2, o2) -> np.ndarray:
        a = np.array([idx[(r1, p, o1)] for p in pairs])
        b = np.array([idx[(r2, p, o2)] for p in pairs])
        return pair_distances(X, a, b, metric)

    syn = [(a, b) for a, b in cfg.synonyms if a in rels and b in rels]
    conv = [(a, b) for a, b in itertools.combinations(rels, 2)
            if a in spatial and b in spatial and spatial[a][0] == spatial[b][0]
            and spatial[a][1] != spatial[b][1]]
    base = {"stimuli": st.key, "metric": metric, "n_stimuli": len(t), "n_pairs": len(pairs)}
    rows: list[dict] = []
    summ: dict[str, dict[str, tuple[float, np.ndarray]]] = {}

    def stat(M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-row mean over noun pairs: point (rows,) and replicates (R, rows)."""
        return M.mean(1), (Cp @ M.T) / Cp.sum(1, keepdims=True)

    for cond, X in st.X.items():
        O = np.stack([dist(X, r, "AB", r, "BA") for r in rels])
        e, b = stat(O)
        for k, r in enumerate(rels):
            rows.append({**base, "comparison": cond, "method": "order_distance", "relation": r,
                         **summarize(e[k], b[:, k], res, level)})
        s = {"order_distance_mean": (e.mean(), b.mean(1))}
        # synonyms compare like orders (AB~AB, BA~BA); converses compare crossed orders
        for kind, rel_pairs, orders in (("synonym", syn, (("AB", "AB"), ("BA", "BA"))),
                                        ("converse", conv, (("AB", "BA"), ("BA", "AB")))):
            if not rel_pairs:
                continue
            D = np.stack([sum(dist(X, a, oa, c, oc) for oa, oc in orders) / 2 for a, c in rel_pairs])
            ed, bd = stat(D)
            for k, (a, c) in enumerate(rel_pairs):
                rows.append({**base, "comparison": cond, "method": f"{kind}_distance",
                             "relation": f"{a} ~ {c}", **summarize(ed[k], bd[:, k], res, level)})
            s[f"{kind}_distance_mean"] = (ed.mean(), bd.mean(1))
            s[f"order_to_{kind}_ratio"] = (e.mean() / ed.mean(), b.mean(1) / bd.mean(1))
        for name, (est, bb) in s.items():
            null = 1.0 if name.endswith("ratio") else 0.0
            rows.append({**base, "comparison": cond, "method": name, "relation": None,
                         **summarize(est, bb, res, level, null=null)})
        summ[cond] = s
    for a, b in itertools.combinations(list(st.X), 2):
        for name in summ[a]:
            (ea, ba), (eb, bb) = summ[a][name], summ[b][name]
            rows.append({**base, "comparison": f"{a} - {b}", "method": f"{name}_difference",
                         "relation": None, **summarize(ea - eb, ba - bb, res, level)})
    return rows


def figure_items(st: Stimuli, n: int) -> np.ndarray:
    """Evenly spaced items after sorting by relation, for the item-RDM figures."""
    order = np.lexsort((np.arange(len(st.table)), st.table["relation"].to_numpy(dtype=str)))
    return order[np.unique(np.linspace(0, len(order) - 1, min(n, len(order))).astype(int))]

"""Comparisons of representational geometry on one stimulus set, as pure functions of the
aligned vectors (`Stimuli`) and bootstrap resample counts: item RDMs between conditions and with
item-level models, linear CKA, layer x layer CKA maps, relation RDMs of centroids against
hypothesis models, the vertical-vs-horizontal separation, and argument-order sensitivity.
Every estimate comes with a bootstrap CI and p-value (`summarize`); tables are lists of rows.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.stats

from analysis.geometry import cka
from analysis.geometry import rdm as geo

if TYPE_CHECKING:  # settings are read by attribute; the class lives with its stage
    from analysis.geometry.rsa import RsaSettings

log = logging.getLogger("rsa")

COLUMNS = ["stimuli", "metric", "comparison", "method", "relation", "estimate", "ci_low", "ci_high",
           "n_stimuli", "n_pairs", "n_boot", "p_value", "h0"]
HYPOTHESES = ("axis", "polarity", "meta_category")
NOISE_CEILING = (
    "not defined: a noise ceiling needs repeated, noisy measurements of the same stimuli (subjects, "
    "runs). The encoders are deterministic (one exact embedding per stimulus), so there is no "
    "measurement noise to bound the attainable correlation; every comparison here is reported "
    "against its own bootstrap CI over stimuli instead.")

NOTES = {
    "ci": "percentile bootstrap over stimuli; noun pairs (templates: pair_id; captions: the "
          "unordered subject/object pair) are resampled as groups, with one resample matrix shared "
          "by every condition, so differences between conditions are paired",
    "p_value": "two-sided bootstrap p-value for the null in column h0 (twice the smaller share of "
               "replicates on either side, +1 corrected; floor 2/(n_boot+1)); not corrected for "
               "multiple comparisons",
    "item_spearman": "estimate on all item pairs; CI from the same resamples on a fixed random "
                     "subsample of rsa.max_pairs pairs, re-centred on the full estimate (slightly "
                     "conservative, see bench/bench_rsa.py); model comparisons and tau-a use the "
                     "subsample (n_pairs says how many pairs); tau-a resamples rank RDMs in "
                     "rsa.tau_bins bins and are re-centred on the exact estimate",
    "relation_models": "relation RDM = distances among relation centroids (templates: mean over "
                       "noun pairs and both orders; captions: mean over captions, resampled within "
                       "relation); polarity is defined only on same-axis pairs, so its fit uses "
                       "fewer pairs (n_pairs); partial_spearman regresses lexical overlap (and "
                       "noun overlap for captions) out of the ranks",
    "separation": "mean distance between opposite-polarity relations on an axis over the mean "
                  "distance among all relations (1 = as far apart as a random relation pair)",
}

# ----------------------------------------------------------------------------- data


@dataclass
class Stimuli:
    """One stimulus set with every available condition's vectors on the rows they all share."""

    key: str
    table: pd.DataFrame
    X: dict[str, np.ndarray]
    layers: dict[str, np.ndarray] = field(default_factory=dict)
    groups: np.ndarray | None = None


# ----------------------------------------------------------------------------- summaries


def summarize(estimate: float, boot: np.ndarray, level: float, shift: float = 0.0,
              null: float = 0.0) -> dict[str, Any]:
    """Point estimate, percentile CI and two-sided bootstrap p-value (H0: value == null).
    ``shift`` re-centres a bootstrap computed on a pair subsample on the full-data estimate."""
    boot = np.asarray(boot, dtype=np.float64) + shift
    if boot.size == 0 or not np.isfinite(boot).any():
        return {"estimate": estimate, "ci_low": np.nan, "ci_high": np.nan, "p_value": np.nan,
                "n_boot": 0, "h0": f"={null:g}"}
    lo, hi = geo.percentile_ci(boot, level)
    return {"estimate": float(estimate), "ci_low": float(lo), "ci_high": float(hi),
            "p_value": float(geo.bootstrap_p(boot, null)), "n_boot": int(np.isfinite(boot).sum()),
            "h0": f"={null:g}"}


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


def item_analysis(st: Stimuli, counts: np.ndarray, metric: str, cfg: "RsaSettings", seed: int,
                  progress: bool = True) -> list[dict]:
    """Condition x condition and condition x item-model comparisons of item RDMs."""
    conds = list(st.X)
    n = len(st.table)
    level = cfg.ci
    n_all = n * (n - 1) // 2
    base = {"stimuli": st.key, "metric": metric, "relation": None, "n_stimuli": n}
    rows: list[dict] = []
    k = geo.sample_pairs(n, cfg.max_pairs, seed)
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
    boot = geo.bootstrap_spearman(values, i, j, counts, n_jobs=cfg.n_jobs, progress=progress)

    def rho_row(p: int, q: int) -> tuple[dict, float, np.ndarray]:
        a, b = names[p], names[q]
        if (a, b) in full_rho:
            est, shift, npairs = full_rho[(a, b)], full_rho[(a, b)] - sub_rho[p, q], n_all
        else:
            est, shift, npairs = sub_rho[p, q], 0.0, len(k)
        return {**base, "comparison": f"{a} vs {b}", "method": "spearman", "n_pairs": npairs,
                **summarize(est, boot[:, p, q], level, shift)}, est, boot[:, p, q] + shift

    cache = {}
    for p, q in itertools.combinations(range(len(names)), 2):
        if names[p].startswith("model:") and names[q].startswith("model:"):
            continue
        row, est, b = rho_row(p, q)
        rows.append(row)
        cache[(names[p], names[q])] = cache[(names[q], names[p])] = (est, b)

    # differences between comparisons that share a member: is A closer to C than B is?
    for c in names:
        for a, b in itertools.combinations([o for o in conds if o != c], 2):
            (ea, ba), (eb, bb) = cache[(c, a)], cache[(c, b)]
            rows.append({**base, "comparison": f"({a} vs {c}) - ({b} vs {c})",
                         "method": "spearman_difference", "n_pairs": None,
                         **summarize(ea - eb, ba - bb, level)})

    # tau-a on the same pairs; the bootstrap codes continuous RDMs in rsa.tau_bins rank bins
    # (2-D histogram per resample) and is re-centred on the exact estimate
    tau_pairs = [(p, q) for p, q in itertools.combinations(range(len(names)), 2)
                 if not (names[p].startswith("model:") and names[q].startswith("model:"))]
    # a histogram with more cells than pairs costs more than the pairs: at most sqrt(M)/2 bins
    bins = int(max(2, min(cfg.tau_bins, np.sqrt(len(k)) / 2)))
    ones = np.ones((1, n), dtype=np.int32)
    tboot = geo.bootstrap_tau_a(values, tau_pairs, i, j, counts, n_jobs=cfg.n_jobs,
                                progress=progress, max_bins=bins)
    tbinned = geo.bootstrap_tau_a(values, tau_pairs, i, j, ones, n_jobs=1, max_bins=bins)[0]
    for c, (p, q) in enumerate(tau_pairs):
        est = geo.tau_a(values[p], values[q])
        rows.append({**base, "comparison": f"{names[p]} vs {names[q]}", "method": "tau_a",
                     "n_pairs": len(k), **summarize(est, tboot[:, c], level, est - tbinned[c])})
    return rows


def cka_analysis(st: Stimuli, counts: np.ndarray, cfg: "RsaSettings") -> list[dict]:
    """Linear CKA between conditions, with the same bootstrap resamples (exact, via Grams)."""
    conds = list(st.X)
    n = len(st.table)
    base = {"stimuli": st.key, "metric": "features", "relation": None, "n_stimuli": n,
            "n_pairs": None, "method": "linear_cka"}
    if n > cfg.cka_max_items:
        log.warning("%s: %d items > rsa.cka_max_items=%s: CKA without bootstrap CI", st.key, n,
                    cfg.cka_max_items)
        return [{**base, "comparison": f"{a} vs {b}", **summarize(cka.linear_cka(st.X[a], st.X[b]),
                                                                   np.array([]), cfg.ci)}
                for a, b in itertools.combinations(conds, 2)]
    grams = [cka.centered_gram(st.X[c]) for c in conds]
    boot = cka.bootstrap_cka(grams, counts)
    del grams
    return [{**base, "comparison": f"{conds[p]} vs {conds[q]}",
             **summarize(cka.linear_cka(st.X[conds[p]], st.X[conds[q]]), boot[:, p, q], cfg.ci)}
            for p, q in itertools.combinations(range(len(conds)), 2)]


def layer_cka(st: Stimuli, max_items: int) -> pd.DataFrame:
    """Layer x layer linear CKA among the conditions with a ``layers`` view (evenly spaced items)."""
    conds = sorted(st.layers)
    n = len(st.table)
    pick = np.unique(np.linspace(0, n - 1, min(n, max_items)).astype(int))
    grams = {c: cka.layer_grams(st.layers[c][:, pick]) for c in conds}
    out = []
    for a, b in itertools.combinations_with_replacement(conds, 2):
        M = grams[a] @ grams[b].T
        for la, lb in np.ndindex(M.shape):
            out.append({"stimuli": st.key, "condition_a": a, "layer_a": la, "condition_b": b,
                        "layer_b": lb, "cka": float(M[la, lb]), "n_stimuli": len(pick)})
    return pd.DataFrame(out)


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
    """Hypothesis model RDMs over relations and the controls to partial out."""
    axes = [spatial.get(r, [None, None])[0] for r in rels]
    pol = [spatial.get(r, [None, None])[1] for r in rels]
    models = {"axis": geo.axis_rdm(axes), "polarity": geo.polarity_rdm(axes, pol),
              "meta_category": geo.categorical_rdm([meta.get(r) for r in rels])}
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


def model_fits(vec: np.ndarray, boot: np.ndarray, model: np.ndarray,
               controls: dict[str, np.ndarray]) -> dict[str, tuple[float, np.ndarray, int]]:
    """Spearman, tau-a and partial Spearman (controls regressed out of the ranks) of a relation
    RDM (point ``vec``, resamples ``boot``) with one model RDM, on the pairs the model defines."""
    mask = np.isfinite(model)
    m = model[mask]
    out: dict[str, tuple[float, np.ndarray, int]] = {}
    if mask.sum() < 3 or np.ptp(m) == 0:
        return out
    v, B = vec[mask], boot[:, mask]
    out["spearman"] = (geo.spearman(v, m), _row_corr(_rank_rows(B), scipy.stats.rankdata(m)), int(mask.sum()))
    out["tau_a"] = (geo.tau_a(v, m), geo.tau_a_rows(B, m), int(mask.sum()))
    ctrl = [c[mask] for c in controls.values() if np.ptp(c[mask]) > 0]
    if ctrl:
        Z = np.column_stack([np.ones(mask.sum())] + [scipy.stats.rankdata(c) for c in ctrl])
        P = np.eye(len(Z)) - Z @ np.linalg.pinv(Z)
        rm = P @ scipy.stats.rankdata(m)
        if np.linalg.norm(rm) > 1e-9:
            out["partial_spearman"] = (geo.partial_spearman(v, m, ctrl),
                                       _row_corr(_rank_rows(B) @ P.T, rm), int(mask.sum()))
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


def relation_analysis(st: Stimuli, counts: np.ndarray, metric: str, cfg: "RsaSettings",
                      meta: dict[str, str]) -> tuple[list[dict], list[dict], list[dict], pd.DataFrame]:
    """Relation RDMs from centroids vs hypothesis models; best hypothesis; axis asymmetry."""
    level = cfg.ci
    min_count = 1 if "pair_id" in st.table else cfg.relation_min_count
    rels, codes = relation_codes(st.table, min_count)
    if len(rels) < 4:
        log.warning("%s: only %d relations with >= %d rows: relation geometry skipped", st.key,
                    len(rels), min_count)
        return [], [], [], pd.DataFrame()
    profiles = None
    if "pair_id" not in st.table:
        nouns = sorted(set(st.table["subject"].dropna()) | set(st.table["object"].dropna()))
        col = {n: k for k, n in enumerate(nouns)}
        profiles = np.zeros((len(rels), len(nouns)))
        for c, s, o in zip(codes, st.table["subject"], st.table["object"]):
            if c >= 0:
                for noun in (s, o):
                    if noun is not None and noun in col:
                        profiles[c, col[noun]] += 1
    models, controls = relation_models(rels, cfg.spatial, meta, profiles)
    iu = np.triu_indices(len(rels), 1)
    ones = np.ones((1, len(st.table)), dtype=np.int32)
    n_stim = int((codes >= 0).sum())
    base = {"stimuli": st.key, "metric": metric, "relation": None, "n_stimuli": n_stim}
    fits, best_rows, asym_rows, rdm_rows = [], [], [], []
    fit_boot: dict[tuple, tuple[float, np.ndarray]] = {}
    asym_boot: dict[tuple, tuple[float, np.ndarray]] = {}
    for cond, X in st.X.items():
        D0 = batch_rdm(centroids(X, codes, len(rels), ones), metric)[0]
        DB = batch_rdm(centroids(X, codes, len(rels), counts), metric)
        vec, boot = D0[iu], DB[:, iu[0], iu[1]]
        for a, b in np.ndindex(D0.shape):
            rdm_rows.append({"stimuli": st.key, "condition": cond, "metric": metric,
                             "relation_a": rels[a], "relation_b": rels[b], "distance": float(D0[a, b])})
        for name, model in {**models, **controls}.items():
            other = {k: v for k, v in controls.items() if k != name}
            for method, (est, b, npairs) in model_fits(vec, boot, model, other).items():
                fits.append({**base, "comparison": f"{cond} vs model:{name}", "method": method,
                             "n_pairs": npairs, **summarize(est, b, level)})
                fit_boot[(cond, name, method)] = (est, b)
        # which hypothesis explains this encoder best, and by how much
        for method in ("tau_a", "partial_spearman"):
            have = [h for h in HYPOTHESES if (cond, h, method) in fit_boot]
            if len(have) < 2:
                continue
            est = np.array([fit_boot[(cond, h, method)][0] for h in have])
            B = np.column_stack([fit_boot[(cond, h, method)][1] for h in have])
            order = np.argsort(-est)
            top, second = order[0], order[1]
            p_best = float(np.mean(np.nanargmax(np.where(np.isnan(B), -np.inf, B), axis=1) == top))
            best_rows.append({**base, "comparison": f"{cond}: {have[top]} - {have[second]}",
                              "method": f"{method}_difference", "n_pairs": len(vec),
                              "condition": cond, "best": have[top], "runner_up": have[second],
                              "p_best": p_best,
                              **summarize(est[top] - est[second], B[:, top] - B[:, second], level)})
        seps = {ax: (float(separation(D0, rels, cfg.spatial, ax)),
                     separation(DB, rels, cfg.spatial, ax)) for ax in ("vertical", "horizontal", "depth")}
        for ax, (e, b) in seps.items():
            asym_rows.append({**base, "comparison": cond, "method": f"{ax}_separation",
                              "n_pairs": len(vec), **summarize(e, b, level, null=1.0)})
        e = seps["vertical"][0] - seps["horizontal"][0]
        b = seps["vertical"][1] - seps["horizontal"][1]
        asym_rows.append({**base, "comparison": cond, "method": "vertical_minus_horizontal",
                          "n_pairs": len(vec), **summarize(e, b, level)})
        asym_boot[cond] = (e, b)
    # between conditions: model fits and asymmetry, same resamples
    for a, b in itertools.combinations(list(st.X), 2):
        for name in list(models) + list(controls):
            for method in ("spearman", "tau_a", "partial_spearman"):
                if (a, name, method) in fit_boot and (b, name, method) in fit_boot:
                    (ea, ba), (eb, bb) = fit_boot[(a, name, method)], fit_boot[(b, name, method)]
                    fits.append({**base, "comparison": f"({a} vs model:{name}) - ({b} vs model:{name})",
                                 "method": f"{method}_difference", "n_pairs": None,
                                 **summarize(ea - eb, ba - bb, level)})
        (ea, ba), (eb, bb) = asym_boot[a], asym_boot[b]
        asym_rows.append({**base, "comparison": f"{a} - {b}", "method": "vertical_minus_horizontal_difference",
                          "n_pairs": None, **summarize(ea - eb, ba - bb, level)})
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


def order_analysis(st: Stimuli, counts: np.ndarray, metric: str, cfg: "RsaSettings") -> list[dict]:
    """Template set: distance between "A rel B" and "B rel A" per relation (can the encoder tell
    the arguments apart?), against the distance between synonymous relations (same arguments) and
    between converses ("A above B" vs "B below A", same meaning)."""
    t = st.table
    level = cfg.ci
    pairs = list(pd.unique(t["pair_id"]))
    rels = list(pd.unique(t["relation"]))
    idx = {(r, p, o): k for k, (r, p, o) in enumerate(zip(t["relation"], t["pair_id"], t["order"]))}
    first_row = t.reset_index().groupby("pair_id")["index"].first().reindex(pairs).to_numpy()
    Cp = counts[:, first_row].astype(np.float64)  # (B, P): every row of a pair shares its count
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
        """Per-row mean over noun pairs: point (rows,) and bootstrap (B, rows)."""
        return M.mean(1), (Cp @ M.T) / Cp.sum(1, keepdims=True)

    for cond, X in st.X.items():
        O = np.stack([dist(X, r, "AB", r, "BA") for r in rels])
        e, b = stat(O)
        for k, r in enumerate(rels):
            rows.append({**base, "comparison": cond, "method": "order_distance", "relation": r,
                         **summarize(e[k], b[:, k], level)})
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
                             "relation": f"{a} ~ {c}", **summarize(ed[k], bd[:, k], level)})
            s[f"{kind}_distance_mean"] = (ed.mean(), bd.mean(1))
            s[f"order_to_{kind}_ratio"] = (e.mean() / ed.mean(), b.mean(1) / bd.mean(1))
        for name, (est, bb) in s.items():
            null = 1.0 if name.endswith("ratio") else 0.0
            rows.append({**base, "comparison": cond, "method": name, "relation": None,
                         **summarize(est, bb, level, null=null)})
        summ[cond] = s
    for a, b in itertools.combinations(list(st.X), 2):
        for name in summ[a]:
            (ea, ba), (eb, bb) = summ[a][name], summ[b][name]
            rows.append({**base, "comparison": f"{a} - {b}", "method": f"{name}_difference",
                         "relation": None, **summarize(ea - eb, ba - bb, level)})
    return rows


def figure_items(st: Stimuli, n: int) -> np.ndarray:
    """Evenly spaced items after sorting by relation, for the item-RDM figures."""
    order = np.lexsort((np.arange(len(st.table)), st.table["relation"].to_numpy(dtype=str)))
    return order[np.unique(np.linspace(0, len(order) - 1, min(n, len(order))).astype(int))]

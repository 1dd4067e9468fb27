"""Resampling without duplicated stimuli: the replicates themselves, the intervals against
hand-computed / textbook values, and coverage by simulation with known population values
(fixed seeds; 95% nominal, coverage required within [0.90, 0.99] over >= 200 data sets)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
from threadpoolctl import threadpool_limits

from analysis.geometry import cka
from analysis.geometry import rdm as geo
from analysis.geometry.comparisons import batch_rdm, centroids
from analysis.geometry.resampling import (Resamples, group_subsamples, interval, noun_jackknife,
                                          pseudo_values)

LEVEL = 0.95
COVERAGE = (0.90, 0.99)
N_DATA = 200


@pytest.fixture(autouse=True)
def one_blas_thread():
    """Thousands of tiny matrix products: threads only add overhead (and contention on a shared
    machine)."""
    with threadpool_limits(1):
        yield


# ----------------------------------------------------------------------------- replicates


def test_group_subsamples_keep_whole_groups_without_duplicates():
    groups = np.repeat(np.array(list("abcdefghij")), [2, 3, 1, 4, 2, 1, 1, 2, 3, 1])
    res = group_subsamples(groups, 50, seed=3)
    assert res.weights.shape == (50, len(groups)) and res.weights.max() == 1
    assert (res.n_units, res.m_units, res.kind) == (10, 5, "subsample")
    assert res.scale == pytest.approx(1.0)  # half-sampling: sqrt(m / (G - m))
    for w in res.weights:
        drawn = {g for g, k in zip(groups, w) if k}
        assert len(drawn) == 5
        for g in np.unique(groups):
            assert len(set(w[groups == g])) == 1  # a group is kept or dropped whole
    np.testing.assert_array_equal(res.weights, group_subsamples(groups, 50, seed=3).weights)
    assert group_subsamples(groups, 5, seed=1, fraction=0.8).scale == pytest.approx(2.0)
    # required sets keep a stimulus in every replicate
    need = [np.flatnonzero(groups == "c"), np.flatnonzero((groups == "f") | (groups == "g"))]
    res = group_subsamples(groups, 200, seed=4, require=need)
    assert all(res.weights[:, r].any(axis=1).all() for r in need)


def test_noun_jackknife_drops_every_item_with_the_noun():
    nouns = np.array([[0, 1], [1, 0], [0, 2], [1, 2], [2, 3], [3, 0]])
    res = noun_jackknife(nouns)
    assert (res.kind, res.n_units, len(res)) == ("jackknife", 4, 4)
    for a, w in enumerate(res.weights):
        np.testing.assert_array_equal(w.astype(bool), ~(nouns == a).any(axis=1))
    assert res.label == "jackknife over 4 nouns"


# ----------------------------------------------------------------------------- intervals by hand


def test_subsampling_interval_by_hand():
    res = Resamples(np.ones((5, 4), dtype=np.uint8), "subsample", n_units=10, m_units=5, unit="g")
    rep = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    # pseudo-values: 0.3 - 1 * (rep - 0.3)
    np.testing.assert_allclose(pseudo_values(0.3, rep, res), [0.5, 0.4, 0.3, 0.2, 0.1])
    out = interval(0.3, rep, res, 0.5)
    assert (out["ci_low"], out["ci_high"]) == pytest.approx(tuple(np.quantile([0.1, .2, .3, .4, .5], [.25, .75])))
    assert out["p_value"] == pytest.approx(2 / 6) and out["n_boot"] == 5
    # replicates shifted as a whole (a half-sample bias): the interval stays around the estimate
    shifted = interval(0.3, rep + 0.2, res, 0.5)
    assert (shifted["ci_low"], shifted["ci_high"]) == pytest.approx((out["ci_low"], out["ci_high"]))
    # centred at the estimate instead (the basic interval), the shift is subtracted
    basic = interval(0.3, rep + 0.2, res, 0.5, center="estimate")
    assert basic["ci_high"] < 0.3
    # scale sqrt(m / (G - m)): keeping 8 of 10 units doubles the deviations
    wide = interval(0.3, rep, Resamples(res.weights, "subsample", 10, 8, "g"), 0.5)
    assert wide["ci_high"] - wide["ci_low"] == pytest.approx(2 * (out["ci_high"] - out["ci_low"]))
    # Fisher scale: back-transformed, inside (-1, 1) even near the bound
    out = interval(0.99, np.array([0.95, 0.97, 0.999, 0.98]), res, 0.9, transform="fisher")
    assert -1 < out["ci_low"] < out["ci_high"] < 1


def test_jackknife_interval_of_a_mean_is_the_t_interval():
    """Delete-one jackknife of the mean gives SE = s / sqrt(n) exactly."""
    x = np.random.default_rng(2).normal(size=12)
    loo = (x.sum() - x) / (len(x) - 1)
    res = Resamples(np.ones((12, 12), dtype=np.uint8), "jackknife", 12, 11, "noun")
    out = interval(x.mean(), loo, res, 0.9)
    lo, hi = scipy.stats.t.interval(0.9, 11, loc=x.mean(), scale=scipy.stats.sem(x))
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((lo, hi), abs=1e-12)
    assert out["p_value"] == pytest.approx(scipy.stats.ttest_1samp(x, 0).pvalue, abs=1e-12)


# ----------------------------------------------------------------------------- coverage


def _grouped_items(rng, n_groups: int, W: np.ndarray, V: np.ndarray, sx: float = 1.0,
                   sy: float = 1.5):
    """Items in groups of 1-3 (noun pairs, repeated captions) sharing a group effect:
    z = group effect + item effect, two encoders X = zW + sx noise, Y = zV + sy noise."""
    sizes = rng.integers(1, 4, size=n_groups)
    grp = np.repeat(np.arange(n_groups), sizes)
    d = W.shape[0]
    z = rng.normal(size=(n_groups, d))[grp] + rng.normal(size=(len(grp), d))
    X = z @ W + sx * rng.normal(size=(len(grp), W.shape[1]))
    Y = z @ V + sy * rng.normal(size=(len(grp), V.shape[1]))
    return X, Y, grp


def _plugin_cka_bootstrap(X: np.ndarray, Y: np.ndarray, C: np.ndarray) -> np.ndarray:
    """The old stage's replicates: plug-in CKA of the rows repeated by counts C (weighted HSIC
    c'(K o L)c - 2/n sum c (Kc)(Lc) + (c'Kc)(c'Lc)/n^2 on centred Grams with diagonals)."""
    def hsic(K, L):
        KC, LC, n = C @ K, C @ L, C.sum(1)
        return (np.einsum("bi,bi->b", C @ (K * L), C) - 2 / n * np.einsum("bi,bi,bi->b", C, KC, LC)
                + np.einsum("bi,bi->b", KC, C) * np.einsum("bi,bi->b", LC, C) / n ** 2)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    K, L, C = Xc @ Xc.T, Yc @ Yc.T, C.astype(np.float64)
    return hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))


def test_plugin_cka_bootstrap_helper_is_the_old_estimator():
    r = np.random.default_rng(8)
    X, Y = r.normal(size=(15, 4)), r.normal(size=(15, 3))
    C = geo.bootstrap_counts(np.arange(15), 3, seed=0)
    for c, v in zip(C, _plugin_cka_bootstrap(X, Y, C)):
        k = np.repeat(np.arange(15), c)
        assert v == pytest.approx(cka.linear_cka(X[k], Y[k], debiased=False), abs=1e-10)


def cka_coverage(dims, sx, sy, n_data: int = N_DATA, **kw) -> dict[str, float]:
    """Coverage of the stage's debiased-CKA interval (and of the old scheme) over ``n_data``
    simulated data sets of 40 groups (~80 items), 100 subsamples each. Population CKA from
    100,000 independent items (the estimator is consistent; the plug-in bias there is about
    d/n <= 1e-3)."""
    r0 = np.random.default_rng(99)
    W, V = r0.normal(size=(6, dims[0])), r0.normal(size=(6, dims[1]))
    big = np.random.default_rng(0)
    z = 2 ** 0.5 * big.normal(size=(100_000, 6))  # group + item effect of an item from a new group
    pop = cka.linear_cka(z @ W + sx * big.normal(size=(len(z), dims[0])),
                         z @ V + sy * big.normal(size=(len(z), dims[1])))
    hits = contains = old_hits = old_contains = 0
    for s in range(n_data):
        r = np.random.default_rng(1000 + s)
        X, Y, grp = _grouped_items(r, 40, W, V, sx, sy)
        res = group_subsamples(grp, 100, seed=s)
        est = cka.linear_cka(X, Y)
        rep = cka.subsample_cka([cka.centered_gram(X), cka.centered_gram(Y)], res.weights)[:, 0, 1]
        out = interval(est, rep, res, LEVEL, transform="fisher", **kw)
        hits += out["ci_low"] <= pop <= out["ci_high"]
        contains += out["ci_low"] <= est <= out["ci_high"]
        # the old scheme: plug-in CKA, groups bootstrapped with replacement, percentile interval
        lo, hi = np.quantile(_plugin_cka_bootstrap(X, Y, geo.bootstrap_counts(grp, 100, seed=s)),
                             [0.025, 0.975])
        old_hits += lo <= pop <= hi
        old_contains += lo <= cka.linear_cka(X, Y, debiased=False) <= hi
    return {"population": pop, "coverage": hits / n_data, "contains": contains / n_data,
            "old_coverage": old_hits / n_data, "old_contains": old_contains / n_data}


@pytest.mark.parametrize("dims, sx, sy", [((8, 5), 1.0, 1.5), ((128, 96), 4.0, 6.0),
                                          ((128, 96), 1.0, 1.5)])
def test_debiased_cka_subsampling_interval_covers(dims, sx, sy):
    """Low- and high-dimensional (d close to n, as 768-d embeddings of a few thousand captions;
    population CKA 0.62, plug-in mean 0.73) encoders, and one near the ceiling (population CKA
    0.93, where the Fisher-z scale matters: on the raw scale this case covers 0.90): 95%
    intervals cover within [0.90, 0.99] and contain their estimate; the old scheme misses the
    population value in the second (coverage 0.0)."""
    cov = cka_coverage(dims, sx, sy)
    assert COVERAGE[0] <= cov["coverage"] <= COVERAGE[1], cov
    assert cov["contains"] == 1.0, cov
    if sx > 1:  # why: the biased estimator and the inflating bootstrap
        assert cov["old_coverage"] < 0.5, cov


def spearman_coverage(n_data: int = N_DATA, old: bool = False, **kw) -> dict[str, float]:
    """Coverage of the Spearman interval between two cosine item RDMs over ``n_data`` data sets
    of 40 groups (~80 items, ~3,200 pairs), 100 subsamples of 20 groups, the stage's
    bootstrap_spearman on the kept pairs; with ``old``, also the old scheme (groups bootstrapped
    with replacement, pairs weighted c_u c_v, percentile interval) on the same data. Population value: Spearman
    over 300,000 pairs of independent items (the limit of the all-pairs statistic)."""
    r0 = np.random.default_rng(99)
    W, V = r0.normal(size=(6, 8)), r0.normal(size=(6, 5))
    big = np.random.default_rng(1)
    m = 300_000
    z = 2 ** 0.5 * big.normal(size=(2, m, 6))
    X = z @ W + big.normal(size=(2, m, 8))
    Y = z @ V + 1.5 * big.normal(size=(2, m, 5))

    def cos(A):
        A = A / np.linalg.norm(A, axis=2, keepdims=True)
        return 1 - np.einsum("kd,kd->k", A[0], A[1])

    pop = geo.spearman(cos(X), cos(Y))
    hits = contains = old_hits = old_contains = 0
    for s in range(n_data):
        r = np.random.default_rng(2000 + s)
        X, Y, grp = _grouped_items(r, 40, W, V)
        dx, dy = geo.rdm(X).astype(np.float64), geo.rdm(Y).astype(np.float64)
        i, j = np.triu_indices(len(X), 1)
        res = group_subsamples(grp, 100, seed=s)
        rep = geo.bootstrap_spearman([dx, dy], i, j, res.weights, n_jobs=1)[:, 0, 1]
        est = geo.spearman(dx, dy)
        out = interval(est, rep, res, LEVEL, transform="fisher", **kw)
        hits += out["ci_low"] <= pop <= out["ci_high"]
        contains += out["ci_low"] <= est <= out["ci_high"]
        if old:
            ob = geo.bootstrap_spearman([dx, dy], i, j, geo.bootstrap_counts(grp, 100, seed=s),
                                        n_jobs=1)[:, 0, 1]
            lo, hi = np.quantile(ob, [0.025, 0.975])
            old_hits += lo <= pop <= hi
            old_contains += lo <= est <= hi
    return {"population": pop, "coverage": hits / n_data, "contains": contains / n_data,
            "old_coverage": old_hits / n_data, "old_contains": old_contains / n_data}


def test_rdm_spearman_subsampling_interval_covers():
    cov = spearman_coverage()
    assert COVERAGE[0] <= cov["coverage"] <= COVERAGE[1], cov
    assert cov["contains"] == 1.0, cov


def _template_pairs(n_nouns: int):
    a, b = np.triu_indices(n_nouns, 1)
    return np.column_stack([a, b])


def jackknife_coverage(n_nouns: int = 10, n_data: int = 400) -> dict[str, float]:
    """Template-like design: every unordered pair of ``n_nouns`` nouns, a pair value = effect of
    noun a + effect of noun b + pair noise (population mean 0.5); delete-one-noun jackknife vs
    the old scheme (the pairs resampled as if independent, percentile interval)."""
    pairs = _template_pairs(n_nouns)
    res = noun_jackknife(pairs)
    hits = old_hits = 0
    for s in range(n_data):
        r = np.random.default_rng(3000 + s)
        noun = r.normal(size=n_nouns)
        v = 0.5 + noun[pairs[:, 0]] + noun[pairs[:, 1]] + 0.5 * r.normal(size=len(pairs))
        rep = (res.weights @ v) / res.weights.sum(1)
        out = interval(v.mean(), rep, res, LEVEL)
        hits += out["ci_low"] <= 0.5 <= out["ci_high"]
        C = geo.bootstrap_counts(np.arange(len(pairs)), 200, seed=s)
        lo, hi = np.quantile((C @ v) / C.sum(1), [0.025, 0.975])
        old_hits += lo <= 0.5 <= hi
    return {"coverage": hits / n_data, "old_coverage": old_hits / n_data}


@pytest.mark.parametrize("n_nouns", [10, 20])
def test_noun_jackknife_covers_a_mean_over_crossed_noun_pairs(n_nouns):
    """The template set's 10 nouns (and 20): the jackknife covers, resampling pairs does not."""
    cov = jackknife_coverage(n_nouns)
    assert COVERAGE[0] <= cov["coverage"] <= COVERAGE[1], cov
    assert cov["old_coverage"] < 0.6, cov


def centroid_coverage(n_data: int = N_DATA, **kw) -> dict[str, float]:
    """VSR-like captions: a noun pair (group) carries a shared vector into all its captions,
    which repeat (1-6 near-identical rows, as the 2,058 repeated captions of VSR train) and
    mostly use one relation. Relation centroids' cosine distance between two relations;
    population value = the distance between the population centroids (the relation vectors,
    the noun-pair vectors averaging to 0). New: subsampling noun-pair groups; old: resampling
    rows within relation (treats repeated captions as independent)."""
    D = 6
    base = np.random.default_rng(5)
    rel = base.normal(size=(2, D)) + 1.0
    pop = float(1 - rel[0] @ rel[1] / np.linalg.norm(rel[0]) / np.linalg.norm(rel[1]))
    hits = contains = old_hits = old_contains = 0
    for s in range(n_data):
        r = np.random.default_rng(4000 + s)
        G = 40
        rows_g, rows_r = [], []
        for g in range(G):  # one relation per group (a few groups have both), 1-6 captions
            for k in ([0, 1] if g % 10 == 0 else [g % 2]):
                m = r.integers(1, 7)
                rows_g += [g] * m
                rows_r += [k] * m
        grp, codes = np.array(rows_g), np.array(rows_r)
        X = rel[codes] + 1.0 * r.normal(size=(G, D))[grp] + 0.05 * r.normal(size=(len(grp), D))
        ones = np.ones((1, len(grp)))
        est = batch_rdm(centroids(X, codes, 2, ones), "cosine")[0, 0, 1]
        res = group_subsamples(grp, 100, seed=s, require=[codes == 0, codes == 1])
        rep = batch_rdm(centroids(X, codes, 2, res.weights), "cosine")[:, 0, 1]
        out = interval(est, rep, res, LEVEL, **kw)
        hits += out["ci_low"] <= pop <= out["ci_high"]
        contains += out["ci_low"] <= est <= out["ci_high"]
        C = geo.stratified_counts(codes, 100, seed=s)
        lo, hi = np.quantile(batch_rdm(centroids(X, codes, 2, C), "cosine")[:, 0, 1], [0.025, 0.975])
        old_hits += lo <= pop <= hi
        old_contains += lo <= est <= hi
    return {"population": pop, "coverage": hits / n_data, "contains": contains / n_data,
            "old_coverage": old_hits / n_data, "old_contains": old_contains / n_data}


def test_relation_centroid_interval_with_noun_pair_groups_covers():
    cov = centroid_coverage()
    assert COVERAGE[0] <= cov["coverage"] <= COVERAGE[1], cov
    assert cov["contains"] == 1.0, cov
    assert cov["old_coverage"] < 0.8, cov

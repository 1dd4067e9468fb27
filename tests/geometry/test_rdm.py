"""Geometry functions against independent references: scipy, rsatoolbox, explicit resampling."""

from __future__ import annotations

import numpy as np
import pytest
import rsatoolbox
import scipy.stats
from scipy.spatial.distance import pdist

from analysis.geometry import rdm as g


@pytest.fixture
def rng():
    return np.random.default_rng(7)


@pytest.mark.parametrize("metric", ["cosine", "correlation"])
def test_rdm_matches_pdist(rng, metric):
    X = rng.normal(size=(37, 9)) + 0.5
    got = g.rdm(X, metric, block=8)
    np.testing.assert_allclose(got, pdist(X, metric), atol=2e-6)


def test_rdm_rejects_zero_rows():
    with pytest.raises(ValueError, match=r"zero rows \[1\]"):
        g.rdm(np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]))


def test_condensed_to_pairs_matches_triu():
    n = 11
    i, j = np.triu_indices(n, 1)
    ci, cj = g.condensed_to_pairs(np.arange(n * (n - 1) // 2), n)
    np.testing.assert_array_equal(ci, i)
    np.testing.assert_array_equal(cj, j)


def _rsa_compare(x, y, method):
    return float(rsatoolbox.rdm.compare(rsatoolbox.rdm.RDMs(x[None]), rsatoolbox.rdm.RDMs(y[None]),
                                        method=method)[0, 0])


@pytest.mark.parametrize("ties", [False, True])
def test_spearman_and_tau_a_match_scipy_and_rsatoolbox(rng, ties):
    n_items = 12
    m = n_items * (n_items - 1) // 2
    x = rng.normal(size=m)
    y = x + rng.normal(size=m)
    if ties:  # categorical model RDM: heavy ties, where tau-a and tau-b differ
        x = np.round(x)
        y = (y > 0).astype(float)
    rho = g.spearman(x, y)
    assert rho == pytest.approx(scipy.stats.spearmanr(x, y).statistic, abs=1e-12)
    assert rho == pytest.approx(_rsa_compare(x, y, "spearman"), abs=1e-10)
    ta = g.tau_a(x, y)
    assert ta == pytest.approx(_rsa_compare(x, y, "tau-a"), abs=1e-12)
    if not ties:  # without ties tau-a is tau-b
        assert ta == pytest.approx(scipy.stats.kendalltau(x, y).statistic, abs=1e-12)
    else:
        # hand count of (concordant - discordant) / (n choose 2)
        s = np.sign(x[:, None] - x[None]) * np.sign(y[:, None] - y[None])
        assert ta == pytest.approx(np.triu(s, 1).sum() / (m * (m - 1) / 2), abs=1e-12)
        assert abs(ta) < abs(scipy.stats.kendalltau(x, y).statistic)


def test_partial_spearman_removes_a_shared_control(rng):
    z = rng.normal(size=400)
    x = z + 0.3 * rng.normal(size=400)
    y = z + 0.3 * rng.normal(size=400)
    assert g.spearman(x, y) > 0.7
    assert abs(g.partial_spearman(x, y, [z])) < 0.15
    # with an irrelevant control it is close to the plain correlation
    assert g.partial_spearman(x, y, [rng.normal(size=400)]) == pytest.approx(g.spearman(x, y), abs=0.03)


def test_bootstrap_counts_resample_groups_whole(rng):
    groups = np.repeat(np.array(["a", "b", "c", "d", "e"]), [2, 3, 1, 4, 2])
    C = g.bootstrap_counts(groups, 50, seed=3)
    assert C.shape == (50, len(groups))
    for row in C:
        for grp in np.unique(groups):
            assert len(set(row[groups == grp])) == 1  # every member drawn as often as its group
        n_groups_drawn = sum(row[groups == grp][0] for grp in np.unique(groups))
        assert n_groups_drawn == 5
    np.testing.assert_array_equal(C, g.bootstrap_counts(groups, 50, seed=3))


def test_stratified_counts_keep_stratum_sizes(rng):
    strata = rng.integers(0, 4, size=30)
    C = g.stratified_counts(strata, 20, seed=1)
    for s in range(4):
        assert (C[:, strata == s].sum(1) == (strata == s).sum()).all()


def _expanded_rdm_vector(D: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The resampled RDM as rsatoolbox builds it: rows/cols idx, self-pairs of duplicates dropped."""
    sub = D[np.ix_(idx, idx)]
    a, b = np.triu_indices(len(idx), 1)
    keep = idx[a] != idx[b]
    return sub[a, b][keep]


@pytest.mark.parametrize("tied", [False, True])
def test_bootstrap_spearman_equals_explicit_resampling(rng, tied):
    n = 15
    X, Y = rng.normal(size=(n, 5)), rng.normal(size=(n, 5))
    dx, dy = g.rdm(X).astype(np.float64), g.rdm(Y).astype(np.float64)
    if tied:
        dy = np.round(dy, 1)
    groups = np.arange(n) // 3
    C = g.bootstrap_counts(groups, 6, seed=0)
    i, j = np.triu_indices(n, 1)
    boot = g.bootstrap_spearman([dx, dy], i, j, C, n_jobs=2)
    Dx, Dy = g.square(dx), g.square(dy)
    for b, c in enumerate(C):
        idx = np.repeat(np.arange(n), c)
        ex, ey = _expanded_rdm_vector(Dx, idx), _expanded_rdm_vector(Dy, idx)
        assert boot[b, 0, 1] == pytest.approx(scipy.stats.spearmanr(ex, ey).statistic, abs=1e-10)
        assert boot[b, 0, 0] == pytest.approx(1.0)
        assert g.bootstrap_tau_a([dx, dy], [(0, 1)], i, j, C[b:b + 1], n_jobs=1,
                                 max_bins=1 << 20)[0, 0] == pytest.approx(g.tau_a(ex, ey), abs=1e-12)


def test_same_resample_for_both_conditions(rng):
    """One count matrix drives every condition: replicate b compares the two RDMs over the same
    resampled stimuli (their rows/cols taken with the same index), which is what pairs them."""
    n = 12
    X = rng.normal(size=(n, 4))
    Y = X + 0.5 * rng.normal(size=(n, 4))
    dx, dy = g.rdm(X), g.rdm(Y)
    C = g.bootstrap_counts(np.arange(n), 4, seed=5)
    i, j = np.triu_indices(n, 1)
    boot = g.bootstrap_spearman([dx, dy], i, j, C, n_jobs=1)
    Dx, Dy = g.square(dx), g.square(dy)
    for b, c in enumerate(C):
        idx = np.repeat(np.arange(n), c)
        same = scipy.stats.spearmanr(_expanded_rdm_vector(Dx, idx), _expanded_rdm_vector(Dy, idx))
        assert boot[b, 0, 1] == pytest.approx(same.statistic, abs=1e-10)
        # shuffling which stimulus each Y row stands for breaks the pairing and the value
        perm = rng.permutation(n)
        mixed = scipy.stats.spearmanr(_expanded_rdm_vector(Dx, idx),
                                      _expanded_rdm_vector(Dy[np.ix_(perm, perm)], idx))
        assert boot[b, 0, 1] - mixed.statistic > 0.2


def test_subsampled_pairs_ci_agrees_with_full(rng):
    """CIs from a fixed pair subsample (what the stage does for large RDMs) agree with the full
    computation on a small case. The subsample adds a second-order variance term ~ n/M, so its
    CIs are slightly wider (conservative), never narrower; at VSR size (n=7,680, M=1e6)
    bench/bench_rsa.py --check measures a standard-deviation ratio of 1.02."""
    n, d = 300, 10
    Z = rng.normal(size=(n, d))
    X = Z + 0.8 * rng.normal(size=(n, d))
    Y = Z + 0.8 * rng.normal(size=(n, d))
    dx, dy = g.rdm(X), g.rdm(Y)
    C = g.bootstrap_counts(np.arange(n), 100, seed=11)
    i, j = np.triu_indices(n, 1)
    full = g.bootstrap_spearman([dx, dy], i, j, C)[:, 0, 1]
    k = g.sample_pairs(n, 25_000, seed=2)  # 56% of the 44,850 pairs
    si, sj = g.condensed_to_pairs(k, n)
    sub = g.bootstrap_spearman([dx[k], dy[k]], si, sj, C)[:, 0, 1]
    est_full, est_sub = g.spearman(dx, dy), g.spearman(dx[k], dy[k])
    assert abs(est_sub - est_full) < 0.01
    lo_f, hi_f = g.percentile_ci(full)
    lo_s, hi_s = g.percentile_ci(sub + (est_full - est_sub))
    width = hi_f - lo_f
    assert width > 0.02
    assert abs(lo_s - lo_f) < 0.2 * width and abs(hi_s - hi_f) < 0.2 * width
    assert 0.97 < np.std(sub) / np.std(full) < 1.15


def test_percentile_ci_and_bootstrap_p():
    boot = np.linspace(-1, 3, 401)
    lo, hi = g.percentile_ci(boot, 0.9)
    assert lo == pytest.approx(np.quantile(boot, 0.05)) and hi == pytest.approx(np.quantile(boot, 0.95))
    p = g.bootstrap_p(boot)
    assert p == pytest.approx(2 * (101 + 1) / 402)  # 101 replicates <= 0
    assert g.bootstrap_p(np.ones(99)) == pytest.approx(2 / 100)


def test_model_rdms_by_hand():
    # relations: above, below, left of, near
    axes = ["vertical", "vertical", "horizontal", None]
    pol = ["+", "-", "+", None]
    # pairs: (0,1) (0,2) (0,3) (1,2) (1,3) (2,3)
    np.testing.assert_array_equal(g.axis_rdm(axes), [0, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(g.polarity_rdm(axes, pol), [1, np.nan, np.nan, np.nan, np.nan, np.nan])
    np.testing.assert_array_equal(g.categorical_rdm(["P", "P", "P", None]), [0, 0, np.nan, 0, np.nan, np.nan])
    lex = g.lexical_overlap_rdm(["left of", "at the left side of", "right of"])
    np.testing.assert_allclose(lex, [1 - 2 / 5, 1 - 1 / 3, 1 - 1 / 6])
    prof = g.profile_rdm(np.array([[1, 0], [2, 0], [0, 1]]))
    np.testing.assert_allclose(prof, [0, 1, 1], atol=1e-12)


def test_noun_overlap_pairs_by_hand():
    subj = np.array([0, 0, 2, 1, -1])
    obj = np.array([1, 2, 3, 0, 0])
    i, j = np.triu_indices(5, 1)
    got = dict(zip(zip(i.tolist(), j.tolist()), g.noun_overlap_pairs(subj, obj, i, j)))
    assert got[(0, 3)] == 0  # same nouns, swapped roles
    assert got[(0, 1)] == pytest.approx(1 - 1 / 3)
    assert got[(0, 2)] == 1
    assert np.isnan(got[(0, 4)])


def test_binned_ranks_stay_close_to_exact(rng):
    """Continuous RDMs with more distinct values than ``max_bins`` are ranked in equal-count bins;
    the bootstrap Spearman moves by far less than its CI width."""
    n = 150
    X = rng.normal(size=(n, 6))
    Y = X + rng.normal(size=(n, 6))
    dx, dy = g.rdm(X), g.rdm(Y)
    C = g.bootstrap_counts(np.arange(n), 20, seed=4)
    i, j = np.triu_indices(n, 1)
    exact = g.bootstrap_spearman([dx, dy], i, j, C, max_bins=1 << 20)[:, 0, 1]
    binned = g.bootstrap_spearman([dx, dy], i, j, C, max_bins=512)[:, 0, 1]
    assert g.RankedPairs(dx, 1 << 20).exact and not g.RankedPairs(dx, 512).exact
    np.testing.assert_allclose(binned, exact, atol=1e-4)
    assert np.ptp(exact) > 0.02


def test_tau_a_histogram_binned_close_to_exact(rng):
    n = 50
    X = rng.normal(size=(n, 6))
    Y = X + rng.normal(size=(n, 6))
    dx, dy = g.rdm(X), g.rdm(Y)
    model = np.round(dy * 3)  # a few levels: coded exactly
    C = g.bootstrap_counts(np.arange(n), 10, seed=4)
    i, j = np.triu_indices(n, 1)
    exact = g.bootstrap_tau_a([dx, dy, model], [(0, 1), (0, 2)], i, j, C, max_bins=1 << 20)
    binned = g.bootstrap_tau_a([dx, dy, model], [(0, 1), (0, 2)], i, j, C, max_bins=128)
    for b, c in enumerate(C):
        w = g.pair_weights(c, i, j).astype(np.int64)
        assert exact[b, 1] == pytest.approx(g.tau_a(np.repeat(dx, w), np.repeat(model, w)), abs=1e-12)
    # binning continuous RDMs adds ties: a small shrinkage toward 0, same across resamples
    shrink = exact[:, 0] - binned[:, 0]
    assert (np.abs(shrink) < 0.01 * np.abs(exact[:, 0])).all()
    assert np.std(shrink) < 0.05 * np.std(exact[:, 0])


def test_tau_a_rows_matches_tau_a(rng):
    X = rng.normal(size=(7, 40))
    X[3, 5] = X[3, 9]  # a tied row takes the fallback
    for m in (rng.integers(0, 3, 40).astype(float), rng.normal(size=40)):
        got = g.tau_a_rows(X, m, chunk=3)
        np.testing.assert_allclose(got, [g.tau_a(x, m) for x in X], atol=1e-12)


def test_subset_replicates_equal_statistics_of_the_kept_items(rng):
    """0/1 counts (the stage's subsamples): Spearman and tau-a of the replicate equal scipy's on
    the RDMs of the kept items, ties included, through the pairs-kept path."""
    from analysis.geometry.resampling import group_subsamples
    n = 18
    X, Y = rng.normal(size=(n, 5)), rng.normal(size=(n, 5))
    dx, dy = g.rdm(X).astype(np.float64), np.round(g.rdm(Y).astype(np.float64), 1)
    res = group_subsamples(np.arange(n) // 2, 6, seed=0)
    i, j = np.triu_indices(n, 1)
    assert g.is_subset(res.weights) and not g.is_subset(g.bootstrap_counts(np.arange(n), 3, 0))
    boot = g.bootstrap_spearman([dx, dy], i, j, res.weights, n_jobs=2)
    tau = g.bootstrap_tau_a([dx, dy], [(0, 1)], i, j, res.weights, n_jobs=1, max_bins=1 << 20)
    for b, w in enumerate(res.weights.astype(bool)):
        ex, ey = pdist(X[w], "cosine"), np.round(pdist(Y[w], "cosine"), 1)
        sel = g.kept_pairs(w, i, j)
        np.testing.assert_allclose(dx[sel], ex, atol=1e-6)
        assert boot[b, 0, 1] == pytest.approx(scipy.stats.spearmanr(dx[sel], dy[sel]).statistic, abs=1e-10)
        assert tau[b, 0] == pytest.approx(g.tau_a(dx[sel], dy[sel]), abs=1e-12)


def test_subsampled_pairs_spread_agrees_with_full_for_half_samples(rng):
    """The stage's replicates of item-RDM statistics use a fixed pair subsample (rsa.max_pairs);
    a half-sample keeps about a quarter of it. The spread of the replicates stays close to the
    all-pairs spread (slightly wider: conservative)."""
    from analysis.geometry.resampling import group_subsamples
    n, d = 300, 10
    Z = rng.normal(size=(n, d))
    X = Z + 0.8 * rng.normal(size=(n, d))
    Y = Z + 0.8 * rng.normal(size=(n, d))
    dx, dy = g.rdm(X), g.rdm(Y)
    res = group_subsamples(np.arange(n), 100, seed=11)
    i, j = np.triu_indices(n, 1)
    full = g.bootstrap_spearman([dx, dy], i, j, res.weights)[:, 0, 1]
    k = g.sample_pairs(n, 25_000, seed=2)
    si, sj = g.condensed_to_pairs(k, n)
    sub = g.bootstrap_spearman([dx[k], dy[k]], si, sj, res.weights)[:, 0, 1]
    assert 0.97 < np.std(sub) / np.std(full) < 1.2

"""Tests for analysis/stats.py against sklearn, scipy, hand-computed values and simulations."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import accuracy_score, average_precision_score, f1_score

from analysis.inference import resampling as S


def _binary(rng, n=300, n_groups=60, repeats=1, ties=True):
    y = rng.integers(0, 2, n)
    s = rng.random((repeats, n)) * 0.6 + 0.3 * y
    if ties:
        s = np.round(s, 1)  # many tied scores: AUPRC must handle tie blocks like sklearn
    return S.Predictions.aligned(np.tile(y, (repeats, 1)), (s > 0.5).astype(int), s, rng.integers(0, n_groups, n))


def _clustered(rng, n_groups=100, per_group=2, q=0.75, conc=6.0):
    """Balanced binary labels; each group's rows are right with its own probability q_g ~ Beta
    with mean q, errors symmetric, so the population accuracy and macro F1 both equal q."""
    qg = rng.beta(q * conc, (1 - q) * conc, n_groups)
    groups = np.repeat(np.arange(n_groups), per_group)
    y = rng.integers(0, 2, len(groups))
    p = np.where(rng.random(len(groups)) < qg[groups], y, 1 - y)
    return S.Predictions.aligned(y, p, rng.random(len(groups)), groups)


# ---- weighted metrics equal sklearn's sample_weight versions ---------------------------------

@pytest.mark.parametrize("metric", S.METRICS)
def test_weighted_metrics_match_sklearn_sample_weight(metric):
    rng = np.random.default_rng(0)
    pred = _binary(rng)
    W = rng.random((6, pred.n)) * (rng.random((6, pred.n)) > 0.3)
    ref = {"macro_f1": lambda w: f1_score(pred.y_true, pred.y_pred, average="macro", sample_weight=w),
           "accuracy": lambda w: accuracy_score(pred.y_true, pred.y_pred, sample_weight=w),
           "auprc": lambda w: average_precision_score(pred.y_true, pred.score, sample_weight=w)}[metric]
    np.testing.assert_allclose(S.metric_weighted(metric, pred, W), [ref(w) for w in W], atol=1e-12)
    assert S.metric_point(metric, pred) == pytest.approx(ref(None), abs=1e-12)  # unweighted: sklearn


def test_multiclass_macro_f1_and_integer_weights_equal_repeated_rows():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 5, 200)
    p = np.where(rng.random(200) < 0.6, y, rng.integers(0, 6, 200))  # class 5 only ever predicted
    pred = S.Predictions.aligned(y, p, rng.random(200), np.arange(200))
    counts = rng.integers(0, 3, 200)
    expect = f1_score(np.repeat(y, counts), np.repeat(p, counts), average="macro", labels=np.unique(np.r_[y, p]),
                      zero_division=0)
    assert S.metric_weighted("macro_f1", pred, counts[None])[0] == pytest.approx(expect, abs=1e-12)
    with pytest.raises(ValueError, match="binary"):
        S.metric_point("auprc", pred)


def test_repeats_are_averaged_and_may_hold_different_rows():
    rng = np.random.default_rng(2)
    pred = _binary(rng, repeats=3)
    per_repeat = [f1_score(pred.y_true[pred.repeat == r], pred.y_pred[pred.repeat == r], average="macro")
                  for r in range(3)]
    assert S.metric_point("macro_f1", pred) == pytest.approx(np.mean(per_repeat))
    # held-out-word designs: each repeat predicts its own rows; still the mean over repeats
    part = pred.take(np.flatnonzero((pred.repeat == 0) | ((pred.repeat == 1) & (pred.rows < 100))))
    expect = np.mean([f1_score(part.y_true[part.repeat == r], part.y_pred[part.repeat == r], average="macro")
                      for r in (0, 1)])
    assert part.n_repeats == 2 and part.n == pred.n
    assert S.metric_point("macro_f1", part) == pytest.approx(expect)
    W = np.ones((1, part.n_items))
    assert S.metric_weighted("macro_f1", part, W)[0] == pytest.approx(expect)


def test_chance_levels_hand_computed():
    y = np.array([0] * 7 + [1] * 3)
    f1 = S.chance_levels("macro_f1", y)
    assert f1["chance_majority"] == pytest.approx((2 * 7 / (2 * 7 + 3) + 0) / 2)
    assert f1["chance_stratified"] == pytest.approx(0.5)
    acc = S.chance_levels("accuracy", y)
    assert acc["chance_majority"] == pytest.approx(0.7)
    assert acc["chance_stratified"] == pytest.approx(0.49 + 0.09)
    assert S.chance_levels("auprc", y)["chance"] == pytest.approx(0.3)


# ---- resampling -------------------------------------------------------------------------------

def test_bootstrap_counts_stratified_and_groups_kept_whole():
    rng = np.random.default_rng(3)
    strata = np.array([0] * 7 + [1] * 3 + [2])
    counts = S.bootstrap_counts(strata, 500, rng)
    for s, size in [(0, 7), (1, 3), (2, 1)]:
        assert (counts[:, strata == s].sum(axis=1) == size).all()  # each stratum keeps its size
    assert (counts[:, -1] == 1).all()
    assert counts[:, :7].std() > 0  # and really resamples
    # rows of one group get the same weight in every replicate
    groups = np.array(["a", "b", "a", "c", "b", "a"])
    codes, g = S.group_codes(groups)
    W = S.bootstrap_counts(np.zeros(g, int), 200, rng)[:, codes]
    for label in "abc":
        cols = W[:, groups == label]
        assert (cols == cols[:, :1]).all()


def test_group_strata_majority_class():
    codes = np.array([0, 0, 0, 1, 1, 2])
    y = np.array([1, 1, 0, 0, 1, 0])
    np.testing.assert_array_equal(S.group_strata(codes, y, 3), [1, 0, 0])  # tie -> smallest class


def test_merge_groups_connected_components():
    a = np.array(["x", "x", "y", "z", "w"])
    b = np.array([1, 2, 2, 3, 4])
    merged = S.merge_groups(a, b)
    assert merged[0] == merged[1] == merged[2]  # x links rows 0,1; group 2 links rows 1,2
    assert len({merged[0], merged[3], merged[4]}) == 3


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_ungrouped_ci_matches_scipy_bootstrap(method):
    # every row its own group, no strata: our CI for accuracy is scipy's CI for a mean
    rng = np.random.default_rng(4)
    correct = (rng.random(400) < 0.7).astype(int)
    pred = S.Predictions.aligned(np.ones(400, int), correct, np.zeros(400), np.arange(400))
    ours = S.bootstrap_ci(pred, "accuracy", n_resamples=5000, seed=1, method=method, stratify=False)
    ref = sps.bootstrap((correct,), np.mean, n_resamples=5000, method=method.upper() if method == "bca" else method,
                        rng=np.random.default_rng(2)).confidence_interval
    assert ours.estimate == pytest.approx(correct.mean())
    assert ours.ci_low == pytest.approx(ref.low, abs=0.006)  # Monte-Carlo error of two bootstraps
    assert ours.ci_high == pytest.approx(ref.high, abs=0.006)


@pytest.mark.parametrize("metric,method", [("accuracy", "percentile"), ("macro_f1", "bca")])
def test_grouped_bootstrap_ci_reaches_nominal_coverage(metric, method):
    # 400 simulated clustered datasets; the 95% CI must cover the true value 93–97% of the time
    # (binomial SD of the coverage is 1.1 points at 400 datasets; fixed seed)
    rng = np.random.default_rng(5)
    hits = 0
    for i in range(400):
        est = S.bootstrap_ci(_clustered(rng), metric, n_resamples=1000, seed=i, method=method)
        hits += est.ci_low <= 0.75 <= est.ci_high
    assert 0.93 <= hits / 400 <= 0.97


def test_ungrouped_resampling_undercovers_clustered_data():
    # the same simulation with groups ignored: the interval is too narrow, so grouping matters
    rng = np.random.default_rng(6)
    hits = 0
    for i in range(200):
        pred = _clustered(rng, n_groups=40, per_group=5, conc=2.0)
        est = S.bootstrap_ci(replace(pred, groups=np.arange(pred.n_items)),
                             "accuracy", n_resamples=500, seed=i)
        hits += est.ci_low <= 0.75 <= est.ci_high
    assert hits / 200 < 0.88


# ---- paired comparisons -----------------------------------------------------------------------

def test_paired_bootstrap_uses_one_resample_for_both_conditions():
    rng = np.random.default_rng(7)
    a = _binary(rng, repeats=2)
    same = S.paired_bootstrap_ci(a, a, "macro_f1", n_resamples=500, seed=0)
    assert same.estimate == 0 and same.ci_low == 0 and same.ci_high == 0  # independent draws would not be 0
    # b = a with a few rows flipped to wrong: the difference is never negative in any replicate
    b_pred = a.y_pred.reshape(2, -1).copy()
    right = np.flatnonzero((b_pred == a.y_true.reshape(2, -1)).all(axis=0))[:15]  # right in every repeat
    b_pred[:, right] = 1 - b_pred[:, right]
    b = replace(a, y_pred=b_pred.ravel())
    est = S.paired_bootstrap_ci(a, b, "accuracy", n_resamples=500, seed=0)
    assert est.estimate == pytest.approx(15 / a.n)
    assert 0 < est.ci_low < est.estimate < est.ci_high
    with pytest.raises(ValueError, match="y_true"):
        S.paired_bootstrap_ci(a, replace(a, y_true=1 - a.y_true), "accuracy")


def test_paired_permutation_pvalues_uniform_under_null():
    # conditions exchangeable within groups: p-values ~ U(0,1); KS at the 1% level and the
    # share below 0.05 / 0.2 within 3 binomial SDs (300 datasets, fixed seed)
    rng = np.random.default_rng(8)
    ps = []
    for i in range(300):
        n, groups = 80, np.repeat(np.arange(40), 2)
        y = rng.integers(0, 2, n)
        preds = [np.where(rng.random(n) < 0.7, y, 1 - y) for _ in range(2)]
        a, b = (S.Predictions.aligned(y, p, p * 0.5 + 0.25, groups) for p in preds)
        ps.append(S.paired_permutation_pvalue(a, b, "macro_f1", n_permutations=199, seed=i))
    ps = np.array(ps)
    assert sps.kstest(ps, "uniform").pvalue > 0.01
    for cut in (0.05, 0.2):
        assert abs(np.mean(ps <= cut) - cut) < 3 * np.sqrt(cut * (1 - cut) / len(ps))


def test_paired_permutation_detects_real_difference_and_auprc():
    rng = np.random.default_rng(9)
    n, groups = 300, np.arange(300) // 3
    y = rng.integers(0, 2, n)
    good = np.where(rng.random(n) < 0.9, y, 1 - y)
    bad = np.where(rng.random(n) < 0.6, y, 1 - y)
    a = S.Predictions.aligned(y, good, 0.8 * good + 0.2 * rng.random(n), groups)
    b = S.Predictions.aligned(y, bad, 0.8 * bad + 0.2 * rng.random(n), groups)
    for metric in ("macro_f1", "auprc"):
        assert S.paired_permutation_pvalue(a, b, metric, n_permutations=999, seed=0) == pytest.approx(1 / 1000)


def test_null_pvalue_add_one_and_uniform():
    assert S.null_pvalue(0.8, [0.1, 0.9, 0.8, 0.5]) == pytest.approx(3 / 5)
    assert S.null_pvalue(0.95, [0.1, 0.9, 0.8, 0.5]) == pytest.approx(1 / 5)
    assert np.isnan(S.null_pvalue(0.5, []))
    rng = np.random.default_rng(10)
    draws = rng.normal(size=(2000, 100))  # observed and 99 null scores exchangeable
    ps = np.array([S.null_pvalue(row[0], row[1:]) for row in draws])
    # discrete uniform on {1/100, ..., 1}: P(p <= k/100) = k/100
    for k in (5, 20, 50):
        assert abs(np.mean(ps <= k / 100) - k / 100) < 3 * np.sqrt(k / 100 * (1 - k / 100) / 2000)


# ---- multiplicity -------------------------------------------------------------------------------

def test_holm_hand_computed():
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> running max 0.06
    np.testing.assert_allclose(S.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(S.holm([0.5, 0.4]), [0.8, 0.8])
    np.testing.assert_allclose(S.holm([0.9, np.nan, 0.6]), [1.0, np.nan, 1.0])


def test_bh_hand_computed():
    # p*m/rank: 0.02, 0.02, 0.04, 0.04, then cumulative min from the largest
    np.testing.assert_allclose(S.bh([0.01, 0.04, 0.03, 0.005]), [0.02, 0.04, 0.04, 0.02])
    np.testing.assert_allclose(S.bh([0.01, np.nan, 0.02]), [0.02, np.nan, 0.02])


# ---- aggregates and the asymmetry contrast ----------------------------------------------------------

def test_mean_of_targets_ci():
    rng = np.random.default_rng(11)
    preds = [_binary(rng, n=120, n_groups=40) for _ in range(3)]
    est = S.mean_of_targets_ci(preds, "macro_f1", n_resamples=300, seed=0)
    expect = np.mean([f1_score(p.y_true, p.y_pred, average="macro") for p in preds])
    assert est.estimate == pytest.approx(expect)
    assert est.ci_low < est.estimate < est.ci_high and est.n == 360
    same = S.mean_of_targets_ci(preds, "macro_f1", n_resamples=100, seed=0, baseline=preds)
    assert same.estimate == 0 and same.ci_low == 0 and same.ci_high == 0  # one resample for both
    worse = [replace(p, y_pred=np.where(np.arange(p.n_items) < 10, 1 - p.y_true, p.y_pred)) for p in preds]
    diff = S.mean_of_targets_ci(preds, "accuracy", n_resamples=100, seed=0, baseline=worse)
    expect = np.mean([accuracy_score(p.y_true, p.y_pred) - accuracy_score(q.y_true, q.y_pred)
                      for p, q in zip(preds, worse)])
    assert diff.estimate == pytest.approx(expect)


def test_subsample_equal():
    ia, ib = S.subsample_equal(10, 4, seed=0)
    assert len(ia) == len(ib) == 4
    assert len(set(ia)) == 4 and set(ia) <= set(range(10))
    np.testing.assert_array_equal(ib, np.arange(4))
    np.testing.assert_array_equal(S.subsample_equal(10, 4, seed=0)[0], ia)  # deterministic


def _side(rng, n, q_a, q_b):
    y = rng.integers(0, 2, n)
    pa = np.where(rng.random(n) < q_a, y, 1 - y)
    pb = np.where(rng.random(n) < q_b, y, 1 - y)
    groups = np.array([f"g{rng.integers(1_000_000)}" for _ in range(n // 2)]).repeat(2)
    return (S.Predictions.aligned(y, pa, pa * 0.6 + 0.2, groups),
            S.Predictions.aligned(y, pb, pb * 0.6 + 0.2, groups))


def test_difference_in_differences_detects_asymmetry_with_equal_sides():
    rng = np.random.default_rng(12)
    a1, b1 = _side(rng, 600, 0.95, 0.6)  # grounded wins by 0.35 on side 1 (larger side)
    a2, b2 = _side(rng, 200, 0.8, 0.8)  # no difference on side 2
    c = S.difference_in_differences(a1, b1, a2, b2, "accuracy", n_resamples=500, n_permutations=499, seed=0)
    assert c.n_first == c.n_second == 200
    assert c.estimate == pytest.approx(c.first_diff - c.second_diff)
    assert 0.2 < c.estimate < 0.5 and c.ci_low > 0 and c.p_value < 0.01


def test_difference_in_differences_null_not_rejected():
    rng = np.random.default_rng(13)
    ps = []
    for i in range(40):
        a1, b1 = _side(rng, 120, 0.85, 0.7)
        a2, b2 = _side(rng, 80, 0.85, 0.7)  # the same advantage on both sides
        ps.append(S.difference_in_differences(a1, b1, a2, b2, "macro_f1", n_resamples=100,
                                              n_permutations=99, seed=i).p_value)
    assert 0.3 < np.mean(ps) < 0.7 and np.mean(np.array(ps) < 0.05) <= 0.15


def test_difference_in_differences_when_sides_share_rows():
    # one-vs-rest probes of different relations predict the same rows in the same groups:
    # cells are (side, group), so a group can sit on both sides without breaking the test
    rng = np.random.default_rng(14)
    n, groups = 200, np.arange(200) // 4
    y1, y2 = rng.integers(0, 2, n), rng.integers(0, 2, n)

    def probe(y, acc):
        p = np.where(rng.random(n) < acc, y, 1 - y)
        return S.Predictions.aligned(y, p, 0.6 * p + 0.2, groups)

    a1, b1, a2, b2 = probe(y1, 0.95), probe(y1, 0.65), probe(y2, 0.8), probe(y2, 0.8)
    c = S.difference_in_differences(a1, b1, a2, b2, "macro_f1", n_resamples=300, n_permutations=299, seed=0)
    expect = (f1_score(y1, a1.y_pred, average="macro") - f1_score(y1, b1.y_pred, average="macro")
              - f1_score(y2, a2.y_pred, average="macro") + f1_score(y2, b2.y_pred, average="macro"))
    assert c.estimate == pytest.approx(expect)
    assert c.n_first == c.n_second == n and c.n_groups == 50
    assert c.ci_low > 0 and c.p_value < 0.01

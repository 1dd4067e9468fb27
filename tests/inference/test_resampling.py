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


def test_permutation_pvalue_exact_and_add_one():
    # exhaustive: the null holds the observed labelling; share of values >= observed
    assert S.permutation_pvalue(0.8, [0.8, 0.1, 0.9, 0.5], exact=True) == pytest.approx(2 / 4)
    assert S.min_attainable_p(6, exact=True) == pytest.approx(1 / 6)
    # sampled: the observed labelling counts as one more
    assert S.permutation_pvalue(0.8, [0.1, 0.9, 0.8, 0.5], exact=False) == pytest.approx(3 / 5)
    assert S.permutation_pvalue(0.95, [0.1, 0.9, 0.8, 0.5], exact=False) == pytest.approx(1 / 5)
    assert np.isnan(S.permutation_pvalue(0.5, [], exact=False))
    # under the null the sampled p-value is (super-)uniform
    rng = np.random.default_rng(10)
    draws = rng.normal(size=(2000, 100))
    ps = np.array([S.permutation_pvalue(row[0], row[1:], exact=False) for row in draws])
    assert abs(np.mean(ps <= 0.05) - 0.05) < 3 * np.sqrt(0.05 * 0.95 / len(ps))


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


def _side(rng, n, q_a, q_b, repeats=1, n_groups=None):
    """One target's two conditions on the same rows (pairs of rows share a group); with
    ``repeats``, each repeat predicts its own disjoint rows (held-out-word assignments)."""
    y = rng.integers(0, 2, n)
    pa = np.where(rng.random(n) < q_a, y, 1 - y)
    pb = np.where(rng.random(n) < q_b, y, 1 - y)
    groups = np.array([f"g{rng.integers(1_000_000_000)}" for _ in range(n // 2)]).repeat(2)
    repeat = np.arange(n) % repeats
    make = lambda p: S.Predictions(y, p, p * 0.6 + 0.2, groups, repeat, np.arange(n))  # noqa: E731
    return make(pa), make(pb)


def test_difference_in_differences_detects_asymmetry():
    rng = np.random.default_rng(12)
    first = [_side(rng, 300, 0.95, 0.6) for _ in range(3)]  # grounded wins by 0.35 on side 1
    second = [_side(rng, 200, 0.8, 0.8) for _ in range(3)]  # no difference on side 2
    c = S.difference_in_differences(first, second, "accuracy", n_resamples=500, n_permutations=499, seed=0)
    by_hand = (np.mean([S.metric_point("accuracy", a) - S.metric_point("accuracy", b) for a, b in first])
               - np.mean([S.metric_point("accuracy", a) - S.metric_point("accuracy", b) for a, b in second]))
    assert c.estimate == pytest.approx(by_hand)
    assert c.estimate == pytest.approx(c.first_diff - c.second_diff)
    assert c.n_first == 900 and c.n_second == 600  # nothing is subsampled
    assert 0.25 < c.estimate < 0.45 and c.ci_low > 0
    # 6 targets in sides of 3: C(6,3) = 20 splits, enumerated; the observed one is the most extreme
    assert c.exact and c.n_permutations == 19 and c.p_value == pytest.approx(1 / 20) == c.min_p


def test_difference_in_differences_with_unequal_repeats_is_not_shrunk():
    """Side 1 has 9 held-out assignments (repeats), side 2 has 4: each side's score is the mean
    over its own repeats. (Pooling both sides and dividing by the pooled 9 repeats shrank side 2
    by 4/9: the issue's synthetic case, estimate 0.012 with CI [0.103, 0.137].)"""
    rng = np.random.default_rng(3)
    first = [_side(rng, 900, 0.9, 0.7, repeats=9)]
    second = [_side(rng, 400, 0.9, 0.7, repeats=4)]  # the same effect: DiD ~ 0
    c = S.difference_in_differences(first, second, "macro_f1", n_resamples=400, n_permutations=99, seed=1)
    for (a, b), d in ((first[0], c.first_diff), (second[0], c.second_diff)):
        per_repeat = [f1_score(a.y_true[i], a.y_pred[i], average="macro")
                      - f1_score(b.y_true[i], b.y_pred[i], average="macro") for i in a.by_repeat()]
        assert d == pytest.approx(np.mean(per_repeat))
        assert 0.12 < d < 0.28
    assert abs(c.estimate) < 0.08
    assert c.ci_low <= c.estimate <= c.ci_high and c.ci_low < 0 < c.ci_high
    # one target per side: only 2 splits, so the smallest attainable p-value is 1/2
    assert c.exact and c.min_p == 0.5 and c.p_value in (0.5, 1.0)


def test_difference_in_differences_covers_with_unequal_sides():
    """Coverage of the 95% interval for a known population DiD (accuracy: q_a − q_b per side),
    sides of unequal size and repeats, clustered rows: 200 datasets, 93-98% (fixed seed; the
    binomial SD is 1.5 points)."""
    rng = np.random.default_rng(21)
    truth = (0.9 - 0.7) - (0.8 - 0.75)
    hits = []
    for i in range(200):
        first = [_side(rng, 240, 0.9, 0.7, repeats=3), _side(rng, 120, 0.9, 0.7, repeats=3)]
        second = [_side(rng, 160, 0.8, 0.75, repeats=2)]
        c = S.difference_in_differences(first, second, "accuracy", n_resamples=300, n_permutations=0, seed=i)
        hits.append(c.ci_low <= truth <= c.ci_high)
    assert 0.93 <= np.mean(hits) <= 0.98


def test_difference_in_differences_null_p_values_are_not_too_small():
    """Under H0 (same effect on both sides) the target-exchange p-value is valid: P(p <= 0.1)
    <= 0.1 + 3 SD (2 + 3 targets: 10 splits, exact)."""
    rng = np.random.default_rng(13)
    ps = []
    for i in range(150):
        first = [_side(rng, 120, 0.85, 0.7) for _ in range(2)]
        second = [_side(rng, 80, 0.85, 0.7) for _ in range(3)]
        ps.append(S.difference_in_differences(first, second, "macro_f1", n_resamples=20,
                                              n_permutations=99, seed=i).p_value)
    ps = np.array(ps)
    assert np.mean(ps <= 0.1) <= 0.1 + 3 * np.sqrt(0.09 / len(ps))
    assert 0.35 < ps.mean() < 0.75


def test_side_assignments_enumerate_or_sample():
    splits, exact = S.side_assignments(2, 2, 1000, seed=0)
    assert exact and len(splits) == 6 and splits[0].tolist() == [1, 1, 0, 0]
    assert {tuple(r) for r in splits.tolist()} == {tuple(r) for r in splits.tolist()} and len({tuple(r) for r in splits.tolist()}) == 6
    assert (splits.sum(1) == 2).all()
    big, exact = S.side_assignments(10, 10, 50, seed=0)
    assert not exact and len(big) == 51 and (big.sum(1) == 10).all()


def test_difference_in_differences_when_sides_share_rows():
    # one-vs-rest probes of different relations predict the same rows in the same groups:
    # a group drawn k times counts k times on both sides
    rng = np.random.default_rng(14)
    n, groups = 200, np.arange(200) // 4
    y1, y2 = rng.integers(0, 2, n), rng.integers(0, 2, n)

    def probe(y, acc):
        p = np.where(rng.random(n) < acc, y, 1 - y)
        return S.Predictions.aligned(y, p, 0.6 * p + 0.2, groups)

    a1, b1, a2, b2 = probe(y1, 0.95), probe(y1, 0.65), probe(y2, 0.8), probe(y2, 0.8)
    c = S.difference_in_differences([(a1, b1)], [(a2, b2)], "macro_f1", n_resamples=300, seed=0)
    expect = (f1_score(y1, a1.y_pred, average="macro") - f1_score(y1, b1.y_pred, average="macro")
              - f1_score(y2, a2.y_pred, average="macro") + f1_score(y2, b2.y_pred, average="macro"))
    assert c.estimate == pytest.approx(expect)
    assert c.n_first == c.n_second == n and c.n_groups == 50
    assert c.ci_low > 0


def test_macro_f1_leaves_out_classes_absent_from_a_resample():
    """A class with no weight in a resample has no F1 (it is not a 0 in the mean); at unit
    weights every class is present and the value is sklearn's."""
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.array([0, 1, 1, 1, 2, 0])
    pred = S.Predictions.aligned(y, p, np.zeros(6), np.arange(6))
    W = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=float)  # class 2 absent in row 0
    got = S.metric_weighted("macro_f1", pred, W)
    assert got[0] == pytest.approx(f1_score(y[:4], p[:4], labels=[0, 1], average="macro"))
    assert got[1] == pytest.approx(f1_score(y, p, average="macro"))


def test_selectivity_interval_contains_its_estimate():
    """Task minus control task with many small control classes and few groups: stratifying on
    the task labels alone let control classes vanish from resamples, which counted their F1 as
    0 and pushed the interval off its own estimate (real: 0.119 with CI [0.125, 0.224])."""
    rng = np.random.default_rng(4)
    n_groups, per = 120, 3
    groups = np.repeat(np.arange(n_groups), per)
    y_task = rng.integers(0, 4, n_groups).repeat(per)
    # control labels fixed per group: 40 classes of 3 groups each (T1's control task)
    y_ctrl = (np.arange(n_groups) % 40)[rng.permutation(n_groups)].repeat(per)
    p_task = np.where(rng.random(len(groups)) < 0.8, y_task, rng.integers(0, 4, len(groups)))
    p_ctrl = np.where(rng.random(len(groups)) < 0.6, y_ctrl, rng.integers(0, 40, len(groups)))
    task = S.Predictions.aligned(y_task, p_task, np.zeros(len(groups)), groups)
    ctrl = S.Predictions.aligned(y_ctrl, p_ctrl, np.zeros(len(groups)), groups)
    est = S.paired_bootstrap_ci(task, ctrl, "macro_f1", n_resamples=1000, seed=0, same_labels=False)
    assert est.ci_low <= est.estimate <= est.ci_high
    centre = (est.ci_low + est.ci_high) / 2
    assert abs(centre - est.estimate) < 0.25 * (est.ci_high - est.ci_low)

"""Coverage of the study's intervals by simulation with known answers (fixed seeds, stated
tolerances): macro F1 and AUPRC near the ceiling, the paired difference of two conditions, and
what the out-of-fold bootstrap covers once the probes are refitted (the refitting variance).

These simulations are why the study uses BCa intervals (params `stats.ci_method: bca`): near the
ceiling the percentile interval sits above the truth too often. Very near it (a dozen errors in
all, clustered) every bootstrap interval undercovers somewhat: BCa covers about 92-93% there
(macro F1 0.99 on 600 groups; AUPRC 0.979 on 300 groups), which the paper states."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, f1_score
from sklearn.model_selection import StratifiedKFold

from analysis.inference import resampling as S

# 95% intervals from 1,000 resamples (BCa's extreme quantiles are noisy with fewer; the study
# uses 2,000); with 300 simulated data sets the binomial SD of a coverage is 1.3 points, so a
# window of [0.92, 0.98] is about +-2.3 SD around nominal.
LOW, HIGH = 0.92, 0.98


def _clustered(rng, n_groups, q, per_group=2, conc=20.0):
    """Balanced binary labels, errors symmetric, each group right with its own probability
    q_g ~ Beta (mean q): population accuracy and macro F1 both equal q."""
    qg = rng.beta(q * conc, (1 - q) * conc, n_groups)
    groups = np.repeat(np.arange(n_groups), per_group)
    y = rng.integers(0, 2, len(groups))
    return y, groups, qg[groups]


def _coverage(make, truth, n_sims, metric, method, n_resamples=1000, seed=0):
    rng = np.random.default_rng(seed)
    hits = []
    for i in range(n_sims):
        est = S.bootstrap_ci(make(rng), metric, n_resamples, seed=i, method=method)
        hits.append(est.ci_low <= truth <= est.ci_high)
    return float(np.mean(hits))


@pytest.mark.parametrize("q,n_groups,low", [(0.95, 100, LOW), (0.97, 200, LOW), (0.99, 600, 0.89)])
def test_bca_covers_macro_f1_near_the_ceiling(q, n_groups, low):
    def make(rng):
        y, groups, qg = _clustered(rng, n_groups, q)
        p = np.where(rng.random(len(y)) < qg, y, 1 - y)
        return S.Predictions.aligned(y, p, rng.random(len(y)), groups)

    # two seeds x 200 data sets (SD 1.1 points); at 0.99 (12 errors expected) about 93%
    cover = np.mean([_coverage(make, q, 200, "macro_f1", "bca", seed=s) for s in (0, 1)])
    assert low <= cover <= HIGH


def _scores(rng, n_groups, mu=3.2, tau=0.5):
    """Positives score mu higher; pairs of rows share a random shift (a cluster)."""
    groups = np.repeat(np.arange(n_groups), 2)
    y = rng.integers(0, 2, len(groups))
    s = rng.normal(size=len(y)) + mu * y + rng.normal(0, tau, n_groups)[groups]
    return y, s, groups


def test_bca_covers_auprc_near_the_ceiling():
    Y, Sc, _ = _scores(np.random.default_rng(0), 500_000)
    truth = average_precision_score(Y, Sc)  # the population AP, to about 1e-4
    assert 0.97 < truth < 0.99

    def make(rng):
        y, s, groups = _scores(rng, 300)
        return S.Predictions.aligned(y, (s > 1.6).astype(int), s, groups)

    bca = np.mean([_coverage(make, truth, 200, "auprc", "bca", seed=s) for s in (12, 13)])
    pct = np.mean([_coverage(make, truth, 200, "auprc", "percentile", seed=s) for s in (12, 13)])
    assert 0.89 <= bca <= HIGH  # about 93% (two seeds x 200 data sets, SD 1.1 points)
    assert pct <= bca  # the percentile interval covers no better


def test_bca_covers_the_paired_difference_near_the_ceiling():
    qa, qb = 0.97, 0.93

    def make(rng):
        y, groups, _ = _clustered(rng, 300, 0.95)
        pa = np.where(rng.random(len(y)) < qa, y, 1 - y)
        pb = np.where(rng.random(len(y)) < qb, y, 1 - y)
        return (S.Predictions.aligned(y, pa, rng.random(len(y)), groups),
                S.Predictions.aligned(y, pb, rng.random(len(y)), groups))

    rng = np.random.default_rng(3)
    hits = []
    for i in range(300):
        a, b = make(rng)
        est = S.paired_bootstrap_ci(a, b, "macro_f1", 1000, seed=i, method="bca")
        hits.append(est.ci_low <= qa - qb <= est.ci_high)
    assert LOW <= np.mean(hits) <= HIGH


D = 20
BETA = np.r_[1.0, 0.6, np.zeros(D - 2)]


def _draw(rng, n):
    X = rng.normal(size=(n, D))
    y = (rng.random(n) < 1 / (1 + np.exp(-1.5 * X @ BETA))).astype(int)
    return X, y


def test_what_the_out_of_fold_interval_covers_when_probes_are_refitted():
    """The interval is conditional on the fitted probes: it covers their population score
    (the mean over the K fitted probes of their macro F1 on new data) at the nominal rate. For
    the procedure's expected score (over training sets too) it is a little narrow, because the
    refitting variance is not in it: measured here at 90-94% for a nominal 95% (n = 300, d = 20,
    5 folds; training-set SD of the score 0.008 against a test-sampling SD of 0.026). The
    study states this choice (paper, Methods) rather than inflating the intervals."""
    rng = np.random.default_rng(0)
    Xt, yt = _draw(rng, 20_000)  # "the population" (its macro F1 to about 0.003)
    n, k = 300, 5
    expected = np.mean([f1_score(yt, LogisticRegression().fit(*_draw(rng, n * (k - 1) // k)).predict(Xt),
                                 average="macro") for _ in range(100)])
    fitted_hits, procedure_hits = [], []
    for i in range(120):
        X, y = _draw(rng, n)
        P = np.zeros(n, int)
        pop = []
        for tr, te in StratifiedKFold(k, shuffle=True, random_state=i).split(X, y):
            m = LogisticRegression().fit(X[tr], y[tr])
            P[te] = m.predict(X[te])
            pop.append(f1_score(yt, m.predict(Xt), average="macro"))
        est = S.bootstrap_ci(S.Predictions.aligned(y, P, P.astype(float), np.arange(n)), "macro_f1",
                             1000, seed=i, method="bca")
        fitted_hits.append(est.ci_low <= np.mean(pop) <= est.ci_high)
        procedure_hits.append(est.ci_low <= expected <= est.ci_high)
    assert 0.90 <= np.mean(fitted_hits) <= 0.99  # 120 data sets: SD 2 points
    assert 0.88 <= np.mean(procedure_hits) <= 0.975

"""Probe metrics against sklearn and hand-computed chance levels."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score

from analysis.probes.metrics import auprc, chance_f1, macro_f1


def test_macro_f1_and_auprc_equal_sklearn():
    rng = np.random.default_rng(0)
    for M in (2, 4):
        y = rng.integers(0, M, size=200)
        pred = rng.integers(0, M - 1, size=200)  # one class never predicted
        assert macro_f1(y, pred, M) == pytest.approx(
            f1_score(y, pred, labels=np.arange(M), average="macro", zero_division=0), abs=1e-12)
    y = rng.integers(0, 2, size=100)
    s = rng.random(100)
    assert auprc(y, s, 2) == pytest.approx(average_precision_score(y, s))
    P = rng.dirichlet(np.ones(3), size=100)
    y3 = rng.integers(0, 3, size=100)
    assert auprc(y3, P, 3) == pytest.approx(np.mean([average_precision_score(y3 == c, P[:, c])
                                                     for c in range(3)]))


def test_chance_levels_by_hand():
    y_train = np.array([0] * 6 + [1] * 2)
    y_test = np.array([0, 0, 0, 1])
    majority, stratified = chance_f1(y_test, y_train, 2)
    # majority predicts 0: F1_0 = 2*3/(3+4) = 6/7, F1_1 = 0
    assert majority == pytest.approx(3 / 7)
    # q = (0.75, 0.25): F1_0 = 2*3*.75/(3+3) = .75; F1_1 = 2*1*.25/(1+1) = .25
    assert stratified == pytest.approx(0.5)

"""Nested CV: outer predictions against a direct sklearn refit at the chosen C, and
permutation p-values uniform under the null."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

from analysis.probes.folds import nested_cv
from analysis.probes.nested_cv import _outer, _repeat0_f1, engine_options, permutation_null, run_problems
from analysis.probes.tasks import Problem
from tests.probes.conftest import ENGINE, suite_settings


def _blobs(seed, n=150, d=6):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    X = rng.normal(size=(n, d))
    X[:, 0] += 1.2 * y
    groups = np.array([f"g{i}" for i in rng.integers(0, 50, size=n)])
    return X.astype(np.float32), y, groups


def test_outer_predictions_equal_sklearn_refit_at_the_chosen_C():
    X, y, groups = _blobs(0)
    folds = nested_cv(y, groups, n_splits=3, n_repeats=1, inner_splits=2, seed=0)
    prob = Problem("T", "t", np.arange(len(y)), y, groups, 2, folds)
    cfg = suite_settings({"C_grid": {"min": 1e-3, "max": 1e1, "num": 5}, "engine": ENGINE,
                          "C_patience": None})
    oof, scores, _ = run_problems(X, [prob], np.array([f"r{i}" for i in range(len(y))]), "c", -1,
                                  cfg, engine_options(cfg.engine))
    assert sorted(oof["row_id"]) == sorted(f"r{i}" for i in range(len(y)))
    for fold in folds:
        part = oof.set_index("row_id").loc[[f"r{i}" for i in fold.test]]
        C = part["C"].iloc[0]
        sk = LogisticRegression(C=C, class_weight="balanced", tol=1e-10, max_iter=10_000)
        sk.fit(X[fold.train], y[fold.train])
        np.testing.assert_allclose(part["score"], sk.predict_proba(X[fold.test])[:, 1], atol=1e-4)
        # the chosen C is the inner-CV argmax, recomputed with sklearn
        grid = np.logspace(-3, 1, 5)
        inner = [np.mean([f1_score(y[te], LogisticRegression(C=c, class_weight="balanced",
                                                             tol=1e-10, max_iter=10_000)
                                   .fit(X[tr], y[tr]).predict(X[te]), average="macro")
                          for tr, te in fold.inner]) for c in grid]
        assert C == pytest.approx(grid[int(np.argmax(inner))])
    f1 = scores.set_index("metric").loc["macro_f1", "estimate"]
    assert f1 == pytest.approx(f1_score(oof["y_true"], oof["y_pred"], average="macro"))


def test_permutation_p_values_are_uniform_under_the_null():
    eng = engine_options(suite_settings({"engine": ENGINE}).engine)
    pvals = []
    for sim in range(40):
        rng = np.random.default_rng(100 + sim)
        n = 60
        X = rng.normal(size=(n, 3)).astype(np.float32)
        y = rng.integers(0, 2, size=n)  # independent of X: the null holds
        groups = np.array([f"g{i}" for i in rng.integers(0, 20, size=n)])
        folds = [f for f in nested_cv(y, groups, n_splits=3, n_repeats=1, inner_splits=2, seed=sim)]
        prob = Problem("T", "t", np.arange(n), y, groups, 2, folds)
        chosen = {(0, f): 1.0 for f in range(len(folds))}
        cfg = suite_settings({"permutation": {"n": 39, "seed": sim, "tol": 1e-4}, "max_columns": 4000})
        null = permutation_null(X, prob, chosen, 0, cfg, eng)
        rows = []
        for _, f, te, pred, _, _, _ in _outer([prob], X, chosen, 2, eng):
            rows.append(pd.DataFrame({"repeat": 0, "y_true": y[te], "y_pred": pred}))
        obs = _repeat0_f1(pd.concat(rows))
        pvals.append((1 + (null >= obs - 1e-12).sum()) / (1 + len(null)))
    pvals = np.array(pvals)
    # tolerance: a KS test against the discrete uniform's continuous envelope at alpha 0.01
    assert stats.kstest(pvals, "uniform").pvalue > 0.01
    assert 0.0 <= (pvals <= 0.1).mean() <= 0.3

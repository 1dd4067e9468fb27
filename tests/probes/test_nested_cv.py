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
from analysis.probes.nested_cv import engine_options, run_problems
from analysis.probes.settings import CVSettings, T2Settings
from analysis.probes.tasks import Problem, held_out_word_problem
from tests.probes.conftest import ENGINE, suite_settings

CV = CVSettings(n_splits=3, n_repeats=1, inner_splits=2, seed=0)


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


def _word_problem(rng, signal: float, n=160, d=4):
    """Two classes of two words each; the features carry the class (polarity) with ``signal``,
    plus a word-specific offset that does not generalize across words."""
    words_by_class = {"left": ["l1", "l2"], "right": ["r1", "r2"]}
    words = rng.choice(["l1", "l2", "r1", "r2"], size=n)
    pairs = np.array([f"np:{i}" for i in rng.integers(0, 40, size=n)])
    y = np.isin(words, words_by_class["right"]).astype(int)
    offset = {w: rng.normal(size=d) for w in ["l1", "l2", "r1", "r2"]}
    X = rng.normal(size=(n, d)) + np.stack([offset[w] for w in words])
    X[:, 0] += signal * (2 * y - 1)
    cfg = T2Settings(word_groups={"horizontal": words_by_class})
    prob = held_out_word_problem("T2_polarity", "horizontal", np.arange(n), words, pairs,
                                 words_by_class, cfg, CV)
    return X.astype(np.float32), prob


def test_word_null_p_value_tests_the_printed_statistic():
    """The p-value of a held-out-word probe is the share of the 6 word relabelings whose
    statistic (mean macro F1 over all assignments, C chosen the same way) reaches the observed
    one: with a real polarity signal only the observed labelling and its class swap (the same
    partition, evaluated on other random folds) score high, so p <= 2/6; the null's observed
    value is the printed estimate."""
    rng = np.random.default_rng(0)
    X, prob = _word_problem(rng, signal=3.0)
    cfg = suite_settings({"permutation": {"n": 5, "targets": ["T2_polarity:*"]}, "cv": CV.model_dump()})
    ids = np.array([f"r{i}" for i in range(len(X))])
    oof, scores, null = run_problems(X, [prob], ids, "c", -1, cfg, engine_options(cfg.engine),
                                     permute=list(cfg.permutation.targets))
    f1 = scores[scores["metric"] == "macro_f1"].iloc[0]
    assert f1["estimate"] == pytest.approx(np.mean([
        f1_score(g["y_true"], g["y_pred"], average="macro") for _, g in oof.groupby("repeat")]))
    assert len(null) == 6 and null["exact"].all() and (null["observed"] == f1["estimate"]).all()
    assert null["estimate"].iloc[0] == pytest.approx(f1["estimate"])  # identity relabelling
    assert f1["p_value"] <= 2 / 6 + 1e-9 and f1["min_attainable_p"] == pytest.approx(1 / 6)


def test_word_null_p_values_are_valid_without_signal():
    rng = np.random.default_rng(1)
    cfg = suite_settings({"permutation": {"n": 5, "targets": ["T2_polarity:*"]}, "cv": CV.model_dump(),
                          "C_grid": {"min": 1e-2, "max": 1e2, "num": 3}})
    ps = []
    for _ in range(24):
        X, prob = _word_problem(rng, signal=0.0, n=100)
        _, scores, _ = run_problems(X, [prob], np.arange(len(X)).astype(str), "c", -1, cfg,
                                    engine_options(cfg.engine), permute=list(cfg.permutation.targets))
        ps.append(scores.loc[scores["metric"] == "macro_f1", "p_value"].iloc[0])
    ps = np.array(ps)
    assert set(np.round(ps * 6)) <= {1, 2, 3, 4, 5, 6}  # k/6: an exact test over 6 labellings
    for cut in (1 / 6, 2 / 6):  # valid: P(p <= cut) <= cut (+ 3 binomial SDs)
        assert np.mean(ps <= cut + 1e-9) <= cut + 3 * np.sqrt(cut * (1 - cut) / len(ps))


def test_group_null_p_values_are_uniform_without_signal():
    """Grouped CV probe, features independent of the labels: block-permutation p-values
    (C re-selected under every permutation) are close to uniform."""
    cfg = suite_settings({"permutation": {"n": 19, "targets": ["T:*"]},
                          "C_grid": {"min": 1e-2, "max": 1e2, "num": 3}})
    eng = engine_options(cfg.engine)
    ps = []
    for sim in range(30):
        rng = np.random.default_rng(100 + sim)
        n = 60
        X = rng.normal(size=(n, 3)).astype(np.float32)
        groups = np.repeat(np.arange(30), 2)
        y = np.repeat(rng.integers(0, 2, 30), 2)  # labels constant within groups, unrelated to X
        folds = nested_cv(y, groups, n_splits=3, n_repeats=1, inner_splits=2, seed=sim)
        prob = Problem("T", "t", np.arange(n), y, groups, 2, folds)
        _, scores, null = run_problems(X, [prob], np.arange(n).astype(str), "c", -1, cfg, eng,
                                       permute=["T:*"])
        assert len(null) == 19 and not null["exact"].any()
        ps.append(scores.loc[scores["metric"] == "macro_f1", "p_value"].iloc[0])
    ps = np.array(ps)
    assert stats.kstest(ps, "uniform").pvalue > 0.01
    assert np.mean(ps <= 0.1) <= 0.1 + 3 * np.sqrt(0.09 / len(ps))

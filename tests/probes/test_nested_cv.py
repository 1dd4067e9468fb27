"""Nested CV: outer predictions against a direct sklearn refit at the chosen C, and
permutation p-values uniform under the null."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
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
    """Two classes apart along feature 0; features on scales from 0.1 to 30 and off-centre,
    so a fit on unstandardized (or globally standardized) features differs from one
    standardized on its training rows."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    X = rng.normal(size=(n, d))
    X[:, 0] += 1.2 * y
    X = X * np.geomspace(0.1, 30, d) + 5.0
    groups = np.array([f"g{i}" for i in rng.integers(0, 50, size=n)])
    return X.astype(np.float32), y, groups


def _sk_pipe(C, tol=1e-10):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, class_weight="balanced",
                                                              tol=tol, max_iter=10_000))


def test_outer_predictions_equal_sklearn_refit_at_the_chosen_C():
    """Each outer fit and each inner fit standardizes on its own training rows: predictions
    equal ``Pipeline([StandardScaler(), LogisticRegression()])`` refitted on the fold (the
    unscaled fit differs by up to 0.19 in probability here)."""
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
        sk = _sk_pipe(C).fit(X[fold.train], y[fold.train])
        np.testing.assert_allclose(part["score"], sk.predict_proba(X[fold.test])[:, 1], atol=1e-4)
        # the chosen C is the inner-CV argmax, recomputed with sklearn
        grid = np.logspace(-3, 1, 5)
        inner = [np.mean([f1_score(y[te], _sk_pipe(c).fit(X[tr], y[tr]).predict(X[te]),
                                   average="macro")
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


# -- C selection over the suite's whole grid (1e-4 ... 1e4) against LogisticRegressionCV ---------


def _lowvar(seed, n, noise, classes):
    """Labels carried by a low-variance direction of standardized features (x0 - x1 = 0.1 u),
    so the best C is large; noise 0 is separable. Class sizes are multiples of 6, so the
    outer (3) and inner (2) splits are exactly stratified and the balanced weights of each
    inner training set equal LogisticRegressionCV's (computed on the outer training rows)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n // classes)
    u = y + (noise * rng.normal(size=n) if noise else 0.0) + 0.2 * rng.normal(size=n)
    g = rng.normal(size=n)
    X = rng.normal(size=(n, 6))
    X[:, 0], X[:, 1] = g + 0.05 * u, g - 0.05 * u
    return ((X - X.mean(0)) / X.std(0)), y


def _macro_f1(estimator, X, y):
    return f1_score(y, estimator.predict(X), average="macro")


def _sk_grid_search(X, y, grid, inner, tol=1e-10):
    """sklearn's grid search for C on ``inner`` (positions into X), standardizing on each
    training set: ``GridSearchCV(Pipeline([StandardScaler(), LogisticRegression()]))``, its
    ties to the first (smallest) C, as LogisticRegressionCV's argmax."""
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipe = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", tol=tol,
                                                              max_iter=100_000))
    gs = GridSearchCV(pipe, {"logisticregression__C": grid}, cv=inner, scoring=_macro_f1)
    return gs.fit(X, y)


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("classes,noise", [(2, 0.0), (2, 0.6), (3, 0.0), (3, 0.6)])
def test_selected_C_is_sklearns_grid_search_on_the_same_folds(classes, noise):
    """On the suite's grid with the study's engine settings (params.yaml, float32, warm
    starts, inner tolerances): the C chosen per outer fold is sklearn's grid search
    (standardize on each inner training set, balanced logistic regression, mean inner macro
    F1) on the same inner splits, for a separable and a non-separable problem, binary and
    multinomial. The gradient-only stopping rule left warm-started fits at C >= 10 where the
    previous C had put them (all four cases failed)."""
    from sklearn.model_selection import StratifiedKFold

    from analysis.probes.folds import Fold
    from analysis.probes.nested_cv import _select_C
    from tests.probes.test_engine import study_engine

    X, y = _lowvar(classes, 360, noise, classes)
    grid = list(np.logspace(-4, 4, 9))
    folds = []
    outer = StratifiedKFold(3, shuffle=True, random_state=0)
    for f, (tr, te) in enumerate(outer.split(X, y)):
        inner = [(tr[a], tr[b]) for a, b in
                 StratifiedKFold(2, shuffle=True, random_state=f).split(X[tr], y[tr])]
        folds.append(Fold(0, f, tr, te, inner))
    prob = Problem("T", "t", np.arange(len(y)), y, np.arange(len(y)).astype(str), classes, folds)
    chosen = _select_C([prob], X.astype(np.float32), grid, classes, study_engine(), patience=None)
    picked = []
    for f, fold in enumerate(folds):
        pos = {row: i for i, row in enumerate(fold.train)}
        cv = [(np.array([pos[r] for r in a]), np.array([pos[r] for r in b])) for a, b in fold.inner]
        gs = _sk_grid_search(X[fold.train], y[fold.train], grid, cv)
        assert chosen[(0, f)] == pytest.approx(gs.best_params_["logisticregression__C"]), f
        picked.append(chosen[(0, f)])
    assert max(picked) >= 10  # the problem needs large C: the test would catch the old rule


def test_bag_of_words_probe_is_sklearns_pipeline_fitted_on_the_training_captions():
    """Bag of words: each outer fit's predictions equal ``CountVectorizer(min_df=2)`` (the
    vocabulary of its training captions only), ``StandardScaler`` and the balanced logistic
    regression, refitted on the fold at its chosen C (vocabulary and scale from all rows, as
    the old code had them, differ by up to 0.012 in probability here)."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from analysis.probes.features import bow_features, standardize

    rng = np.random.default_rng(4)
    nouns = [f"n{i}" for i in range(30)]
    rels = ["above", "below", "left of", "right of", "near", "on"]
    y = rng.integers(0, 2, size=150)
    rel = [rels[rng.integers(0, 3) + 3 * (1 - t) if rng.random() < 0.8 else rng.integers(0, 6)]
           for t in y]
    caps = [f"the {rng.choice(nouns)} is {r} the {rng.choice(nouns)}" for r in rel]
    counts, occurs = bow_features(caps, min_df=2)
    groups = np.array([f"g{i}" for i in range(len(y))])
    folds = nested_cv(y, groups, n_splits=3, n_repeats=1, inner_splits=2, seed=0)
    prob = Problem("T", "t", np.arange(len(y)), y, groups, 2, folds)
    cfg = suite_settings({"C_grid": {"min": 1e-3, "max": 1e1, "num": 5}, "engine": ENGINE,
                          "C_patience": None})
    ids = np.array([f"r{i}" for i in range(len(y))])
    oof, _, _ = run_problems(standardize(counts), [prob], ids, "bow", -1, cfg,
                             engine_options(cfg.engine), occurs=occurs, min_df=2)
    caps = np.array(caps)
    for fold in folds:
        part = oof.set_index("row_id").loc[ids[fold.test]]
        C = part["C"].iloc[0]
        # with_mean=False: sparse counts; the intercept absorbs the mean
        sk = make_pipeline(CountVectorizer(ngram_range=(1, 2), min_df=2),
                           StandardScaler(with_mean=False),
                           LogisticRegression(C=C, class_weight="balanced", tol=1e-10,
                                              max_iter=10_000))
        sk.fit(caps[fold.train], y[fold.train])
        np.testing.assert_allclose(part["score"], sk.predict_proba(caps[fold.test])[:, 1],
                                   atol=1e-4)


def test_merged_duplicate_rows_fit_what_sklearn_fits_on_every_copy():
    """Repeated rows (VSR repeats a caption per image) are merged with summed weights: fewer
    rows, and the fit equals sklearn's on every copy (binary and multinomial, balanced
    weights); a copy whose label or mask differs from its twin is kept apart."""
    from analysis.probes.engine import balanced_weights, fit_batch
    from analysis.probes.nested_cv import collapse_duplicates

    rng = np.random.default_rng(3)
    base = rng.normal(size=(60, 5))
    idx = rng.integers(0, 60, size=200)
    X = base[idx]
    for M in (2, 3):
        y = np.digitize(base[idx, 0] + 0.3 * base[idx, 1], [-0.4, 0.4]) % M
        mask = np.ones((200, 1), dtype=bool)
        mask[:15] = False
        W = balanced_weights(y[:, None], mask, n_classes=M)
        Xu, Yu, Wu = collapse_duplicates(X, y[:, None], W)
        assert len(Xu) < 100
        assert Wu.sum() == pytest.approx(W.sum())
        fit = fit_batch(Xu, Yu, 0.5, Wu, n_classes=M, tol=1e-10, rtol=1e-14, max_iter=200,
                        device="cpu", dtype=torch.float64)
        sk = LogisticRegression(C=0.5, class_weight="balanced", tol=1e-12, max_iter=10_000)
        sk.fit(X[mask[:, 0]], y[mask[:, 0]])
        coef = fit.coef[0] if M > 2 else fit.coef
        np.testing.assert_allclose(coef, sk.coef_, atol=1e-6)
    Y2 = np.stack([np.zeros(4, int), np.array([0, 1, 0, 0])], 1)
    X2 = np.zeros((4, 2))
    Xk, Yk, Wk = collapse_duplicates(X2, Y2, np.ones((4, 2)))
    assert len(Xk) == 2 and sorted(Wk[:, 0]) == [1.0, 3.0]

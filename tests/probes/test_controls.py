"""Dimension controls and online code length: against sklearn, hand-computed code lengths,
and simulations with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.random_projection import GaussianRandomProjection

from analysis.probes.controls import (form_codelength, form_pairs_of, mdl_blocks, mdl_table,
                                      online_codelength, pca_fold_problems, random_projection)
from analysis.probes.folds import nested_cv
from analysis.probes.nested_cv import engine_options, run_per_fold, run_problems
from analysis.probes.tasks import Problem
from tests.probes.conftest import ENGINE, suite_settings


def _problem(seed=0, n=120, d=10, shift=1.5):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    X = rng.normal(size=(n, d))
    X[:, 0] += shift * y
    groups = np.array([f"g{i}" for i in rng.integers(0, 40, size=n)])
    folds = nested_cv(y, groups, n_splits=3, n_repeats=1, inner_splits=2, seed=0)
    return X, Problem("T", "t", np.arange(n), y, groups, 2, folds)


def test_random_projection_is_sklearns_and_refuses_a_size_at_the_width():
    X = np.random.default_rng(0).normal(size=(30, 16))
    want = GaussianRandomProjection(n_components=4, random_state=3).fit_transform(X)
    np.testing.assert_allclose(random_projection(X, 4, 3), want)
    assert not np.allclose(random_projection(X, 4, 3), random_projection(X, 4, 4))
    with pytest.raises(ValueError, match="below the width"):
        random_projection(X, 16, 0)


def test_pca_basis_comes_from_the_training_rows_only():
    """Each fold's PCA equals sklearn's fit on that fold's training rows; changing the test
    rows leaves the transformed training rows unchanged (no test row informs the basis)."""
    X, prob = _problem()
    sets = pca_fold_problems(X, prob, 3)
    assert len(sets) == len(prob.folds)
    X2 = X.copy()
    for (Z, local), fold in zip(sets, prob.folds):
        assert local.folds == [fold]
        np.testing.assert_array_equal(local.rows, np.arange(len(prob.rows)))
        want = PCA(3, svd_solver="full").fit(X[fold.train]).transform(X)
        np.testing.assert_allclose(np.abs(Z), np.abs(want), atol=1e-8)
    fold = prob.folds[0]
    X2[fold.test] += 50 * np.random.default_rng(1).normal(size=X2[fold.test].shape)
    Z2, _ = pca_fold_problems(X2, prob, 3)[0]
    np.testing.assert_allclose(Z2[fold.train], sets[0][0][fold.train], atol=1e-8)
    with pytest.raises(ValueError, match="only"):
        pca_fold_problems(X, prob, 11)


def test_per_fold_runs_equal_one_run_when_the_features_do_not_change():
    """With the same features on every fold, joining the single-fold runs gives the OOF
    predictions and scores of one `run_problems` call."""
    X, prob = _problem(2)
    cfg = suite_settings({"C_grid": {"min": 1e-3, "max": 1e1, "num": 5}, "engine": ENGINE,
                          "C_patience": None})
    eng = engine_options(cfg.engine)
    ids = np.array([f"r{i}" for i in range(len(prob.y))])
    oof, scores, _ = run_problems(X, [prob], ids, "c", -1, cfg, eng)
    sets = [(X, Problem(prob.task, prob.target, prob.rows, prob.y, prob.groups, 2, [f]))
            for f in prob.folds]
    oof2, scores2 = run_per_fold(sets, prob, ids, "c", -1, cfg, eng)
    key = ["row_id", "repeat", "fold"]
    a, b = (d.sort_values(key).reset_index(drop=True) for d in (oof, oof2))
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_series_equal(scores.set_index("metric")["estimate"],
                                   scores2.set_index("metric")["estimate"])


def test_mdl_blocks_follow_voita_and_titov():
    assert mdl_blocks(1000).tolist() == [2, 4, 8, 16, 32, 62, 125, 250, 500, 1000]
    assert mdl_blocks(10).tolist() == [2, 5, 10]  # 10 x (..., 0.125, 0.25, 0.5, 1) -> 1, 2, 5, 10


def test_online_code_by_hand():
    """A one-class prefix is coded with add-one frequencies: y = 0,0,1,1 in blocks [2, 4]:
    2 bits (uniform) + 2 x -log2(1/4) = 6 bits; a single block is the uniform code."""
    X = np.zeros((4, 1))
    y = np.array([0, 0, 1, 1])
    got = online_codelength(X, y, 2, 1.0, np.array([2, 4]))
    assert got["online_bits"] == pytest.approx(6.0)
    assert got["uniform_bits"] == pytest.approx(4.0)
    assert got["compression"] == pytest.approx(4 / 6)
    assert online_codelength(X, y, 2, 1.0, np.array([4]))["online_bits"] == pytest.approx(4.0)


def test_online_code_knows_signal_from_noise():
    """Labels a linear function of the features compress several-fold; labels independent of
    them do not compress (ratio near or below 1) in every one of 20 simulations."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        X = rng.normal(size=(400, 8))
        y_sig = (X[:, 0] > 0).astype(int)
        y_noise = rng.integers(0, 2, size=400)
        ends = mdl_blocks(400)
        assert online_codelength(X, y_sig, 2, 1.0, ends)["compression"] > 3
        assert online_codelength(X, y_noise, 2, 1.0, ends)["compression"] < 1.05


def test_mdl_table_uses_the_same_order_for_every_condition():
    X, prob = _problem(3)
    a = mdl_table(X, [prob], "a", 1.0, seed=0)
    b = mdl_table(X * 3.0 + 1.0, [prob], "b", 1.0, seed=0)  # standardized: the same code
    assert a["online_bits"].iloc[0] == pytest.approx(b["online_bits"].iloc[0], rel=1e-6)
    assert a["uniform_bits"].iloc[0] == pytest.approx(len(prob.y))


def _form_problem(shared: bool, seed: int = 0, per_form: int = 150, n_forms: int = 3, d: int = 40):
    """Rows of ``n_forms`` antonym pairs; the pole is written along one direction shared by
    every pair (``shared``) or along a direction of the pair's own, orthogonal to the others'
    (nothing to transfer), and each
    pair also has its own offset (the phrase's identity)."""
    rng = np.random.default_rng(seed)
    forms = np.repeat(np.arange(n_forms), per_form)
    y = rng.integers(0, 2, size=forms.size)
    dirs = np.linalg.qr(rng.normal(size=(d, n_forms)))[0].T * 3  # orthogonal: no transfer
    if shared:
        dirs[:] = dirs[0]
    X = rng.normal(size=(forms.size, d)) * 0.5 + rng.normal(size=(n_forms, d))[forms] * 0.3
    X += (2 * y - 1)[:, None] * dirs[forms]
    pairs = [[f"a{k}", f"b{k}"] for k in range(n_forms)]
    words = np.array([pairs[f][yy] for f, yy in zip(forms, y)])
    prob = Problem("M_polarity", "axis", np.arange(forms.size), y, forms.astype(str), 2, [],
                   info={"pairs": pairs}, words=words)
    return X, prob


def test_form_code_by_hand_against_sklearn():
    """Two pairs: the code is the mean over both orders of (first pair uniform + second pair
    under sklearn's probe fit on the first)."""
    X, prob = _form_problem(True, n_forms=2, per_form=40)
    forms = form_pairs_of(prob)
    want, transfer = [], []
    for a, b in ((0, 1), (1, 0)):
        clf = LogisticRegression(C=1.0, max_iter=2000).fit(X[forms == a], prob.y[forms == a])
        p = clf.predict_proba(X[forms == b])[np.arange((forms == b).sum()), prob.y[forms == b]]
        rest = -np.log2(p).sum()
        want.append((forms == a).sum() + rest)
        transfer.append(rest)
    got = form_codelength(X, prob.y, forms, 2, 1.0, seed=0)
    assert got["online_bits"] == pytest.approx(np.mean(want))
    assert got["transfer_bits"] == pytest.approx(np.mean(transfer))
    assert got["transfer_uniform_bits"] == pytest.approx(40.0)
    assert got["n_orders"] == 2


def test_form_code_measures_transfer_where_the_random_order_cannot():
    """A pole direction shared by the phrases compresses under the held-out-phrase code; one
    direction per phrase does not (ratio near 1 or below), while the random row order
    compresses both alike (it codes phrases it has already seen): 10 simulations each."""
    for seed in range(10):
        for shared in (True, False):
            X, prob = _form_problem(shared, seed)
            tab = mdl_table(X, [prob], "c", 1.0, seed=0).set_index("order")
            assert tab.loc["random", "compression"] > 3
            if shared:
                assert tab.loc["form", "transfer_compression"] > 10
            else:
                assert tab.loc["form", "transfer_compression"] < 1.5


def test_form_pairs_of_reads_matched_and_controlled_problems():
    _, prob = _form_problem(True, n_forms=2, per_form=3)
    np.testing.assert_array_equal(form_pairs_of(prob), np.repeat([0, 1], 3))
    ctl = Problem("C_polarity", "v", np.arange(2), np.array([0, 1]), np.array(["n", "n"]), 2, [],
                  info={"form_pairs": ["over / under"]}, words=np.array(["over", "under"]))
    np.testing.assert_array_equal(form_pairs_of(ctl), [0, 0])
    bad = Problem("C_polarity", "v", np.arange(1), np.array([0]), np.array(["n"]), 2, [],
                  info={"form_pairs": ["over / under"]}, words=np.array(["atop"]))
    with pytest.raises(ValueError, match="atop"):
        form_pairs_of(bad)

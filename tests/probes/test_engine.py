"""The batched engine must reach sklearn's LogisticRegression optimum (lbfgs, tight tol)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.utils.class_weight import compute_class_weight

from analysis.probes.engine import BatchFit, balanced_weights, fit_batch, objective


def data(seed=0, n=400, d=20, classes=2):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    X = (X - X.mean(0)) / X.std(0)
    if classes == 2:
        y = (X @ rng.normal(size=d) + rng.normal(size=n) > 1.0).astype(int)  # imbalanced
    else:
        y = rng.integers(0, classes, size=n)
        X[:, :classes] += 0.8 * np.eye(classes)[y]
    return X, y


def sk_fit(X, y, C, sample_weight=None, class_weight="balanced"):
    return LogisticRegression(C=C, class_weight=class_weight, solver="lbfgs", tol=1e-12,
                              max_iter=100_000).fit(X, y, sample_weight=sample_weight)


def sk_objective(model, X, y, C, sample_weight):
    """sklearn's documented objective, computed here independently of the engine."""
    z = X @ model.coef_.T + model.intercept_
    if z.shape[1] == 1:
        loss = np.logaddexp(0, z[:, 0]) - y * z[:, 0]
    else:
        loss = np.logaddexp.reduce(z, axis=1) - z[np.arange(len(y)), y]
    return float((sample_weight * loss).sum() + (model.coef_ ** 2).sum() / (2 * C))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_binary_probes_with_masks_and_cs_match_sklearn(dtype):
    X, y = data()
    rng = np.random.default_rng(1)
    Cs = np.array([1e-3, 0.1, 1.0, 30.0])
    masks = np.stack([rng.random(len(y)) < 0.8 for _ in Cs], 1)
    Y = np.tile(y[:, None], (1, len(Cs)))
    W = balanced_weights(Y, masks)
    fit = fit_batch(X, Y, Cs, W, tol=1e-9, dtype=dtype, device="cpu")
    assert fit.converged.all()
    for k, C in enumerate(Cs):
        m = masks[:, k]
        sk = sk_fit(X[m], y[m], C)
        cw = compute_class_weight("balanced", classes=np.array([0, 1]), y=y[m])
        ref = sk_objective(sk, X[m], y[m], C, cw[y[m]])
        assert fit.objective[k] == pytest.approx(ref, rel=1e-6)
        assert fit.objective[k] <= ref * (1 + 1e-7)  # not worse than sklearn at tight tol
        np.testing.assert_allclose(fit.coef[k], sk.coef_[0], atol=2e-3 * max(1, np.abs(sk.coef_).max()))
        np.testing.assert_allclose(fit.intercept[k], sk.intercept_[0], atol=2e-3)


def test_balanced_weights_equal_sklearn_class_weight():
    _, y = data(3)
    mask = np.ones((len(y), 1), bool)
    mask[:50] = False
    W = balanced_weights(y[:, None], mask)
    cw = compute_class_weight("balanced", classes=np.array([0, 1]), y=y[50:])
    np.testing.assert_allclose(W[50:, 0], cw[y[50:]])
    assert (W[:50] == 0).all()


def test_sample_weights_equal_sklearn_with_sample_weight():
    X, y = data(4)
    w = np.random.default_rng(0).uniform(0.2, 3.0, size=len(y))
    fit = fit_batch(X, y[:, None], 0.5, w[:, None], tol=1e-9, dtype=torch.float64, device="cpu")
    sk = sk_fit(X, y, 0.5, sample_weight=w, class_weight=None)
    assert fit.objective[0] == pytest.approx(sk_objective(sk, X, y, 0.5, w), rel=1e-8)
    np.testing.assert_allclose(fit.predict_proba(X)[:, 0], sk.predict_proba(X)[:, 1], atol=1e-5)


@pytest.mark.parametrize("C", [0.01, 1.0, 100.0])
def test_multinomial_matches_sklearn(C):
    X, y = data(5, classes=4)
    W = balanced_weights(y[:, None], np.ones((len(y), 1), bool), n_classes=4)
    fit = fit_batch(X, y[:, None], C, W, n_classes=4, tol=1e-9, dtype=torch.float64, device="cpu")
    sk = sk_fit(X, y, C)
    cw = compute_class_weight("balanced", classes=np.arange(4), y=y)
    assert fit.objective[0] == pytest.approx(sk_objective(sk, X, y, C, cw[y]), rel=1e-6)
    np.testing.assert_allclose(fit.predict_proba(X)[:, 0], sk.predict_proba(X), atol=1e-4)
    assert (fit.predict(X)[:, 0] == sk.predict(X)).mean() > 0.99


def test_warm_start_and_objective_helper_agree():
    X, y = data(6)
    W = balanced_weights(y[:, None], np.ones((len(y), 1), bool))
    cold = fit_batch(X, y[:, None], 1.0, W, tol=1e-9, dtype=torch.float64, device="cpu")
    warm = fit_batch(X, y[:, None], 1.0, W, tol=1e-9, init=cold, dtype=torch.float64, device="cpu")
    assert warm.n_iter[0] <= 1
    again = objective(BatchFit(warm.coef, warm.intercept, None, None, None, 2), X, y[:, None], W,
                      np.array([1.0]))
    assert again[0] == pytest.approx(cold.objective[0], rel=1e-10)


def test_bad_inputs_are_clear_errors():
    X, y = data(7)
    with pytest.raises(ValueError, match="only one class"):
        fit_batch(X, np.zeros((len(y), 1)), 1.0)
    with pytest.raises(ValueError, match="no rows"):
        fit_batch(X, y[:, None], 1.0, np.zeros((len(y), 1)))
    with pytest.raises(ValueError, match="classes"):
        fit_batch(X, (y % 2)[:, None], 1.0, n_classes=3)

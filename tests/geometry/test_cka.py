"""Linear CKA: invariances, the exact bootstrap through Gram matrices, layer maps."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ortho_group

from analysis.geometry import cka
from analysis.geometry import rdm as g


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_cka_identity_orthogonal_and_scale_invariance(rng):
    X = rng.normal(size=(60, 8)) @ rng.normal(size=(8, 8))
    Q = ortho_group.rvs(8, random_state=3)
    assert cka.linear_cka(X, X) == pytest.approx(1.0)
    assert cka.linear_cka(X, 3.7 * X @ Q) == pytest.approx(1.0)
    Y = rng.normal(size=(60, 5))
    assert cka.linear_cka(X, Y) == pytest.approx(cka.linear_cka(2.5 * X @ Q, Y), abs=1e-12)
    assert 0 < cka.linear_cka(X, Y) < 0.9
    # against the Gram-matrix (HSIC) definition
    H = np.eye(60) - 1 / 60
    K, L = H @ X @ X.T @ H, H @ Y @ Y.T @ H
    assert cka.linear_cka(X, Y) == pytest.approx(np.sum(K * L) / np.linalg.norm(K) / np.linalg.norm(L))


def test_bootstrap_cka_equals_cka_of_resampled_rows(rng):
    n = 25
    X = rng.normal(size=(n, 6)) + 4.0  # a large mean, as anisotropic embeddings have
    Y = X[:, :4] + rng.normal(size=(n, 4))
    C = g.bootstrap_counts(np.arange(n) // 5, 5, seed=2)
    boot = cka.bootstrap_cka([cka.centered_gram(X), cka.centered_gram(Y)], C)
    for b, c in enumerate(C):
        idx = np.repeat(np.arange(n), c)
        assert boot[b, 0, 1] == pytest.approx(cka.linear_cka(X[idx], Y[idx]), abs=1e-4)
        assert boot[b, 0, 0] == pytest.approx(1.0, abs=1e-5)


def test_cka_matrix_matches_pairwise(rng):
    A = rng.normal(size=(3, 20, 5))
    B = rng.normal(size=(2, 20, 7))
    M = cka.cka_matrix(A, B)
    for a in range(3):
        for b in range(2):
            assert M[a, b] == pytest.approx(cka.linear_cka(A[a], B[b]), abs=1e-5)

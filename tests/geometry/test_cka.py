"""Linear CKA: the debiased (unbiased-HSIC) estimator against the U-statistic definition and
Song et al.'s formula, its behaviour on independent features, invariances, the exact replicate
CKA through Gram matrices, layer maps."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.stats import ortho_group

from analysis.geometry import cka


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.mark.parametrize("n, tol", [(200, 0.03), (1000, 0.01)])
def test_debiased_cka_of_independent_features_is_about_zero(n, tol):
    """Independent Gaussian features (VSR's 768 x 512 dims): the plug-in CKA is about d/(n+d)
    (>= 0.75 at n = 200, 0.38 at n = 1,000, the layer maps' size), the debiased one 0: every one
    of 10 draws within +-tol (about 8 of its standard deviations), their mean within tol / 3."""
    vals, biased = [], []
    for seed in range(10):
        r = np.random.default_rng(seed)
        X, Y = r.normal(size=(n, 768)), r.normal(size=(n, 512))
        vals.append(cka.linear_cka(X, Y))
        biased.append(cka.linear_cka(X, Y, debiased=False))
    assert np.max(np.abs(vals)) < tol
    assert abs(np.mean(vals)) < tol / 3
    assert np.min(biased) > (0.7 if n == 200 else 0.35)


def test_debiased_layer_maps_of_independent_layers_are_about_zero():
    r = np.random.default_rng(5)
    A = r.normal(size=(3, 300, 256)) + 2.0
    B = r.normal(size=(2, 300, 128))
    M = cka.cka_matrix(A, B)
    assert np.abs(M).max() < 0.03
    np.testing.assert_allclose(np.diag(cka.cka_matrix(A, A)), 1.0, atol=1e-5)


def test_cka_identity_orthogonal_translation_and_scale_invariance(rng):
    X = rng.normal(size=(60, 8)) @ rng.normal(size=(8, 8))
    Q = ortho_group.rvs(8, random_state=3)
    Y = X[:, :5] + rng.normal(size=(60, 5))
    for debiased in (True, False):
        assert cka.linear_cka(X, X, debiased) == pytest.approx(1.0)
        assert cka.linear_cka(X, 3.7 * X @ Q, debiased) == pytest.approx(1.0)
        ref = cka.linear_cka(X, Y, debiased)
        assert cka.linear_cka(2.5 * X @ Q + 4.0, Y, debiased) == pytest.approx(ref, abs=1e-12)
        assert cka.linear_cka(X, 0.1 * Y - 3.0, debiased) == pytest.approx(ref, abs=1e-12)
        assert 0 < ref < 0.95
    # the plug-in value against the Gram-matrix (biased HSIC) definition
    H = np.eye(60) - 1 / 60
    K, L = H @ X @ X.T @ H, H @ Y @ Y.T @ H
    assert cka.linear_cka(X, Y, debiased=False) == pytest.approx(
        np.sum(K * L) / np.linalg.norm(K) / np.linalg.norm(L))


def _hsic_u_statistic(K: np.ndarray, L: np.ndarray) -> float:
    """HSIC as the U-statistic over ordered 4-tuples of distinct indices (Song et al. 2012,
    Theorem 2 / Gretton et al.): mean of K_ij L_ij + K_ij L_qr - 2 K_ij L_iq. O(n^4)."""
    n = len(K)
    tot = 0.0
    tuples = list(itertools.permutations(range(n), 4))
    for i, j, q, r in tuples:
        tot += K[i, j] * L[i, j] + K[i, j] * L[q, r] - 2 * K[i, j] * L[i, q]
    return tot / len(tuples)


def test_unbiased_hsic_matches_the_u_statistic_and_song_formula(rng):
    n = 7
    X = rng.normal(size=(n, 3)) + 5.0
    Y = X[:, :2] + rng.normal(size=(n, 2))
    K, L = X @ X.T, Y @ Y.T
    direct = _hsic_u_statistic(K, L)
    assert cka.hsic_unbiased(K, L) == pytest.approx(direct, rel=1e-10)
    Ku, Lu = cka.u_centered_gram(X), cka.u_centered_gram(Y)
    assert np.sum(Ku * Lu) / (n * (n - 3)) == pytest.approx(direct, rel=1e-10)
    want = direct / np.sqrt(_hsic_u_statistic(K, K) * _hsic_u_statistic(L, L))
    assert cka.linear_cka(X, Y) == pytest.approx(want, rel=1e-9)
    # and on a larger case, the feature-space form against Song et al.'s O(n^2) formula
    X, Y = rng.normal(size=(40, 6)) + 3.0, rng.normal(size=(40, 9))
    K, L = X @ X.T, Y @ Y.T
    song = cka.hsic_unbiased(K, L) / np.sqrt(cka.hsic_unbiased(K, K) * cka.hsic_unbiased(L, L))
    assert cka.linear_cka(X, Y) == pytest.approx(song, rel=1e-9)


def test_subsample_cka_equals_cka_of_the_kept_rows(rng):
    n = 30
    X = rng.normal(size=(n, 6)) + 4.0  # a large mean, as anisotropic embeddings have
    Y = X[:, :4] + rng.normal(size=(n, 4))
    W = (rng.random((6, n)) < 0.5).astype(np.uint8)
    got = cka.subsample_cka([cka.centered_gram(X), cka.centered_gram(Y)], W)
    for b, w in enumerate(W.astype(bool)):
        assert got[b, 0, 1] == pytest.approx(cka.linear_cka(X[w], Y[w]), abs=1e-5)
        assert got[b, 0, 0] == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="0/1 weights"):
        cka.subsample_cka([cka.centered_gram(X)], np.full((1, n), 2))


def test_cka_matrix_matches_pairwise(rng):
    A = rng.normal(size=(3, 20, 5))
    B = rng.normal(size=(2, 20, 7))
    M = cka.cka_matrix(A, B)
    for a in range(3):
        for b in range(2):
            assert M[a, b] == pytest.approx(cka.linear_cka(A[a], B[b]), abs=1e-5)

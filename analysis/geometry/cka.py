"""Linear centered kernel alignment (CKA) between representations of the same stimuli, with the
unbiased HSIC estimator of Song et al. (2012) ("debiased CKA": Kornblith et al. 2019, appendix;
Nguyen, Raghu & Kornblith 2021): the point estimate, its value on every resampling replicate
(exact, through Gram matrices) and layer x layer maps. Pure functions.

Why debiased: the plug-in (biased) HSIC adds a positive term of order tr(K) tr(L) / n^2 that
does not vanish with the features' dependence, so independent Gaussian features in d dimensions
get a linear CKA of about d / (n + d) rather than 0 (0.38 at n = 1,000 for 768 x 512 dims). The
unbiased HSIC is a U-statistic: with K~, L~ the Gram matrices with zeroed diagonals,

    HSIC_u = [tr(K~L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3)),

and debiased CKA = HSIC_u(K, L) / sqrt(HSIC_u(K, K) HSIC_u(L, L)). It equals the inner product of
the U-centred Gram matrices (Szekely & Rizzo 2014), so |CKA| <= 1, and it is invariant to
translations, orthogonal transforms and isotropic scaling of either representation. It can be
slightly negative when the representations are unrelated.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _check(X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if len(X) != len(Y):
        raise ValueError(f"CKA needs the same stimuli: {len(X)} vs {len(Y)} rows")
    return X - X.mean(0), Y - Y.mean(0)


def _hsic_u_features(X: np.ndarray, Y: np.ndarray) -> float:
    """n(n-3) HSIC_u of the linear kernels of column-centred X and Y, from features in
    O(n d e): with a_i = |x_i|^2, b_i = |y_i|^2 and sum_i x_i = 0, tr(K~L~) = |X'Y|^2 - a.b,
    1'K~1 = -sum a and K~1 = -a."""
    n = len(X)
    a = np.einsum("ij,ij->i", X, X)
    b = np.einsum("ij,ij->i", Y, Y)
    ab = float(a @ b)
    return float(np.linalg.norm(X.T @ Y) ** 2 - ab + a.sum() * b.sum() / ((n - 1) * (n - 2))
                 - 2 * ab / (n - 2))


def linear_cka(X: np.ndarray, Y: np.ndarray, debiased: bool = True) -> float:
    """Linear CKA of X (n, d) and Y (n, e): debiased (unbiased HSIC, the default; n >= 4) or the
    plug-in estimator of Kornblith et al. (2019), ||Yc'Xc||_F^2 / (||Xc'Xc||_F ||Yc'Yc||_F)."""
    X, Y = _check(X, Y)
    if not debiased:
        num = np.linalg.norm(Y.T @ X) ** 2
        den = np.linalg.norm(X.T @ X) * np.linalg.norm(Y.T @ Y)
        return float(num / den) if den > 0 else float("nan")
    if len(X) < 4:
        raise ValueError(f"debiased CKA needs at least 4 stimuli, got {len(X)}")
    kk, ll = _hsic_u_features(X, X), _hsic_u_features(Y, Y)
    if kk <= 0 or ll <= 0:
        return float("nan")
    return float(_hsic_u_features(X, Y) / np.sqrt(kk * ll))


def hsic_unbiased(K: np.ndarray, L: np.ndarray) -> float:
    """Song et al. (2012)'s unbiased HSIC of two n x n kernel matrices (O(n^2), the reference
    formula; the stage uses the feature-space and weighted forms)."""
    K = np.array(K, dtype=np.float64)
    L = np.array(L, dtype=np.float64)
    n = len(K)
    np.fill_diagonal(K, 0)
    np.fill_diagonal(L, 0)
    one = np.ones(n)
    return float((np.sum(K * L) + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
                  - 2 / (n - 2) * (one @ K @ L @ one)) / (n * (n - 3)))


def centered_gram(X: np.ndarray) -> np.ndarray:
    """Gram matrix of the column-centred rows with a zero diagonal (float32), the input the
    replicate CKA needs: HSIC_u only uses off-diagonal entries and is translation invariant, so
    centring (on all stimuli) changes nothing but keeps float32 sums small."""
    X = np.asarray(X, dtype=np.float32)
    X = X - X.mean(0)
    G = X @ X.T
    np.fill_diagonal(G, 0)
    return G


def subsample_cka(grams: Sequence[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """(R, K, K) debiased linear CKA between K representations of the same stimuli (given by
    ``centered_gram``) on every replicate, a subset of the stimuli (rows of ``weights`` in
    {0, 1}); equals ``linear_cka(X[keep], Y[keep])``.

    With c the 0/1 indicator of the subset (m stimuli) and zero-diagonal Grams K, L:
    tr(K~L~) = c'(K o L)c, 1'K~1 = c'Kc and 1'K~L~1 = sum_i c_i (Kc)_i (Lc)_i, so all replicates
    cost one (R x n) @ (n x n) product per Gram and per pair of Grams."""
    W = np.asarray(weights)
    if W.size and (W.max() > 1 or W.min() < 0):
        raise ValueError("subsample_cka needs 0/1 weights (replicates that duplicate no stimulus)")
    k = len(grams)
    C = W.astype(np.float32)
    m = C.sum(1).astype(np.float64)
    H = np.empty((len(C), k, k))
    KC = [C @ G for G in grams]
    s = [np.einsum("bi,bi->b", kc, C, dtype=np.float64) for kc in KC]
    with np.errstate(invalid="ignore", divide="ignore"):
        for a in range(k):
            for b in range(a, k):
                t1 = np.einsum("bi,bi->b", C @ (grams[a] * grams[b]), C, dtype=np.float64)
                t3 = np.einsum("bi,bi,bi->b", C, KC[a], KC[b], dtype=np.float64)
                H[:, a, b] = H[:, b, a] = (t1 + s[a] * s[b] / ((m - 1) * (m - 2))
                                           - 2 * t3 / (m - 2))
        d = np.sqrt(np.where(np.einsum("bkk->bk", H) > 0, np.einsum("bkk->bk", H), np.nan))
        out = H / (d[:, :, None] * d[:, None, :])
    out[m < 4] = np.nan
    return out


def u_centered_gram(X: np.ndarray) -> np.ndarray:
    """U-centred linear Gram matrix (Szekely & Rizzo 2014): <K^U, L^U> / (n(n-3)) = HSIC_u(K, L).
    Zero diagonal; off-diagonal K_ij - r_i/(n-2) - r_j/(n-2) + t/((n-1)(n-2)), with r and t
    the row and total sums of K (diagonal included)."""
    X = np.asarray(X, dtype=np.float64)
    n = len(X)
    if n < 4:
        raise ValueError(f"debiased CKA needs at least 4 stimuli, got {n}")
    X = X - X.mean(0)
    K = X @ X.T
    np.fill_diagonal(K, 0)
    r = K.sum(1)
    U = K - r[:, None] / (n - 2) - r[None, :] / (n - 2) + r.sum() / ((n - 1) * (n - 2))
    np.fill_diagonal(U, 0)
    return U


def layer_grams(layers: np.ndarray) -> np.ndarray:
    """(L, N*N) U-centred Gram matrices of each layer of (L, N, D), flattened and unit-normed:
    debiased linear CKA between two layers is the dot product of their rows (float32 rows,
    float64 sums)."""
    G = np.stack([u_centered_gram(x).ravel().astype(np.float32) for x in layers])
    norms = np.sqrt(np.einsum("ij,ij->i", G, G, dtype=np.float64))[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (G / np.where(norms > 0, norms, np.nan)).astype(np.float32)


def cka_matrix(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """(La, Lb) debiased linear CKA between every layer of A (La, N, Da) and of B (Lb, N, Db),
    from U-centred Gram matrices (cheaper than features when there are many layer pairs)."""
    return (layer_grams(A).astype(np.float64) @ layer_grams(B).astype(np.float64).T)

"""Linear centered kernel alignment (CKA, Kornblith et al. 2019) between representations of the
same stimuli: the point estimate, its bootstrap over stimuli (exact, through Gram matrices) and
layer x layer maps. Pure functions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def linear_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """Linear CKA (Kornblith et al. 2019): ||Yc'Xc||_F^2 / (||Xc'Xc||_F ||Yc'Yc||_F)."""
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if len(X) != len(Y):
        raise ValueError(f"CKA needs the same stimuli: {len(X)} vs {len(Y)} rows")
    X = X - X.mean(0)
    Y = Y - Y.mean(0)
    num = np.linalg.norm(Y.T @ X) ** 2
    den = np.linalg.norm(X.T @ X) * np.linalg.norm(Y.T @ Y)
    return float(num / den) if den > 0 else float("nan")


def centered_gram(X: np.ndarray) -> np.ndarray:
    """Gram matrix of the column-centred rows (float32), the input the bootstrap CKA needs."""
    X = np.asarray(X, dtype=np.float32)
    X = X - X.mean(0)
    return X @ X.T


def bootstrap_cka(grams: Sequence[np.ndarray], counts: np.ndarray) -> np.ndarray:
    """(n_boot, K, K) linear CKA between K representations of the same stimuli (given by their
    centred Gram matrices) in every resample; equals linear_cka(X[idx], Y[idx]) exactly.

    The weighted HSIC of a resample with counts c (n = sum c) is
    c'(K*L)c - (2/n) sum_i c_i (Kc)_i (Lc)_i + (c'Kc)(c'Lc)/n^2, so all resamples cost one
    (n_boot x N) @ (N x N) product per Gram and per pair of Grams, and no resampled features."""
    k = len(grams)
    H = np.empty((len(counts), k, k))
    C = counts.astype(np.float32)
    n = C.sum(1).astype(np.float64)
    KC = [C @ G for G in grams]
    cKc = [np.einsum("bi,bi->b", kc, C, dtype=np.float64) for kc in KC]
    for a in range(k):
        for b in range(a, k):
            t1 = np.einsum("bi,bi->b", C @ (grams[a] * grams[b]), C, dtype=np.float64)
            t2 = np.einsum("bi,bi,bi->b", C, KC[a], KC[b], dtype=np.float64)
            H[:, a, b] = H[:, b, a] = t1 - 2 * t2 / n + cKc[a] * cKc[b] / n ** 2
    d = np.sqrt(np.einsum("bkk->bk", H))
    with np.errstate(invalid="ignore", divide="ignore"):
        return H / (d[:, :, None] * d[:, None, :])


def layer_grams(layers: np.ndarray) -> np.ndarray:
    """(L, N*N) centred Gram matrices of each layer of (L, N, D), flattened and unit-normed:
    linear CKA between two layers is the dot product of their rows."""
    G = np.stack([centered_gram(x).ravel() for x in layers]).astype(np.float64)
    norms = np.linalg.norm(G, axis=1, keepdims=True)
    return G / np.where(norms > 0, norms, np.nan)


def cka_matrix(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """(La, Lb) linear CKA between every layer of A (La, N, Da) and of B (Lb, N, Db), from
    centred Gram matrices (cheaper than features when there are many layer pairs)."""
    return layer_grams(A) @ layer_grams(B).T

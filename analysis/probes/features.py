"""Feature matrices the probes see: standardization, the per-fold feature scales that make
every probe's standardization (and the bag-of-words vocabulary) a function of its own
training rows only, the bag-of-words baseline, and image-text interaction features. Pure
functions."""

from __future__ import annotations

import numpy as np
from sklearn.feature_extraction.text import CountVectorizer


def standardize(X: np.ndarray, fit_rows: np.ndarray | None = None) -> np.ndarray:
    """(X - mean) / sd with statistics from ``fit_rows`` (default all); constant columns are
    centred only. The probes refit the scale on each training fold (`fold_scale`), so this
    global transform only conditions the solver; it changes no fitted prediction."""
    X = np.asarray(X, dtype=np.float64)
    ref = X if fit_rows is None else X[fit_rows]
    mu, sd = ref.mean(0), ref.std(0)
    sd[sd < 1e-12] = 1.0
    return ((X - mu) / sd).astype(np.float32)


VAR_FLOOR = 1e-10  # a column whose training variance is below this fraction of its overall one
#                    is constant there (up to rounding) and dropped from that probe


def fold_scale(X: np.ndarray, mask: np.ndarray, occurs: np.ndarray | None = None,
               min_df: int = 1) -> np.ndarray:
    """Per probe column k (``mask[:, k]`` its training rows), the factor 1 / sd of each feature
    over those rows: on ``X * scale[k]`` with an intercept, a probe fits exactly what it would
    fit on features standardized with its own training rows' mean and sd (the mean shift is
    absorbed by the intercept), as ``Pipeline(StandardScaler(), LogisticRegression())`` in a
    grid search. Features constant on the training rows get 0 (StandardScaler leaves them
    constant: no fit can use them). With ``occurs`` (n, d) bool, a feature is also dropped
    (0) where it occurs in fewer than ``min_df`` training rows: `bow_features` with the
    vocabulary and min_df of CountVectorizer fitted on the training rows. Returns (K, d).

    Hand-written because the probes share one matrix in the batched solver (`engine`):
    refitting sklearn's scaler per probe would copy X once per column."""
    X = np.asarray(X, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    # columns share their training rows (the folds of a block, every permutation): one
    # moment computation per distinct mask
    uniq, inverse = np.unique(np.packbits(mask, axis=0), axis=1, return_inverse=True)
    U = np.unpackbits(uniq, axis=0, count=mask.shape[0]).astype(np.float64)  # (n, u)
    n_k = U.sum(0)[:, None]
    mean = U.T @ X / n_k
    var = np.maximum(U.T @ (X * X) / n_k - mean ** 2, 0.0)
    overall = X.var(0)
    keep = var > VAR_FLOOR * np.where(overall > 0, overall, np.inf)
    if occurs is not None:
        keep &= U.T @ np.asarray(occurs, dtype=np.float64) >= min_df
    scale = np.where(keep, 1.0 / np.sqrt(np.where(keep, var, 1.0)), 0.0)
    return scale[np.ravel(inverse)]


def bow_features(captions: list[str], min_df: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Unigram + bigram counts (the lexical baseline), dense float32, over the n-grams in at
    least ``min_df`` of all rows, and whether each row contains each n-gram (bool, for
    `fold_scale`, which keeps per training fold only the n-grams in ``min_df`` of its rows:
    an n-gram in fewer rows overall is in fewer training rows, so nothing is lost)."""
    vec = CountVectorizer(ngram_range=(1, 2), min_df=min_df, lowercase=True)
    counts = vec.fit_transform(captions).toarray().astype(np.float32)
    return counts, counts > 0


def common_width(a: np.ndarray, b: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Both at the narrower width: the wider one through a Gaussian random projection drawn
    from ``seed`` alone (sklearn; its matrix depends on the widths, never on the rows)."""
    from sklearn.random_projection import GaussianRandomProjection
    if a.shape[1] == b.shape[1]:
        return a, b
    wide, narrow = (a, b) if a.shape[1] > b.shape[1] else (b, a)
    proj = GaussianRandomProjection(n_components=narrow.shape[1], random_state=seed)
    proj.fit(np.zeros((1, wide.shape[1])))
    wide = (wide @ proj.components_.T).astype(np.float32)
    return (wide, narrow) if a.shape[1] > b.shape[1] else (narrow, wide)


def interaction(i: np.ndarray, t: np.ndarray) -> np.ndarray:
    """[i; t; i*t; |i-t|] on L2-normalized vectors: lets a linear probe test agreement."""
    i = i / np.linalg.norm(i, axis=1, keepdims=True)
    t = t / np.linalg.norm(t, axis=1, keepdims=True)
    return np.hstack([i, t, i * t, np.abs(i - t)]).astype(np.float32)


def cosine(i: np.ndarray, t: np.ndarray) -> np.ndarray:
    return (i * t).sum(1) / (np.linalg.norm(i, axis=1) * np.linalg.norm(t, axis=1))

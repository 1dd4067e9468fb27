"""Feature matrices the probes see: standardization (fit on the rows a probe may train on), the
bag-of-words baseline, and image-text interaction features. Pure functions."""

from __future__ import annotations

import numpy as np
from sklearn.feature_extraction.text import CountVectorizer


def standardize(X: np.ndarray, fit_rows: np.ndarray | None = None) -> np.ndarray:
    """(X - mean) / sd with statistics from ``fit_rows`` (default all); constant columns are
    centred only."""
    X = np.asarray(X, dtype=np.float64)
    ref = X if fit_rows is None else X[fit_rows]
    mu, sd = ref.mean(0), ref.std(0)
    sd[sd < 1e-12] = 1.0
    return ((X - mu) / sd).astype(np.float32)


def bow_features(captions: list[str], min_df: int = 1) -> np.ndarray:
    """Unigram + bigram counts (the lexical baseline), dense float32."""
    vec = CountVectorizer(ngram_range=(1, 2), min_df=min_df, lowercase=True)
    return vec.fit_transform(captions).toarray().astype(np.float32)


def interaction(i: np.ndarray, t: np.ndarray) -> np.ndarray:
    """[i; t; i*t; |i-t|] on L2-normalized vectors: lets a linear probe test agreement."""
    i = i / np.linalg.norm(i, axis=1, keepdims=True)
    t = t / np.linalg.norm(t, axis=1, keepdims=True)
    return np.hstack([i, t, i * t, np.abs(i - t)]).astype(np.float32)


def cosine(i: np.ndarray, t: np.ndarray) -> np.ndarray:
    return (i * t).sum(1) / (np.linalg.norm(i, axis=1) * np.linalg.norm(t, axis=1))

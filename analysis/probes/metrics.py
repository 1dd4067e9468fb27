"""Probe scores on one set of predictions: macro F1 (by hand: it runs for every inner fold x C
x probe), AUPRC and the chance levels beside them."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score


def macro_f1(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """sklearn's ``f1_score(average="macro", labels=range(n_classes), zero_division=0)``,
    by hand because it is called for every inner fold x C x probe (sklearn's input checks
    dominate at that count)."""
    y = np.asarray(y, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    tp = np.bincount(y[y == pred], minlength=n_classes)[:n_classes]
    n_true = np.bincount(y, minlength=n_classes)[:n_classes]
    n_pred = np.bincount(pred, minlength=n_classes)[:n_classes]
    denom = n_true + n_pred
    f1 = np.divide(2 * tp, denom, out=np.zeros(n_classes), where=denom > 0)
    return float(f1.mean())


def auprc(y: np.ndarray, proba: np.ndarray, n_classes: int) -> float:
    """Average precision (binary: ``proba`` = P(1); multiclass: macro one-vs-rest over the
    classes present, ``proba`` (n, M))."""
    if n_classes == 2:
        return float(average_precision_score(y, proba)) if 0 < y.sum() < len(y) else np.nan
    vals = [average_precision_score(y == c, proba[:, c]) for c in range(n_classes) if (y == c).any()]
    return float(np.mean(vals))


def chance_f1(y_test: np.ndarray, y_train: np.ndarray, n_classes: int) -> tuple[float, float]:
    """Macro F1 of the majority class of the training rows, and the expected macro F1 of a
    stratified random guesser (ratio of expectations: F1_c = 2 n_c q_c / (n_c + N q_c))."""
    maj = np.bincount(y_train, minlength=n_classes).argmax()
    majority = macro_f1(y_test, np.full_like(y_test, maj), n_classes)
    q = np.bincount(y_train, minlength=n_classes) / len(y_train)
    n_c = np.bincount(y_test, minlength=n_classes).astype(float)
    denom = n_c + len(y_test) * q
    f1 = np.divide(2 * n_c * q, denom, out=np.zeros(n_classes), where=denom > 0)
    return majority, float(f1.mean())

"""Controls for what differs between encoders besides their training (issue 13 item 5):
probes on features reduced to a common width (PCA fit inside each outer training fold, or a
data-independent Gaussian random projection, several seeds), and the online code length of a
probe's labels (MDL, Voita & Titov 2020) in bits beside the uniform code. Arrays and
`Problem`s in, tables out (no I/O)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.random_projection import GaussianRandomProjection

from analysis.probes.tasks import Problem

# Voita & Titov (2020), section 3.2: block boundaries as fractions of the data
MDL_FRACTIONS = (0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.0625, 0.125, 0.25, 0.5, 1.0)


def random_projection(X: np.ndarray, size: int, seed: int) -> np.ndarray:
    """``X`` mapped to ``size`` dimensions by a Gaussian random projection drawn from ``seed``
    alone (sklearn; no row informs it, so it needs no fitting inside folds)."""
    if size >= X.shape[1]:
        raise ValueError(f"random projection to {size} of {X.shape[1]} dimensions: choose a "
                         "size below the width")
    return GaussianRandomProjection(n_components=size, random_state=seed).fit_transform(X)


def pca_fold_problems(X: np.ndarray, prob: Problem, size: int
                      ) -> list[tuple[np.ndarray, Problem]]:
    """One (features, single-fold problem) per outer fold of ``prob``: PCA to ``size``
    components fit on that fold's training rows only, applied to every row of the problem;
    the problem's rows become positions into the returned features. The fold's inner splits
    (choosing C) use the same basis: PCA sees no labels, but it has seen the inner test rows."""
    Xp = X[prob.rows]
    out = []
    for fold in prob.folds:
        if size > min(len(fold.train), Xp.shape[1]):
            raise ValueError(f"PCA to {size} components on {prob.task} {prob.target}: only "
                             f"{len(fold.train)} training rows of width {Xp.shape[1]}")
        pca = PCA(n_components=size, svd_solver="full").fit(Xp[fold.train])
        out.append((pca.transform(Xp), replace(prob, rows=np.arange(len(prob.rows)),
                                               folds=[fold])))
    return out


def mdl_blocks(n: int, fractions: tuple[float, ...] = MDL_FRACTIONS) -> np.ndarray:
    """Block ends (row counts) of the online code: ``n`` times each fraction, at least 2 rows
    in the first block, strictly increasing, ending at ``n``."""
    ends = np.unique(np.maximum(2, np.round(np.asarray(fractions) * n).astype(int)))
    ends = ends[ends <= n]
    return ends if ends[-1] == n else np.r_[ends, n]


def online_codelength(X: np.ndarray, y: np.ndarray, n_classes: int, C: float,
                      ends: np.ndarray) -> dict:
    """Online (prequential) code length of ``y`` given ``X`` in the given row order, in bits:
    the first block under the uniform code, each later block under a logistic probe (inverse
    regularization ``C``) trained on all rows before it; a block whose training rows have one
    class is coded with that prefix's add-one label frequencies. Returns the online and
    uniform code lengths and their ratio (compression; 1 = no better than uniform)."""
    n = len(y)
    bits = ends[0] * np.log2(n_classes)
    for start, stop in zip(ends[:-1], ends[1:]):
        ytr = y[:start]
        if np.unique(ytr).size < 2:
            counts = np.bincount(ytr, minlength=n_classes) + 1.0
            p = (counts / counts.sum())[y[start:stop]]
        else:
            clf = LogisticRegression(C=C, max_iter=2000).fit(X[:start], ytr)
            proba = np.full((stop - start, n_classes), 1e-12)
            proba[:, clf.classes_] = clf.predict_proba(X[start:stop])
            p = proba[np.arange(stop - start), y[start:stop]]
        bits += -np.log2(np.clip(p, 1e-12, 1.0)).sum()
    uniform = n * np.log2(n_classes)
    return {"online_bits": float(bits), "uniform_bits": float(uniform),
            "compression": float(uniform / bits), "n": int(n)}


def mdl_table(X: np.ndarray, problems: list[Problem], condition: str, C: float, seed: int,
              fractions: tuple[float, ...] = MDL_FRACTIONS) -> pd.DataFrame:
    """Online code length per problem on its rows in a seeded random order (the same order for
    every condition, so conditions are compared on identical codes), features standardized on
    all of the problem's rows (no held-out evaluation is involved)."""
    rows = []
    for prob in problems:
        order = np.random.default_rng(seed).permutation(len(prob.rows))
        Xp = X[prob.rows][order]
        Xp = (Xp - Xp.mean(0)) / np.where(Xp.std(0) > 0, Xp.std(0), 1.0)
        res = online_codelength(Xp, prob.y[order], max(prob.n_classes, 2), C,
                                mdl_blocks(len(order), fractions))
        rows.append({"task": prob.task, "target": prob.target, "condition": condition, **res})
    return pd.DataFrame(rows)

"""Controls for what differs between encoders besides their training (issue 13 item 5):
probes on features reduced to a common width (PCA fit inside each outer training fold, or a
data-independent Gaussian random projection, several seeds), and the online code length of a
probe's labels (MDL, Voita & Titov 2020) in bits beside the uniform code. Arrays and
`Problem`s in, tables out (no I/O)."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Sequence

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


def pca_fold_problems(X: np.ndarray, prob: Problem, size: int | Sequence[int]
                      ) -> list[tuple[np.ndarray, Problem]] | dict[int, list[tuple[np.ndarray, Problem]]]:
    """One (features, single-fold problem) per outer fold of ``prob``: PCA to ``size``
    components fit on that fold's training rows only, applied to every row of the problem;
    the problem's rows become positions into the returned features. The fold's inner splits
    (choosing C) use the same basis: PCA sees no labels, but it has seen the inner test rows.
    With several sizes, one PCA per fold at the largest serves them all (the leading k
    components of a PCA are its k-component PCA): {size: sets}."""
    sizes = [size] if np.isscalar(size) else sorted(size)
    Xp = X[prob.rows]
    out: dict[int, list] = {k: [] for k in sizes}
    for fold in prob.folds:
        if sizes[-1] > min(len(fold.train), Xp.shape[1]):
            raise ValueError(f"PCA to {sizes[-1]} components on {prob.task} {prob.target}: only "
                             f"{len(fold.train)} training rows of width {Xp.shape[1]}")
        Z = PCA(n_components=sizes[-1], svd_solver="full").fit(Xp[fold.train]).transform(Xp)
        local = replace(prob, rows=np.arange(len(prob.rows)), folds=[fold])
        for k in sizes:
            out[k].append((np.ascontiguousarray(Z[:, :k]), local))
    return out[sizes[0]] if np.isscalar(size) else out


def mdl_blocks(n: int, fractions: tuple[float, ...] = MDL_FRACTIONS) -> np.ndarray:
    """Block ends (row counts) of the online code: ``n`` times each fraction, at least 2 rows
    in the first block, strictly increasing, ending at ``n``."""
    ends = np.unique(np.maximum(2, np.round(np.asarray(fractions) * n).astype(int)))
    ends = ends[ends <= n]
    return ends if ends[-1] == n else np.r_[ends, n]


def block_bits(X_train: np.ndarray, y_train: np.ndarray, X_code: np.ndarray, y_code: np.ndarray,
               n_classes: int, C: float) -> float:
    """Bits of ``y_code`` under a logistic probe (inverse regularization ``C``) fit on the
    training rows; a one-class training set codes with its add-one label frequencies."""
    if np.unique(y_train).size < 2:
        counts = np.bincount(y_train, minlength=n_classes) + 1.0
        p = (counts / counts.sum())[y_code]
    else:
        clf = LogisticRegression(C=C, max_iter=2000).fit(X_train, y_train)
        proba = np.full((len(y_code), n_classes), 1e-12)
        proba[:, clf.classes_] = clf.predict_proba(X_code)
        p = proba[np.arange(len(y_code)), y_code]
    return float(-np.log2(np.clip(p, 1e-12, 1.0)).sum())


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
        bits += block_bits(X[:start], y[:start], X[start:stop], y[start:stop], n_classes, C)
    uniform = n * np.log2(n_classes)
    return {"online_bits": float(bits), "uniform_bits": float(uniform),
            "compression": float(uniform / bits), "n": int(n)}


def _standardized(X: np.ndarray) -> np.ndarray:
    return (X - X.mean(0)) / np.where(X.std(0) > 0, X.std(0), 1.0)


def mdl_table(X: np.ndarray, problems: list[Problem], condition: str, C: float, seed: int,
              fractions: tuple[float, ...] = MDL_FRACTIONS, by_form: bool = True,
              max_orders: int = 24) -> pd.DataFrame:
    """Online code length per problem, ``order`` "random": its rows in a seeded random order
    (the same order for every condition, so conditions are compared on identical codes);
    with ``by_form`` also ``order`` "form" (`form_codelength`: phrase pairs transmitted one
    after another, so every coded phrase is new to the probe). Features standardized on all of
    the problem's rows (no held-out evaluation is involved)."""
    rows = []
    for prob in problems:
        order = np.random.default_rng(seed).permutation(len(prob.rows))
        Xp = _standardized(X[prob.rows])
        res = online_codelength(Xp[order], prob.y[order], max(prob.n_classes, 2), C,
                                mdl_blocks(len(order), fractions))
        rows.append({"task": prob.task, "target": prob.target, "condition": condition,
                     "order": "random", **res})
        forms = form_pairs_of(prob) if by_form else None
        if forms is not None:
            res = form_codelength(Xp, prob.y, forms, max(prob.n_classes, 2), C, seed, max_orders)
            rows.append({"task": prob.task, "target": prob.target, "condition": condition,
                         "order": "form", **res})
    return pd.DataFrame(rows)


def form_pairs_of(prob: Problem) -> np.ndarray | None:
    """Per row of ``prob``, the index of the antonym/form pair its relation word belongs to
    (``info["pairs"]`` of `tasks.matched_problems`, ``info["form_pairs"]`` "a / b" of
    `tasks.controlled_problems`); None for a problem without form pairs."""
    if prob.words is None:
        return None
    pairs = prob.info.get("pairs") or [fp.split(" / ") for fp in prob.info.get("form_pairs", [])]
    if not pairs:
        return None
    index = {w: k for k, pair in enumerate(pairs) for w in pair}
    unknown = sorted({w for w in prob.words if w not in index})
    if unknown:
        raise ValueError(f"{prob.task} {prob.target}: words {unknown} are in no form pair "
                         f"of {pairs}")
    return np.array([index[w] for w in prob.words])


def form_codelength(X: np.ndarray, y: np.ndarray, forms: np.ndarray, n_classes: int, C: float,
                    seed: int, max_orders: int = 24) -> dict:
    """Held-out-phrase online code: the form pairs are sent one after another, the first
    under the uniform code, each later pair's labels under a logistic probe (inverse
    regularization ``C``) trained on the rows of the pairs sent before it, so no coded label
    shares a phrase with the probe's training rows (unlike a random row order, where every
    block repeats the phrases already seen). Averaged over every order of the pairs (a seeded
    sample of ``max_orders`` when there are more). ``transfer_bits`` and
    ``transfer_uniform_bits`` count the pairs after the first only: the part of the code that
    measures transfer to a new phrase. A training prefix with one class is coded with its
    add-one label frequencies, as in `online_codelength`."""
    K = int(forms.max()) + 1
    orders = list(itertools.permutations(range(K)))
    if len(orders) > max_orders:
        pick = np.random.default_rng(seed).choice(len(orders), size=max_orders, replace=False)
        orders = [orders[i] for i in sorted(pick)]
    cache: dict[tuple[frozenset, int], float] = {}

    def bits_of(train: frozenset, k: int) -> float:  # bits of pair k given the pairs ``train``
        if (train, k) not in cache:
            tr, te = np.isin(forms, list(train)), forms == k
            cache[(train, k)] = block_bits(X[tr], y[tr], X[te], y[te], n_classes, C)
        return cache[(train, k)]

    per_bit = np.log2(n_classes)
    totals, transfer, transfer_uniform = [], [], []
    for order in orders:
        first = int((forms == order[0]).sum()) * per_bit
        rest = sum(bits_of(frozenset(order[:i]), order[i]) for i in range(1, K))
        totals.append(first + rest)
        transfer.append(rest)
        transfer_uniform.append(int(np.isin(forms, order[1:]).sum()) * per_bit)
    uniform = len(y) * per_bit
    bits = float(np.mean(totals))
    return {"online_bits": bits, "uniform_bits": float(uniform), "compression": float(uniform / bits),
            "n": int(len(y)), "transfer_bits": float(np.mean(transfer)),
            "transfer_uniform_bits": float(np.mean(transfer_uniform)),
            "transfer_compression": float(np.mean(transfer_uniform) / np.mean(transfer)),
            "n_orders": len(orders), "n_forms": K}

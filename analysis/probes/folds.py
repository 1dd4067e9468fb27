"""Leak-free cross-validation splits: grouped, stratified, repeated outer folds and nested inner
folds grouped like the outer, and train/test splits on held-out words. The groups themselves
(caption, image+caption, noun pair) are defined in `analysis/data/groups.py`.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold


@dataclass
class Fold:
    """One outer split (row positions into the task's rows) and its inner splits (positions
    into the same rows, all inside ``train``)."""

    repeat: int
    fold: int
    train: np.ndarray
    test: np.ndarray
    inner: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)


def _check_groups(y: np.ndarray, groups: np.ndarray, n_splits: int, where: str) -> None:
    n_groups = pd.unique(groups).size
    if n_groups < n_splits:
        raise ValueError(f"{where}: {n_groups} groups, fewer than n_splits={n_splits}")
    classes = np.unique(y)
    if classes.size < 2:
        raise ValueError(f"{where}: a single class ({classes.tolist()}) cannot be cross-validated")


def grouped_kfold(y: np.ndarray, groups: np.ndarray, n_splits: int, seed: int,
                  where: str = "cv") -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified group k-fold (sklearn) over all positions of ``y``; every split checked."""
    y = np.asarray(y)
    groups = np.asarray(groups)
    _check_groups(y, groups, n_splits, where)
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # "least populated class has only k members": reported by callers
        warnings.simplefilter("ignore", UserWarning)
        splits = [(tr, te) for tr, te in cv.split(np.zeros(len(y)), y, groups)]
    for tr, te in splits:
        assert_disjoint(groups, tr, te)
    return splits


def assert_disjoint(groups: np.ndarray, train: np.ndarray, test: np.ndarray) -> None:
    """Raise if any group has rows on both sides of the split."""
    shared = np.intersect1d(np.asarray(groups)[train], np.asarray(groups)[test])
    if shared.size:
        raise AssertionError(f"{shared.size} CV groups on both sides of a split, e.g. {shared[:3]}")


def nested_cv(y: np.ndarray, groups: np.ndarray, *, n_splits: int, n_repeats: int,
              inner_splits: int, seed: int, where: str = "cv") -> list[Fold]:
    """Repeated outer grouped stratified k-fold, each outer training set split again by inner
    grouped stratified k-fold (for choosing C); inner splits never contain outer test rows."""
    y = np.asarray(y)
    groups = np.asarray(groups)
    folds = []
    for r in range(n_repeats):
        outer = grouped_kfold(y, groups, n_splits, seed + 1000 * r, f"{where} outer repeat {r}")
        for f, (tr, te) in enumerate(outer):
            inner = grouped_kfold(y[tr], groups[tr], inner_splits, seed + 1000 * r + f + 1,
                                  f"{where} inner repeat {r} fold {f}")
            folds.append(Fold(r, f, tr, te, [(tr[a], tr[b]) for a, b in inner]))
    return folds


def holdout(n_train: int, n_test: int, y_train: np.ndarray, groups_train: np.ndarray, *,
            inner_splits: int, seed: int, where: str = "holdout") -> Fold:
    """Train -> test evaluation on stacked rows (train first, then test), C chosen by grouped
    inner CV on the training rows only."""
    train = np.arange(n_train)
    test = np.arange(n_train, n_train + n_test)
    inner = grouped_kfold(y_train, groups_train, inner_splits, seed, f"{where} inner")
    return Fold(0, 0, train, test, inner)


def word_assignments(classes: dict[str, list[str]], max_assignments: int | None = None,
                     seed: int = 0) -> list[dict[str, str]]:
    """Every way to hold out one word per class (leave-one-word-out), for classes with at
    least two words; a class with one word cannot be tested on an unseen word, so it is an
    error. Seeded subsample when there are more than ``max_assignments``."""
    single = [c for c, words in classes.items() if len(words) < 2]
    if single:
        raise ValueError(f"word classes {single} have fewer than two words: no held-out word "
                         "is possible (add words in params probe_suite.word_groups)")
    names = list(classes)
    combos = [dict(zip(names, held)) for held in itertools.product(*(classes[c] for c in names))]
    if max_assignments is not None and len(combos) > max_assignments:
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(len(combos), size=max_assignments, replace=False))
        combos = [combos[i] for i in keep]
    return combos


def word_relabelings(classes: dict[str, list[str]], max_relabelings: int | None = None,
                     seed: int = 0) -> tuple[list[dict[str, list[str]]], bool]:
    """Every way to deal the words of ``classes`` into classes of the same sizes (the observed
    labelling first): the permutation null of a held-out-word task, whose units are the words.
    Seeded sample (with the observed one first) when there are more than ``max_relabelings``.
    Returns the relabelings and whether they are all of them."""
    names = list(classes)
    words = [w for c in names for w in classes[c]]
    sizes = [len(classes[c]) for c in names]
    observed = {c: list(classes[c]) for c in names}

    def deal(pool: list[str], k: int) -> list[list[list[str]]]:
        if k == len(names) - 1:
            return [[sorted(pool)]]
        out = []
        for pick in itertools.combinations(pool, sizes[k]):
            rest = [w for w in pool if w not in pick]
            out += [[sorted(pick), *tail] for tail in deal(rest, k + 1)]
        return out

    from math import factorial, prod
    total = factorial(len(words)) // prod(factorial(k) for k in sizes)
    key = lambda lab: tuple(tuple(sorted(lab[c])) for c in names)  # noqa: E731
    if max_relabelings is None or total <= max_relabelings:
        every = [dict(zip(names, parts)) for parts in deal(words, 0)]
        return [observed] + [lab for lab in every if key(lab) != key(observed)], True
    rng = np.random.default_rng(seed)
    out, seen = [observed], {key(observed)}
    while len(out) < max_relabelings:
        perm = list(rng.permutation(words))
        lab, start = {}, 0
        for c, k in zip(names, sizes):
            lab[c] = sorted(perm[start:start + k])
            start += k
        if key(lab) not in seen:
            seen.add(key(lab))
            out.append(lab)
    return out, False


def balanced_pair_sides(pair_groups: np.ndarray, is_train: np.ndarray, is_test: np.ndarray) -> np.ndarray:
    """Which noun pairs go to the test side (bool per row's pair) so that no pair is on both
    sides: each pair goes where its share of that side's rows is larger, which keeps the most
    rows in proportion to each side's size (the sum of the two sides' kept fractions)."""
    codes, _ = pd.factorize(pd.Series(pair_groups))
    k = codes.max() + 1 if len(codes) else 0
    n_tr = np.bincount(codes[is_train], minlength=k) / max(1, is_train.sum())
    n_te = np.bincount(codes[is_test], minlength=k) / max(1, is_test.sum())
    return (n_te > n_tr)[codes]


def word_split(words: np.ndarray, held_out: dict[str, str], classes: dict[str, list[str]],
               pair_groups: np.ndarray, *, inner_splits: int, y: np.ndarray, seed: int,
               where: str = "words", train_words: set[str] | None = None) -> tuple[Fold, dict]:
    """Train on rows of the non-held-out words, test on rows of the held-out words, with every
    noun pair on one side only (`balanced_pair_sides`), so neither a word nor a noun pair is
    seen in training and test. Inner CV (choosing C) is grouped by noun pair, the same way for
    every axis. ``train_words``: train on these words only (default: every other word).
    Returns the fold and what the split kept and dropped (counted, reported)."""
    words = np.asarray(words)
    test_words = set(held_out.values())
    all_words = {w for ws in classes.values() for w in ws}
    train_set = (all_words - test_words) if train_words is None else set(train_words)
    if train_set & test_words:
        raise ValueError(f"{where}: words {sorted(train_set & test_words)} both trained and tested")
    is_test = np.isin(words, list(test_words))
    is_train = np.isin(words, list(train_set))
    to_test = balanced_pair_sides(pair_groups, is_train, is_test)
    train = np.flatnonzero(is_train & ~to_test)
    test = np.flatnonzero(is_test & to_test)
    for side, idx in (("training", train), ("test", test)):
        missing = sorted(set(range(len(classes))) - set(np.unique(y[idx])))
        if missing:
            raise ValueError(f"{where}: the {side} side has no row of classes "
                             f"{[list(classes)[c] for c in missing]} after separating noun pairs")
    inner = [(train[a], train[b]) for a, b in
             grouped_kfold(y[train], pair_groups[train], inner_splits, seed, f"{where} inner")]
    info = {"held_out": dict(held_out),
            "train_words": sorted(train_set),
            "train_rows": int(len(train)), "test_rows": int(len(test)),
            "train_rows_dropped": int((is_train & to_test).sum()),
            "test_rows_dropped": int((is_test & ~to_test).sum())}
    return Fold(0, 0, train, test, inner), info

"""Grouped splits never share a group across a split; nested CV never sees the outer test fold."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.data.groups import caption_groups, image_caption_groups, noun_pair_groups
from analysis.probes.folds import (assert_disjoint, grouped_kfold, nested_cv, word_assignments,
                                   word_split)
from tests.data.test_groups import toy_table


def test_grouped_kfold_keeps_groups_apart_and_covers_every_row_once():
    t = toy_table()
    g = caption_groups(t)
    y = t["label"].to_numpy()
    splits = grouped_kfold(y, g, 5, seed=3)
    seen = np.concatenate([te for _, te in splits])
    assert sorted(seen) == list(range(len(t)))
    for tr, te in splits:
        assert not set(g[tr]) & set(g[te])
        assert len(np.intersect1d(tr, te)) == 0


def test_nested_cv_inner_never_sees_outer_test_and_is_grouped():
    t = toy_table(seed=2)
    g, _ = noun_pair_groups(t)
    y = t["label"].to_numpy()
    folds = nested_cv(y, g, n_splits=4, n_repeats=2, inner_splits=3, seed=1)
    assert len(folds) == 8
    for fold in folds:
        assert_disjoint(g, fold.train, fold.test)
        for itr, ite in fold.inner:
            assert np.isin(itr, fold.train).all() and np.isin(ite, fold.train).all()
            assert not np.isin(np.r_[itr, ite], fold.test).any()
            assert not set(g[itr]) & set(g[ite])
    # repeats differ
    assert not np.array_equal(folds[0].test, folds[4].test)


def test_assert_disjoint_detects_a_leak():
    g = np.array(["a", "a", "b"])
    with pytest.raises(AssertionError, match="both sides"):
        assert_disjoint(g, np.array([0]), np.array([1, 2]))


def test_word_assignments_enumerate_every_held_out_combination():
    classes = {"up": ["above", "over", "on top of"], "down": ["below", "under"]}
    combos = word_assignments(classes)
    assert len(combos) == 6
    assert {tuple(c.values()) for c in combos} == {(a, b) for a in classes["up"] for b in classes["down"]}
    assert len(word_assignments(classes, max_assignments=4, seed=0)) == 4
    with pytest.raises(ValueError, match="fewer than two words"):
        word_assignments({"up": ["above"], "down": ["below", "under"]})


def test_word_split_tests_only_held_out_words_and_drops_shared_noun_pairs():
    rng = np.random.default_rng(0)
    words = rng.choice(["above", "over", "on top of", "below", "under", "beneath"], size=400)
    pairs = np.array([f"np:{i}" for i in rng.integers(0, 150, size=400)])
    classes = {"up": ["above", "over", "on top of"], "down": ["below", "under", "beneath"]}
    y = np.isin(words, classes["down"]).astype(int)
    fold, dropped = word_split(words, {"up": "over", "down": "under"}, classes, pairs,
                               inner_splits=3, y=y, seed=0)
    assert set(words[fold.test]) == {"over", "under"}
    assert not set(words[fold.train]) & {"over", "under"}
    assert not set(pairs[fold.train]) & set(pairs[fold.test])
    assert dropped > 0
    # inner: one training word per class held out (2 x 2 assignments, capped at inner_splits=3),
    # never the outer test
    assert len(fold.inner) == 3
    for itr, ite in fold.inner:
        assert not np.isin(np.r_[itr, ite], fold.test).any()
        assert len(set(words[ite])) == 2 and not set(words[itr]) & set(words[ite])

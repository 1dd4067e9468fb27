"""Grouped splits never share a group across a split; nested CV never sees the outer test fold."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.data.groups import caption_groups, image_caption_groups, noun_pair_groups
from analysis.probes.folds import (assert_disjoint, balanced_pair_sides, grouped_kfold, nested_cv,
                                   word_assignments, word_relabelings, word_split)
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


def test_word_split_keeps_every_noun_pair_on_one_side_with_few_rows_lost():
    rng = np.random.default_rng(0)
    words = rng.choice(["above", "over", "on top of", "below", "under", "beneath"], size=400)
    pairs = np.array([f"np:{i}" for i in rng.integers(0, 150, size=400)])
    classes = {"up": ["above", "over", "on top of"], "down": ["below", "under", "beneath"]}
    y = np.isin(words, classes["down"]).astype(int)
    fold, info = word_split(words, {"up": "over", "down": "under"}, classes, pairs,
                            inner_splits=3, y=y, seed=0)
    assert set(words[fold.test]) == {"over", "under"}
    assert not set(words[fold.train]) & {"over", "under"}
    assert not set(pairs[fold.train]) & set(pairs[fold.test])
    n_test_words = np.isin(words, ["over", "under"]).sum()
    assert info["train_rows"] == len(fold.train) and info["test_rows"] == len(fold.test)
    assert info["train_rows"] + info["train_rows_dropped"] == len(words) - n_test_words
    assert info["test_rows"] + info["test_rows_dropped"] == n_test_words
    # the balanced partition keeps most rows of both sides; dropping every training row that
    # shares a pair with the test (the old rule) kept far fewer training rows
    held = np.isin(words, ["over", "under"])
    old_train = ~held & ~np.isin(pairs, pairs[held])
    assert info["train_rows"] > old_train.sum()
    kept = info["train_rows"] / (len(words) - n_test_words) + info["test_rows"] / n_test_words
    assert kept > 1.0
    # inner CV (choosing C) is grouped by noun pair for every axis, inside the training side
    assert len(fold.inner) == 3
    for itr, ite in fold.inner:
        assert np.isin(np.r_[itr, ite], fold.train).all()
        assert not set(pairs[itr]) & set(pairs[ite])


def test_balanced_pair_sides_maximizes_kept_fractions():
    pairs = np.array(["a"] * 6 + ["b"] * 4 + ["c"] * 2)
    is_test = np.array([1, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 1], bool)
    is_train = ~is_test
    to_test = balanced_pair_sides(pairs, is_train, is_test)
    # shares: a train 5/7, test 1/5 -> train; b train 1/7, test 3/5 -> test; c 1/7 vs 1/5 -> test
    assert to_test.tolist() == [False] * 6 + [True] * 4 + [True] * 2


def test_word_relabelings_are_every_deal_of_the_words():
    classes = {"left": ["left of", "at the left side of"], "right": ["right of", "at the right side of"]}
    labs, exact = word_relabelings(classes)
    assert exact and len(labs) == 6 and labs[0] == classes  # the observed labelling first
    assert all(sorted(len(v) for v in lab.values()) == [2, 2] for lab in labs)
    assert len({tuple(tuple(lab[c]) for c in classes) for lab in labs}) == 6
    up = {"up": ["above", "over", "on top of"], "down": ["below", "under", "beneath"]}
    assert len(word_relabelings(up)[0]) == 20
    sampled, exact = word_relabelings(up, max_relabelings=7, seed=1)
    assert not exact and len(sampled) == 7 and sampled[0] == up

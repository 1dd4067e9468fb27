"""Grouped splits never share a group across a split; nested CV never sees the outer test fold."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.folds import (assert_disjoint, caption_groups, grouped_kfold, image_caption_groups,
                            nested_cv, noun_pair_groups, word_assignments, word_split)


def toy_table(n=300, seed=0):
    rng = np.random.default_rng(seed)
    caps = rng.integers(0, 60, size=n)
    imgs = caps * 2 + rng.integers(0, 2, size=n)  # two images per caption ...
    imgs[:5] = np.arange(5) * 2  # ... and a few images shared across captions
    subj = np.array(["cat", "dog", "car", "bed", "man"])[caps % 5]
    obj = np.array(["table", "cat", "tree", "sofa"])[caps % 4]
    return pd.DataFrame({"caption": [f"caption {c}" for c in caps],
                         "image": [f"{i}.jpg" for i in imgs],
                         "subject": subj, "object": obj, "parsed": True,
                         "label": rng.integers(0, 2, size=n)})


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


def test_image_caption_groups_link_shared_images_and_captions():
    t = pd.DataFrame({"caption": ["a", "a", "b", "c", "d"], "image": ["1", "2", "2", "3", "4"]})
    g = image_caption_groups(t)
    # rows 0-1 share a caption, 1-2 an image: one component; 3 and 4 alone
    assert g[0] == g[1] == g[2]
    assert len({g[0], g[3], g[4]}) == 3
    t = toy_table(seed=1)
    g = image_caption_groups(t)
    for tr, te in grouped_kfold(t["label"].to_numpy(), g, 3, seed=0):
        assert not set(t["image"].iloc[tr]) & set(t["image"].iloc[te])
        assert not set(t["caption"].iloc[tr]) & set(t["caption"].iloc[te])


def test_noun_pairs_are_unordered_and_unparsed_rows_fall_back_to_caption():
    t = pd.DataFrame({"caption": ["x", "y", "z"], "subject": ["cat", "dog", None],
                      "object": ["dog", "cat", None], "parsed": [True, True, False]})
    g, unparsed = noun_pair_groups(t)
    assert g[0] == g[1] and g[2] == "cap:z" and unparsed == 1


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

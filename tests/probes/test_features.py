"""Per-fold feature scales against sklearn's StandardScaler and CountVectorizer fitted on the
training rows alone."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.preprocessing import StandardScaler

from analysis.probes.features import bow_features, common_width, fold_scale, standardize


def test_fold_scale_is_one_over_the_training_rows_sd():
    """Per column of the mask: 1 / StandardScaler().fit(X[train]).scale_, 0 for a feature
    constant on the training rows (but not overall); masks shared by columns agree."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 5)) * [0.1, 1, 5, 20, 1] + 3.0
    X[:45, 4] = 2.0  # constant on the first half of the rows only
    mask = np.zeros((90, 4), dtype=bool)
    mask[:45, 0] = True
    mask[20:, 1] = True
    mask[::2, 2] = True
    mask[:45, 3] = True
    S = fold_scale(X, mask)
    for k in range(4):
        sc = StandardScaler().fit(X[mask[:, k]])
        want = np.where(sc.var_ > 0, 1.0 / sc.scale_, 0.0)
        np.testing.assert_allclose(S[k], want, rtol=1e-10)
    assert S[0, 4] == 0.0 and S[1, 4] > 0.0
    np.testing.assert_array_equal(S[0], S[3])


def test_globally_standardized_features_scaled_per_fold_equal_fold_standardized_ones():
    """On standardize(X) * fold_scale, every training fold's features have sd 1: the fit is
    the one on features standardized with that fold's rows (up to the mean, which the
    intercept absorbs)."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 3)) * [1, 10, 0.01]
    Z = standardize(X)
    mask = rng.random((60, 2)) < 0.6
    S = fold_scale(Z, mask)
    for k in range(2):
        rows = Z[mask[:, k]] * S[k]
        np.testing.assert_allclose(rows.std(0), 1.0, rtol=1e-5)
        want = StandardScaler().fit(X[mask[:, k]]).transform(X)
        np.testing.assert_allclose(Z * S[k] - (Z * S[k])[mask[:, k]].mean(0), want, atol=1e-4)


@pytest.mark.parametrize("min_df", [1, 2, 3])
def test_bow_vocabulary_per_fold_is_countvectorizer_on_the_training_rows(min_df):
    """Features kept by fold_scale (scale > 0) are exactly the n-grams of CountVectorizer
    (unigrams + bigrams, min_df) fitted on the fold's training captions, minus those constant
    on those rows (which StandardScaler leaves constant and no fit can use)."""
    caps = ["a dog left of a cat", "the cat is above the dog", "a dog on the bed",
            "the bed under the cat", "a cat left of the bed", "the dog above a bed",
            "a cat under a dog", "the bed on the dog"]
    counts, occurs = bow_features(caps, min_df)
    vocab = CountVectorizer(ngram_range=(1, 2), min_df=min_df).fit(caps).get_feature_names_out()
    assert counts.shape == (len(caps), len(vocab))
    np.testing.assert_array_equal(occurs, counts > 0)
    train = np.array([1, 1, 0, 1, 1, 1, 0, 1], bool)
    S = fold_scale(standardize(counts), train[:, None], occurs, min_df)[0]
    fold_vec = CountVectorizer(ngram_range=(1, 2), min_df=min_df).fit([c for c, t in zip(caps, train) if t])
    Xtr = fold_vec.transform([c for c, t in zip(caps, train) if t]).toarray()
    varying = set(np.asarray(fold_vec.get_feature_names_out())[Xtr.var(0) > 0])
    assert set(vocab[S > 0]) == varying


def test_common_width_is_sklearns_projection_and_ignores_the_rows():
    """The wider side goes through sklearn's GaussianRandomProjection (same seed, same matrix),
    drawn from the widths alone: the projection of a row does not depend on the other rows."""
    from sklearn.random_projection import GaussianRandomProjection
    rng = np.random.default_rng(0)
    text, image = rng.normal(size=(30, 24)), rng.normal(size=(30, 8))
    img, proj = common_width(image, text, seed=3)
    assert img is image and proj.shape == (30, 8)
    ref = GaussianRandomProjection(n_components=8, random_state=3).fit(text).transform(text)
    np.testing.assert_allclose(proj, ref, rtol=1e-5, atol=1e-5)
    _, first = common_width(image[:5], text[:5], seed=3)
    np.testing.assert_allclose(first, proj[:5], rtol=1e-6)
    a, b = common_width(text, image, seed=3)  # argument order kept
    np.testing.assert_allclose(a, proj, rtol=1e-6)
    assert b is image
    same = rng.normal(size=(4, 8))
    assert common_width(image[:4], same, 0)[1] is same

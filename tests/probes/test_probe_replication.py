"""The replication probe must equal the original design computed directly with sklearn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, make_scorer, precision_score, recall_score
from sklearn.model_selection import StratifiedKFold, cross_validate

from analysis.probes.probe_replication import (ReplicationSettings, compare, replication_probes,
                                               summarize)

CFG = ReplicationSettings(variant="random", split="train", min_count=20, C=1.0, solver="lbfgs",
                          max_iter=1000, random_state=42, n_splits=5)


def synthetic(seed: int = 0, n: int = 300, d: int = 16):
    """Unit-norm rows; relation 'a' is linearly separable-ish, 'b' weak, 'rare' below min_count."""
    rng = np.random.default_rng(seed)
    relations = rng.choice(["a", "b", "c"], size=n, p=[0.4, 0.35, 0.25]).astype(object)
    relations[:10] = "rare"
    X = rng.normal(size=(n, d))
    X[relations == "a", 0] += 3.0
    X[relations == "b", 1] += 0.5
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    labels = rng.integers(0, 2, size=n)
    return X, relations, labels


def original_cross_validate(X, y):
    """The original project's computation (src/probing.py), written independently here."""
    scoring = {
        "accuracy": "accuracy",
        "f1_macro": make_scorer(f1_score, average="macro", zero_division=0),
        "f1_weighted": make_scorer(f1_score, average="weighted", zero_division=0),
        "precision_macro": make_scorer(precision_score, average="macro", zero_division=0),
        "recall_macro": make_scorer(recall_score, average="macro", zero_division=0),
    }
    cv = cross_validate(LogisticRegression(C=1.0, max_iter=1000, random_state=42, solver="lbfgs"),
                        X, y, cv=StratifiedKFold(n_splits=5, shuffle=True, random_state=42),
                        scoring=scoring)
    return {k: (cv[f"test_{k}"].mean(), cv[f"test_{k}"].std()) for k in scoring}


def test_matches_direct_sklearn_cross_validate():
    X, relations, labels = synthetic()
    df = replication_probes(X, relations, labels, CFG).set_index("relation")
    assert sorted(df.index) == ["a", "b", "c"]  # 'rare' (10 rows) is below min_count
    for rel in ["a", "b", "c"]:
        expected = original_cross_validate(X, (relations == rel).astype(int))
        for metric, (mean, std) in expected.items():
            assert df.loc[rel, f"{metric}_mean"] == pytest.approx(mean, abs=1e-12)
            assert df.loc[rel, f"{metric}_std"] == pytest.approx(std, abs=1e-12)


def test_counts_use_vsr_label_among_relation_rows():
    X, relations, labels = synthetic(1)
    df = replication_probes(X, relations, labels, CFG).set_index("relation")
    for rel in df.index:
        mask = relations == rel
        assert df.loc[rel, "n_samples"] == mask.sum()
        assert df.loc[rel, "n_positive"] == (labels[mask] == 1).sum()
        assert df.loc[rel, "n_negative"] == (labels[mask] == 0).sum()


def test_collapsed_flag_and_majority_f1():
    """A rare, uninformative relation on unit-norm vectors with C=1: the probe predicts the
    majority class on every fold, scoring exactly what the majority predictor scores."""
    rng = np.random.default_rng(3)
    n = 500
    X = rng.normal(size=(n, 32))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    relations = np.where(np.arange(n) < 25, "rare", "common").astype(object)
    rng.shuffle(relations)
    df = replication_probes(X, relations, rng.integers(0, 2, n), CFG).set_index("relation")
    assert bool(df.loc["rare", "collapsed"]) is True
    assert df.loc["rare", "f1_macro_mean"] == pytest.approx(df.loc["rare", "f1_macro_majority"])
    # the majority-class macro F1 for 5 positives in 100 rows: F1(neg) = 2*95/(95+100), /2
    assert df.loc["rare", "f1_macro_majority"] == pytest.approx(0.5 * 190 / 195)


def test_separable_relation_not_collapsed():
    X, relations, labels = synthetic(2)
    X = X.copy()
    X[relations == "a"] += 5.0
    df = replication_probes(X, relations, labels, CFG).set_index("relation")
    assert not df.loc["a", "collapsed"]
    assert df.loc["a", "f1_macro_mean"] > 0.95


def test_no_relation_above_min_count_is_an_error():
    X, relations, labels = synthetic()
    with pytest.raises(ValueError, match="min_count=1000"):
        replication_probes(X, relations, labels, CFG.model_copy(update={"min_count": 1000}))


def test_summary_and_comparison_tables():
    a = pd.DataFrame({"relation": ["x", "y", "z"], "f1_macro_mean": [0.9, 0.5, 0.7],
                      "collapsed": [False, True, False]})
    b = pd.DataFrame({"relation": ["x", "y", "z"], "f1_macro_mean": [0.6, 0.5, 0.8],
                      "collapsed": [False, True, True]})
    s = summarize({"sbert": a, "clip_text": b}).set_index("condition")
    assert s.loc["sbert", "mean"] == pytest.approx(0.7)
    assert s.loc["sbert", "std"] == pytest.approx(np.std([0.9, 0.5, 0.7], ddof=1))
    assert s.loc["sbert", "median"] == pytest.approx(0.7)
    assert (s.loc["clip_text", "min"], s.loc["clip_text", "max"]) == (0.5, 0.8)
    assert s.loc["clip_text", "n_collapsed"] == 2
    c = compare({"sbert": a, "clip_text": b})
    assert list(c.columns) == ["relation", "sbert_f1", "clip_text_f1"]
    assert list(c["relation"]) == ["x", "z", "y"]  # means 0.75, 0.75 (stable), 0.5

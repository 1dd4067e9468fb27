"""Task construction: rows, labels and folds of T1-T3, control labels and permutations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.data.groups import noun_pair_groups
from analysis.probes.tasks import (Problem, block_null_problems, control_labels, t1_problems,
                                   t2_problems, t3_holdout_problems, t3_problems, word_null_problems)
from analysis.data.relations import load_meta_categories
from analysis.data.vsr_format import normalize, read_split
from analysis.probes.settings import CVSettings, T1Settings, T2Settings, T3Settings

CV = CVSettings(n_splits=3, n_repeats=2, inner_splits=2, seed=0)
WORDS = {"vertical": {"up": ["above", "over", "on top of"], "down": ["below", "under", "beneath"]},
         "horizontal": {"left": ["left of", "at the left side of"],
                        "right": ["right of", "at the right side of"]},
         "depth": {"front": ["in front of", "ahead of"], "back": ["behind", "at the back of"]}}


def fixture_table(fixture_vsr, variant="random", split="train"):
    meta, _ = load_meta_categories()
    path = fixture_vsr / variant / f"{split}.jsonl"
    return normalize(read_split(path.read_bytes().splitlines(), meta, file=str(path)), variant, split)


def test_control_labels_keep_class_balance_and_are_fixed_per_group():
    rng = np.random.default_rng(0)
    groups = np.array([f"g{i}" for i in rng.integers(0, 400, size=3000)])
    y = rng.choice(4, size=3000, p=[0.5, 0.25, 0.15, 0.1])
    c = control_labels(y, groups, seed=1)
    max_group = pd.Series(groups).value_counts().max()
    assert np.abs(np.bincount(c, minlength=4) - np.bincount(y, minlength=4)).max() <= max_group
    assert (pd.DataFrame({"g": groups, "c": c}).groupby("g")["c"].nunique() == 1).all()
    assert (c != y).mean() > 0.4  # unrelated to the real labels
    np.testing.assert_array_equal(c, control_labels(y, groups, seed=1))  # deterministic


def test_block_null_exchanges_whole_groups_of_the_same_size():
    rng = np.random.default_rng(1)
    sizes = rng.integers(1, 4, size=80)
    groups = np.repeat(np.arange(80), sizes)
    y = np.repeat(rng.integers(0, 2, 80), sizes)  # labels constant within a group
    prob = Problem("T3", "t", np.arange(len(y)), y, groups, 2, [])
    nulls = block_null_problems(prob, 50, seed=0)
    assert len(nulls) == 50
    for q in nulls:
        df = pd.DataFrame({"g": groups, "y": q.y})
        assert (df.groupby("g")["y"].nunique() == 1).all()  # within-group dependence kept
        for k in (1, 2, 3):  # class counts kept among groups of each size
            m = np.isin(groups, np.flatnonzero(sizes == k))
            assert q.y[m].sum() == y[m].sum()
    assert np.mean([(q.y != y).mean() for q in nulls]) > 0.3  # and the labels do move


def test_t2_word_null_re_evaluates_every_relabelling(fixture_vsr):
    table = fixture_table(fixture_vsr)
    cfg = T2Settings(word_groups=WORDS, max_assignments=None)
    vert = next(p for p in t2_problems(table, cfg, CV) if p.target == "vertical")
    nulls, exact = word_null_problems(vert, cfg, CV, max_relabelings=100, seed=0)
    assert exact and len(nulls) == 20
    first = nulls[0]  # the observed labelling: the very same problem
    np.testing.assert_array_equal(first.y, vert.y)
    assert [f.test.tolist() for f in first.folds] == [f.test.tolist() for f in vert.folds]
    for q in nulls:
        assert sorted(map(len, q.info["classes"].values())) == [3, 3]
        for fold in q.folds:  # each relabelling is evaluated on held-out words, pairs separated
            assert not set(q.words[fold.test]) & set(q.words[fold.train])
            assert not set(q.groups[fold.test]) & set(q.groups[fold.train])


def test_t1_one_vs_rest_matches_multiclass_and_folds_group_noun_pairs(fixture_vsr):
    table = fixture_table(fixture_vsr)
    probs = t1_problems(table, T1Settings(min_count=12), CV)
    multi, ovr = probs[0], probs[1:]
    kept = table["relation"].value_counts()
    assert multi.classes == sorted(kept.index[kept >= 12])
    assert set(table["relation"].iloc[multi.rows]) == set(multi.classes)
    pairs, _ = noun_pair_groups(table.iloc[multi.rows])
    for p in ovr:
        np.testing.assert_array_equal(p.y, (multi.y == multi.classes.index(p.target)).astype(int))
        assert p.folds is multi.folds
    for fold in multi.folds:
        assert not set(pairs[fold.train]) & set(pairs[fold.test])
    control = t1_problems(table, T1Settings(min_count=12), CV, control_seed=3, ovr=False)
    assert len(control) == 1 and control[0].task == "T1_control"
    np.testing.assert_array_equal(np.bincount(control[0].y, minlength=12) > 0,
                                  np.ones(12, bool))


def test_t2_tests_on_held_out_words_and_reports_unusable_groups(fixture_vsr):
    table = fixture_table(fixture_vsr)
    probs = t2_problems(table, T2Settings(word_groups=WORDS, max_assignments=None), CV)
    names = {f"{p.task}:{p.target}" for p in probs}
    # the fixture lacks 'ahead of' and 'at the back of': depth cannot hold out a word
    assert "T2_polarity:depth" not in names and "T2_polarity:vertical" in names
    assert probs[0].info["skipped"]
    rel = table["relation"].to_numpy()
    for p in probs:
        words = rel[p.rows]
        for fold in p.folds:
            test_words, train_words = set(words[fold.test]), set(words[fold.train])
            assert test_words and not test_words & train_words
            assert len(test_words) == p.n_classes  # one held-out word per class
    axis = next(p for p in probs if p.task == "T2_axis")
    assert axis.classes == ["vertical", "horizontal", "depth"]  # depth: 'in front of', 'behind'
    assert axis.info["assignments"] == 6 * 4 * 2


def test_t3_targets_and_holdout_stack_train_then_test(fixture_vsr):
    table = fixture_table(fixture_vsr)
    probs = t3_problems(table, T3Settings(min_count=12, min_per_class=3), CV)
    assert any(p.target.startswith("meta:") for p in probs)
    for p in probs:
        assert len(p.rows) >= 12 and min(np.bincount(p.y)) >= 3
        np.testing.assert_array_equal(p.y, table["label"].to_numpy()[p.rows])
    test = fixture_table(fixture_vsr, split="test")
    hold = t3_holdout_problems(table, test, T3Settings(min_count=12, min_per_class=3), CV, "T3_h")
    assert hold
    for p in hold:
        fold = p.folds[0]
        assert (p.rows[fold.train] < len(table)).all() and (p.rows[fold.test] >= len(table)).all()
        for itr, ite in fold.inner:
            assert np.isin(np.r_[itr, ite], fold.train).all()


def test_t1_needs_enough_relations(fixture_vsr):
    with pytest.raises(ValueError, match="min_count"):
        t1_problems(fixture_table(fixture_vsr), T1Settings(min_count=10_000), CV)


def test_matched_polarity_holds_out_whole_antonym_pairs(fixture_vsr):
    """M_polarity: every fold trains on one whole pair and tests on another whole pair (every
    ordered rotation, so 3 pairs give 6 splits and 2 give 2); labels are the pole; no noun pair
    is on both sides; a pair without rows is an error naming the setting."""
    from analysis.probes.settings import MatchedSettings
    from analysis.probes.tasks import matched_problems

    table = fixture_table(fixture_vsr)
    cfg = MatchedSettings(pairs={"vertical": [["above", "below"], ["on top of", "under"],
                                              ["over", "beneath"]],
                                 "horizontal": [["left of", "right of"],
                                                ["at the left side of", "at the right side of"]]})
    cv = CVSettings(n_splits=3, n_repeats=1, inner_splits=2, seed=0)
    try:
        probs = {p.target: p for p in matched_problems(table, cfg, cv)}
    except ValueError as e:  # the fixture's 3-row words may leave a side empty: use two pairs
        assert "after separating noun pairs" in str(e)
        cfg = MatchedSettings(pairs={"vertical": [["above", "below"], ["on top of", "under"]],
                                     "horizontal": cfg.pairs["horizontal"]})
        probs = {p.target: p for p in matched_problems(table, cfg, cv)}
    rel = table["relation"].to_numpy()
    for axis, pairs in cfg.pairs.items():
        prob = probs[axis]
        n = len(pairs)
        assert prob.task == "M_polarity" and len(prob.folds) == n * (n - 1)
        assert [f.repeat for f in prob.folds] == list(range(n * (n - 1)))
        words = rel[prob.rows]
        np.testing.assert_array_equal(prob.y, np.isin(words, [p[1] for p in pairs]).astype(int))
        seen = set()
        for fold, split in zip(prob.folds, prob.info["splits"]):
            test_pair, (train_pair,) = tuple(split["test_pair"]), split["train_pairs"]
            assert set(words[fold.test]) == set(test_pair)
            assert set(words[fold.train]) == set(train_pair) and tuple(train_pair) != test_pair
            assert not set(prob.groups[fold.train]) & set(prob.groups[fold.test])
            for tr, va in fold.inner:  # C is chosen inside the training pair's rows
                assert set(tr) | set(va) <= set(fold.train)
            seen.add((tuple(train_pair), test_pair))
        assert len(seen) == n * (n - 1)
    bad = MatchedSettings(pairs={"depth": [["in front of", "behind"], ["ahead of", "at the back of"]]})
    with pytest.raises(ValueError, match=r"matched.pairs.depth: relations \['ahead of', 'at the back of'\] have no rows"):
        matched_problems(table, bad, cv)
    with pytest.raises(ValueError, match="a word is in two pairs"):
        MatchedSettings(pairs={"vertical": [["above", "below"], ["above", "under"]]})


def spatial_table(nouns=("person", "cat", "dog", "bed", "car", "truck")):
    from analysis.data import templates
    cfg = templates.SpatialSettings(
        poles={"vertical": ("up", "down"), "horizontal": ("left", "right")},
        pairs={"vertical": (("above", "below"), ("over", "under"), ("higher than", "lower than")),
               "horizontal": (("to the left of", "to the right of"), ("on the left of", "on the right of"),
                              ("at the left side of", "at the right side of"),
                              ("on the left-hand side of", "on the right-hand side of"))})
    return templates.generate_spatial(templates.noun_pairs(list(nouns)), cfg,
                                      load_meta_categories()[0])


def test_controlled_folds_cross_held_out_form_pairs_with_noun_pairs():
    """C_polarity / C_scene: each split trains on 2 form pairs and tests on another (3 pairs:
    3 splits; 4 pairs: 4 x 3 = 12); within a split every test row is predicted once, and no
    phrase or noun pair is on both sides of a fold; inner splits hold out one training pair."""
    from analysis.probes.settings import ControlledSettings
    from analysis.probes.tasks import controlled_problems

    table = spatial_table()
    cyclic = {(p.task, p.target): p for p in controlled_problems(
        table, ControlledSettings(train_pairs=2, noun_folds=3, train_sets="cyclic"), CV)}
    hz = cyclic["C_scene", "horizontal"].info  # one split per pair: the next two pairs in order
    forms = hz["form_pairs"]
    assert [(sp["test_pair"], sp["train_pairs"]) for sp in hz["splits"]] == [
        (forms[k], [forms[(k + 1) % 4], forms[(k + 2) % 4]] if k < 2 else
         sorted([forms[(k + 1) % 4], forms[(k + 2) % 4]], key=forms.index)) for k in range(4)]
    cfg = ControlledSettings(train_pairs=2, noun_folds=3, train_sets="all")
    probs = {(p.task, p.target): p for p in controlled_problems(table, cfg, CV)}
    assert set(probs) == {(t, a) for t in ("C_polarity", "C_scene") for a in ("vertical", "horizontal")}
    assert probs["C_scene", "vertical"].info["assignments"] == 3
    assert probs["C_scene", "horizontal"].info["assignments"] == 12
    for (task, axis), p in probs.items():
        part = table.loc[p.rows]
        assert (part["axis"] == axis).all()
        expected = part["scene"] if task == "C_scene" else (part["pole"] != part["pole"].iloc[0]).astype(int)
        np.testing.assert_array_equal(p.y, expected.to_numpy())
        form = part["form_pair"].to_numpy()
        noun = part["pair_id"].to_numpy()
        for r in range(p.info["assignments"]):
            folds = [f for f in p.folds if f.repeat == r]
            assert len(folds) == cfg.noun_folds
            tested = np.concatenate([f.test for f in folds])
            assert len(tested) == len(set(tested)) == p.info["splits"][r]["test_rows"]
            assert len(set(form[tested])) == 1
            for f in folds:
                assert not set(form[f.train]) & set(form[f.test])
                assert not set(noun[f.train]) & set(noun[f.test])
                assert len(set(form[f.train])) == cfg.train_pairs
                assert len(f.inner) == cfg.train_pairs
                for tr, va in f.inner:
                    assert set(tr) | set(va) == set(f.train) and len(set(form[va])) == 1
                    assert not set(form[tr]) & set(form[va])
    with pytest.raises(ValueError, match="train_pairs=3: axis vertical has 3 form pairs"):
        controlled_problems(table, ControlledSettings(train_pairs=3, noun_folds=3), CV)
    with pytest.raises(ValueError, match="at least 2"):
        ControlledSettings(train_pairs=1)


def test_controlled_scene_probe_known_answers():
    """Simulated features with a known answer, through the suite's nested CV: a code for the
    scene's direction (same for a caption and its converse) gives C_scene near 1; the bag of
    n-grams gives chance (a caption and its swap share every unigram; the bigram "cat is" marks
    the subject, but the scene is subject XOR pole, which no linear probe of the counts reads);
    the pole's word gives C_polarity 1 where every form shares it."""
    from analysis.probes.features import bow_features, standardize
    from analysis.probes.nested_cv import engine_options, run_problems
    from analysis.probes.settings import ControlledSettings
    from analysis.probes.tasks import controlled_problems
    from tests.probes.conftest import suite_settings

    table = spatial_table()
    cfg = suite_settings()
    probs = controlled_problems(table, ControlledSettings(train_pairs=2, noun_folds=3), CV)
    ids = table["row_id"].to_numpy()
    rng = np.random.default_rng(0)
    scene = np.where(table["scene"] == 1, 1.0, -1.0)
    X = np.c_[scene + 0.3 * rng.standard_normal(len(table)), rng.standard_normal((len(table), 5))]
    counts, occurs = bow_features(table["caption"].tolist(), 1)
    acc = {}
    for name, feats, occ in (("code", standardize(X), None), ("bow", standardize(counts), occurs)):
        _, sc, _ = run_problems(feats, probs, ids, name, -1, cfg, engine_options(cfg.engine),
                                progress=False, occurs=occ, min_df=1)
        acc[name] = sc[sc["metric"] == "accuracy"].set_index(["task", "target"])["estimate"]
    assert (acc["code"].loc["C_scene"] > 0.95).all()
    assert (acc["bow"].loc["C_scene"] - 0.5).abs().max() < 0.03
    assert acc["bow"].loc[("C_polarity", "horizontal")] == 1.0   # "left" / "right" in every form
    assert acc["bow"].loc[("C_polarity", "vertical")] == 0.5     # no shared word across forms

"""The probe_suite stage: metrics against sklearn, nested CV against a direct sklearn refit,
permutation p-values under a null, and the whole stage on the fixture with synthetic vectors."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, f1_score

from analysis import store
from analysis.folds import nested_cv
from analysis.io import write_json, write_npy
from analysis.probe_suite import (OOF_COLUMNS, auprc, chance_f1, macro_f1, main, permutation_null,
                                  _layer_settings, run_problems, run_suite)
from analysis.tasks import Problem
from analysis.vsr import load_meta_categories, normalize, read_split

ENGINE = {"tol": 1e-6, "max_iter": 100, "max_cg": 100, "device": "cpu", "dtype": "float64",
          "inner_tol": 1e-4, "inner_max_iter": 50}


def small_cfg(repo_root):
    cfg = yaml.safe_load((repo_root / "params.smoke.yaml").read_text())["probe_suite"]
    cfg = copy.deepcopy(cfg)
    cfg["C_grid"] = {"min": 1e-4, "max": 1e4, "num": 3}
    cfg["cv"] = {"n_splits": 3, "n_repeats": 1, "inner_splits": 2, "seed": 0}
    cfg["t2"]["max_assignments"] = 2
    cfg["t3"]["holdout"] = ["random"]
    cfg["permutation"]["n"] = 10
    return cfg


def test_macro_f1_and_auprc_equal_sklearn():
    rng = np.random.default_rng(0)
    for M in (2, 4):
        y = rng.integers(0, M, size=200)
        pred = rng.integers(0, M - 1, size=200)  # one class never predicted
        assert macro_f1(y, pred, M) == pytest.approx(
            f1_score(y, pred, labels=np.arange(M), average="macro", zero_division=0), abs=1e-12)
    y = rng.integers(0, 2, size=100)
    s = rng.random(100)
    assert auprc(y, s, 2) == pytest.approx(average_precision_score(y, s))
    P = rng.dirichlet(np.ones(3), size=100)
    y3 = rng.integers(0, 3, size=100)
    assert auprc(y3, P, 3) == pytest.approx(np.mean([average_precision_score(y3 == c, P[:, c])
                                                     for c in range(3)]))


def test_chance_levels_by_hand():
    y_train = np.array([0] * 6 + [1] * 2)
    y_test = np.array([0, 0, 0, 1])
    majority, stratified = chance_f1(y_test, y_train, 2)
    # majority predicts 0: F1_0 = 2*3/(3+4) = 6/7, F1_1 = 0
    assert majority == pytest.approx(3 / 7)
    # q = (0.75, 0.25): F1_0 = 2*3*.75/(3+3) = .75; F1_1 = 2*1*.25/(1+1) = .25
    assert stratified == pytest.approx(0.5)


def _blobs(seed, n=150, d=6):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    X = rng.normal(size=(n, d))
    X[:, 0] += 1.2 * y
    groups = np.array([f"g{i}" for i in rng.integers(0, 50, size=n)])
    return X.astype(np.float32), y, groups


def test_outer_predictions_equal_sklearn_refit_at_the_chosen_C():
    X, y, groups = _blobs(0)
    folds = nested_cv(y, groups, n_splits=3, n_repeats=1, inner_splits=2, seed=0)
    prob = Problem("T", "t", np.arange(len(y)), y, groups, 2, folds)
    cfg = {"C_grid": {"min": 1e-3, "max": 1e1, "num": 5}, "engine": ENGINE, "C_patience": None}
    from analysis.probe_suite import _engine
    oof, scores, _ = run_problems(X, [prob], np.array([f"r{i}" for i in range(len(y))]), "c", -1,
                                  cfg, _engine(cfg))
    assert sorted(oof["row_id"]) == sorted(f"r{i}" for i in range(len(y)))
    for fold in folds:
        part = oof.set_index("row_id").loc[[f"r{i}" for i in fold.test]]
        C = part["C"].iloc[0]
        sk = LogisticRegression(C=C, class_weight="balanced", tol=1e-10, max_iter=10_000)
        sk.fit(X[fold.train], y[fold.train])
        np.testing.assert_allclose(part["score"], sk.predict_proba(X[fold.test])[:, 1], atol=1e-4)
        # the chosen C is the inner-CV argmax, recomputed with sklearn
        grid = np.logspace(-3, 1, 5)
        inner = [np.mean([f1_score(y[te], LogisticRegression(C=c, class_weight="balanced",
                                                             tol=1e-10, max_iter=10_000)
                                   .fit(X[tr], y[tr]).predict(X[te]), average="macro")
                          for tr, te in fold.inner]) for c in grid]
        assert C == pytest.approx(grid[int(np.argmax(inner))])
    f1 = scores.set_index("metric").loc["macro_f1", "estimate"]
    assert f1 == pytest.approx(f1_score(oof["y_true"], oof["y_pred"], average="macro"))


def test_permutation_p_values_are_uniform_under_the_null():
    cfg = {"permutation": {"n": 39, "seed": 0, "tol": 1e-4}, "max_columns": 4000}
    from analysis.probe_suite import _engine, _repeat0_f1
    eng = _engine({"engine": ENGINE})
    pvals = []
    for sim in range(40):
        rng = np.random.default_rng(100 + sim)
        n = 60
        X = rng.normal(size=(n, 3)).astype(np.float32)
        y = rng.integers(0, 2, size=n)  # independent of X: the null holds
        groups = np.array([f"g{i}" for i in rng.integers(0, 20, size=n)])
        folds = [f for f in nested_cv(y, groups, n_splits=3, n_repeats=1, inner_splits=2, seed=sim)]
        prob = Problem("T", "t", np.arange(n), y, groups, 2, folds)
        chosen = {(0, f): 1.0 for f in range(len(folds))}
        cfg["permutation"]["seed"] = sim
        null = permutation_null(X, prob, chosen, 0, cfg, eng)
        from analysis.probe_suite import _outer
        rows = []
        for _, f, te, pred, _, _, _ in _outer([prob], X, chosen, 2, eng):
            rows.append(pd.DataFrame({"repeat": 0, "y_true": y[te], "y_pred": pred}))
        obs = _repeat0_f1(pd.concat(rows))
        pvals.append((1 + (null >= obs - 1e-12).sum()) / (1 + len(null)))
    pvals = np.array(pvals)
    # tolerance: a KS test against the discrete uniform's continuous envelope at alpha 0.01
    assert stats.kstest(pvals, "uniform").pvalue > 0.01
    assert 0.0 <= (pvals <= 0.1).mean() <= 0.3


def test_layer_settings_override_only_what_layers_sets():
    cfg = {"cv": {"n_splits": 5, "n_repeats": 2, "inner_splits": 3, "seed": 7},
           "C_grid": {"min": 1e-4, "max": 1e4, "num": 9},
           "layers": {"n_splits": 3, "n_repeats": 1, "inner_splits": 2,
                      "C_grid": {"min": 1e-4, "max": 1e4, "num": 5}}}
    lay_cfg, cv = _layer_settings(cfg)
    assert cv == {"n_splits": 3, "n_repeats": 1, "inner_splits": 2, "seed": 7}
    assert lay_cfg["cv"] == cv and lay_cfg["C_grid"]["num"] == 5
    assert cfg["cv"]["n_splits"] == 5  # the suite's own settings are untouched
    _, cv = _layer_settings({**cfg, "layers": {}})
    assert cv == cfg["cv"]


def write_workspace(root, fixture_vsr, missing_images=2):
    """Fixture tables and synthetic embeddings: sbert encodes the relation, clip_text is noise,
    clip_image agrees with the caption's text vector exactly when the label is True."""
    meta, _ = load_meta_categories()
    rng = np.random.default_rng(0)
    for variant in ("random", "zeroshot"):
        for split in ("train", "test"):
            path = fixture_vsr / variant / f"{split}.jsonl"
            table = normalize(read_split(path.read_bytes().splitlines(), meta, file=str(path)),
                              variant, split)
            out = store.table_path(variant, split, root / "data" / "vsr")
            out.parent.mkdir(parents=True, exist_ok=True)
            table.to_parquet(out)
            emb = root / "results" / "embeddings"
            n, ids = len(table), table["row_id"].tolist()
            code = np.eye(32)[pd.factorize(table["relation"])[0] % 32]
            m = {"row_ids": ids}
            d = store.save_embeddings("sbert", variant, split,
                                      {"mean": 2 * code + rng.normal(size=(n, 32))}, m, emb)
            # (L, N, D) as ARCHITECTURE.md specifies (store.save_embeddings checks shape[0] == N)
            write_npy(d / "layers.npy", np.stack([rng.normal(size=(n, 32)),
                                                  2 * code + rng.normal(size=(n, 32))]).astype(np.float32))
            write_json(d / "meta.json", {**m, "views": ["layers", "mean"]})
            t = rng.normal(size=(n, 16))
            store.save_embeddings("clip_text", variant, split,
                                  {"pooler_output": rng.normal(size=(n, 24)), "text_embeds": t}, m, emb)
            img = t * (2 * table["label"].to_numpy()[:, None] - 1) + 0.3 * rng.normal(size=t.shape)
            keep = np.arange(n) >= missing_images
            store.save_embeddings("clip_image", variant, split, {"image_embeds": img[keep]},
                                  {"row_ids": [i for i, k in zip(ids, keep) if k]}, emb)


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory, fixture_vsr, repo_root):
    root = tmp_path_factory.mktemp("suite")
    write_workspace(root, fixture_vsr)
    cfg = small_cfg(repo_root)
    oof, scores, null, report = run_suite(cfg, root / "results" / "embeddings", root / "data" / "vsr")
    return root, cfg, oof, scores, null, report


def test_oof_contract_and_no_group_split_across_folds(suite_run):
    _, _, oof, _, _, _ = suite_run
    assert {"T1", "T1_ovr", "T1_control", "T2_axis", "T2_polarity", "T3",
            "T3_holdout_random"} <= set(oof)
    for task, df in oof.items():
        assert list(df.columns) == OOF_COLUMNS
        key = ["task", "condition", "layer", "target", "repeat", "row_id"]
        assert not df.duplicated(key).any(), task
        assert df["y_true"].dtype.kind == "i" and df["y_pred"].dtype.kind == "i"
        cv = df[~df["task"].str.contains("holdout")]
        folds_per_group = cv.groupby(["condition", "layer", "target", "repeat", "group"])["fold"].nunique()
        assert (folds_per_group == 1).all(), task
    # identical rows and folds for every condition (paired comparisons)
    t3 = oof["T3"]
    per = {c: g.sort_values(["target", "row_id"])[["target", "row_id", "fold"]].to_numpy()
           for c, g in t3[t3["layer"] == -1].groupby("condition")}
    first = next(iter(per.values()))
    for arr in per.values():
        np.testing.assert_array_equal(arr, first)


def test_scores_separate_signal_from_noise(suite_run):
    _, _, _, scores, null, report = suite_run
    f1 = scores[scores["metric"] == "macro_f1"].set_index(["task", "condition", "layer", "target"])
    assert f1.loc[("T1", "sbert", -1, "__all__"), "estimate"] > 0.3
    assert f1.loc[("T1", "clip_text", -1, "__all__"), "estimate"] < 0.2  # 12 classes: chance 1/12
    assert f1.loc[("T1", "bow", -1, "__all__"), "estimate"] > 0.95  # the relation words are there
    assert f1.loc[("T1", "sbert", 1, "__all__"), "estimate"] > f1.loc[("T1", "sbert", 0, "__all__"), "estimate"]
    t3 = f1.xs("T3", level="task").xs(-1, level="layer")
    assert t3.xs("clip_interaction", level="condition")["estimate"].mean() > 0.9
    assert t3.xs("clip_zeroshot", level="condition")["estimate"].mean() > 0.9
    assert t3.xs("clip_concat", level="condition")["estimate"].mean() < 0.75
    assert set(scores.columns[:13]) == {"task", "condition", "layer", "target", "metric",
                                        "estimate", "ci_low", "ci_high", "n", "chance", "p_value",
                                        "p_holm", "p_bh"}
    assert scores["collapsed"].dtype == bool
    pv = scores.dropna(subset=["p_value"])
    assert len(pv) and pv["p_value"].between(0, 1).all()
    assert len(null) and set(null["task"]) <= {"T2_polarity", "T3"}
    assert report["t3_rows_excluded_missing_image"] == 2
    probes = scores.drop_duplicates(["task", "condition", "layer", "target"])
    assert report["probes_with_unconverged_folds"] == (probes["unconverged_folds"] > 0).sum()
    assert "sbert_random" in report["missing_conditions"]


def test_main_writes_outputs(tmp_path, fixture_vsr, repo_root, monkeypatch):
    write_workspace(tmp_path, fixture_vsr)
    cfg = small_cfg(repo_root)
    cfg["text_conditions"] = ["sbert"]
    cfg["t3"]["pairs"] = []
    cfg["t3"]["holdout"] = []
    cfg["t1"]["ovr"] = False
    cfg["layers"]["tasks"] = []
    cfg["permutation"]["n"] = 0
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"probe_suite": cfg}))
    monkeypatch.chdir(tmp_path)
    assert main(["--params", "p.yaml"]) == 0
    out = tmp_path / "results" / "probes" / "suite"
    assert (out / "scores.csv").exists() and (out / "report.json").exists()
    assert {p.name for p in (out / "oof").iterdir()} == {
        "T1.parquet", "T1_control.parquet", "T1_control_ovr.parquet", "T2_axis.parquet",
        "T2_polarity.parquet", "T3.parquet"}
    derived = pd.read_parquet(out / "oof" / "T1_control_ovr.parquet")
    multi = pd.read_parquet(out / "oof" / "T1_control.parquet")
    assert len(derived) == len(multi) * multi["y_true"].nunique()
    assert set(derived["y_true"]) == {0, 1}
    scores = pd.read_csv(out / "scores.csv")
    assert set(scores["condition"]) == {"sbert", "bow"}

"""The probe_suite stage on the fixture with synthetic vectors: the OOF contract, paired folds,
signal separated from noise, and the files the stage writes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from analysis.common import store
from analysis.common.io import write_json, write_npy
from analysis.common.store import OOF_COLUMNS
from analysis.data.relations import load_meta_categories
from analysis.data.vsr_format import normalize, read_split
from analysis.probes.probe_suite import SuiteData, main, run_suite
from tests.probes.conftest import suite_dict, suite_settings

# a smaller suite than the smoke profile's (seconds)
SMALL = {"C_grid": {"min": 1e-4, "max": 1e4, "num": 3},
         "cv": {"n_splits": 3, "n_repeats": 1, "inner_splits": 2, "seed": 0},
         "t2": {"max_assignments": 2}, "t3": {"holdout": ["random"]}, "permutation": {"n": 10}}


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
    cfg = suite_settings(SMALL)
    oof, scores, null, report = run_suite(cfg, SuiteData(root / "results" / "embeddings", root / "data" / "vsr"))
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
    cfg = suite_dict(SMALL, {"text_conditions": ["sbert"], "t3": {"pairs": [], "holdout": []},
                             "t1": {"ovr": False}, "layers": {"tasks": []}, "permutation": {"n": 0}})
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"probe_suite": cfg}))
    monkeypatch.chdir(tmp_path)
    stale = tmp_path / "results/probes/suite/oof/T3_holdout_random.parquet"  # from a fuller run
    stale.parent.mkdir(parents=True)
    stale.write_text("stale")
    (stale.parent.parent / "null.parquet").write_text("stale")
    assert main(["--params", "p.yaml"]) == 0
    out = tmp_path / "results" / "probes" / "suite"
    assert not stale.exists() and not (out / "null.parquet").exists()  # the folder is replaced whole
    assert "timings_s" not in json.loads((out / "report.json").read_text())  # no wall time in outputs
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

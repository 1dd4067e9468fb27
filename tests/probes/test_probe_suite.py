"""The probe_suite stage on the fixture with synthetic vectors: the OOF contract, paired folds,
signal separated from noise, and the files the stage writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from analysis.common import store
from analysis.common.io import load_yaml, write_json, write_npy
from analysis.data import templates
from analysis.common.store import OOF_COLUMNS
from analysis.data.relations import load_meta_categories
from analysis.data.vsr_format import normalize, read_split
from analysis.common.errors import UserError
from analysis.probes.nested_cv import engine_options
from analysis.probes.probe_suite import (Collected, Pair, SuiteData, main, probe_controls,
                                         run_suite)
from tests.probes.conftest import suite_dict, suite_settings

ROOT = Path(__file__).resolve().parents[2]
# a smaller suite than the smoke profile's (seconds)
SMALL = {"C_grid": {"min": 1e-4, "max": 1e4, "num": 3},
         "cv": {"n_splits": 3, "n_repeats": 1, "inner_splits": 2, "seed": 0},
         "t2": {"max_assignments": 2}, "t3": {"holdout": ["random"]}, "permutation": {"n": 10}}


POLE = {"above": 1, "over": 1, "on top of": 1, "below": -1, "under": -1, "beneath": -1,
        "left of": 1, "at the left side of": 1, "right of": -1, "at the right side of": -1,
        "in front of": 1, "ahead of": 1, "behind": -1, "at the back of": -1}
POLE_DIR = np.random.default_rng(5).normal(size=32) / np.sqrt(32) * 2


def write_workspace(root, fixture_vsr, missing_images=2):
    """Fixture tables and synthetic embeddings: sbert encodes the relation, clip_text is noise,
    clip_image agrees with the caption's text vector exactly when the label is True. The images
    of the first ``missing_images`` random/train rows are missing in the images manifest (and
    so in clip_image)."""
    meta, _ = load_meta_categories()
    rng = np.random.default_rng(0)
    missing: set[str] = set()
    images: set[str] = set()
    for variant in ("random", "zeroshot"):
        for split in ("train", "test"):
            path = fixture_vsr / variant / f"{split}.jsonl"
            table = normalize(read_split(path.read_bytes().splitlines(), meta, file=str(path)),
                              variant, split)
            out = store.table_path(variant, split, root / "data" / "vsr")
            out.parent.mkdir(parents=True, exist_ok=True)
            table.to_parquet(out)
            if (variant, split) == ("random", "train"):
                missing |= set(table["image"][:missing_images])
            images |= set(table["image"])
            emb = root / "results" / "embeddings"
            n, ids = len(table), table["row_id"].tolist()
            code = np.eye(32)[pd.factorize(table["relation"])[0] % 32]
            m = {"row_ids": ids}
            d = store.save_embeddings("sbert", variant, split,
                                      {"mean": 2 * code + rng.normal(size=(n, 32))}, m, emb)
            # (L, N, D) as ARCHITECTURE.md specifies (store.save_embeddings checks shape[0] == N)
            # layer 1 also writes each spatial word's pole along one shared direction, so a probe
            # trained on one antonym pair transfers to another there (M_polarity), not on layer 0
            pole = table["relation"].map(POLE).fillna(0).to_numpy()[:, None]
            write_npy(d / "layers.npy", np.stack([rng.normal(size=(n, 32)),
                                                  2 * code + 3 * pole * POLE_DIR + rng.normal(size=(n, 32))]).astype(np.float32))
            write_json(d / "meta.json", {**m, "views": ["layers", "mean"]})
            t = rng.normal(size=(n, 16))
            store.save_embeddings("clip_text", variant, split,
                                  {"pooler_output": rng.normal(size=(n, 24)), "text_embeds": t}, m, emb)
            img = t * (2 * table["label"].to_numpy()[:, None] - 1) + 0.3 * rng.normal(size=t.shape)
            keep = ~table["image"].isin(missing).to_numpy()
            store.save_embeddings("clip_image", variant, split, {"image_embeds": img[keep]},
                                  {"row_ids": [i for i, k in zip(ids, keep) if k]}, emb)
    # the controlled spatial set: sbert codes the scene (a caption and its converse alike),
    # clip_text is noise
    params = load_yaml((ROOT / "params.smoke.yaml").read_text())["templates"]
    spatial = templates.generate_spatial(templates.noun_pairs(params["nouns"]),
                                         templates.SpatialSettings(**params["spatial"]), meta)
    tpath = root / "data" / "templates" / "spatial.parquet"
    tpath.parent.mkdir(parents=True, exist_ok=True)
    spatial.to_parquet(tpath)
    n, m = len(spatial), {"row_ids": spatial["row_id"].tolist()}
    axis = np.eye(32)[pd.factorize(spatial["axis"])[0]]
    scene = 4 * axis * np.where(spatial["scene"] == 1, 1, -1)[:, None] + rng.normal(size=(n, 32))
    store.save_embeddings("sbert", "templates", "spatial", {"mean": scene}, m, emb)
    store.save_embeddings("clip_text", "templates", "spatial",
                          {"pooler_output": rng.normal(size=(n, 24)),
                           "text_embeds": rng.normal(size=(n, 16))}, m, emb)
    manifest = pd.DataFrame({"image": sorted(images)})
    manifest["path"] = "data/images/" + manifest["image"]
    manifest["status"] = np.where(manifest["image"].isin(missing), "missing", "ok")
    manifest["error"] = ""
    _unusable(root).parent.mkdir(parents=True, exist_ok=True)
    store.unusable_images(manifest).to_csv(_unusable(root), index=False)
    return missing


def _unusable(root):
    return root / store.IMAGE_UNUSABLE


CLIP = Pair("clip", text="clip_text", text_view="text_embeds", image="clip_image",
            image_view="image_embeds")


def suite_data(root) -> SuiteData:
    return SuiteData(root / "results" / "embeddings", root / "data" / "vsr", _unusable(root),
                     root / "data" / "templates")


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory, fixture_vsr, repo_root):
    root = tmp_path_factory.mktemp("suite")
    missing = write_workspace(root, fixture_vsr)
    cfg = suite_settings(SMALL)
    # every unit in one call (the stage runs one per call; the library takes several)
    oof, scores, null, report = run_suite(cfg, suite_data(root), text=["sbert", "clip_text"],
                                          pairs=[CLIP], bow=True)
    train = pd.read_parquet(store.table_path("random", "train", root / "data" / "vsr"))
    report["_expected_excluded"] = int(train["image"].isin(missing).sum())
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
    m = f1.xs(("M_polarity", "sbert"), level=("task", "condition"))["estimate"]
    assert m.xs(1, level="layer").mean() > m.xs(0, level="layer").mean()  # the layer with the signal
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
    # T3 rows: those whose image the manifest lists as usable, for every condition
    assert report["t3_rows_excluded_missing_image"] == report["_expected_excluded"] >= 2
    probes = scores.drop_duplicates(["task", "condition", "layer", "target"])
    assert report["probes_with_unconverged_folds"] == (probes["unconverged_folds"] > 0).sum()


def test_a_unit_without_embeddings_is_an_error_naming_it(suite_run):
    root, cfg, *_ = suite_run
    with pytest.raises(UserError, match=r"no embeddings of \['sbert_random'\] on random/train"):
        run_suite(cfg, suite_data(root), text=["sbert_random"])


def test_caption_only_t3_uses_the_image_rows_of_the_pairs(suite_run):
    """A text unit run alone gets the same T3 rows and folds as the pair units (the manifest's
    usable images), so stats can pair them row for row."""
    root, _, oof, *_ = suite_run
    cfg = suite_settings(SMALL, {"t1": {"ovr": False, "control": False}, "layers": {"tasks": []},
                                 "permutation": {"n": 0}})
    alone, *_ = run_suite(cfg, suite_data(root), text=["sbert"])
    together = oof["T3"].query("condition == 'clip_concat' and layer == -1")
    mine = alone["T3"].query("condition == 'sbert'")
    key = ["target", "repeat", "row_id", "fold"]
    pd.testing.assert_frame_equal(mine[key].sort_values(key).reset_index(drop=True),
                                  together[key].sort_values(key).reset_index(drop=True))


def test_main_writes_outputs(tmp_path, fixture_vsr, repo_root, monkeypatch):
    write_workspace(tmp_path, fixture_vsr)
    cfg = suite_dict(SMALL, {"t3": {"holdout": []}, "t1": {"ovr": False}, "layers": {"tasks": []},
                             "permutation": {"n": 0}})
    conditions = {"text": ["sbert", "clip_text"], "image": ["clip_image"],
                  "pairs": {"clip": {"text": "clip_text", "text_view": "text_embeds",
                                     "image": "clip_image", "image_view": "image_embeds"}}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"probe_suite": cfg, "conditions": conditions}))
    monkeypatch.chdir(tmp_path)
    suite = tmp_path / "results" / "probes" / "suite"
    stale = suite / "sbert/oof/T3_holdout_random.parquet"  # from a fuller run
    stale.parent.mkdir(parents=True)
    stale.write_text("stale")
    (suite / "sbert" / "null.parquet").write_text("stale")
    other = suite / "clip_text" / "scores.csv"  # another unit's output: untouched
    other.parent.mkdir(parents=True)
    other.write_text("kept")
    assert main(["--params", "p.yaml", "--unit", "sbert"]) == 0
    out = suite / "sbert"
    assert not stale.exists() and not (out / "null.parquet").exists()  # the folder is replaced whole
    assert other.read_text() == "kept"
    report = json.loads((out / "report.json").read_text())
    assert "timings_s" not in report and report["unit"] == "sbert"  # no wall time in outputs
    assert (out / "scores.csv").exists()
    assert {p.name for p in (out / "oof").iterdir()} == {
        "T1.parquet", "T1_control.parquet", "T1_control_ovr.parquet", "T2_axis.parquet",
        "T2_polarity.parquet", "M_polarity.parquet", "C_polarity.parquet", "C_scene.parquet",
        "T3.parquet"}
    assert {p.name for p in (out / "controls").iterdir()} == {
        "dimension.parquet", "dimension_scores.csv", "mdl.csv"}
    assert main(["--params", "p.yaml", "--unit", "bow"]) == 0
    assert set(pd.read_csv(suite / "bow" / "scores.csv")["condition"]) == {"bow"}
    assert {p.name for p in (suite / "bow" / "controls").iterdir()} == {"mdl.csv"}  # no width
    assert main(["--params", "p.yaml", "--unit", "clip"]) == 0
    assert set(pd.read_csv(suite / "clip" / "scores.csv")["condition"]) == {
        "clip_image", "clip_concat", "clip_interaction", "clip_zeroshot"}
    with pytest.raises(UserError, match=r"--unit 'clip_image': not a text condition, 'bow' or a "
                                        r"pair of conditions.pairs \['clip'\] in p.yaml"):
        main(["--params", "p.yaml", "--unit", "clip_image"])
    derived = pd.read_parquet(out / "oof" / "T1_control_ovr.parquet")
    multi = pd.read_parquet(out / "oof" / "T1_control.parquet")
    assert len(derived) == len(multi) * multi["y_true"].nunique()
    assert set(derived["y_true"]) == {0, 1}
    scores = pd.read_csv(out / "scores.csv")
    assert set(scores["condition"]) == {"sbert"}


def test_sbert_text_with_clip_image_pair(suite_run):
    """A pair of SBERT text (32 wide here) and CLIP image features (16): concatenation and
    interaction only (no image-only probe, which pair `clip` owns; no zero-shot between
    unaligned spaces), on the same T3 rows and folds as the CLIP pair; the interaction's SBERT
    side goes through the fixed random projection to the image width."""
    from analysis.probes.probe_suite import pair_sets
    root, _, oof, *_ = suite_run
    cfg = suite_settings(SMALL, {"layers": {"tasks": []}, "permutation": {"n": 0},
                                 "t1": {"control": False}})
    pair = Pair("sbert_clip", text="sbert", text_view="mean", image="clip_image",
                image_view="image_embeds", image_only=False)
    got, scores, _, _ = run_suite(cfg, suite_data(root), pairs=[pair])
    assert set(scores["condition"]) == {"sbert_clip_concat", "sbert_clip_interaction"}
    assert {"T3", "T3_holdout_random"} <= set(got)
    key = ["target", "repeat", "row_id", "fold"]
    mine = got["T3"].query("condition == 'sbert_clip_concat'")[key].sort_values(key)
    clip = oof["T3"].query("condition == 'clip_concat' and layer == -1")[key].sort_values(key)
    pd.testing.assert_frame_equal(mine.reset_index(drop=True), clip.reset_index(drop=True))
    rng = np.random.default_rng(1)
    sets, zs = pair_sets(pair, rng.normal(size=(5, 16)), rng.normal(size=(5, 32)), seed=0)
    assert zs is None and [(n, X.shape[1]) for n, X in sets] == [
        ("sbert_clip_concat", 48), ("sbert_clip_interaction", 64)]
    sets, zs = pair_sets(CLIP, rng.normal(size=(5, 16)), rng.normal(size=(5, 16)), seed=0)
    assert zs is not None and [n for n, _ in sets] == ["clip_image", "clip_concat", "clip_interaction"]


def test_controlled_set_probes_read_the_scene_code(suite_run):
    """On the controlled spatial set, sbert's synthetic scene code gives C_scene well above chance on every
    axis; clip_text (noise) and the bag of words (a caption and its swap share their words)
    stay near chance; the report lists every split."""
    _, _, oof, scores, _, report = suite_run
    acc = scores[(scores["metric"] == "accuracy")].set_index(["task", "condition", "target"])["estimate"]
    axes = set(oof["C_scene"]["target"])
    assert axes == {"vertical", "horizontal", "depth"}
    for axis in axes:
        assert acc[("C_scene", "sbert", axis)] > 0.75, acc.loc["C_scene"]  # 32 training rows, 32 dims
        assert abs(acc[("C_scene", "clip_text", axis)] - 0.5) < 0.2
        assert abs(acc[("C_scene", "bow", axis)] - 0.5) < 0.1
    assert set(oof["C_scene"]["row_id"].str.split("/").str[1]) == {"spatial"}
    assert report["controlled"]["C_scene:vertical"]["assignments"] == len(
        report["controlled"]["C_scene:vertical"]["form_pairs"])


def test_dimension_controls_and_code_lengths(suite_run):
    """`probe_suite.dimension`: M_polarity and C_polarity re-probed on each text condition (not
    bag of words) at every smaller size, PCA once and each random-projection seed, on the rows
    and folds of the full-width probe; a size at a condition's width is skipped and reported.
    `probe_suite.mdl`: a code length per task, condition (bag of words too) and axis, over
    every row of the task; the uniform code is one bit a row. (Signal against noise is
    checked in tests/probes/test_controls.py: these fixtures are too small for it.)"""
    _, cfg, oof, _, _, report = suite_run
    ctl = report["controls"]
    assert report["controls_skipped"] == []  # sbert 32 wide, clip_text's pooler output 24
    got = set(ctl["dimension_scores"][["condition", "method", "size", "seed"]]
              .itertuples(index=False, name=None))
    assert got == {(c, m, s, k) for c in ("sbert", "clip_text") for s in (8, 16)
                   for m, k in [("pca", 0), ("random", 0), ("random", 1)]}
    assert set(ctl["dimension_scores"]["task"]) == {"M_polarity", "C_polarity"}
    key = ["target", "repeat", "fold", "row_id"]
    for (task, cond, method, size, seed), part in ctl["dimension"].groupby(
            ["task", "condition", "method", "size", "seed"]):
        full = oof[task].query("condition == @cond and layer == -1")
        pd.testing.assert_frame_equal(part[key].sort_values(key).reset_index(drop=True),
                                      full[key].sort_values(key).reset_index(drop=True))
    assert (ctl["mdl"]["uniform_bits"] == ctl["mdl"]["n"]).all()
    # the held-out-phrase code: one row per task, condition and axis beside the random order
    orders = ctl["mdl"].groupby(["task", "condition", "target"])["order"].apply(
        lambda o: tuple(sorted(o)))
    assert set(orders) == {("form", "random")}, orders
    mdl = ctl["mdl"].query("order == 'random'").set_index(["task", "condition", "target"])
    assert set(mdl.index.get_level_values("condition")) == {"sbert", "clip_text", "bow"}
    assert set(mdl.index.get_level_values("task")) == {"M_polarity", "C_polarity"}
    n_rows = oof["M_polarity"].query("condition == 'sbert' and layer == -1").groupby("target")["row_id"].nunique()
    for axis, n in n_rows.items():  # every row of the task is coded, not only test rows
        assert mdl.loc[("M_polarity", "sbert", axis), "n"] >= n


def test_a_size_at_the_width_is_skipped_and_reported(suite_run):
    _, cfg, *_ = suite_run
    X = np.random.default_rng(0).normal(size=(40, 8))
    c = Collected()
    cfg = cfg.model_copy(update={"dimension": cfg.dimension.model_copy(update={"sizes": (8,)}),
                                 "mdl": None})
    from analysis.probes.tasks import Problem
    from analysis.probes.folds import nested_cv
    y = np.arange(40) % 2
    g = np.array([f"g{i % 10}" for i in range(40)])
    prob = Problem("M_polarity", "vertical", np.arange(40), y, g, 2,
                   nested_cv(y, g, n_splits=2, n_repeats=1, inner_splits=2, seed=0))
    probe_controls(c, "enc", X, [prob], np.array([f"r{i}" for i in range(40)]), cfg,
                   engine_options(cfg.engine), "here")
    assert c.skipped == ["enc: width 8 <= 8: no reduction to 8"] and not c.dimension
    wide = np.random.default_rng(1).normal(size=(40, 30))
    cfg24 = cfg.model_copy(update={"dimension": cfg.dimension.model_copy(update={"sizes": (24,)})})
    probe_controls(c, "enc", wide, [prob], np.array([f"r{i}" for i in range(40)]), cfg24,
                   engine_options(cfg.engine), "here")
    assert c.skipped[1] == "enc: M_polarity vertical trains on 20 rows: no PCA to 24"
    assert {d["method"].iloc[0] for d in c.dimension} == {"random"}  # the projections still run


def test_an_extra_random_seed_runs_only_the_seed_tasks(suite_run):
    """`probe_suite.seed_tasks`: a random twin's extra seed (``<name>_random_s<N>``) exists for
    the spread across seeds of the pre-registered contrast: its unit runs only those tasks
    (no T1, T2, caption-only T3, controls, nulls or layers), on the same rows and folds as
    the trained encoder's."""
    import shutil

    root, cfg, oof, *_ = suite_run
    emb = root / "results" / "embeddings"
    for sub in ("random/train", "random/test", "zeroshot/train", "zeroshot/test", "templates/spatial"):
        shutil.copytree(emb / "sbert" / sub, emb / "sbert_random_s1" / sub)
    cfg = cfg.model_copy(update={"seed_tasks": ("M_polarity", "C_polarity")})
    s_oof, s_scores, s_null, rep = run_suite(cfg, suite_data(root), text=["sbert_random_s1"])
    assert set(s_oof) == {"M_polarity", "C_polarity"}
    assert rep["seed_tasks"] == ["M_polarity", "C_polarity"] and not rep["controls"]
    assert s_null.empty and rep["layerwise"] == []
    key = ["target", "repeat", "fold", "row_id", "y_pred"]
    for task in s_oof:  # the same vectors as sbert's: the same predictions, row for row
        want = oof[task].query("condition == 'sbert' and layer == -1")[key]
        pd.testing.assert_frame_equal(s_oof[task][key].sort_values(key).reset_index(drop=True),
                                      want.sort_values(key).reset_index(drop=True))
    # the trained encoder's unit is unaffected by the setting
    full_oof, *_ = run_suite(cfg.model_copy(update={"dimension": None, "mdl": None, "layers":
                                                    cfg.layers.model_copy(update={"tasks": ()})}),
                             suite_data(root), text=["sbert"])
    assert {"T1", "T2_polarity", "M_polarity", "C_polarity", "C_scene"} <= set(full_oof)


def test_layerwise_probes_run_the_matched_task(suite_run):
    """`layers.tasks` includes M_polarity: every hidden layer of a layered condition gets the
    matched task on the same held-out pairs as the primary layer; the layer that writes the
    pole along a shared direction (sbert's layer 1) separates the poles of a held-out pair,
    the noise layer (0) does not."""
    _, cfg, oof, scores, _, report = suite_run
    assert "M_polarity" in cfg.layers.tasks and "sbert" in report["layerwise"]
    m = oof["M_polarity"].query("condition == 'sbert'")
    assert set(m["layer"]) == {-1, 0, 1}
    tested = {layer: g.groupby(["target", "repeat"])["row_id"].apply(frozenset).to_dict()
              for layer, g in m.groupby("layer")}
    assert tested[0] == tested[1] == tested[-1]  # the same held-out pairs on every layer
    acc = m.assign(ok=m["y_true"] == m["y_pred"]).groupby("layer")["ok"].mean()
    assert acc[1] > 0.8 and acc[0] < 0.75, acc

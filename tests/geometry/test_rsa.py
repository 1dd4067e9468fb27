"""The `rsa` stage on synthetic embeddings with planted geometry, written with save_embeddings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from scipy.spatial.distance import pdist
from scipy.stats import ortho_group

from analysis.common import store
from analysis.common.io import load_yaml, write_json, write_npy
from analysis.common.params import validate
from analysis.data import templates
from analysis.data.relations import load_meta_categories
from analysis.geometry import cka as cka_mod
from analysis.geometry import rdm as geo
from analysis.geometry import rsa
from analysis.geometry.comparisons import COLUMNS, separation
from tests.conftest import write_fixture_split

ROOT = Path(__file__).resolve().parents[2]
META, _ = load_meta_categories()
D = 24


def _cfg() -> rsa.RsaSettings:
    cfg = load_yaml((ROOT / "params.smoke.yaml").read_text())["rsa"]
    cfg.update(n_boot=60, max_pairs=20000, tau_bins=64, figure_items=20, splits=["train"],
               layer_cka_max_items=60)
    return validate(rsa.RsaSettings, cfg, "rsa")


def _vectors(table: pd.DataFrame, spatial: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """sbert: order-blind bag of (random relation vector + both nouns);
    clip_text: axis/polarity-structured relations, vertical poles far apart, horizontal ones
    close, subject and object in different subspaces (order-aware);
    clip_concat: clip_text rotated and scaled (same geometry)."""
    rng = np.random.default_rng(seed)
    rels = sorted(set(table["relation"]) | set(spatial))
    nouns = sorted(set(table["subject"]) | set(table["object"]))
    rand_rel = {r: rng.normal(size=D) for r in rels}
    axis_vec = {a: 3 * rng.normal(size=D) for a in ("vertical", "horizontal", "depth")}
    pol_vec = rng.normal(size=D)
    strength = {"vertical": 1.5, "horizontal": 0.15, "depth": 0.8}
    sign = {"up": 1, "down": -1, "left": 1, "right": -1, "front": 1, "back": -1}
    struct = {}
    for r in rels:
        if r in spatial:
            ax, pol = spatial[r]
            struct[r] = axis_vec[ax] + strength[ax] * sign[pol] * pol_vec + 0.1 * rng.normal(size=D)
        else:
            struct[r] = rng.normal(size=D)
    noun = {n: rng.normal(size=D) * 0.4 for n in nouns}
    noun_obj = {n: rng.normal(size=D) * 0.4 for n in nouns}
    rows = list(zip(table["relation"], table["subject"], table["object"]))
    sbert = np.stack([rand_rel[r] + noun[s] + noun[o] for r, s, o in rows])
    clip = np.stack([struct[r] + noun[s] + noun_obj[o] for r, s, o in rows])
    Q = ortho_group.rvs(D, random_state=1)
    return {"sbert": sbert, "clip_text": clip, "clip_concat": 2.5 * clip @ Q}


def _meta(rows: list[str], cond: str) -> dict:
    return {"condition": cond, "model_id": "synthetic", "revision": "0", "row_ids": rows,
            "excluded": []}


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rsa")
    cwd = Path.cwd()
    import os
    os.chdir(tmp)
    try:
        cfg = _cfg()
        vsr_table = write_fixture_split("random", "train")
        rels = sorted(set(vsr_table["relation"].value_counts().loc[lambda s: s >= 12].index))
        tmpl = templates.generate(templates.noun_pairs(["person", "cat", "dog", "bed"]), rels, META)
        tpath = store.table_path("templates", "all")
        tpath.parent.mkdir(parents=True)
        tmpl.to_parquet(tpath)
        for variant, split, table in (("random", "train", vsr_table), ("templates", "all", tmpl)):
            vecs = _vectors(table, cfg.spatial)
            conds = ["sbert", "clip_text"] + (["clip_concat"] if variant == "random" else [])
            for cond in conds:
                X, ids = vecs[cond], table["row_id"].tolist()
                if cond == "clip_concat":  # an image condition that lost a few rows (no image)
                    X, ids = X[5:], ids[5:]
                out = store.save_embeddings(cond, variant, split, {store.PRIMARY_VIEW[cond]: X},
                                            _meta(ids, cond))
                if variant == "templates":  # (L, N, D) layers view, laid out as the embed stage does
                    rng = np.random.default_rng(3)
                    lay = np.stack([X + s * rng.normal(size=X.shape) for s in (3.0, 1.0, 0.0)])
                    write_npy(out / "layers.npy", lay.astype(np.float32))
                    write_json(out / "meta.json", {**_meta(ids, cond),
                                                   "views": [store.PRIMARY_VIEW[cond], "layers"]})
        conds = ["sbert", "clip_text", "clip_image", "clip_concat"]
        result = rsa.run(cfg, lambda key: rsa.load_stimuli(key, conds), META, progress=False)
        rsa.write(result)
        summary = result.summary
        out = {name: pd.read_csv(rsa.RSA_DIR / f"{name}.csv") for name in
               ("item_comparisons", "relation_models", "relation_best", "asymmetry",
                "order_sensitivity", "cka_layers")}
        out["summary"] = summary
        out["summary_file"] = json.loads((rsa.RSA_DIR / "summary.json").read_text())
        out["rdm_files"] = sorted(p.name for p in (rsa.RSA_DIR / "rdms").iterdir())
        out["relations_rdm"] = pd.read_csv(rsa.RSA_DIR / "rdms" / "relations.csv")
        out["vsr_n"] = len(vsr_table)
        out["root"] = tmp
        yield out
    finally:
        os.chdir(cwd)


def _row(df, **kw):
    sel = df
    for k, v in kw.items():
        sel = sel[sel[k] == v]
    assert len(sel) == 1, (kw, len(sel))
    return sel.iloc[0]


def test_tables_are_tidy_with_valid_cis(stage):
    for name in ("item_comparisons", "relation_models", "asymmetry", "order_sensitivity"):
        df = stage[name]
        assert list(df.columns[:len(COLUMNS)]) == COLUMNS, name
        assert len(df) > 0, name
        ok = df.dropna(subset=["ci_low"])
        assert (ok["ci_low"] <= ok["ci_high"] + 1e-12).all(), name
        # every interval contains its own estimate (captions and the template set)
        assert ((ok["ci_low"] <= ok["estimate"] + 1e-9) & (ok["estimate"] <= ok["ci_high"] + 1e-9)).all(), name
        # a jackknife whose replicates all agree (planted geometry the nouns do not move) has
        # SE 0 and p = 0; subsampling p-values are floored at 2/(n_boot+1)
        assert ((ok["p_value"] >= 0) & (ok["p_value"] <= 1)).all(), name
        sub = ok[ok["resampling"].str.startswith("subsample")]
        assert (sub["p_value"] >= 2 / (sub["n_boot"] + 1) - 1e-12).all(), name


def test_missing_conditions_and_rows_are_reported(stage):
    s = stage["summary_file"]["stimuli"]
    assert s["templates/all"]["missing"] == ["clip_image", "clip_concat"]
    assert s["random/train"]["missing"] == ["clip_image"]
    assert s["random/train"]["dropped_rows"]["clip_concat"] == 5
    assert s["random/train"]["n_stimuli"] == stage["vsr_n"] - 5
    assert "not defined" in stage["summary_file"]["noise_ceiling"]


def test_same_geometry_gives_rho_one_and_cka_one(stage):
    df = stage["item_comparisons"]
    rho = _row(df, stimuli="random/train", metric="cosine", comparison="clip_text vs clip_concat",
               method="spearman")
    assert rho["estimate"] == pytest.approx(1.0, abs=1e-5)
    assert rho["ci_low"] == pytest.approx(1.0, abs=1e-4)
    cka = _row(df, stimuli="random/train", comparison="clip_text vs clip_concat",
               method="linear_cka_debiased")
    assert cka["estimate"] == pytest.approx(1.0, abs=1e-6)
    other = _row(df, stimuli="random/train", metric="cosine", comparison="sbert vs clip_text",
                 method="spearman")
    assert other["estimate"] < 0.9
    assert other["n_stimuli"] == stage["vsr_n"] - 5


def test_item_rdm_estimates_match_direct_computation(stage):
    """Full-pair Spearman and CKA equal scipy / the feature-space formula on the saved inputs."""
    df = stage["item_comparisons"]
    root = stage["root"] / store.EMBED_DIR
    X = {c: store.load_embeddings(c, "templates", "all", root=root).X for c in ("sbert", "clip_text")}
    row = _row(df, stimuli="templates/all", metric="correlation", comparison="sbert vs clip_text",
               method="spearman")
    direct = scipy.stats.spearmanr(pdist(X["sbert"], "correlation"), pdist(X["clip_text"], "correlation"))
    assert row["estimate"] == pytest.approx(direct.statistic, abs=1e-5)
    assert row["n_pairs"] == row["n_stimuli"] * (row["n_stimuli"] - 1) // 2 == 144 * 143 // 2
    assert row["ci_low"] < row["estimate"] < row["ci_high"]
    cka = _row(df, stimuli="templates/all", comparison="sbert vs clip_text",
               method="linear_cka_debiased")
    assert cka["estimate"] == pytest.approx(cka_mod.linear_cka(X["sbert"], X["clip_text"]), abs=1e-9)
    biased = _row(df, stimuli="templates/all", comparison="sbert vs clip_text",
                  method="linear_cka_biased")
    assert biased["estimate"] == pytest.approx(
        cka_mod.linear_cka(X["sbert"], X["clip_text"], debiased=False), abs=1e-9)
    assert np.isnan(biased["ci_low"]) and np.isnan(biased["p_value"])
    # nouns drive the order-blind bag-of-words geometry
    noun = _row(df, stimuli="templates/all", metric="cosine", comparison="sbert vs model:noun_overlap",
                method="spearman")
    assert noun["ci_low"] > 0


def test_planted_relation_geometry_is_recovered(stage):
    fits = stage["relation_models"]
    clip = _row(fits, stimuli="templates/all", metric="cosine", comparison="clip_text vs model:axis",
                method="tau_a")
    assert clip["ci_low"] > 0.1
    diff = _row(fits, stimuli="templates/all", metric="cosine",
                comparison="(sbert vs model:axis) - (clip_text vs model:axis)", method="tau_a_difference")
    assert diff["ci_high"] < 0
    best = stage["relation_best"]
    b = _row(best, stimuli="templates/all", metric="cosine", condition="clip_text", method="tau_a_difference")
    assert b["best"] in ("axis", "polarity")
    assert np.isnan(b["p_best"])  # the template set's jackknife has no pseudo-replicates
    v = _row(best, stimuli="random/train", metric="cosine", condition="clip_text",
             method="tau_a_difference")
    assert 0 <= v["p_best"] <= 1


def test_vertical_separates_more_than_horizontal_in_planted_condition(stage):
    a = stage["asymmetry"]
    r = _row(a, stimuli="templates/all", metric="cosine", comparison="clip_text",
             method="vertical_minus_horizontal")
    assert r["ci_low"] > 0
    v = _row(a, stimuli="templates/all", metric="cosine", comparison="clip_text", method="vertical_separation")
    h = _row(a, stimuli="templates/all", metric="cosine", comparison="clip_text", method="horizontal_separation")
    assert v["estimate"] - h["estimate"] == pytest.approx(r["estimate"])


def test_order_sensitivity(stage):
    o = stage["order_sensitivity"]
    per_rel = o[(o["method"] == "order_distance") & (o["metric"] == "cosine")]
    blind = per_rel[per_rel["comparison"] == "sbert"]
    aware = per_rel[per_rel["comparison"] == "clip_text"]
    assert len(blind) == len(aware) > 5
    assert np.allclose(blind["estimate"], 0, atol=1e-6)  # bag of nouns: order invisible
    assert (aware["ci_low"] > 0).all()
    ratio = _row(o, metric="cosine", comparison="clip_text", method="order_to_synonym_ratio")
    assert ratio["h0"] == "=1"
    d = _row(o, metric="cosine", comparison="sbert - clip_text", method="order_distance_mean_difference")
    assert d["ci_high"] < 0


def test_layer_cka_and_rdm_outputs(stage):
    lay = stage["cka_layers"]
    self_map = lay[(lay.condition_a == "sbert") & (lay.condition_b == "sbert")]
    assert len(self_map) == 9
    assert np.allclose(self_map[self_map.layer_a == self_map.layer_b]["cka"], 1.0, atol=1e-5)
    cross = lay[(lay.condition_a == "clip_text") & (lay.condition_b == "sbert")]
    assert len(cross) == 9
    files = stage["rdm_files"]
    assert "templates_all__sbert__cosine.npy" in files and "random_train__items.csv" in files
    rel = stage["relations_rdm"]
    sub = rel[(rel.stimuli == "templates/all") & (rel.condition == "clip_text") & (rel.metric == "cosine")]
    n = sub["relation_a"].nunique()
    assert len(sub) == n * n
    assert np.allclose(sub[sub.relation_a == sub.relation_b]["distance"], 0, atol=1e-6)


def test_separation_by_hand():
    rels = ["above", "below", "left of", "right of"]
    spatial = {"above": ["vertical", "up"], "below": ["vertical", "down"],
               "left of": ["horizontal", "left"], "right of": ["horizontal", "right"]}
    Dm = geo.square(np.array([4.0, 1, 1, 1, 1, 2]))  # pairs (0,1)=4 ... (2,3)=2
    assert separation(Dm, rels, spatial, "vertical") == pytest.approx(4 / (10 / 6))
    assert separation(Dm, rels, spatial, "horizontal") == pytest.approx(2 / (10 / 6))
    assert np.isnan(separation(Dm, rels, spatial, "depth"))


# ----------------------------------------------------------------------------- issue 5 / 8 fixes


def _fixture_table() -> pd.DataFrame:
    """The VSR fixture's real train rows (240 captions, repeated captions and noun pairs)."""
    from analysis.data.vsr_format import normalize, read_split
    src = ROOT / "tests" / "fixtures" / "vsr" / "random" / "train.jsonl"
    with src.open("rb") as fh:
        return normalize(read_split(fh, META, file=str(src)), "random", "train")


@pytest.fixture(scope="module")
def unrelated():
    """VSR-like real case: an SBERT-like 768-d encoder with noun and relation structure, a
    weakly related 512-d one (a random nonlinear map of it plus noise, like a random-weight
    twin) and one independent of both; the stage on them, captions only."""
    from analysis.data.groups import noun_pair_caption_groups
    table = _fixture_table()
    rng = np.random.default_rng(11)
    nouns = sorted(set(table["subject"]) | set(table["object"]))
    nv = {n: rng.normal(size=768) for n in nouns}
    rv = {r: rng.normal(size=768) for r in sorted(set(table["relation"]))}
    A = np.stack([nv[s] + 0.7 * nv[o] + 0.8 * rv[r] for s, o, r in
                  zip(table["subject"], table["object"], table["relation"])])
    A += 1.2 * rng.normal(size=A.shape) + 3.0
    B = np.tanh(A @ rng.normal(size=(768, 512)) / 40) + 0.5 * rng.normal(size=(len(A), 512))
    C = rng.normal(size=(len(A), 512))
    X = {"sbert": A.astype(np.float32), "clip_text": B.astype(np.float32),
         "clip_image": C.astype(np.float32)}
    st = rsa.Stimuli(key="random/train", table=table, X=X, groups=noun_pair_caption_groups(table))
    cfg = _cfg().model_copy(update={"templates": False})

    def load(key):
        return (st, {"n_stimuli": len(table)}) if key == "random/train" else (None, {})

    # two frequent relations moved to Unallocated (none of the fixture's are), to exercise it
    meta = {**META, "near": "Unallocated", "beside": "Unallocated"}
    return rsa.run(cfg, load, meta, progress=False), X, table


def test_cka_of_an_independent_condition_is_about_zero(unrelated):
    """Issue 5: independent features got plug-in CKA ~ d/(n+d) (here ~0.7); debiased ~ 0."""
    out, X, _ = unrelated
    df = out.tables["item_comparisons"]
    for other in ("sbert", "clip_text"):
        a, b = sorted([other, "clip_image"], key=list(X).index)
        r = _row(df, comparison=f"{a} vs {b}", method="linear_cka_debiased")
        assert abs(r["estimate"]) < 0.05
        assert r["ci_low"] < 0 < r["ci_high"]
        assert _row(df, comparison=f"{a} vs {b}", method="linear_cka_biased")["estimate"] > 0.3


def test_every_interval_contains_its_estimate(unrelated):
    """Issue 5: the bootstrap with duplicated items put the CKA interval above its estimate
    (real SBERT vs random SBERT: 0.419, CI [0.422, 0.477]); replicates without duplicates don't."""
    out, _, _ = unrelated
    for name in ("item_comparisons", "relation_models", "relation_best", "asymmetry"):
        df = out.tables[name].dropna(subset=["ci_low", "ci_high"])
        assert len(df), name
        bad = df[(df["ci_low"] > df["estimate"] + 1e-9) | (df["ci_high"] < df["estimate"] - 1e-9)]
        assert bad.empty, (name, bad[["comparison", "method", "estimate", "ci_low", "ci_high"]])
    cka_row = _row(out.tables["item_comparisons"], comparison="sbert vs clip_text",
                   method="linear_cka_debiased")
    assert cka_row["ci_low"] < cka_row["estimate"] < cka_row["ci_high"]


def test_caption_replicates_subsample_noun_pair_groups_without_duplicates(unrelated):
    out, _, table = unrelated
    info = out.summary["stimuli"]["random/train"]["resampling"]
    from analysis.data.groups import noun_pair_caption_groups
    G = len(set(noun_pair_caption_groups(table)))
    assert info["scheme"] == "subsample" and info["n_units"] == G
    assert info["units_per_replicate"] == round(0.5 * G) and info["scale"] == pytest.approx(1.0, abs=0.02)
    rows = out.tables["relation_models"]
    assert (rows["resampling"].dropna() == f"subsample {round(0.5 * G)} of {G} noun-pair groups").all()
    # the replicates themselves: whole groups, no duplicates, every relation with a centroid kept
    st = rsa.Stimuli(key="random/train", table=table, X={}, groups=noun_pair_caption_groups(table))
    res = rsa.resamples(st, _cfg(), seed=1)
    assert res.weights.max() == 1
    g = st.groups
    for w in res.weights[:20]:
        assert (pd.Series(w).groupby(g).nunique() == 1).all()
    from analysis.geometry.comparisons import relation_codes
    _, codes = relation_codes(table, _cfg().relation_min_count)
    for r in range(codes.max() + 1):
        assert res.weights[:, codes == r].any(axis=1).all()


def test_template_replicates_drop_one_noun_at_a_time(stage):
    info = stage["summary_file"]["stimuli"]["templates/all"]
    assert info["resampling"]["scheme"] == "jackknife"
    assert info["resampling"]["n_units"] == len(info["nouns"]) == 4
    o = stage["order_sensitivity"]
    assert (o["resampling"].dropna() == "jackknife over 4 nouns").all()
    assert (o["n_boot"].dropna() == 4).all()


def test_unallocated_is_missing_not_a_meta_category():
    """Issue 8: two relations the authors left Unallocated are not 'the same category'."""
    from analysis.geometry.comparisons import relation_models
    rels = ["above", "below", "next to", "beyond", "near"]
    meta = {"above": "Projective", "below": "Projective", "next to": "Unallocated",
            "beyond": "Unallocated", "near": "Proximity"}
    models, _ = relation_models(rels, {}, meta, None)
    m = geo.square(np.nan_to_num(models["meta_category"], nan=-1.0))
    assert m[0, 1] == 0 and m[0, 4] == 1           # same / different real categories
    assert m[2, 3] == -1 and m[0, 2] == -1 and m[3, 4] == -1   # any pair with Unallocated: missing
    assert np.isfinite(models["meta_category"]).sum() == 3


def test_best_hypothesis_is_compared_on_common_pairs(unrelated):
    """Issue 8: the best-hypothesis margin compares the models on the relation pairs both
    define, with the same data RDM: recomputed here by hand from the written RDMs."""
    out, _, _ = unrelated
    best = out.tables["relation_best"]
    rel = out.figures["relations.csv"]
    for cond in ("sbert", "clip_text"):
        r = _row(best, comparison=best[best["condition"] == cond]["comparison"].iloc[0],
                 metric="cosine", method="tau_a_difference")
        assert r["candidates"] == "axis, meta_category" and "polarity" in r["excluded"]
        d = rel[(rel.kind == "condition") & (rel.condition == cond) & (rel.metric == "cosine")]
        d = d.set_index(["relation_a", "relation_b"])["distance"]
        mods = {m: rel[(rel.kind == "model") & (rel.condition == m)].drop_duplicates(
            ["relation_a", "relation_b"]) for m in ("axis", "meta_category")}
        keys = list(zip(mods["axis"].relation_a, mods["axis"].relation_b))
        vec = np.array([d[k] for k in keys])
        A = mods["axis"]["distance"].to_numpy()
        M = mods["meta_category"]["distance"].to_numpy()
        common = np.isfinite(A) & np.isfinite(M)
        # pairs with the two Unallocated relations drop out: 18 of 20 relations remain
        assert r["n_pairs"] == common.sum() == 18 * 17 // 2 < len(keys) == 20 * 19 // 2
        fit = {"axis": geo.tau_a(vec[common], A[common]), "meta_category": geo.tau_a(vec[common], M[common])}
        top = max(fit, key=fit.get)
        assert r["best"] == top
        assert r["estimate"] == pytest.approx(fit[top] - min(fit.values()), abs=1e-12)
        assert r["best_estimate"] == pytest.approx(fit[top], abs=1e-12)
        assert r["ci_low"] <= r["estimate"] <= r["ci_high"] and 0 < r["p_value"] <= 1


def _holm(p):
    p = np.asarray(p, float)
    order = np.argsort(p)
    out, run = np.empty_like(p), 0.0
    for k, idx in enumerate(order):
        run = max(run, min(1.0, (len(p) - k) * p[idx]))
        out[idx] = run
    return out


def _bh(p):
    p = np.asarray(p, float)
    m = len(p)
    order = np.argsort(p)[::-1]
    out, run = np.empty_like(p), 1.0
    for k, idx in enumerate(order):
        run = min(run, p[idx] * m / (m - k))
        out[idx] = run
    return out


def test_p_values_are_adjusted_within_table_stimuli_metric_families(unrelated, stage):
    for tables in (unrelated[0].tables, {n: stage[n] for n in ("item_comparisons", "relation_models",
                                                               "relation_best", "asymmetry",
                                                               "order_sensitivity")}):
        for name, df in tables.items():
            if name == "cka_layers":
                continue
            assert {"p_holm", "p_bh", "family_size"} <= set(df.columns), name
            for _, fam in df.groupby(["stimuli", "metric"]):
                t = fam.dropna(subset=["p_value"])
                if not len(t):
                    continue
                assert (t["family_size"] == len(t)).all()
                np.testing.assert_allclose(t["p_holm"], _holm(t["p_value"]), atol=1e-12)
                np.testing.assert_allclose(t["p_bh"], _bh(t["p_value"]), atol=1e-12)
                assert (t["p_holm"] >= t["p_bh"] - 1e-12).all() and (t["p_bh"] >= t["p_value"] - 1e-12).all()


def test_subsample_fraction_must_leave_a_proper_subset():
    from analysis.common.params import SettingsError
    cfg = load_yaml((ROOT / "params.smoke.yaml").read_text())["rsa"]
    with pytest.raises(SettingsError, match="subsample_fraction"):
        validate(rsa.RsaSettings, {**cfg, "subsample_fraction": 1.0}, "rsa")


def test_converse_analysis_known_geometries():
    """Swap vs converse on the controlled spatial set: an order-blind bag of words puts a
    caption on its swap (distance 0, so swap - converse < 0); an encoder of the scene (the same
    vector for a caption and its converse, the opposite for its swap) gives swap - converse > 0;
    the estimate is the mean of the per-item differences, computed here directly."""
    from analysis.geometry.comparisons import Stimuli, converse_analysis
    cfg = templates.SpatialSettings(
        poles={"vertical": ("up", "down"), "horizontal": ("left", "right")},
        pairs={"vertical": (("above", "below"), ("over", "under")),
               "horizontal": (("left of", "right of"), ("to the left of", "to the right of"))})
    table = templates.generate_spatial(templates.noun_pairs(["person", "cat", "dog", "bed", "car"]),
                                       cfg, META)
    rng = np.random.default_rng(0)
    words = {w: rng.normal(size=D) for c in table["caption"] for w in c.lower().strip(".").split()}
    bag = np.stack([sum(words[w] for w in c.lower().strip(".").split()) for c in table["caption"]])
    axis_code = {a: rng.normal(size=D) for a in cfg.pairs}
    noun = {n: rng.normal(size=D) * 0.5 for n in set(table["subject"])}
    sign = np.where(table["scene"] == 1, 1.0, -1.0)
    scene = np.stack([s * axis_code[a] + noun[x] + noun[y] for s, a, x, y in
                      zip(sign, table["axis"], table["subject"], table["object"])])
    scene += 0.1 * rng.normal(size=scene.shape)
    names, nouns = rsa.row_nouns(table)
    st = Stimuli(key=store.SPATIAL_KEY, table=table, X={"bag": bag, "scene": scene}, layers={},
                 nouns=nouns)
    res = rsa.resamples(st, _cfg(), 0)
    df = pd.DataFrame(converse_analysis(st, res, "cosine", 0.95))
    for cond, X in (("bag", bag), ("scene", scene)):
        for axis in cfg.pairs:
            by = {(r, s, o): i for i, (r, s, o) in enumerate(zip(table["relation"], table["subject"],
                                                                  table["object"]))}
            part = table[table["axis"] == axis]
            U = X / np.linalg.norm(X, axis=1, keepdims=True)
            diffs = []
            for f in pd.unique(part["form_pair"]):
                a, b = f.split(" / ")
                for i, r in part[part["form_pair"] == f].iterrows():
                    partner = b if r["relation"] == a else a
                    sw = 1 - U[i] @ U[by[(r["relation"], r["object"], r["subject"])]]
                    cv = 1 - U[i] @ U[by[(partner, r["object"], r["subject"])]]
                    diffs.append(sw - cv)
            row = _row(df, comparison=cond, method="swap_minus_converse", relation=axis)
            assert row["estimate"] == pytest.approx(np.mean(diffs), abs=1e-6)
            assert row["ci_low"] <= row["estimate"] <= row["ci_high"]
            if cond == "bag":
                assert _row(df, comparison=cond, method="swap_distance", relation=axis)["estimate"] == pytest.approx(0, abs=1e-6)
                assert row["ci_high"] < 0
            else:
                assert row["ci_low"] > 0
    d = _row(df, comparison="bag - scene", method="swap_minus_converse_difference", relation="vertical")
    assert d["ci_high"] < 0

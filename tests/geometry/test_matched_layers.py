"""The matched before/after-grounding pairs' layer geometry (`rsa`, issue 14): CKA and item-RDM
Spearman between before[l] and after[l] (and the random twin) on synthetic layer stacks with known
answers, checked against plain numpy / scipy computations, and the stage on tiny zoo fixtures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import yaml
from scipy.spatial.distance import pdist
from scipy.stats import ortho_group

from analysis.common import store
from analysis.common.io import load_yaml
from analysis.common.params import condition_sets, validate
from analysis.data import templates
from analysis.data.relations import load_meta_categories
from analysis.embed import zoo
from analysis.geometry import rsa
from analysis.geometry.comparisons import MATCHED_COLUMNS, Stimuli, matched_layer_analysis
from analysis.geometry.resampling import group_subsamples, noun_jackknife
from tests.conftest import write_fixture_split

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "tests" / "fixtures" / "models"
META, _ = load_meta_categories()
N, D, L = 120, 16, 3


def _cfg(**kw) -> rsa.RsaSettings:
    cfg = load_yaml((ROOT / "params.smoke.yaml").read_text())["rsa"]
    cfg.update({"n_boot": 40, "layer_cka_max_items": 1000, "n_jobs": 1, **kw})
    return validate(rsa.RsaSettings, cfg, "rsa")


def plain_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """Debiased linear CKA straight from Song et al. (2012)'s unbiased HSIC on the n x n Gram
    matrices (no shared code with analysis.geometry.cka)."""
    def hsic(K, M):
        n = len(K)
        K, M = K.copy(), M.copy()
        np.fill_diagonal(K, 0)
        np.fill_diagonal(M, 0)
        one = np.ones(n)
        return (np.trace(K @ M) + K.sum() * M.sum() / ((n - 1) * (n - 2))
                - 2 / (n - 2) * one @ K @ M @ one) / (n * (n - 3))
    K = np.asarray(X, float) @ np.asarray(X, float).T
    M = np.asarray(Y, float) @ np.asarray(Y, float).T
    return float(hsic(K, M) / np.sqrt(hsic(K, K) * hsic(M, M)))


def plain_rsa(X: np.ndarray, Y: np.ndarray, metric: str) -> float:
    return float(scipy.stats.spearmanr(pdist(np.asarray(X, float), metric),
                                       pdist(np.asarray(Y, float), metric)).statistic)


def _stack(rng) -> np.ndarray:
    """(L, N, D) layers with a few clusters (a non-trivial item geometry) plus noise."""
    centres = rng.normal(size=(L, 6, D)) * 2
    labels = rng.integers(0, 6, N)
    return (centres[:, labels] + rng.normal(size=(L, N, D))).astype(np.float32)


@pytest.fixture(scope="module", params=["subsample", "jackknife"])
def synthetic(request):
    """before, an identical copy, a rotated and scaled copy, independent noise and another
    (the random 'twin'), with caption-like groups (subsampling) or template-like noun pairs (jackknife)."""
    rng = np.random.default_rng(0)
    before = _stack(rng)
    Q = np.stack([ortho_group.rvs(D, random_state=k) for k in range(L)])
    layers = {"before": before, "same": before.copy(),
              "rotated": (3.0 * np.einsum("lnd,lde->lne", before, Q)).astype(np.float32),
              "noise": rng.normal(size=before.shape).astype(np.float32),
              "twin": rng.normal(size=before.shape).astype(np.float32)}
    if request.param == "subsample":
        groups = np.arange(N) // 2
        res, extra = group_subsamples(groups, 40, seed=1), {"groups": groups}
    else:  # 6 nouns -> 15 unordered pairs x 8 items each
        pairs = np.array([(a, b) for a in range(6) for b in range(a + 1, 6)])
        nouns = np.repeat(pairs, N // len(pairs), axis=0)
        res, extra = noun_jackknife(nouns), {"nouns": nouns}
    st = Stimuli(key="synthetic", table=pd.DataFrame({"row": range(N)}), X={}, layers=layers, **extra)
    return st, res


def _rows(st, res, after, reference="twin", **kw) -> pd.DataFrame:
    return pd.DataFrame(matched_layer_analysis(st, res, "p", "before", after, reference,
                                               _cfg(**kw), seed=0))


def test_one_row_per_layer_comparison_metric(synthetic):
    st, res = synthetic
    df = _rows(st, res, "same")
    metrics = ["features", *_cfg().metrics]
    assert list(df.columns) == MATCHED_COLUMNS
    assert len(df) == L * 2 * len(metrics)
    assert not df.duplicated(["layer", "comparison", "metric"]).any()
    assert set(df["comparison"]) == {"after", "before_random"}
    assert set(df.loc[df["comparison"] == "before_random", "condition"]) == {"twin"}
    assert sorted(df["layer"].unique()) == list(range(L)) and (df["n_layers"] == L).all()
    assert (df["n_items"] == N).all() and (df["ci"] == 0.95).all()
    assert (df["resampling"] == res.label).all() and (df["n_boot"] == len(res)).all()


def test_identical_layers_give_one(synthetic):
    st, res = synthetic
    df = _rows(st, res, "same")
    after = df[df["comparison"] == "after"]
    np.testing.assert_allclose(after["estimate"], 1.0, atol=1e-5)
    np.testing.assert_allclose(after[["ci_low", "ci_high"]], 1.0, atol=1e-4)


def test_rotation_and_scaling_keep_cka_one(synthetic):
    st, res = synthetic
    df = _rows(st, res, "rotated")
    after = df[df["comparison"] == "after"]
    np.testing.assert_allclose(after.loc[after["metric"] == "features", "estimate"], 1.0, atol=1e-5)
    # cosine distances are rotation and scale invariant too (correlation distance is not)
    np.testing.assert_allclose(after.loc[after["metric"] == "cosine", "estimate"], 1.0, atol=1e-5)


def test_independent_noise_is_near_zero_and_below_identical(synthetic):
    st, res = synthetic
    noise = _rows(st, res, "noise", reference=None)
    same = _rows(st, res, "same", reference=None)
    assert set(noise["comparison"]) == {"after"}  # no twin: no reference rows
    for metric in noise["metric"].unique():
        n = noise[noise["metric"] == metric].set_index("layer")["estimate"]
        s = same[same["metric"] == metric].set_index("layer")["estimate"]
        assert (n.abs() < 0.15).all(), (metric, n)
        assert (n < s - 0.5).all()
    cka = noise[noise["metric"] == "features"]
    assert ((cka["ci_low"] < 0.15) & (cka["ci_high"] > -0.15)).all()


@pytest.mark.parametrize("after", ["rotated", "noise"])
def test_estimates_equal_independent_computation_and_lie_in_their_interval(synthetic, after):
    st, res = synthetic
    df = _rows(st, res, after)
    for r in df.itertuples():
        X = st.layers["before"][r.layer]
        Y = st.layers[r.condition][r.layer]
        want = plain_cka(X - X.mean(0), Y) if r.metric == "features" else plain_rsa(X, Y, r.metric)
        assert r.estimate == pytest.approx(want, abs=1e-5), r
        assert r.ci_low - 1e-9 <= r.estimate <= r.ci_high + 1e-9, r
        if r.metric != "features":
            assert r.n_pairs == N * (N - 1) // 2


def test_item_cap_uses_evenly_spaced_items(synthetic):
    st, res = synthetic
    df = _rows(st, res, "noise", layer_cka_max_items=50)
    pick = np.unique(np.linspace(0, N - 1, 50).astype(int))
    assert (df["n_items"] == len(pick)).all()
    r = df[(df["layer"] == 1) & (df["metric"] == "features") & (df["comparison"] == "after")].iloc[0]
    assert r["estimate"] == pytest.approx(plain_cka(st.layers["before"][1][pick],
                                                    st.layers["noise"][1][pick]), abs=1e-6)


def test_pairs_without_layers_or_with_other_depths_are_skipped_with_a_reason(synthetic):
    st, res = synthetic
    layers = {**st.layers, "deeper": np.concatenate([st.layers["same"], st.layers["same"][:1]]),
              "before_random": st.layers["twin"]}
    st2 = Stimuli(key=st.key, table=st.table, X={}, layers=layers, groups=st.groups, nouns=st.nouns)
    pairs = {"ok": ("before", "same"), "depth": ("before", "deeper"), "gone": ("before", "missing"),
             "no_twin": ("same", "rotated")}
    rows, done, skipped = rsa.matched_on_stimuli(st2, res, pairs, _cfg(), seed=0)
    assert set(done) == {"ok", "no_twin"}
    assert done["ok"]["reference"] == "before_random" and done["ok"]["n_layers"] == L
    assert done["no_twin"]["reference"] is None and "same_random" in done["no_twin"]["reference_missing"]
    assert "layer counts differ" in skipped["depth"] and f"{L + 1}" in skipped["depth"]
    assert "no 'layers' view of missing" in skipped["gone"]
    df = pd.DataFrame(rows)
    assert set(df["pair"]) == {"ok", "no_twin"}
    assert set(df.loc[df["pair"] == "no_twin", "comparison"]) == {"after"}
    assert len(df[df["pair"] == "ok"]) == L * 2 * (1 + len(_cfg().metrics))


# ----------------------------------------------------------------------------- the stage


ZOO = {"zoo_roberta": (dict(family="hf_text", path=str(MODELS / "roberta-tiny")), None),
       "zoo_roberta_random": (dict(family="hf_text", path=str(MODELS / "roberta-tiny")), 0),
       "zoo_openclip_roberta": (dict(family="open_clip", arch="roberta-ViT-B-32",
                                     pretrained="laion2b_s12b_b32k",
                                     path=str(MODELS / "openclip-roberta-tiny")), None)}
LAYER_KEYS = {("random", "train"), ("templates", "all")}


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    """`python -m analysis rsa --params FILE` on the fixture captions (train with layers, dev
    without) and a template set, embedded by the tiny RoBERTa, its random twin and the tiny
    OpenCLIP RoBERTa tower; matched pairs: roberta (run), xlm_roberta and bert (not selected)."""
    tmp = tmp_path_factory.mktemp("matched")
    cwd = Path.cwd()
    os.chdir(tmp)
    try:
        tables = {("random", s): write_fixture_split("random", s) for s in ("train", "dev")}
        rels = sorted(set(tables[("random", "train")]["relation"].value_counts()
                          .loc[lambda s: s >= 12].index))
        tmpl = templates.generate(templates.noun_pairs(["person", "cat", "dog", "bed"]), rels, META)
        path = store.table_path("templates", "all")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmpl.to_parquet(path)
        tables[("templates", "all")] = tmpl
        for cond, (spec, seed) in ZOO.items():
            enc = zoo.load_zoo_encoder(zoo.ZooSpec(**spec), name=cond, batch_size=64, random_seed=seed)
            for (variant, split), table in tables.items():
                with_layers = (variant, split) in LAYER_KEYS
                views = enc.encode_text(table["caption"].tolist(), layers=with_layers)
                keep = {"mean": views["mean"], **({"layers": views["layers"]} if with_layers else {})}
                store.save_embeddings(cond, variant, split, keep,
                                      {"condition": cond, "model_id": "fixture", "revision": "0",
                                       "row_ids": table["row_id"].tolist(), "excluded": [],
                                       "primary": "mean"})
        matched = {"roberta": {"before": "zoo_roberta", "after": "zoo_openclip_roberta"},
                   "xlm_roberta": {"before": "zoo_xlm_roberta", "after": "zoo_openclip_xlm_roberta"},
                   "bert": {"before": "zoo_bert", "after": "zoo_blip"}}
        params = {"conditions": {"text": list(ZOO) + ["zoo_xlm_roberta"], "matched": matched},
                  "rsa": {**load_yaml((ROOT / "params.smoke.yaml").read_text())["rsa"],
                          "splits": ["train", "dev"], "n_boot": 30, "n_jobs": 1, "converse": False,
                          "max_pairs": 20000, "tau_bins": 32, "figure_items": 10}}
        (tmp / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        assert rsa.main(["--params", str(tmp / "params.yaml")]) == 0
        yield {"table": pd.read_csv(rsa.RSA_DIR / "matched_layers.csv"),
               "summary": json.loads((rsa.RSA_DIR / "summary.json").read_text()),
               "params": params, "root": tmp, "tables": tables}
    finally:
        os.chdir(cwd)


def test_stage_writes_one_row_per_layer_comparison_metric(stage):
    df = stage["table"]
    assert list(df.columns[:len(MATCHED_COLUMNS)]) == MATCHED_COLUMNS
    assert {"p_holm", "p_bh", "family_size"} <= set(df.columns)
    assert set(df["pair"]) == {"roberta"}
    assert set(df["stimuli"]) == {"random/train", "templates/all"}  # dev has no layers view
    metrics = {"features", *stage["params"]["rsa"]["metrics"]}
    for key, part in df.groupby("stimuli"):
        n_layers = int(part["n_layers"].iloc[0])
        assert n_layers == 3  # embedding output + 2 layers of the tiny towers
        assert len(part) == n_layers * 2 * len(metrics), key
        assert not part.duplicated(["layer", "comparison", "metric"]).any()
        assert set(part["comparison"]) == {"after", "before_random"}
        assert set(part.loc[part["comparison"] == "before_random", "condition"]) == {"zoo_roberta_random"}
    ok = df.dropna(subset=["ci_low"])
    assert len(ok) == len(df)
    assert ((ok["ci_low"] <= ok["estimate"] + 1e-9) & (ok["estimate"] <= ok["ci_high"] + 1e-9)).all()
    train = df[df["stimuli"] == "random/train"]
    assert (train["n_items"] == 200).all()  # rsa.layer_cka_max_items of the smoke profile (240 captions)
    assert train["resampling"].str.startswith("subsample").all()
    assert df.loc[df["stimuli"] == "templates/all", "resampling"].str.startswith("jackknife").all()


def test_stage_estimates_match_the_saved_layers(stage):
    df = stage["table"]
    root = stage["root"] / store.EMBED_DIR
    lay = {c: store.load_embeddings(c, "templates", "all", view="layers", root=root).X
           for c in ("zoo_roberta", "zoo_openclip_roberta", "zoo_roberta_random")}
    n = len(stage["tables"][("templates", "all")])
    sub = df[df["stimuli"] == "templates/all"]
    assert (sub["n_items"] == n).all()
    for r in sub.itertuples():
        X, Y = lay["zoo_roberta"][r.layer], lay[r.condition][r.layer]
        if r.metric == "features":
            want = plain_cka(X - X.mean(0), Y - Y.mean(0))
        else:
            want = plain_rsa(X, Y, r.metric)
        assert r.estimate == pytest.approx(want, abs=1e-5), r


def test_stage_reports_pairs_run_and_not_run(stage):
    m = stage["summary"]["matched_layers"]
    assert list(m["analysed"]) == ["roberta"]
    assert set(m["analysed"]["roberta"]["stimuli"]) == {"random/train", "templates/all"}
    assert m["analysed"]["roberta"]["stimuli"]["templates/all"]["reference"] == "zoo_roberta_random"
    assert m["not_run"] == {"xlm_roberta": "zoo_openclip_xlm_roberta not selected in conditions.text",
                            "bert": "zoo_bert, zoo_blip not selected in conditions.text"}
    assert "no 'layers' view" in m["skipped"]["random/dev"]["roberta"] and m["n_skipped"] == 1
    assert m["line"].startswith("matched pairs analysed: roberta") and "not run: xlm_roberta" in m["line"]
    sets = condition_sets(stage["params"])
    assert rsa.matched_plan(sets)[0] == {"roberta": ("zoo_roberta", "zoo_openclip_roberta")}


def test_switched_off_reports_every_pair_as_not_run():
    cfg = _cfg(matched_layers=False)
    out = rsa.matched_summary({"roberta": ("a", "b")}, {"bert": "c not selected in conditions.text"},
                              {}, {}, cfg)
    assert out["not_run"] == {"bert": "c not selected in conditions.text",
                              "roberta": "rsa.matched_layers: false"}
    assert out["analysed"] == {}

"""Stage ``embed`` end to end on the VSR fixture with the tiny models: outputs, sidecar, excluded
images, the template set, random baselines, determinism."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from analysis.embed import embed
from analysis.embed.encoders import l2_normalize
from analysis.common.store import load_embeddings

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SPLITS = ["random/dev", "zeroshot/dev"]


def vsr_table(path: Path, variant: str, split: str) -> pd.DataFrame:
    """A normalized-table stand-in with the columns embed reads (row ids as the vsr stage makes them)."""
    rows = [json.loads(line) for line in path.open()]
    return pd.DataFrame({
        "row_id": [f"{variant}/{split}/{i:05d}" for i in range(1, len(rows) + 1)],
        "line": range(1, len(rows) + 1),
        "image": [r["image"] for r in rows],
        "caption": [r["caption"] for r in rows],
        "label": [r["label"] for r in rows],
        "relation": [r["relation"] for r in rows],
    })


def write_params(root: Path, splits: list[str], layers: list[str], workers: int = 0) -> Path:
    params = {
        "conditions": {"text": ["sbert"]},
        "models": {
            "sbert": {"hub_id": "sentence-transformers/all-mpnet-base-v2", "revision": "abc",
                      "path": str(FIXTURES / "models" / "sbert-tiny")},
            "clip": {"hub_id": "openai/clip-vit-base-patch32", "revision": "abc",
                     "path": str(FIXTURES / "models" / "clip-tiny")},
            "random_seed": 11,
        },
        "embed": {"splits": splits, "device": "cpu", "dtype": "auto", "batch_size": {"text": 16, "image": 8},
                  "image_workers": workers, "layers": {"splits": layers}},
    }
    path = root / "params.test.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A repo-shaped folder: raw JSONL, normalized tables, a template set, images and a manifest
    in which one image is missing and one corrupt."""
    root = tmp_path_factory.mktemp("ws")
    for key in SPLITS:
        variant, split = key.split("/")
        src = FIXTURES / "vsr" / variant / f"{split}.jsonl"
        raw = root / "data" / "vsr" / "raw" / variant / f"{split}.jsonl"
        raw.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, raw)
        table = root / "data" / "vsr" / variant / f"{split}.parquet"
        table.parent.mkdir(parents=True, exist_ok=True)
        vsr_table(src, variant, split).to_parquet(table, index=False)
    pairs = [("cat", "dog"), ("cup", "table")]
    tpl = pd.DataFrame([
        {"row_id": f"templates/all/{i:05d}", "caption": f"The {a} is {rel} the {b}.", "image": None,
         "relation": rel, "label": None, "pair_id": f"{a}|{b}", "order": "AB"}
        for i, ((a, b), rel) in enumerate([(p, r) for p in pairs for r in ["above", "left of", "near"]], 1)])
    (root / "data" / "templates").mkdir(parents=True)
    tpl.to_parquet(root / "data" / "templates" / "all.parquet", index=False)
    images = sorted({img for key in SPLITS for img in pd.read_parquet(
        root / "data" / "vsr" / key.split("/")[0] / f"{key.split('/')[1]}.parquet")["image"]})
    img_dir = root / "data" / "images"
    img_dir.mkdir(parents=True)
    manifest = []
    for k, name in enumerate(images):
        if k == 0:
            manifest.append({"image": name, "path": f"data/images/{name}", "sha256": "", "bytes": 0,
                             "status": "missing", "error": "HTTP 404"})
            continue
        dst = img_dir / name
        if k == 1:
            dst.write_bytes(b"\xff\xd8 truncated")
            manifest.append({"image": name, "path": f"data/images/{name}", "sha256": "", "bytes": 11,
                             "status": "corrupt", "error": "cannot identify image file"})
            continue
        shutil.copy(FIXTURES / "images" / name, dst)
        manifest.append({"image": name, "path": f"data/images/{name}", "sha256": "x", "bytes": dst.stat().st_size,
                         "status": "ok", "error": ""})
    (root / "results" / "images").mkdir(parents=True)
    pd.DataFrame(manifest).to_csv(root / "results" / "images" / "manifest.csv", index=False)
    return root


@pytest.fixture(scope="module")
def ran(workspace) -> Path:
    """Every condition run once on the workspace."""
    mp = pytest.MonkeyPatch()
    mp.chdir(workspace)
    params = write_params(workspace, SPLITS + ["templates/all"], ["random/dev"])
    for cond in ["sbert", "clip_text", "clip_image", "clip_concat", "sbert_random", "clip_text_random_s5"]:
        assert embed.main(["--params", str(params), "--condition", cond, "--no-progress"]) == 0
    yield workspace
    mp.undo()


def table(ws: Path, key: str) -> pd.DataFrame:
    variant, split = key.split("/")
    sub = "templates" if variant == "templates" else f"vsr/{variant}"
    return pd.read_parquet(ws / "data" / sub / f"{split}.parquet")


def load(ws: Path, cond: str, key: str, view: str | None = None):
    variant, split = key.split("/")
    return load_embeddings(cond, variant, split, view=view, root=ws / "results" / "embeddings")


def test_text_conditions_shapes_norms_sidecar(ran):
    t = table(ran, "random/dev")
    e = load(ran, "sbert", "random/dev", "mean")
    assert e.X.shape == (len(t), 32) and e.X.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e.X, axis=1), 1.0, atol=1e-5)
    assert e.row_ids.tolist() == t["row_id"].tolist()
    m = e.meta
    raw = ran / "data" / "vsr" / "raw" / "random" / "dev.jsonl"
    assert m["dataset_sha256"] == hashlib.sha256(raw.read_bytes()).hexdigest()
    assert m["condition"] == "sbert" and m["model_id"] == "sentence-transformers/all-mpnet-base-v2"
    assert m["revision"].startswith("local-sha256:") and m["random_seed"] is None
    assert m["model_path"] == str(FIXTURES / "models" / "sbert-tiny")
    assert m["device"] == "cpu" and m["dtype"] == "float32" and m["excluded"] == []
    assert {"torch", "transformers", "sentence-transformers", "python"} <= set(m["versions"])
    assert m["dims"] == {"mean": [32], "layers": [3, 32]} and set(m["views"]) == {"mean", "layers"}
    assert "mean" in m["pooling"]["mean"]
    # identical captions get identical vectors (each distinct caption is encoded once)
    dup = t.groupby("caption").filter(lambda g: len(g) > 1)
    for _, g in dup.groupby("caption"):
        idx = g.index.to_numpy()
        np.testing.assert_array_equal(e.X[idx], np.repeat(e.X[idx[:1]], len(idx), axis=0))
    ct = load(ran, "clip_text", "random/dev", "pooler_output")
    assert ct.meta["dims"] == {"pooler_output": [32], "text_embeds": [16], "layers": [3, 32]}
    np.testing.assert_allclose(np.linalg.norm(ct.X, axis=1), 1.0, atol=1e-5)
    assert load(ran, "clip_text", "random/dev", "layers").X.shape == (3, len(t), 32)
    # layers only where asked
    assert "layers" not in load(ran, "sbert", "zeroshot/dev").meta["views"]


def test_image_conditions_exclude_unusable_images(ran):
    t = table(ran, "random/dev")
    manifest = pd.read_csv(ran / "results" / "images" / "manifest.csv")
    bad = dict(zip(manifest["image"], manifest["status"]))
    expect_out = t[t["image"].map(bad) != "ok"]
    assert len(expect_out) > 0
    for cond, view in [("clip_image", "image_embeds"), ("clip_concat", "concat")]:
        e = load(ran, cond, "random/dev", view)
        assert e.row_ids.tolist() == t.loc[t["image"].map(bad) == "ok", "row_id"].tolist()
        excl = e.meta["excluded"]
        assert [x["row_id"] for x in excl] == expect_out["row_id"].tolist()
        reasons = {x["image"]: x["reason"] for x in excl}
        for image in expect_out["image"]:
            assert reasons[image].startswith(f"image {bad[image]}")
        assert np.isfinite(e.X).all() and (np.linalg.norm(e.X, axis=1) > 0.99).all()  # never zero-filled
    # the template set has no images: image conditions skip it
    assert not (ran / "results" / "embeddings" / "clip_image" / "templates").exists()


def test_concat_by_hand_from_image_and_text(ran):
    cat = load(ran, "clip_concat", "random/dev", "concat")
    img = load(ran, "clip_image", "random/dev", "image_embeds")
    txt = load(ran, "clip_text", "random/dev", "text_embeds")
    pos = {r: i for i, r in enumerate(txt.row_ids)}
    t_rows = txt.X[[pos[r] for r in cat.row_ids]]
    assert img.row_ids.tolist() == cat.row_ids.tolist()
    i_unit = img.X / np.linalg.norm(img.X, axis=1, keepdims=True)
    t_unit = t_rows / np.linalg.norm(t_rows, axis=1, keepdims=True)
    np.testing.assert_allclose(cat.X, np.hstack([i_unit, t_unit]) / np.sqrt(2), atol=1e-5)
    assert cat.X.shape[1] == 32
    np.testing.assert_allclose(load(ran, "clip_concat", "random/dev", "text_embeds").X, t_rows, atol=1e-6)


def test_templates_and_random_baselines(ran):
    tpl = load(ran, "sbert", "templates/all", "mean")
    assert tpl.X.shape == (6, 32) and tpl.row_ids[0] == "templates/all/00001"
    assert tpl.meta["dataset_sha256"] == hashlib.sha256(
        (ran / "data" / "templates" / "all.parquet").read_bytes()).hexdigest()
    r = load(ran, "sbert_random", "random/dev", "mean")
    assert r.meta["random_seed"] == 11 and r.meta["weights"].startswith("random")
    assert np.abs(r.X - load(ran, "sbert", "random/dev", "mean").X).max() > 1e-3
    r5 = load(ran, "clip_text_random_s5", "random/dev", "pooler_output")
    assert r5.meta["random_seed"] == 5 and r5.X.shape[1] == 32


def test_rerun_is_identical(ran, monkeypatch):
    monkeypatch.chdir(ran)
    before = {p: p.read_bytes() for p in (ran / "results" / "embeddings" / "clip_concat").rglob("*.npy")}
    params = write_params(ran, SPLITS, ["random/dev"], workers=2)  # parallel decoding, same bytes
    assert embed.main(["--params", str(params), "--condition", "clip_concat", "--no-progress"]) == 0
    after = {p: p.read_bytes() for p in (ran / "results" / "embeddings" / "clip_concat").rglob("*.npy")}
    assert before == after and len(before) == 6


def test_missing_template_set_is_skipped_with_a_log(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    variant, split = "random", "dev"
    (tmp_path / "data" / "vsr" / variant).mkdir(parents=True)
    vsr_table(FIXTURES / "vsr" / variant / f"{split}.jsonl", variant, split).head(5).to_parquet(
        tmp_path / "data" / "vsr" / variant / f"{split}.parquet", index=False)
    params = write_params(tmp_path, ["random/dev", "templates/all"], [])
    with caplog.at_level(logging.INFO, logger="embed"):
        assert embed.main(["--params", str(params), "--condition", "sbert", "--no-progress"]) == 0
    assert "templates/all" in caplog.text and "not found" in caplog.text
    meta = json.loads((tmp_path / "results/embeddings/sbert/random/dev/meta.json").read_text())
    # no raw JSONL here: the checksum is the normalized table's
    assert meta["dataset_sha256"] == hashlib.sha256(
        (tmp_path / "data/vsr/random/dev.parquet").read_bytes()).hexdigest()


def test_image_condition_needs_manifest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "vsr" / "random").mkdir(parents=True)
    vsr_table(FIXTURES / "vsr/random/dev.jsonl", "random", "dev").head(3).to_parquet(
        tmp_path / "data/vsr/random/dev.parquet", index=False)
    params = write_params(tmp_path, ["random/dev"], [])
    with pytest.raises(FileNotFoundError, match="manifest.csv"):
        embed.main(["--params", str(params), "--condition", "clip_image", "--no-progress"])


def test_image_rows_reasons():
    t = pd.DataFrame({"row_id": ["a", "b", "c", "d"], "image": ["x.jpg", "y.jpg", "z.jpg", "x.jpg"]})
    m = pd.DataFrame({"image": ["x.jpg", "y.jpg"], "path": ["p/x.jpg", "p/y.jpg"], "status": ["ok", "corrupt"],
                      "error": [None, "truncated"]})
    keep, paths, excluded = embed.image_rows(t, m)
    assert keep.tolist() == [True, False, False, True] and paths == ["p/x.jpg", "p/x.jpg"]
    assert excluded == [{"row_id": "b", "image": "y.jpg", "reason": "image corrupt: truncated"},
                        {"row_id": "c", "image": "z.jpg", "reason": "not in images manifest"}]


def test_parse_condition():
    spec = {"path": "x"}
    models = embed.ModelsSettings(sbert=spec, clip=spec, random_seed=3)
    assert embed.parse_condition("clip_concat", models) == embed.Condition("clip_concat", "clip", "concat")
    assert embed.parse_condition("clip_image_random", models).random_seed == 3
    assert embed.parse_condition("sbert_random_s42", models).random_seed == 42
    with pytest.raises(ValueError, match="unknown condition"):
        embed.parse_condition("clip_concat_random", models)


def test_models_need_a_random_seed(tmp_path):
    from analysis.common.params import SettingsError, validate

    with pytest.raises(SettingsError, match="missing required setting 'models.random_seed'"):
        validate(embed.ModelsSettings, {"sbert": {"path": "x"}, "clip": {"path": "y"}}, "models")


def test_unit_norm_helper_matches_numpy():
    x = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
    np.testing.assert_allclose(l2_normalize(x), x / np.linalg.norm(x, axis=1, keepdims=True), rtol=1e-6)


# ----------------------------------------------------------------------------- zoo conditions
MODELS = FIXTURES / "models"
ZOO = {  # as params.smoke.yaml: real hub ids, tiny fixture folders
    "bert": {"family": "hf_text", "hub_id": "google-bert/bert-base-uncased", "revision": "main",
             "path": str(MODELS / "bert-tiny")},
    "roberta": {"family": "hf_text", "hub_id": "FacebookAI/roberta-base", "revision": "main",
                "path": str(MODELS / "roberta-tiny")},
    "openclip_vit": {"family": "open_clip", "arch": "ViT-B-32", "pretrained": "laion2b_s34b_b79k",
                     "hub_id": "laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "revision": "main",
                     "path": str(MODELS / "openclip-vit-tiny")},
    "openclip_roberta": {"family": "open_clip", "arch": "roberta-ViT-B-32", "pretrained": "laion2b_s12b_b32k",
                         "hub_id": "laion/CLIP-ViT-B-32-roberta-base-laion2B-s12B-b32k", "revision": "main",
                         "text_hub_id": "FacebookAI/roberta-base", "text_revision": "main",
                         "path": str(MODELS / "openclip-roberta-tiny")},
    "blip": {"family": "blip_text", "hub_id": "Salesforce/blip-itm-base-coco", "revision": "main",
             "path": str(MODELS / "blip-tiny")},
    "siglip": {"family": "siglip", "hub_id": "google/siglip-base-patch16-224", "revision": "main",
               "path": str(MODELS / "siglip-tiny")},
}
ZOO_PRIMARY = {"bert": "trained", "roberta": "mean", "openclip_vit": "trained", "openclip_roberta": "trained",
               "blip": "trained", "siglip": "trained"}


def write_zoo_params(root: Path, zoo: dict, splits: list[str], layers: list[str]) -> Path:
    path = write_params(root, splits, layers)
    params = yaml.safe_load(path.read_text())
    params["models"]["zoo"] = zoo
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.fixture(scope="module")
def zoo_ran(workspace) -> Path:
    """Every family's zoo condition (and two random twins) embedded on the workspace."""
    mp = pytest.MonkeyPatch()
    mp.chdir(workspace)
    params = write_zoo_params(workspace, ZOO, SPLITS + ["templates/all"], ["random/dev"])
    for cond in [f"zoo_{n}" for n in ZOO] + ["zoo_bert_random", "zoo_openclip_vit_random_s5"]:
        assert embed.main(["--params", str(params), "--condition", cond, "--no-progress"]) == 0
    yield workspace
    mp.undo()


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_condition_writes_the_embedding_contract(zoo_ran, name):
    from analysis.embed import zoo

    cond = f"zoo_{name}"
    t = table(zoo_ran, "random/dev")
    e = load(zoo_ran, cond, "random/dev")  # no view: the sidecar's primary
    m = e.meta
    assert m["primary"] == ZOO_PRIMARY[name] and m["zoo"]["family"] == ZOO[name]["family"]
    assert m["zoo"]["name"] == name and m["condition"] == cond
    np.testing.assert_array_equal(e.X, load(zoo_ran, cond, "random/dev", m["primary"]).X)
    assert e.row_ids.tolist() == t["row_id"].tolist() and e.X.dtype == np.float32
    assert m["model_id"] == ZOO[name]["hub_id"] and m["model_path"] == ZOO[name]["path"]
    assert m["revision"].startswith("local-sha256:") and m["random_seed"] is None and m["weights"] == "pretrained"
    assert m["device"] == "cpu" and m["dtype"] == "float32" and m["excluded"] == []
    assert m["dataset_sha256"] == hashlib.sha256(
        (zoo_ran / "data/vsr/raw/random/dev.jsonl").read_bytes()).hexdigest()
    enc = zoo.load_zoo_encoder(zoo.ZooSpec(**ZOO[name]), name=name)
    assert set(m["views"]) == set(enc.views) | {"layers"}
    assert m["pooling"] == {v: enc.pooling[v] for v in m["pooling"]}
    assert set(m["pooling"]) == set(m["views"])
    if ZOO[name]["family"] == "open_clip":
        assert {"open_clip", "timm"} <= set(m["versions"]) and m["zoo"]["arch"] == ZOO[name]["arch"]
    # every view as the encoder gives it, row for row (each distinct caption encoded once)
    direct = enc.encode_text(t["caption"].tolist(), layers=True)
    for view in enc.views:
        x = load(zoo_ran, cond, "random/dev", view).X
        assert m["dims"][view] == [x.shape[1]]
        np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(x, direct[view], atol=1e-5)
    lay = load(zoo_ran, cond, "random/dev", "layers").X
    assert lay.shape == (3, len(t), 32) and m["dims"]["layers"] == [3, 32]
    np.testing.assert_allclose(lay, direct["layers"], atol=1e-4)
    # layers only where embed.layers asks; the template set too
    assert "layers" not in load(zoo_ran, cond, "zeroshot/dev").meta["views"]
    assert load(zoo_ran, cond, "templates/all").X.shape[0] == 6


def test_zoo_random_twins(zoo_ran):
    r = load(zoo_ran, "zoo_bert_random", "random/dev")
    assert r.meta["random_seed"] == 11 and r.meta["weights"].startswith("random") and r.meta["primary"] == "trained"
    assert np.abs(r.X - load(zoo_ran, "zoo_bert", "random/dev").X).max() > 1e-3
    r5 = load(zoo_ran, "zoo_openclip_vit_random_s5", "random/dev")
    assert r5.meta["random_seed"] == 5 and r5.meta["zoo"]["family"] == "open_clip"
    assert np.abs(r5.X - load(zoo_ran, "zoo_openclip_vit", "random/dev").X).max() > 1e-3


def test_parse_zoo_condition():
    spec = {"path": "x"}
    models = embed.ModelsSettings(sbert=spec, clip=spec, random_seed=3,
                                  zoo={"bert": {"family": "hf_text", "path": "x"},
                                       "open_clip_vit": {"family": "open_clip", "arch": "ViT-B-32", "path": "x"}})
    assert embed.parse_condition("zoo_bert", models) == embed.Condition("zoo_bert", "zoo", "text", zoo="bert")
    assert embed.parse_condition("zoo_bert_random", models).random_seed == 3
    c = embed.parse_condition("zoo_open_clip_vit_random_s42", models)
    assert (c.zoo, c.random_seed, c.needs_images) == ("open_clip_vit", 42, False)
    for bad in ["zoo_bertt", "zoo_", "zoo_bert_random_sx"]:
        with pytest.raises(embed.ConditionError, match="models.zoo .*zoo_bert, zoo_open_clip_vit"):
            embed.parse_condition(bad, models)


@pytest.mark.parametrize("zoo_settings, message", [
    ({"bert": {"family": "hf_text", "revison": "main", "path": "x"}},
     r"unknown setting 'revison' in section 'models\.zoo\.bert' \(did you mean 'revision'\?\)"),
    ({"bert": {"family": "hf_txt", "path": "x"}}, r"models\.zoo\.bert\.family"),
    ({"bert": {"family": "hf_text", "arch": "ViT-B-32", "path": "x"}}, r"models\.zoo\.bert.*open_clip settings"),
    ({"bert_random": {"family": "hf_text", "path": "x"}}, r"models\.zoo.*bert_random"),
])
def test_misspelled_zoo_setting_is_an_error_naming_it(tmp_path, monkeypatch, zoo_settings, message):
    from analysis.common.params import SettingsError

    monkeypatch.chdir(tmp_path)
    params = write_zoo_params(tmp_path, zoo_settings, ["random/dev"], [])
    with pytest.raises(SettingsError, match=message):
        embed.main(["--params", str(params), "--condition", "zoo_bert", "--no-progress"])


def test_zoo_unavailable_model_names_its_setting(tmp_path, monkeypatch):
    from analysis.embed.encoders import ModelUnavailableError

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "vsr" / "random").mkdir(parents=True)
    vsr_table(FIXTURES / "vsr/random/dev.jsonl", "random", "dev").head(3).to_parquet(
        tmp_path / "data/vsr/random/dev.parquet", index=False)
    params = write_zoo_params(tmp_path, {"siglip": {"family": "siglip", "path": str(tmp_path / "nowhere")}},
                              ["random/dev"], [])
    with pytest.raises(ModelUnavailableError, match=r"models\.zoo\.siglip\.path"):
        embed.main(["--params", str(params), "--condition", "zoo_siglip", "--no-progress"])

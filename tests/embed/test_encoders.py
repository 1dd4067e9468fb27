"""Encoders with the tiny fixture models: library paths, pooling, normalization, length bucketing,
layer-wise states, random-weight baselines, model sources and the float16 decision."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis.embed import encoders as E

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SBERT_DIR = FIXTURES / "models" / "sbert-tiny"
CLIP_DIR = FIXTURES / "models" / "clip-tiny"
CAPTIONS = [
    "The cat is on the mat.",
    "A dog.",
    "The giraffe is behind the person.",
    "The cup is at the left side of the bowl, which is far from the big red dining table.",
    "The zebra-like xylophone contains the umbrella.",
    "The person is in front of the bus.",
]


@pytest.fixture(scope="module")
def sbert() -> E.SbertEncoder:
    return E.SbertEncoder(E.resolve_source(E.ModelSpec(path=str(SBERT_DIR)), E.SBERT_FILES), batch_size=4)


@pytest.fixture(scope="module")
def clip() -> E.ClipEncoder:
    return E.ClipEncoder(E.resolve_source(E.ModelSpec(path=str(CLIP_DIR)), E.CLIP_FILES), batch_size=4,
                         image_batch_size=3)


@pytest.fixture(scope="module")
def images() -> list[Path]:
    return sorted((FIXTURES / "images").glob("*.jpg"))[:7]


# ----------------------------------------------------------------------------- pure helpers
def rotated(ref: np.ndarray, cos: float) -> np.ndarray:
    """Each row of ``ref`` (unit rows, orthogonal to the last axis) tilted to cosine ``cos``."""
    other = np.zeros_like(ref)
    other[:, -1] = 1.0
    return cos * ref + np.sqrt(1 - cos**2) * other


def test_half_precision_decision_on_constructed_arrays():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(20, 8))
    ref[:, -1] = 0
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    assert E.half_precision_ok(ref, ref.copy()) == (True, pytest.approx(1.0))
    good = ref.copy()
    good[5] = rotated(ref[5:6], 0.99995)[0]
    ok, worst = E.half_precision_ok(ref, good)
    assert ok and worst == pytest.approx(0.99995, abs=1e-9)
    bad = good.copy()
    bad[11] = rotated(ref[11:12], 0.9998)[0]  # one row below the threshold decides
    ok, worst = E.half_precision_ok(ref, bad)
    assert not ok and worst == pytest.approx(0.9998, abs=1e-9)
    assert E.half_precision_ok(ref, 3.0 * good)[0]  # cosine ignores scale
    nan = ref.copy()
    nan[0, 0] = np.nan
    assert E.half_precision_ok(ref, nan)[0] is False
    with pytest.raises(ValueError, match="shape"):
        E.half_precision_ok(ref, ref[:3])


class _FakeEncoder:
    """Stands in for a model: float16 output drifts by a set cosine."""

    def __init__(self, cos: float):
        self.cos, self.dtype, self.calls = cos, torch.float32, []

    def to_dtype(self, dtype):
        self.dtype = dtype
        self.calls.append(dtype)


def test_choose_half_keeps_float16_only_when_it_agrees():
    ref = np.eye(4)[:, :4] * 1.0
    ref[:, -1] = 0
    ref[3] = [1, 1, 0, 0]
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    for cos, expect in [(0.99999, torch.float16), (0.999, torch.float32)]:
        enc = _FakeEncoder(cos)

        def probe(enc=enc):
            return {"v": ref if enc.dtype == torch.float32 else rotated(ref, enc.cos)}

        dtype, worst = E.choose_half(enc, probe)
        assert dtype == expect and enc.dtype == expect
        assert worst == pytest.approx(cos, abs=1e-9)


def test_length_order_longest_first_and_stable():
    order = E.length_order([3, 7, 3, 9, 7])
    assert order.tolist() == [3, 1, 4, 0, 2]
    assert [b.tolist() for b in E.batches(order, 2)] == [[3, 1], [4, 0], [2]]


def test_concat_by_hand():
    rng = np.random.default_rng(1)
    i, t = rng.normal(size=(5, 3)), rng.normal(size=(5, 4))
    out = E.concat_embeddings(i, t)
    for r in range(5):
        a = i[r] / np.sqrt(i[r] @ i[r])
        b = t[r] / np.sqrt(t[r] @ t[r])
        expect = np.concatenate([a, b]) / np.sqrt(2.0)  # two unit halves: norm sqrt(2)
        np.testing.assert_allclose(out[r], expect, rtol=1e-6)
    with pytest.raises(ValueError, match="all-zero"):
        E.l2_normalize(np.zeros((2, 3)))


def test_eos_positions_both_rules():
    ids = torch.tensor([[9, 4, 12, 1, 1], [9, 12, 5, 3, 12]])
    assert E.eos_positions(ids, 2).tolist() == [2, 1]  # legacy: largest id (first if tied)
    assert E.eos_positions(ids, 5).tolist() == [0, 2]  # first EOS


# ----------------------------------------------------------------------------- SBERT
def test_sbert_matches_plain_sentence_transformer(sbert):
    from sentence_transformers import SentenceTransformer

    X = sbert.encode(CAPTIONS)
    assert X.shape == (len(CAPTIONS), 32) and X.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-6)
    plain = SentenceTransformer(str(SBERT_DIR), device="cpu").encode(CAPTIONS, batch_size=1)
    np.testing.assert_allclose(X, plain / np.linalg.norm(plain, axis=1, keepdims=True), atol=1e-5)


def test_sbert_layers_shape_order_and_last_layer(sbert):
    L = sbert.layers(CAPTIONS)  # batch 4 over lengths-sorted captions
    assert L.shape == (3, len(CAPTIONS), 32)
    one_by_one = np.concatenate([sbert.layers([c]) for c in CAPTIONS], axis=1)
    np.testing.assert_allclose(L, one_by_one, atol=1e-5)
    # the last layer mean-pooled and normalized is the sentence embedding itself
    np.testing.assert_allclose(E.l2_normalize(L[-1]), sbert.encode(CAPTIONS), atol=1e-5)
    # the embedding layer's mean over tokens, by hand for one caption
    tok = sbert.model.tokenizer(CAPTIONS[2], return_tensors="pt")
    with torch.no_grad():
        h0 = sbert.transformer(**tok, output_hidden_states=True).hidden_states[0][0]
    np.testing.assert_allclose(L[0, 2], h0.mean(0).numpy(), atol=1e-5)


def test_sbert_random_weights_seeded(sbert):
    src = sbert.source
    a = E.SbertEncoder(src, random_seed=3).encode(CAPTIONS)
    b = E.SbertEncoder(src, random_seed=3).encode(CAPTIONS)
    c = E.SbertEncoder(src, random_seed=4).encode(CAPTIONS)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3 and np.abs(a - sbert.encode(CAPTIONS)).max() > 1e-3
    real = dict(sbert.transformer.named_parameters())
    rand = dict(E.SbertEncoder(src, random_seed=3).transformer.named_parameters())
    assert {k: v.shape for k, v in real.items()} == {k: v.shape for k, v in rand.items()}


# ----------------------------------------------------------------------------- CLIP
def test_clip_pooler_output_is_eos_state_by_hand(clip):
    v = clip.encode_text(CAPTIONS)
    tok = clip.tokenizer
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    for r, cap in enumerate(CAPTIONS):
        ids = tok(cap, return_tensors="pt")
        with torch.no_grad():
            last = clip.model.text_model(**ids).last_hidden_state[0]
        pos = ids["input_ids"][0].tolist().index(eos)  # the one EOS, at the end
        assert pos == ids["input_ids"].shape[1] - 1
        h = last[pos].numpy()
        np.testing.assert_allclose(v["pooler_output"][r], h / np.linalg.norm(h), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(v["pooler_output"], axis=1), 1.0, atol=1e-6)


def test_clip_text_embeds_are_get_text_features_and_order_is_restored(clip):
    v = clip.encode_text(CAPTIONS, layers=True)
    assert v["text_embeds"].shape == (len(CAPTIONS), 16)
    assert v["layers"].shape == (3, len(CAPTIONS), 32)
    enc = clip.tokenizer(CAPTIONS, padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = clip.model.get_text_features(**enc).pooler_output.numpy()
    np.testing.assert_allclose(v["text_embeds"], E.l2_normalize(ref), atol=1e-5)
    singles = [clip.encode_text([c], layers=True) for c in CAPTIONS]
    for key in ("pooler_output", "text_embeds"):
        np.testing.assert_allclose(v[key], np.concatenate([s[key] for s in singles]), atol=1e-5)
    np.testing.assert_allclose(v["layers"], np.concatenate([s["layers"] for s in singles], axis=1), atol=1e-5)
    # last layer at EOS, through the final layer norm, is the pooler output
    with torch.no_grad():
        normed = clip.model.text_model.final_layer_norm(torch.from_numpy(v["layers"][-1])).numpy()
    np.testing.assert_allclose(E.l2_normalize(normed), v["pooler_output"], atol=1e-5)


def test_clip_image_embeds_workers_and_layers(clip, images):
    from PIL import Image

    v = clip.encode_images(images, layers=True)
    assert v["image_embeds"].shape == (len(images), 16)
    assert v["layers"].shape == (3, len(images), 32)
    pixels = clip.processor(images=[Image.open(p).convert("RGB") for p in images], return_tensors="pt")
    with torch.no_grad():
        ref = clip.model.get_image_features(**pixels).pooler_output.numpy()
        cls = torch.from_numpy(v["layers"][-1])
        via_cls = clip.model.visual_projection(clip.model.vision_model.post_layernorm(cls)).numpy()
    np.testing.assert_allclose(v["image_embeds"], E.l2_normalize(ref), atol=1e-5)
    np.testing.assert_allclose(v["image_embeds"], E.l2_normalize(via_cls), atol=1e-5)
    clip.image_workers = 2
    try:
        par = clip.encode_images(images)
    finally:
        clip.image_workers = 0
    np.testing.assert_array_equal(par["image_embeds"], v["image_embeds"])


def test_clip_bad_image_names_file(clip, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(RuntimeError, match="broken.jpg"):
        clip.encode_images([bad])


def test_clip_random_weights_same_architecture(clip, images):
    r1 = E.ClipEncoder(clip.source, random_seed=7)
    r2 = E.ClipEncoder(clip.source, random_seed=7)
    a, b = r1.encode_text(CAPTIONS)["text_embeds"], r2.encode_text(CAPTIONS)["text_embeds"]
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - clip.encode_text(CAPTIONS)["text_embeds"]).max() > 1e-3
    assert {k: v.shape for k, v in r1.model.state_dict().items()} == \
        {k: v.shape for k, v in clip.model.state_dict().items()}
    np.testing.assert_array_equal(r1.encode_images(images[:2])["image_embeds"],
                                  r2.encode_images(images[:2])["image_embeds"])


# ----------------------------------------------------------------------------- model sources
def test_local_source_hash_tracks_content(tmp_path):
    copy = tmp_path / "m"
    shutil.copytree(SBERT_DIR, copy)
    a = E.resolve_source(E.ModelSpec(path=str(copy), hub_id="org/name"), E.SBERT_FILES)
    assert a.model_id == "org/name" and a.revision.startswith("local-sha256:")
    assert E.resolve_source(E.ModelSpec(path=str(copy)), E.SBERT_FILES).revision == a.revision
    cfg = json.loads((copy / "config.json").read_text())
    cfg["layer_norm_eps"] = 1e-6
    (copy / "config.json").write_text(json.dumps(cfg))
    assert E.resolve_source(E.ModelSpec(path=str(copy)), E.SBERT_FILES).revision != a.revision
    with pytest.raises(E.ModelUnavailableError, match="models.sbert.path"):
        E.resolve_source(E.ModelSpec(path=str(tmp_path / "nope")), E.SBERT_FILES, name="sbert")
    with pytest.raises(ValueError, match="hub_id"):
        E.resolve_source(E.ModelSpec(path=None, hub_id="org/name"), E.SBERT_FILES, name="sbert")


def test_hub_source_resolves_commit_offline(tmp_path):
    """A hub id + revision resolves through the local HF cache under HF_HUB_OFFLINE=1 and
    records the snapshot's commit."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--org--tiny-clip"
    shutil.copytree(CLIP_DIR, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    code = (
        "import json, sys; from analysis.embed.encoders import ModelSpec, resolve_source, CLIP_FILES\n"
        f"s = resolve_source(ModelSpec(hub_id='org/tiny-clip', revision='main'), CLIP_FILES, cache_dir={str(tmp_path)!r})\n"
        "print(json.dumps([s.model_id, s.revision, str(s.local_dir)]))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=Path(__file__).resolve().parents[2], timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    model_id, revision, local = json.loads(out.stdout.strip().splitlines()[-1])
    assert (model_id, revision) == ("org/tiny-clip", commit)
    assert Path(local) == repo / "snapshots" / commit


def test_offline_hub_model_names_the_setting_to_use(tmp_path, monkeypatch, hub_offline):
    """No network and no cached copy: one message naming models.<name>.path and HF_HUB_OFFLINE."""
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(E.ModelUnavailableError) as err:
        E.resolve_source(E.ModelSpec(hub_id="sentence-transformers/all-mpnet-base-v2",
                                     revision="e8c3b32edf5434bc2275fc9bab85f82640a19130"),
                         E.SBERT_FILES, name="sbert", cache_dir=tmp_path / "hub")
    msg = str(err.value)
    assert "models.sbert.path" in msg and "HF_HUB_OFFLINE=1" in msg and "\n" not in msg

"""Zoo encoders with the tiny fixture models: each family's views against an independent
computation through the library's own public API, layer stacks, batching, random-weight twins,
settings and unavailable sources."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis.embed import zoo as Z
from analysis.embed.encoders import ModelUnavailableError, l2_normalize

MODELS = Path(__file__).resolve().parents[1] / "fixtures" / "models"
CAPTIONS = [
    "The cat is on the mat.",
    "A dog.",
    "The giraffe is behind the person.",
    "The cup is at the left side of the bowl, which is far from the big red dining table.",
    "The zebra-like xylophone contains the umbrella.",
    "The person is in front of the bus.",
]
SPECS = {
    "roberta": dict(family="hf_text", path=str(MODELS / "roberta-tiny")),
    "xlm_roberta": dict(family="hf_text", path=str(MODELS / "xlm-roberta-tiny")),
    "bert": dict(family="hf_text", path=str(MODELS / "bert-tiny")),
    "openclip_roberta": dict(family="open_clip", arch="roberta-ViT-B-32", pretrained="laion2b_s12b_b32k",
                             path=str(MODELS / "openclip-roberta-tiny")),
    "openclip_xlm_roberta": dict(family="open_clip", arch="xlm-roberta-base-ViT-B-32",
                                 pretrained="laion5b_s13b_b90k", path=str(MODELS / "openclip-xlm-roberta-tiny")),
    "openclip_vit": dict(family="open_clip", arch="ViT-B-32", pretrained="laion2b_s34b_b79k",
                         path=str(MODELS / "openclip-vit-tiny")),
    "blip": dict(family="blip_text", path=str(MODELS / "blip-tiny")),
    "siglip": dict(family="siglip", path=str(MODELS / "siglip-tiny")),
}
OPEN_CLIP = ["openclip_roberta", "openclip_xlm_roberta", "openclip_vit"]
ATOL = 1e-5


def load(name: str, **kw) -> Z.ZooEncoder:
    return Z.load_zoo_encoder(Z.ZooSpec(**SPECS[name]), name=name, batch_size=4, **kw)


@pytest.fixture(scope="module")
def encoded() -> dict[str, tuple[Z.ZooEncoder, dict[str, np.ndarray]]]:
    """Every fixture model and its views of CAPTIONS (batches of 4, layers included)."""
    out = {}
    for name in SPECS:
        enc = load(name)
        out[name] = (enc, enc.encode_text(CAPTIONS, layers=True))
    return out


def unit(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# ----------------------------------------------------------------------------- every family
@pytest.mark.parametrize("name", list(SPECS))
def test_views_shapes_norms_and_layers_end_in_mean(encoded, name):
    enc, v = encoded[name]
    assert set(v) == set(enc.views) | {"layers"} and enc.primary in enc.views
    assert set(enc.pooling) == set(v)
    for view in enc.views:
        assert v[view].shape[0] == len(CAPTIONS) and v[view].dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(v[view], axis=1), 1.0, atol=1e-6)
    assert v["layers"].shape == (3, len(CAPTIONS), 32)  # embedding output + 2 layers, raw
    if name != "openclip_vit":  # mean-pooled layers: the last one is `mean` before normalization
        np.testing.assert_allclose(l2_normalize(v["layers"][-1]), v["mean"], atol=ATOL)


@pytest.mark.parametrize("name", list(SPECS))
def test_batch_of_one_equals_batch_of_many(encoded, name):
    enc, v = encoded[name]
    singles = [enc.encode_text([c], layers=True) for c in CAPTIONS]
    for key in v:
        axis = 1 if key == "layers" else 0
        np.testing.assert_allclose(v[key], np.concatenate([s[key] for s in singles], axis=axis), atol=ATOL)


@pytest.mark.parametrize("name", list(SPECS))
def test_random_twins_seeded(encoded, name):
    enc, v = encoded[name]
    a, b, c = (load(name, random_seed=s) for s in (3, 3, 4))
    va, vb, vc = (e.encode_text(CAPTIONS) for e in (a, b, c))
    for view in enc.views:
        np.testing.assert_array_equal(va[view], vb[view])
        assert np.abs(va[view] - vc[view]).max() > 1e-3
        assert np.abs(va[view] - v[view]).max() > 1e-3
    assert {k: t.shape for k, t in a.model.state_dict().items()} == \
        {k: t.shape for k, t in enc.model.state_dict().items()}


@pytest.mark.parametrize("name", list(SPECS))
def test_missing_local_folder_names_the_setting(tmp_path, name):
    spec = Z.ZooSpec(**{**SPECS[name], "path": str(tmp_path / "nope")})
    with pytest.raises(ModelUnavailableError, match=f"models.{name}.path"):
        Z.load_zoo_encoder(spec, name=name)


HUB = {
    "hf_text": dict(hub_id="FacebookAI/roberta-base"),
    "blip_text": dict(hub_id="Salesforce/blip-itm-base-coco"),
    "siglip": dict(hub_id="google/siglip-base-patch16-224"),
    "open_clip": dict(arch="roberta-ViT-B-32", pretrained="laion2b_s12b_b32k",
                      text_hub_id="FacebookAI/roberta-base", text_revision="1" * 40),
}


@pytest.mark.parametrize("family", list(HUB))
def test_unreachable_hub_names_the_setting(tmp_path, monkeypatch, family, hub_offline):
    """HF_HUB_OFFLINE=1 and an empty cache: one line naming models.<name>.path."""
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    spec = Z.ZooSpec(family=family, revision="0" * 40, **HUB[family])
    with pytest.raises(ModelUnavailableError) as err:
        Z.load_zoo_encoder(spec, name="zoo_m", cache_dir=tmp_path / "hub")
    msg = str(err.value)
    assert "models.zoo_m.path" in msg and "HF_HUB_OFFLINE=1" in msg and "\n" not in msg
    if family == "open_clip":  # the repo of the pretrained tag
        assert "laion/CLIP-ViT-B-32-roberta-base-laion2B-s12B-b32k" in msg


def hub_cache(root: Path, repo: str, commit: str, files: list[Path]) -> None:
    """A Hugging Face cache entry of ``repo`` at ``commit`` holding ``files``."""
    snap = root / f"models--{repo.replace('/', '--')}" / "snapshots" / commit
    snap.mkdir(parents=True)
    for f in files:
        shutil.copy2(f, snap / f.name)
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text(commit)


def test_open_clip_hf_tower_from_two_pinned_hub_repos(encoded, tmp_path, monkeypatch, hub_offline):
    """Hub layout: the CLIP repo holds the OpenCLIP config and weights only, the text tower's
    config and tokenizer come from their own repo at text_revision; same vectors as the folder."""
    src = MODELS / "openclip-roberta-tiny"
    clip_commit, text_commit = "a" * 40, "b" * 40
    hub_cache(tmp_path, "laion/CLIP-ViT-B-32-roberta-base-laion2B-s12B-b32k", clip_commit,
              [src / "open_clip_config.json", src / "open_clip_model.safetensors"])
    hub_cache(tmp_path, "FacebookAI/roberta-base", text_commit,
              [src / "config.json", src / "tokenizer.json", src / "tokenizer_config.json"])
    spec = Z.ZooSpec(family="open_clip", arch="roberta-ViT-B-32", pretrained="laion2b_s12b_b32k",
                     revision=clip_commit, text_hub_id="FacebookAI/roberta-base", text_revision=text_commit)
    enc = Z.load_zoo_encoder(spec, name="m", cache_dir=tmp_path)
    assert enc.source.revision == clip_commit
    v = enc.encode_text(CAPTIONS)
    for view in enc.views:
        np.testing.assert_allclose(v[view], encoded["openclip_roberta"][1][view], atol=ATOL)
    no_text = spec.model_copy(update={"text_hub_id": None})
    with pytest.raises(ModelUnavailableError, match="models.m.text_hub_id"):
        Z.load_zoo_encoder(no_text, name="m", cache_dir=tmp_path)


# ----------------------------------------------------------------------------- settings
def test_spec_fields_per_family():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="arch"):
        Z.ZooSpec(family="open_clip", path="x")
    with pytest.raises(ValidationError, match="open_clip settings"):
        Z.ZooSpec(family="siglip", path="x", arch="ViT-B-32")
    with pytest.raises(ValidationError):
        Z.ZooSpec(family="clip", path="x")
    with pytest.raises(ValidationError, match="extra"):
        Z.ZooSpec(family="hf_text", path="x", pooling="mean")


def test_open_clip_arch_and_tag_checked():
    base = SPECS["openclip_vit"]
    with pytest.raises(Z.ZooSpecError, match="models.m.arch"):
        Z.load_zoo_encoder(Z.ZooSpec(**{**base, "arch": "ViT-Z-99"}), name="m")
    with pytest.raises(Z.ZooSpecError, match="models.m.pretrained"):
        Z.load_zoo_encoder(Z.ZooSpec(**{**base, "pretrained": "laion9b"}), name="m")
    with pytest.raises(Z.ZooSpecError, match="models.m.hub_id"):
        Z.load_zoo_encoder(Z.ZooSpec(**{**base, "hub_id": "laion/other"}), name="m")


def test_open_clip_incomplete_folders_name_the_path(tmp_path):
    no_weights = tmp_path / "w"
    shutil.copytree(MODELS / "openclip-vit-tiny", no_weights)
    (no_weights / "open_clip_model.safetensors").unlink()
    with pytest.raises(ModelUnavailableError, match="models.m.path.*no OpenCLIP weights"):
        Z.load_zoo_encoder(Z.ZooSpec(**{**SPECS["openclip_vit"], "path": str(no_weights)}), name="m")
    no_tower = tmp_path / "t"
    shutil.copytree(MODELS / "openclip-roberta-tiny", no_tower)
    (no_tower / "config.json").unlink()
    with pytest.raises(ModelUnavailableError, match="models.m.path.*config.json"):
        Z.load_zoo_encoder(Z.ZooSpec(**{**SPECS["openclip_roberta"], "path": str(no_tower)}), name="m")


# ----------------------------------------------------------------------------- transformers text encoders
@pytest.mark.parametrize("name", ["roberta", "xlm_roberta", "bert"])
def test_hf_text_views_by_hand(encoded, name):
    """One caption at a time (no padding) through AutoModel: plain mean / first token / pooler."""
    from transformers import AutoModel, AutoTokenizer

    _, v = encoded[name]
    folder = SPECS[name]["path"]
    model = AutoModel.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    assert ("trained" in v) == (name == "bert")
    for r, cap in enumerate(CAPTIONS):
        with torch.no_grad():
            out = model(**tok(cap, return_tensors="pt"), output_hidden_states=True)
        last = out.last_hidden_state[0].numpy()
        assert tok.convert_ids_to_tokens(tok(cap)["input_ids"])[0] in {"<s>", "[CLS]"}
        np.testing.assert_allclose(v["mean"][r], unit(last.mean(0)), atol=ATOL)
        np.testing.assert_allclose(v["cls"][r], unit(last[0]), atol=ATOL)
        np.testing.assert_allclose(v["layers"][0, r], out.hidden_states[0][0].numpy().mean(0), atol=ATOL)
        if name == "bert":  # tanh(dense(CLS)), the trained pooler
            dense = model.pooler.dense
            by_hand = np.tanh(last[0] @ dense.weight.detach().numpy().T + dense.bias.detach().numpy())
            np.testing.assert_allclose(v["trained"][r], unit(by_hand), atol=ATOL)


# ----------------------------------------------------------------------------- OpenCLIP
def open_clip_local_dir(name: str, dest: Path) -> str:
    """The fixture folder made loadable by OpenCLIP's own ``local-dir:`` route (absolute paths
    for the HF tower and the SimpleTokenizer merges written into its config)."""
    shutil.copytree(SPECS[name]["path"], dest)
    cfg = json.loads((dest / "open_clip_config.json").read_text())
    text = cfg["model_cfg"]["text_cfg"]
    if "hf_model_name" in text:
        text.update(hf_model_name=str(dest), hf_tokenizer_name=str(dest))
    else:
        text["tokenizer_kwargs"] = {"bpe_path": str(dest / "bpe_simple_vocab_16e6.txt.gz")}
    (dest / "open_clip_config.json").write_text(json.dumps(cfg))
    return f"local-dir:{dest}"


@pytest.mark.parametrize("name", OPEN_CLIP)
def test_open_clip_trained_is_encode_text_through_open_clips_own_loader(encoded, tmp_path, name):
    import open_clip

    enc, v = encoded[name]
    ref_name = open_clip_local_dir(name, tmp_path / "m")
    model, _, _ = open_clip.create_model_and_transforms(ref_name)
    tokens = open_clip.get_tokenizer(ref_name)(CAPTIONS)
    with torch.no_grad():
        ref = model.eval().encode_text(tokens, normalize=True).numpy()
    np.testing.assert_allclose(v["trained"], ref, atol=ATOL)
    assert v["trained"].shape[1] == 16 and v["mean"].shape[1] == 32


@pytest.mark.parametrize("name", ["openclip_roberta", "openclip_xlm_roberta"])
def test_open_clip_hf_tower_mean_and_layers_by_hand(encoded, name):
    """HF towers pool by mean over non-padding tokens: ``proj`` of the last pooled layer is the
    trained vector; the mean by hand over the tokens before padding."""
    enc, v = encoded[name]
    text = enc.model.text
    assert type(text.pooler).__name__ == "MeanPooler"
    with torch.no_grad():
        proj = text.proj(torch.from_numpy(v["layers"][-1])).numpy()
    np.testing.assert_allclose(unit(proj), v["trained"], atol=ATOL)
    for r, cap in enumerate(CAPTIONS):
        ids = enc.tokenizer([cap])
        n = int((ids != text.config.pad_token_id).sum())
        with torch.no_grad():
            last = text.transformer(input_ids=ids[:, :n]).last_hidden_state[0].numpy()
        np.testing.assert_allclose(v["mean"][r], unit(last.mean(0)), atol=1e-4)


def test_open_clip_openai_tower_layers_at_eos_and_mean_by_hand(encoded):
    """OpenAI-style tower: layers at the EOS (argmax) token, whose last entry through ``ln_final``
    and ``text_projection`` is the trained vector; mean by hand over start..EOS, block by block."""
    enc, v = encoded["openclip_vit"]
    m = enc.model
    assert m.text_pool_type == "argmax"
    with torch.no_grad():
        last = torch.from_numpy(v["layers"][-1])
        np.testing.assert_allclose(unit(m.ln_final(last) @ m.text_projection), v["trained"], atol=ATOL)
        for r, cap in enumerate(CAPTIONS):
            ids = enc.tokenizer([cap])
            eos = int(ids[0].argmax())
            assert ids[0, eos] == enc.tokenizer.eot_token_id and (ids[0, eos + 1:] == 0).all()
            x = m.token_embedding(ids) + m.positional_embedding
            np.testing.assert_allclose(v["layers"][0, r], x[0, eos].numpy(), atol=ATOL)
            for blk in m.transformer.resblocks:
                x = blk(x, attn_mask=m.attn_mask)
            np.testing.assert_allclose(v["mean"][r], unit(x[0, :eos + 1].mean(0).numpy()), atol=ATOL)


# ----------------------------------------------------------------------------- BLIP
def test_blip_trained_is_the_retrieval_models_text_feature(encoded):
    """``BlipForImageTextRetrieval(use_itm_head=False)``: its question_embeds give text_feat =
    normalize(text_proj(CLS)); the same vectors score the image as the model's own itm_score."""
    from transformers import AutoTokenizer, BlipForImageTextRetrieval

    _, v = encoded["blip"]
    folder = SPECS["blip"]["path"]
    model = BlipForImageTextRetrieval.from_pretrained(folder).eval()
    enc = AutoTokenizer.from_pretrained(folder)(CAPTIONS, padding=True, return_tensors="pt")
    pixels = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], pixel_values=pixels,
                    use_itm_head=False)
        text_feat = torch.nn.functional.normalize(model.text_proj(out.question_embeds[:, 0]), dim=-1)
        image_feat = torch.nn.functional.normalize(model.vision_proj(out.last_hidden_state[:, 0]), dim=-1)
    np.testing.assert_allclose(v["trained"], text_feat.numpy(), atol=ATOL)
    np.testing.assert_allclose(out.itm_score.numpy(), image_feat.numpy() @ v["trained"].T, atol=ATOL)
    mask = enc["attention_mask"].numpy()[..., None]
    by_hand = (out.question_embeds.numpy() * mask).sum(1) / mask.sum(1)
    np.testing.assert_allclose(v["mean"], unit(by_hand), atol=ATOL)


# ----------------------------------------------------------------------------- SigLIP
def test_siglip_trained_is_get_text_features_padded_to_64_without_mask(encoded):
    from transformers import AutoTokenizer, SiglipModel

    _, v = encoded["siglip"]
    folder = SPECS["siglip"]["path"]
    model = SiglipModel.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    enc = tok(CAPTIONS, padding="max_length", return_tensors="pt")
    assert enc["input_ids"].shape == (len(CAPTIONS), 64)
    with torch.no_grad():
        ref = model.get_text_features(input_ids=enc["input_ids"]).pooler_output.numpy()
        masked = model.get_text_features(**enc).pooler_output.numpy()  # not how SigLIP was trained
        hidden = model.text_model(input_ids=enc["input_ids"], output_hidden_states=True).hidden_states[-1].numpy()
    np.testing.assert_allclose(v["trained"], unit(ref), atol=ATOL)
    assert np.abs(unit(masked) - v["trained"]).max() > 1e-3
    for r in range(len(CAPTIONS)):
        ids = enc["input_ids"][r].tolist()
        eos = ids.index(tok.eos_token_id)  # the first </s> ends the text; padding repeats it
        np.testing.assert_allclose(v["mean"][r], unit(hidden[r, :eos + 1].mean(0)), atol=ATOL)

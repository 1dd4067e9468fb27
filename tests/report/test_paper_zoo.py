"""What the paper's zoo section reads (analysis/report/paper_data.py): which zoo conditions ran,
which are grounded, the zoo table, and the seed study's sections leaving the zoo out."""

from __future__ import annotations

import json

import pandas as pd

from analysis.report import paper_data as P


def sidecar(root, condition, **meta):
    d = root / "results/embeddings" / condition / "random/train"
    d.mkdir(parents=True)
    (d / "meta.json").write_text(json.dumps({"condition": condition, **meta}))


def test_seed_study_drops_zoo_conditions_and_comparisons_with_them():
    df = pd.DataFrame({"condition": ["sbert", "zoo_roberta", "zoo_blip_random", "clip_text"],
                       "comparison": ["sbert-clip_text", "sbert-bow", "zoo_bert-sbert", "x"]})
    out = P.seed_study(df)
    assert list(out["condition"]) == ["sbert", "clip_text"]
    pairs = pd.DataFrame({"condition_a": ["sbert", "sbert"], "condition_b": ["clip_text", "zoo_bert"]})
    assert len(P.seed_study(pairs)) == 1
    assert P.seed_study(None) is None


def test_zoo_run_kinds_and_table_from_sidecars(tmp_path, monkeypatch):
    monkeypatch.setenv(P.ROOT_ENV, str(tmp_path))
    P._lock.cache_clear()
    (tmp_path / "params.yaml").write_text(
        "models:\n  zoo:\n"
        "    roberta: {family: hf_text, hub_id: FacebookAI/roberta-base}\n"
        "    openclip_roberta: {family: open_clip, hub_id: laion/x, pretrained: laion2b_s12b_b32k}\n"
        "    siglip: {family: siglip, hub_id: google/siglip-base-patch16-224}\n"
        "conditions:\n  matched:\n    roberta: {before: zoo_roberta, after: zoo_openclip_roberta}\n"
        "probe_suite:\n  views: {zoo_roberta: mean, zoo_openclip_roberta: mean}\n")
    sidecar(tmp_path, "zoo_roberta", zoo={"family": "hf_text"}, revision="a" * 40,
            model_path="tests/fixtures/models/roberta-tiny", primary="mean")
    sidecar(tmp_path, "zoo_openclip_roberta", zoo={"family": "open_clip"}, revision="b" * 40,
            primary="trained", pooling={"trained": "encode_text", "mean": "mean"})
    sidecar(tmp_path, "zoo_roberta_random", zoo={"family": "hf_text"}, random_seed=0)
    sidecar(tmp_path, "sbert")
    sidecar(tmp_path, "clip_text")
    ran, not_run = P.zoo_conditions_run()
    assert ran == ["zoo_roberta", "zoo_openclip_roberta"] and not_run == ["zoo_siglip"]
    assert P.encoder_kinds() == {"clip_text": "grounded", "sbert": "text-only",
                                 "zoo_openclip_roberta": "grounded", "zoo_roberta": "text-only",
                                 "zoo_roberta_random": "random weights"}
    assert P.fixture_conditions() == ["zoo_roberta"]
    table = P.zoo_table().set_index("condition")
    assert table.loc["RoBERTa-base", "role"].startswith("before")
    assert table.loc["OpenCLIP RoBERTa tower", "role"].startswith("after")
    assert table.loc["OpenCLIP RoBERTa tower", "trained readout"] == "encode_text"  # the sidecar's
    assert table.loc["OpenCLIP RoBERTa tower", "probed"] == "`mean`"
    assert table.loc["SigLIP text", "embedded"] == "not run in this build"
    assert table.loc["SigLIP text", "probed"] == "`trained`"
    assert table.loc["SigLIP text", "role"] == "unmatched"
    assert table.loc["RoBERTa-base", "embedded"] == "`aaaaaaaaaaaa`"

"""A zoo condition end to end on fixture data: `embed` with a tiny fixture model (the VSR fixture's
tables and the controlled set), then the probe suite's unit for it, reading the model's primary
view by default (meta.json `primary`), like any text condition."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import yaml

from analysis.common import store
from analysis.embed import embed
from analysis.probes.probe_suite import main as suite_main
from tests.conftest import FIXTURES
from tests.probes.conftest import suite_dict
from tests.probes.test_probe_suite import SMALL, write_workspace

SPLITS = ["random/train", "random/test", "zeroshot/train", "zeroshot/test", "templates/spatial"]


def test_probe_suite_runs_a_zoo_unit(tmp_path, fixture_vsr, monkeypatch):
    write_workspace(tmp_path, fixture_vsr)  # tables, controlled set, unusable images (+ sbert/clip vectors)
    monkeypatch.chdir(tmp_path)
    spec = {"path": str(FIXTURES / "models" / "bert-tiny")}
    params = {
        "models": {"sbert": spec, "clip": spec, "random_seed": 0,
                   "zoo": {"bert": {"family": "hf_text", "hub_id": "google-bert/bert-base-uncased",
                                    "revision": "main", "path": spec["path"]}}},
        "embed": {"splits": SPLITS, "device": "cpu", "dtype": "float32", "batch_size": {"text": 32}},
        "conditions": {"text": ["sbert", "zoo_bert"]},
        "probe_suite": suite_dict(SMALL, {"t3": {"holdout": []}, "t1": {"ovr": False, "control_conditions": None},
                                          "layers": {"tasks": []}, "permutation": {"n": 0}}),
    }
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    assert embed.main(["--params", "p.yaml", "--condition", "zoo_bert", "--no-progress"]) == 0
    emb = store.load_embeddings("zoo_bert", "random", "train")
    assert emb.meta["primary"] == "trained" and emb.X.shape[1] == 32

    assert suite_main(["--params", "p.yaml", "--unit", "zoo_bert"]) == 0
    out = tmp_path / "results" / "probes" / "suite" / "zoo_bert"
    scores = pd.read_csv(out / "scores.csv")
    assert set(scores["condition"]) == {"zoo_bert"}
    assert {"T1", "T2_axis", "T2_polarity", "M_polarity", "C_polarity", "C_scene"} <= set(scores["task"])
    assert np.isfinite(scores["estimate"]).all()
    assert json.loads((out / "report.json").read_text())["unit"] == "zoo_bert"
    oof = pd.read_parquet(out / "oof" / "T2_polarity.parquet")
    assert set(oof["condition"]) == {"zoo_bert"} and len(oof)

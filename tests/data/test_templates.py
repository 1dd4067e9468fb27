"""The template generator: full coverage of (pair, relation, order), wording, and the stage."""

from __future__ import annotations

import itertools
from pathlib import Path

import pandas as pd
import pytest
import yaml

from analysis.common import store
from analysis.common.io import load_yaml
from analysis.data import templates
from analysis.data.relations import load_meta_categories
from tests.conftest import write_fixture_split

ROOT = Path(__file__).resolve().parents[2]
META, _ = load_meta_categories()
VSR_COLUMNS = ["row_id", "line", "image", "image_link", "caption", "label", "relation", "subject",
               "object", "parsed", "meta_category", "annotator_id", "reference_frame"]


def test_covers_every_pair_relation_order_exactly_once():
    nouns = ["person", "cat", "dog", "teddy bear"]
    pairs = templates.noun_pairs(nouns)
    assert pairs == list(itertools.combinations(nouns, 2))
    rels = ["above", "left of", "contains", "among"]
    df = templates.generate(pairs, rels, META)
    keys = list(zip(df["pair_id"], df["relation"], df["order"]))
    expected = {(f"{a}|{b}", r, o) for (a, b) in pairs for r in rels for o in ("AB", "BA")}
    assert len(keys) == len(set(keys)) == len(expected)
    assert set(keys) == expected
    assert df["caption"].is_unique
    assert df["row_id"].is_unique and df["line"].tolist() == list(range(1, len(df) + 1))


def test_wording_orders_and_columns():
    df = templates.generate([("cat", "dining table")], ["above", "contains", "has as a part"], META)
    assert list(df.columns) == VSR_COLUMNS + ["pair_id", "order"]
    by = df.set_index(["relation", "order"])
    assert by.loc[("above", "AB"), "caption"] == "The cat is above the dining table."
    assert by.loc[("above", "BA"), "caption"] == "The dining table is above the cat."
    assert by.loc[("contains", "AB"), "caption"] == "The cat contains the dining table."
    assert by.loc[("has as a part", "BA"), "caption"] == "The dining table has as a part the cat."
    assert by.loc[("above", "BA"), "subject"] == "dining table"
    assert by.loc[("above", "BA"), "object"] == "cat"
    assert df["label"].isna().all() and df["image"].isna().all() and df["image_link"].isna().all()
    assert df["parsed"].all()
    assert df["row_id"].iloc[0] == "templates/all/00001"
    assert by.loc[("above", "AB"), "meta_category"] == "Projective"
    assert by.loc[("contains", "AB"), "meta_category"] == "Topological"


def test_meta_category_decisions_follow_the_vsr_loader():
    df = templates.generate([("cat", "dog")], ["among", "congruent"], META)
    assert df.set_index("relation")["meta_category"].to_dict() == {"among": "Topological",
                                                                   "congruent": "Unallocated"}


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="no VSR meta-category"):
        templates.generate([("cat", "dog")], ["levitating over"], META)
    with pytest.raises(ValueError, match="duplicated nouns"):
        templates.noun_pairs(["cat", "dog", "cat"])


def test_stage_on_fixture(tmp_path, monkeypatch):
    """End to end: relations with >= min_count rows in the fixture's random/train table."""
    monkeypatch.chdir(tmp_path)
    table = write_fixture_split("random", "train")
    params = load_yaml((ROOT / "params.smoke.yaml").read_text())
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    assert templates.main(["--params", "p.yaml"]) == 0
    out = store.load_split("templates", "all")
    cfg = params["templates"]
    counts = table["relation"].value_counts()
    rels = set(counts[counts >= cfg["min_count"]].index)
    assert set(out["relation"]) == rels
    n_pairs = len(cfg["nouns"]) * (len(cfg["nouns"]) - 1) // 2
    assert len(out) == n_pairs * len(rels) * 2

"""The template generator: full coverage of (pair, relation, order), wording, and the stage."""

from __future__ import annotations

import itertools
from pathlib import Path

import pandas as pd
import pytest
import yaml

from analysis.common import store
from analysis.common.io import load_yaml
from analysis.common.params import SettingsError
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


SPATIAL = templates.SpatialSettings(
    poles={"vertical": ("up", "down"), "horizontal": ("left", "right")},
    pairs={"vertical": (("above", "below"), ("higher than", "lower than")),
           "horizontal": (("left of", "right of"), ("to the left of", "to the right of"),
                          ("on the left of", "on the right of"))})


def test_spatial_set_has_converses_and_swaps_with_the_right_scene():
    """Each (form pair, noun pair) gives 4 captions: a scene, its converse (other phrase,
    arguments reversed: same scene) and both swaps (same phrase, arguments reversed: opposite
    scene); the swap has the scene's bag of words, so scene cannot be read off the words."""
    pairs = templates.noun_pairs(["person", "cat", "dog"])
    df = templates.generate_spatial(pairs, SPATIAL, META)
    assert len(df) == (2 + 3) * len(pairs) * 4
    assert list(df.columns) == VSR_COLUMNS + ["pair_id", "order"] + templates.SPATIAL_EXTRA
    by = df.set_index(["relation", "subject", "object"])
    first = dict(p.split("|") for p in df["pair_id"])  # each pair's reference noun, drawn by seed
    a, b = next((x, y) for x, y in first.items() if {x, y} == {"person", "cat"})
    assert by.loc[("above", a, b), "caption"] == f"The {a} is above the {b}."
    assert by.loc[("above", a, b), "scene"] == 1      # a up of b
    assert by.loc[("below", b, a), "scene"] == 1      # converse: same scene
    assert by.loc[("above", b, a), "scene"] == 0      # swap: opposite scene
    assert by.loc[("below", a, b), "scene"] == 0
    assert by.loc[("to the right of", b, a), "scene"] == 1   # a left of b
    assert by.loc[("to the right of", b, a), "pole"] == "right"
    assert by.loc[("higher than", "cat", "dog"), "meta_category"] == templates.NOT_IN_VSR
    assert by.loc[("left of", "cat", "dog"), "meta_category"] == "Projective"
    # every caption's bag of words also occurs with the opposite scene
    bags = df.assign(bag=df["caption"].str.lower().str.findall(r"\w+").map(lambda w: tuple(sorted(w))))
    assert (bags.groupby("bag")["scene"].nunique() == 2).all()
    # the scene is balanced within every noun pair, phrase and axis
    assert (df.groupby(["pair_id", "relation"])["scene"].mean() == 0.5).all()
    assert df["row_id"].str.startswith("templates/spatial/").all() and df["row_id"].is_unique
    # the reference noun is drawn per pair: not always the first listed
    many = templates.noun_pairs([f"n{i}" for i in range(8)])
    drawn = templates.generate_spatial(many, SPATIAL, META)["pair_id"].drop_duplicates()
    kept = sum(f"{x}|{y}" in set(drawn) for x, y in many)
    assert 0 < kept < len(many) and len(drawn) == len(many)


def test_spatial_settings_errors_name_the_phrases():
    twice = SPATIAL.model_copy(update={"pairs": {**SPATIAL.pairs, "vertical": (
        ("above", "below"), ("above", "under"))}})
    with pytest.raises(ValueError, match=r"phrases \['above'\] appear in more than one pair"):
        templates.generate_spatial([("cat", "dog")], twice, META)
    one = SPATIAL.model_copy(update={"pairs": {**SPATIAL.pairs, "vertical": (("above", "below"),)}})
    with pytest.raises(ValueError, match=r"axes \['vertical'\] have fewer than two pairs"):
        templates.generate_spatial([("cat", "dog")], one, META)


def test_stage_writes_the_spatial_set(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_fixture_split("random", "train")
    params = load_yaml((ROOT / "params.smoke.yaml").read_text())
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    assert templates.main(["--params", "p.yaml"]) == 0
    spatial = store.load_split(*store.parse_split_key(store.SPATIAL_KEY))
    cfg = params["templates"]["spatial"]
    nouns = params["templates"]["nouns"]
    n_pairs = len(nouns) * (len(nouns) - 1) // 2
    assert len(spatial) == sum(len(p) for p in cfg["pairs"].values()) * n_pairs * 4
    assert set(spatial["axis"]) == set(cfg["pairs"])
    params["templates"]["spatial"]["pairs"]["depth"] = [["behind", "in front of"], ["behind", "ahead of"]]
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(SettingsError, match=r"p.yaml: templates.spatial.pairs: phrases \['behind'\]"):
        templates.main(["--params", "p.yaml"])

"""The meta-category dictionary and its decisions; which relations are frequent."""

from __future__ import annotations

from collections import Counter

import pandas as pd
import pytest

from analysis.data.relations import (META_DICT_PATH, MetaDictionaryError, frequent_relations,
                                     load_meta_categories, parse_meta_dictionary, relation_counts)

META, DECISIONS = load_meta_categories()


def test_meta_dictionary_keeps_first_listing_and_adds_documented_extras():
    mapping, decisions = parse_meta_dictionary("A: x, y \nB: y, z\n\n")
    assert mapping["x"] == "A" and mapping["y"] == "A" and mapping["z"] == "B"
    assert decisions["y"]["listed_as"] == ["A", "B"] and decisions["y"]["chosen"] == "A"
    assert mapping["congruent"] == "Unallocated" and decisions["congruent"]["listed_as"] == []


def test_meta_dictionary_rejects_a_line_without_category():
    with pytest.raises(MetaDictionaryError, match="line 2"):
        parse_meta_dictionary("A: x\njust words\n")


def test_shipped_dictionary_decisions():
    assert META["among"] == "Topological"
    assert DECISIONS["among"]["listed_as"] == ["Topological", "Unallocated"]
    assert META["congruent"] == "Unallocated"
    assert META["down from"] == "Directional"      # trailing space in the file
    assert META["far away from"] == "Proximity"
    assert set(DECISIONS) == {"among", "congruent"}
    # 71 listings (10+16+4+12+5+18+6), 70 distinct (among twice), plus congruent
    assert len(META) == 71
    assert Counter(META.values()) == {"Adjacency": 10, "Directional": 16, "Orientation": 4,
                                      "Projective": 12, "Proximity": 5, "Topological": 18,
                                      "Unallocated": 6}


@pytest.mark.integration
def test_shipped_dictionary_is_the_upstream_file(shared_vsr):
    assert META_DICT_PATH.read_bytes() == (shared_vsr / "rel_meta_category_dict.txt").read_bytes()


# ---------------------------------------------------------------- validate_row


def test_frequent_relations_threshold_and_orders():
    s = pd.Series(["a"] * 5 + ["b"] * 3 + ["c"] * 5 + ["d"])
    assert list(relation_counts(s, 3).index) == ["a", "c", "b"]  # most frequent first, ties by name
    assert list(relation_counts(s, 3)) == [5, 5, 3]
    assert frequent_relations(s, 3) == ["a", "b", "c"]  # by name
    assert frequent_relations(s, 6) == [] and relation_counts(s, 6).empty

"""Relations of VSR: the authors' meta-category dictionary (with the two decisions it needs)
and which relations are frequent enough to probe. One home for both, so the tasks, the template
set, the geometry and the paper agree.

The dictionary (`analysis/data/resources/vsr_rel_meta_category_dict.txt`, verbatim from the VSR
repository) lists `among` twice (Topological and Unallocated): its first listing is kept,
because Unallocated is the authors' catch-all for relations they did not place. It lacks
`congruent` (one row, random/dev), mapped to Unallocated, the authors' own bin for relations
outside their taxonomy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from analysis.common.errors import UserError

META_DICT_PATH = Path(__file__).parent / "resources" / "vsr_rel_meta_category_dict.txt"

DUPLICATE_REASONS = {
    "among": "listed under Topological and Unallocated; the first listing is kept, since "
             "Unallocated is the authors' catch-all for relations they did not place",
}
# Relations the dictionary lacks, with the category we give them and why (see module docstring).
EXTRA_META_CATEGORIES = {
    "congruent": ("Unallocated", "missing from the authors' dictionary; Unallocated is their bin "
                                 "for relations outside the taxonomy"),
}


class MetaDictionaryError(UserError, ValueError):
    """The meta-category dictionary is malformed; the message names the line."""


def parse_meta_dictionary(text: str) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """Relation -> meta-category from the authors' ``Category: rel, rel, ...`` lines, plus the
    decisions taken: duplicates keep their first listing, then `EXTRA_META_CATEGORIES` apply."""
    mapping: dict[str, str] = {}
    listings: dict[str, list[str]] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        category, sep, rels = raw.partition(":")
        if not sep or not category.strip():
            raise MetaDictionaryError(f"meta-category dictionary line {n}: expected 'Category: rel, ...'")
        for rel in (r.strip() for r in rels.split(",")):
            if rel:
                listings.setdefault(rel, []).append(category.strip())
                mapping.setdefault(rel, category.strip())
    decisions: dict[str, dict[str, Any]] = {
        rel: {"listed_as": cats, "chosen": cats[0],
              "reason": DUPLICATE_REASONS.get(rel, "listed more than once; first listing kept")}
        for rel, cats in listings.items() if len(cats) > 1
    }
    for rel, (category, reason) in EXTRA_META_CATEGORIES.items():
        if rel not in mapping:
            mapping[rel] = category
            decisions[rel] = {"listed_as": [], "chosen": category, "reason": reason}
    return mapping, decisions


def load_meta_categories(path: Path = META_DICT_PATH) -> tuple[dict[str, str], dict[str, dict]]:
    return parse_meta_dictionary(path.read_text())


def relation_counts(relations: pd.Series, min_count: int) -> pd.Series:
    """Rows per relation for relations with at least ``min_count`` rows, most frequent first
    (ties by name): the order the template set is generated in."""
    counts = relations.value_counts()
    keep = counts[counts >= min_count]
    order = sorted(keep.index, key=lambda r: (-keep[r], r))
    return keep.loc[order]


def frequent_relations(relations: pd.Series, min_count: int) -> list[str]:
    """The relations with at least ``min_count`` rows, sorted by name (the class order of the
    relation-identity probes)."""
    return sorted(relation_counts(relations, min_count).index)

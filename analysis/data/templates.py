"""Stage `templates`: the controlled template set "The {A} is {relation} the {B}." for every
noun pair x relation x argument order, so relation geometry can be read with the nouns balanced.

Writes ``data/templates/all.parquet`` with the columns of a normalized VSR table (label and image
fields null) plus ``pair_id`` and ``order`` ("AB": A is the subject; "BA": B is).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence

import pandas as pd

from analysis.common.cli import stage_parser
from analysis.common.io import replace_dir, write_parquet
from analysis.common.params import Settings, SettingsError, load_params, stage_settings
from analysis.common.store import (TEMPLATE_EXTRA, TEMPLATES_KEY, VSR_COLUMNS, load_split,
                                   parse_split_key, table_path)
from analysis.data.relations import load_meta_categories, relation_counts

log = logging.getLogger("templates")

COLUMNS = [*VSR_COLUMNS, *TEMPLATE_EXTRA]


class TemplatesSettings(Settings):
    """Section `templates`: which relations and noun pairs, and the caption templates."""

    variant: str
    """VSR variant whose frequent relations are used (unless `relations` is given)"""
    split: str
    """... and its split"""
    min_count: int
    """relations with at least this many rows in variant/split"""
    relations: tuple[str, ...] | None = None
    """an explicit list of relations (overrides min_count)"""
    nouns: tuple[str, ...]
    """COCO categories; every unordered pair, both orders"""
    pairs: tuple[tuple[str, ...], ...] | None = None
    """explicit [[A, B], ...] noun pairs (overrides nouns)"""
    template: str
    """caption template with {A}, {relation}, {B}"""
    verbal_template: str
    """the template for relations that are verbs (no "is")"""
    verbal: tuple[str, ...] = ()
    """relations that take `verbal_template`"""


def noun_pairs(nouns: Sequence[str]) -> list[tuple[str, str]]:
    """Every unordered pair of distinct nouns, in the listed order (A before B)."""
    if len(set(nouns)) != len(nouns):
        dup = sorted({n for n in nouns if list(nouns).count(n) > 1})
        raise ValueError(f"templates.nouns: duplicated nouns {dup}")
    return list(itertools.combinations(nouns, 2))


def render(template: str, a: str, relation: str, b: str) -> str:
    return template.format(A=a, B=b, relation=relation)


def generate(
    pairs: Sequence[tuple[str, str]],
    relations: Sequence[str],
    meta: dict[str, str],
    template: str = "The {A} is {relation} the {B}.",
    verbal_template: str = "The {A} {relation} the {B}.",
    verbal: Sequence[str] = ("contains", "has as a part", "consists of"),
) -> pd.DataFrame:
    """One row per (relation, noun pair, order), relation-major; verbal relations ("contains")
    take ``verbal_template`` (no "is")."""
    missing = [r for r in relations if r not in meta]
    if missing:
        raise ValueError(f"templates: relations {missing} have no VSR meta-category")
    if len(set(relations)) != len(relations):
        raise ValueError(f"templates.relations: duplicates in {list(relations)}")
    verbal = set(verbal)
    rows = []
    for rel in relations:
        tmpl = verbal_template if rel in verbal else template
        for a, b in pairs:
            for order, (subj, obj) in (("AB", (a, b)), ("BA", (b, a))):
                rows.append({"caption": render(tmpl, subj, rel, obj), "relation": rel,
                             "subject": subj, "object": obj, "pair_id": f"{a}|{b}", "order": order,
                             "meta_category": meta[rel]})
    df = pd.DataFrame(rows)
    variant, split = parse_split_key(TEMPLATES_KEY)
    df.insert(0, "line", range(1, len(df) + 1))
    df.insert(0, "row_id", [f"{variant}/{split}/{n:05d}" for n in df["line"]])
    for col in ("image", "image_link", "reference_frame"):
        df[col] = pd.Series([None] * len(df), dtype="string")
    for col in ("label", "annotator_id"):
        df[col] = pd.array([pd.NA] * len(df), dtype="Int64")
    df["parsed"] = True
    return df[COLUMNS]


def main(argv: list[str] | None = None) -> int:
    args = stage_parser("templates", __doc__.splitlines()[0]).parse_args(argv)
    cfg = stage_settings(TemplatesSettings, load_params(args.params), "templates", args.params)
    meta, _ = load_meta_categories()
    if cfg.relations:
        relations = list(cfg.relations)
        log.info("relations: %d from templates.relations", len(relations))
    else:
        vsr = load_split(cfg.variant, cfg.split)
        relations = list(relation_counts(vsr["relation"], cfg.min_count).index)
        log.info("relations: %d with >= %d rows in %s/%s", len(relations), cfg.min_count,
                 cfg.variant, cfg.split)
        if not relations:
            raise SettingsError(f"{args.params}: templates.min_count={cfg.min_count} keeps no relation")
    pairs = [tuple(p) for p in cfg.pairs] if cfg.pairs else noun_pairs(cfg.nouns)
    for p in pairs:
        if len(p) != 2 or p[0] == p[1]:
            raise SettingsError(f"{args.params}: templates.pairs entry {list(p)} is not two distinct nouns")
    df = generate(pairs, relations, meta, cfg.template, cfg.verbal_template, cfg.verbal)
    out = table_path(*parse_split_key(TEMPLATES_KEY))
    with replace_dir(out.parent) as folder:
        write_parquet(folder / out.name, df)
    log.info("wrote %s: %d rows = %d pairs x %d relations x 2 orders", out, len(df), len(pairs),
             len(relations))
    return 0

"""Stage `templates`: the controlled template set "The {A} is {relation} the {B}." for every
noun pair x relation x argument order, so relation geometry can be read with the nouns balanced;
and the controlled spatial set, form-matched antonym pairs per axis (phrasings in and beyond
VSR) with converse and swapped-argument items, for probes that no word or noun can pass.

Writes ``data/templates/all.parquet`` with the columns of a normalized VSR table (label and image
fields null) plus ``pair_id`` and ``order`` ("AB": A is the subject; "BA": B is), and
``data/templates/spatial.parquet`` with those plus SPATIAL_EXTRA (`generate_spatial`).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis.common.cli import stage_parser
from analysis.common.io import replace_dir, write_parquet
from analysis.common.params import Settings, SettingsError, load_params, stage_settings
from analysis.common.store import (SPATIAL_KEY, TEMPLATE_EXTRA, TEMPLATES_KEY, VSR_COLUMNS,
                                   load_split, parse_split_key, table_path)
from analysis.data.relations import load_meta_categories, relation_counts

log = logging.getLogger("templates")

COLUMNS = [*VSR_COLUMNS, *TEMPLATE_EXTRA]
# The spatial set's own columns: the axis, the form pair ("above / below"), the caption's pole
# ("up"), and the scene: 1 when the pair's first noun (pair_id "A|B") is at the axis's first
# pole of the second, whichever noun is the subject ("A above B" and its converse "B below A":
# 1; the swap "B above A": 0). `scene` cannot be read from the caption's bag of words.
SPATIAL_EXTRA = ["axis", "form_pair", "pole", "scene"]
NOT_IN_VSR = "not in VSR"  # meta_category of a phrasing VSR does not use


class SpatialSettings(Settings):
    """Subsection `templates.spatial`: the controlled spatial set (same nouns as the template set)."""

    poles: dict[str, tuple[str, str]]
    """axis -> its two poles, first pole first (e.g. vertical: [up, down])"""
    pairs: dict[str, tuple[tuple[str, str], ...]]
    """axis -> form-matched antonym pairs [first-pole phrase, second-pole phrase]; no phrase in
    two pairs, so holding out a pair holds out its phrases"""
    template: str = "The {A} is {relation} the {B}."
    """caption template with {A}, {relation}, {B}"""
    seed: int = 0
    """which noun of each pair is its first (the scene's reference), drawn per pair: were it
    the first listed noun, a noun's identity would predict it and a bag of words could beat
    chance on the scene target"""


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
    spatial: SpatialSettings | None = None
    """the controlled spatial set (null: not written)"""


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
    return as_vsr_table(rows, TEMPLATES_KEY)


def as_vsr_table(rows: list[dict], key: str, extra: Sequence[str] = ()) -> pd.DataFrame:
    """Generated caption rows as a table with VSR's columns (row ids under ``key``, no image or
    label), so every stage reads it as it reads a VSR split; ``extra`` columns are kept."""
    df = pd.DataFrame(rows)
    variant, split = parse_split_key(key)
    df.insert(0, "line", range(1, len(df) + 1))
    df.insert(0, "row_id", [f"{variant}/{split}/{n:05d}" for n in df["line"]])
    for col in ("image", "image_link", "reference_frame"):
        df[col] = pd.Series([None] * len(df), dtype="string")
    for col in ("label", "annotator_id"):
        df[col] = pd.array([pd.NA] * len(df), dtype="Int64")
    df["parsed"] = True
    return df[[*COLUMNS, *extra]]


def check_spatial(cfg: SpatialSettings) -> None:
    """Every axis has poles and at least two pairs; no phrase is used twice."""
    if set(cfg.poles) != set(cfg.pairs):
        raise ValueError(f"templates.spatial: axes of poles {sorted(cfg.poles)} and pairs "
                         f"{sorted(cfg.pairs)} differ")
    phrases = [w for ps in cfg.pairs.values() for p in ps for w in p]
    dup = sorted({w for w in phrases if phrases.count(w) > 1})
    if dup:
        raise ValueError(f"templates.spatial.pairs: phrases {dup} appear in more than one pair "
                         "(a held-out pair would then be seen in training)")
    short = [a for a, ps in cfg.pairs.items() if len(ps) < 2]
    if short:
        raise ValueError(f"templates.spatial.pairs: axes {short} have fewer than two pairs (none "
                         "could be held out)")


def generate_spatial(pairs: Sequence[tuple[str, str]], cfg: SpatialSettings,
                     meta: dict[str, str]) -> pd.DataFrame:
    """One row per (axis, form pair, phrase, noun pair, argument order), axis-major: each noun
    pair in each form pair gives a scene, its converse (the other phrase, arguments reversed)
    and their swaps (arguments reversed, same phrase). Each pair's first noun is drawn by
    ``cfg.seed`` (`SpatialSettings.seed`)."""
    check_spatial(cfg)
    flip = np.random.default_rng(cfg.seed).random(len(pairs)) < 0.5
    pairs = [(b, a) if f else (a, b) for (a, b), f in zip(pairs, flip)]
    rows = []
    for axis, form_pairs in cfg.pairs.items():
        first, second = cfg.poles[axis]
        for fp in form_pairs:
            for phrase, pole in zip(fp, (first, second)):
                for a, b in pairs:
                    for order, (subj, obj) in (("AB", (a, b)), ("BA", (b, a))):
                        # A is at `first` of B: "A <first> B" or "B <second> A"
                        scene = int((order == "AB") == (pole == first))
                        rows.append({"caption": render(cfg.template, subj, phrase, obj),
                                     "relation": phrase, "subject": subj, "object": obj,
                                     "pair_id": f"{a}|{b}", "order": order,
                                     "meta_category": meta.get(phrase, NOT_IN_VSR), "axis": axis,
                                     "form_pair": f"{fp[0]} / {fp[1]}", "pole": pole,
                                     "scene": scene})
    return as_vsr_table(rows, SPATIAL_KEY, SPATIAL_EXTRA)


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
    spatial = None
    if cfg.spatial is not None:
        try:
            spatial = generate_spatial(pairs, cfg.spatial, meta)
        except ValueError as exc:
            raise SettingsError(f"{args.params}: {exc}") from None
    with replace_dir(out.parent) as folder:
        write_parquet(folder / out.name, df)
        if spatial is not None:
            write_parquet(folder / table_path(*parse_split_key(SPATIAL_KEY)).name, spatial)
    log.info("wrote %s: %d rows = %d pairs x %d relations x 2 orders", out, len(df), len(pairs),
             len(relations))
    if spatial is not None:
        log.info("wrote %s: %d rows (%s form pairs) x %d noun pairs x 2 phrases x 2 orders",
                 table_path(*parse_split_key(SPATIAL_KEY)), len(spatial),
                 {a: len(p) for a, p in cfg.spatial.pairs.items()}, len(pairs))
    return 0

"""Probing tasks as data: which rows, which labels, which CV groups and folds.

T1 relation identity (multiclass over relations with >= min_count rows, and one-vs-rest per
relation; folds grouped by noun pair). T2 spatial axis and polarity, trained on some relation
words and tested on held-out words of the same meaning. T3 VSR's True/False label per relation
and per meta-category. Control tasks (Hewitt & Liang 2019) and within-group permutations.
Folds depend only on the table, never on the embeddings, so every condition is scored on
identical rows and folds (paired comparisons).
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.data.groups import (bounded_image_caption_groups, caption_groups, image_caption_groups,
                                   noun_pair_groups, size_summary)
from analysis.data.relations import frequent_relations as _frequent_relations
from analysis.probes.folds import (Fold, grouped_kfold, nested_cv, word_assignments, word_relabelings,
                                   word_split)
from analysis.probes.settings import (ControlledSettings, CVSettings, MatchedSettings, T1Settings,
                                     T2Settings, T3Settings)

log = logging.getLogger("tasks")


@dataclass
class Problem:
    """One probe target: rows (positions into the table), labels, CV groups, folds (positions
    into ``rows``). ``n_classes`` 2 = binary probe; more = one multinomial probe."""

    task: str
    target: str
    rows: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    n_classes: int
    folds: list[Fold]
    classes: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)  # reported in report.json (JSON-friendly)
    words: np.ndarray | None = None  # per row, for held-out-word problems (their null relabels words)


def frequent_relations(table: pd.DataFrame, min_count: int) -> list[str]:
    """The relations of T1 (sorted by name); fewer than two is an error."""
    kept = _frequent_relations(table["relation"], min_count)
    if len(kept) < 2:
        raise ValueError(f"only {len(kept)} relations have >= min_count={min_count} rows")
    return kept


def control_labels(y: np.ndarray, groups: np.ndarray, seed: int) -> np.ndarray:
    """Hewitt & Liang control task: a random label fixed per group (noun pair), assigned so
    the row-level class counts match ``y``'s (greedy quota filling over groups in random
    order: each group takes the class furthest below its quota)."""
    y = np.asarray(y)
    classes, counts = np.unique(y, return_counts=True)
    codes, uniq = pd.factorize(pd.Series(groups))
    sizes = np.bincount(codes)
    rng = np.random.default_rng(seed)
    remaining = counts.astype(float)
    label_of = np.empty(len(uniq), dtype=y.dtype)
    for g in rng.permutation(len(uniq)):
        c = int(np.argmax(remaining / counts + rng.random(len(classes)) * 1e-9))
        label_of[g] = classes[c]
        remaining[c] -= sizes[g]
    return label_of[codes]


def _cv(y, groups, cv: CVSettings, where: str) -> list[Fold]:
    return nested_cv(y, groups, n_splits=cv.n_splits, n_repeats=cv.n_repeats,
                     inner_splits=cv.inner_splits, seed=cv.seed, where=where)


def t1_problems(table: pd.DataFrame, cfg: T1Settings, cv: CVSettings, control_seed: int | None = None,
                ovr: bool | str = True) -> list[Problem]:
    """Relation identity over rows of relations with >= min_count rows: one multinomial
    problem (target ``__all__``) and, with ``ovr`` true / "fit", one binary probe per relation
    on the same noun-pair-grouped folds; with "derived", per-relation one-vs-rest rows are
    read off the multinomial probe instead (no extra fits). With ``control_seed``, the control task: labels fixed per noun pair at random
    (same class balance), folds grouped by caption so noun pairs recur across the split, as in
    Hewitt & Liang where word types recur between train and test."""
    rels = frequent_relations(table, cfg.min_count)
    keep = np.flatnonzero(table["relation"].isin(rels).to_numpy())
    sub = table.iloc[keep]
    pairs, unparsed = noun_pair_groups(sub)
    y = pd.Categorical(sub["relation"], categories=rels).codes.astype(int)
    task = "T1"
    groups = pairs
    if control_seed is not None:
        y = control_labels(y, pairs, control_seed)
        groups = caption_groups(sub)
        task = "T1_control"
    folds = _cv(y, groups, cv, task)
    info = {"unparsed_noun_pairs": unparsed, "derived_ovr": ovr == "derived"}
    probs = [Problem(task, "__all__", keep, y, groups, len(rels), folds, list(rels), info)]
    if ovr is True or ovr == "fit":
        for k, rel in enumerate(rels):
            probs.append(Problem(f"{task}_ovr", rel, keep, (y == k).astype(int), groups, 2, folds,
                                 ["other", rel], info))
    return probs


def axis_words(word_groups: dict[str, dict[str, list[str]]]) -> dict[str, list[str]]:
    """Axis -> every relation word of its poles."""
    return {axis: [w for ws in poles.values() for w in ws] for axis, poles in word_groups.items()}


def held_out_word_problem(task: str, target: str, rows: np.ndarray, words: np.ndarray,
                          pairs: np.ndarray, classes: dict[str, list[str]], cfg: T2Settings,
                          cv: CVSettings) -> Problem:
    """One held-out-word problem: labels from ``classes`` (class -> its words), one fold per
    held-out-word assignment (repeat = assignment index), each split keeping every noun pair on
    one side. ``rows`` index the table; ``words`` and ``pairs`` are per row."""
    names = list(classes)
    word_to_class = {w: i for i, c in enumerate(names) for w in classes[c]}
    y = np.array([word_to_class[w] for w in words])
    folds, splits = [], []
    for a, held in enumerate(word_assignments(classes, cfg.max_assignments, cv.seed)):
        fold, info = word_split(words, held, classes, pairs, inner_splits=cv.inner_splits,
                                y=y, seed=cv.seed + a, where=f"{task} {target} {held}")
        fold.repeat, fold.fold = a, 0
        folds.append(fold)
        splits.append(info)
    info = {"assignments": len(folds), "classes": {c: list(ws) for c, ws in classes.items()},
            "splits": splits}
    return Problem(task, target, rows, y, pairs, len(names), folds, names, info, words=words)


def t2_problems(table: pd.DataFrame, cfg: T2Settings, cv: CVSettings) -> list[Problem]:
    """Axis (multinomial over axes) and polarity within each axis (binary), each evaluated on
    every held-out-word assignment (one word per class held out; repeat = assignment index)."""
    groups_cfg = {axis: {pole: list(ws) for pole, ws in poles.items()}
                  for axis, poles in cfg.word_groups.items()}
    pairs_all, _ = noun_pair_groups(table)
    rel = table["relation"].to_numpy()
    missing = sorted({w for poles in groups_cfg.values() for ws in poles.values() for w in ws}
                     - set(rel))
    if missing:
        log.warning("T2 word groups: relations %s have no rows in this split", missing)
    out = []

    skipped = {}

    def build(task, target, classes: dict[str, list[str]]):
        classes = {c: [w for w in ws if (rel == w).any()] for c, ws in classes.items()}
        short = [c for c, ws in classes.items() if len(ws) < 2]
        if short and (task != "T2_axis" or len(classes) - len(short) < 2):
            skipped[f"{task}:{target}"] = f"classes {short} have < 2 words with rows"
            log.warning("T2 %s %s skipped: classes %s have fewer than two words with rows, so "
                        "no word can be held out", task, target, short)
            return
        if short:
            skipped[f"{task}:{target}"] = f"classes {short} dropped (< 2 words with rows)"
            log.warning("T2 axis task: classes %s dropped (fewer than two words with rows)", short)
            classes = {c: ws for c, ws in classes.items() if c not in short}
        rows = np.flatnonzero(np.isin(rel, [w for ws in classes.values() for w in ws]))
        out.append(held_out_word_problem(task, target, rows, rel[rows], pairs_all[rows], classes,
                                         cfg, cv))

    build("T2_axis", "__all__", axis_words(groups_cfg))
    for axis, poles in groups_cfg.items():
        if len(poles) != 2:
            raise ValueError(f"probe_suite.word_groups.{axis}: polarity needs exactly two poles, "
                             f"got {list(poles)}")
        build("T2_polarity", axis, poles)
    if out:
        out[0].info["skipped"] = skipped
    return out


def matched_problems(table: pd.DataFrame, cfg: MatchedSettings, cv: CVSettings) -> list[Problem]:
    """Matched polarity (``M_polarity``), one binary problem per axis (pole A vs pole B): each
    fold trains on the rows of ``cfg.train_pairs`` whole antonym pairs and tests on the rows of
    another whole pair (every rotation; repeat = split index), every noun pair on one side only.
    A pair whose words have no rows is an error naming it."""
    rel = table["relation"].to_numpy()
    pairs_all, _ = noun_pair_groups(table)
    out = []
    for axis, pairs in cfg.pairs.items():
        empty = [w for p in pairs for w in p if not (rel == w).any()]
        if empty:
            raise ValueError(f"probe_suite.matched.pairs.{axis}: relations {empty} have no rows "
                             "in this split")
        if len(pairs) <= cfg.train_pairs:
            raise ValueError(f"probe_suite.matched.pairs.{axis}: {len(pairs)} pairs leave none to "
                             f"test after training on train_pairs={cfg.train_pairs}")
        classes = {"A": [p[0] for p in pairs], "B": [p[1] for p in pairs]}
        rows = np.flatnonzero(np.isin(rel, classes["A"] + classes["B"]))
        words = rel[rows]
        y = np.isin(words, classes["B"]).astype(int)
        folds, splits = [], []
        for test in range(len(pairs)):
            others = [k for k in range(len(pairs)) if k != test]
            for train in itertools.combinations(others, cfg.train_pairs):
                held = {"A": pairs[test][0], "B": pairs[test][1]}
                train_words = {w for k in train for w in pairs[k]}
                where = f"M_polarity {axis} train {[pairs[k] for k in train]} test {pairs[test]}"
                fold, info = word_split(words, held, classes, pairs_all[rows],
                                        inner_splits=cv.inner_splits, y=y,
                                        seed=cv.seed + len(folds), where=where,
                                        train_words=train_words)
                fold.repeat, fold.fold = len(folds), 0
                folds.append(fold)
                splits.append({**info, "split": len(splits), "test_pair": list(pairs[test]),
                               "train_pairs": [list(pairs[k]) for k in train]})
        names = [f"{pairs[0][0]} ...", f"{pairs[0][1]} ..."]
        info = {"assignments": len(folds), "pairs": [list(p) for p in pairs],
                "classes": classes, "splits": splits}
        out.append(Problem("M_polarity", axis, rows, y, pairs_all[rows], 2, folds, names, info,
                           words=words))
    return out


def crossed_folds(forms: np.ndarray, nouns: np.ndarray, y: np.ndarray, form_pairs: list[str],
                  train_pairs: int, noun_folds: int, seed: int, where: str,
                  train_sets: str = "all") -> tuple[list[Fold], list[dict]]:
    """Held-out form pairs crossed with noun-pair folds: split r trains on ``train_pairs`` form
    pairs and tests on another (every pair tested; with ``train_sets`` "all" every choice of
    training pairs, with "cyclic" the next pairs in order; repeat = r), its test rows dealt into
    ``noun_folds`` folds by noun pair, each trained on the training pairs' rows of the *other*
    noun pairs, so a test row shares neither its phrase nor its noun pair with any training row.
    Inner splits (choosing C) hold out one training form pair at a time."""
    folds, splits = [], []
    for test in range(len(form_pairs)):
        others = [k for k in range(len(form_pairs)) if k != test]
        K = len(form_pairs)
        choices = (itertools.combinations(others, train_pairs) if train_sets == "all" else
                   [tuple(sorted((test + j) % K for j in range(1, train_pairs + 1)))])
        for train in choices:
            r = len(splits)
            is_test = forms == form_pairs[test]
            test_rows = np.flatnonzero(is_test)
            here = f"{where} train {[form_pairs[k] for k in train]} test {form_pairs[test]}"
            for f, (_, te) in enumerate(grouped_kfold(y[test_rows], nouns[test_rows], noun_folds,
                                                      seed + r, here)):
                te = test_rows[te]
                held_nouns = np.unique(nouns[te])
                tr = np.flatnonzero(np.isin(forms, [form_pairs[k] for k in train])
                                    & ~np.isin(nouns, held_nouns))
                inner = [(tr[forms[tr] != form_pairs[k]], tr[forms[tr] == form_pairs[k]])
                         for k in train]
                for side, idx in (("training", tr), ("test", te)):
                    if np.unique(y[idx]).size < 2:
                        raise ValueError(f"{here} noun fold {f}: the {side} side has one class")
                folds.append(Fold(r, f, tr, te, inner))
            splits.append({"split": r, "test_pair": form_pairs[test],
                           "train_pairs": [form_pairs[k] for k in train],
                           "test_rows": int(is_test.sum()), "noun_folds": noun_folds})
    return folds, splits


def controlled_problems(table: pd.DataFrame, cfg: ControlledSettings, cv: CVSettings) -> list[Problem]:
    """The controlled spatial set's probes (`ControlledSettings`): per target and axis, one
    binary problem whose groups are noun pairs and whose splits are `crossed_folds`. Rows of
    every axis must exist; an axis with too few form pairs for ``train_pairs`` is an error."""
    missing = [c for c in ("axis", "form_pair", "pole", "scene", "pair_id") if c not in table]
    if missing:
        raise ValueError(f"controlled spatial set: columns {missing} missing (re-run the "
                         "templates stage)")
    out = []
    for target in cfg.targets:
        for axis, part in table.groupby("axis", sort=False):
            rows = part.index.to_numpy()
            forms = part["form_pair"].to_numpy()
            form_pairs = list(pd.unique(forms))
            if len(form_pairs) <= cfg.train_pairs:
                raise ValueError(f"probe_suite.controlled.train_pairs={cfg.train_pairs}: axis "
                                 f"{axis} has {len(form_pairs)} form pairs, none left to test")
            poles = list(pd.unique(part["pole"]))
            if target == "scene":
                y, classes = part["scene"].to_numpy(int), ["no", "yes"]
            else:
                y, classes = (part["pole"].to_numpy() == poles[1]).astype(int), poles
            nouns = part["pair_id"].to_numpy()
            task = f"C_{target}"
            folds, splits = crossed_folds(forms, nouns, y, form_pairs, cfg.train_pairs,
                                          cfg.noun_folds, cv.seed, f"{task} {axis}",
                                          cfg.train_sets)
            info = {"assignments": len(splits), "form_pairs": form_pairs, "splits": splits,
                    "noun_pairs": int(pd.unique(nouns).size), "rows": int(len(rows))}
            out.append(Problem(task, str(axis), rows, y, nouns, 2, folds, classes, info,
                               words=part["relation"].to_numpy()))
    return out


def word_null_problems(prob: Problem, cfg: T2Settings, cv: CVSettings, max_relabelings: int,
                       seed: int) -> tuple[list[Problem], bool]:
    """The permutation null of a held-out-word problem: the same rows re-labelled by every way
    of dealing its words into classes of the same sizes (the observed labelling first), each
    evaluated exactly as the problem is (its own held-out assignments and splits). The words are
    the units: with two words per class there are 6 labellings (3 distinct up to the class
    swap), so the smallest attainable p-value is 1/3. Returns the problems and whether the
    relabelings are exhaustive."""
    classes = prob.info["classes"]
    relabelings, exact = word_relabelings(classes, max_relabelings, seed)
    return [held_out_word_problem(prob.task, prob.target, prob.rows, prob.words, prob.groups,
                                  lab, cfg, cv) for lab in relabelings], exact


def block_null_problems(prob: Problem, n_permutations: int, seed: int,
                        max_tries: int = 100) -> list[Problem]:
    """The permutation null of a grouped CV problem: whole groups' label vectors exchanged among
    groups of the same size (exchangeability blocks, Winkler et al. 2014), so the dependence of
    labels within a group is kept and only their link to the features is broken; the folds are
    the problem's own. A relabelling that leaves a training (or inner training) fold with one
    class cannot be fitted and is drawn again: the test is conditional on a property of the
    labels and folds alone, which the observed labelling has, so it stays valid. The observed
    labelling is not among them (p-values add one)."""
    codes, _ = pd.factorize(pd.Series(prob.groups))
    sizes = np.bincount(codes)
    order = np.argsort(codes, kind="stable")
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    members = [order[a:a + k] for a, k in zip(starts, sizes)]
    by_size = [np.flatnonzero(sizes == k) for k in np.unique(sizes)]
    train_sets = [f.train for f in prob.folds] + [tr for f in prob.folds for tr, _ in f.inner]
    classes = np.unique(prob.y)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_permutations):
        for _ in range(max_tries):
            y = np.empty_like(prob.y)
            for same in by_size:
                for g_to, g_from in zip(same, rng.permutation(same)):
                    y[members[g_to]] = prob.y[members[g_from]]
            if all(len(np.unique(y[tr])) == len(classes) for tr in train_sets):
                break
        else:
            raise ValueError(f"{prob.task} {prob.target}: no group relabelling in {max_tries} "
                             "draws keeps every training fold two-class (too few groups)")
        out.append(Problem(prob.task, prob.target, prob.rows, y, prob.groups, prob.n_classes,
                           prob.folds, prob.classes, prob.info))
    return out


def t3_targets(table: pd.DataFrame, min_count: int, min_per_class: int) -> list[tuple[str, str, np.ndarray]]:
    """(kind, name, rows) for every relation and meta-category with enough rows of each label;
    the rest are reported as skipped."""
    out, skipped = [], []
    for kind, col in (("relation", "relation"), ("meta", "meta_category")):
        for name, idx in table.groupby(col, sort=True).indices.items():
            labels = table["label"].to_numpy()[idx]
            n_min = min((labels == 1).sum(), (labels == 0).sum())
            if len(idx) >= min_count and n_min >= min_per_class:
                out.append((kind, str(name), np.sort(idx)))
            else:
                skipped.append(f"{kind}:{name}")
    if skipped:
        log.info("T3: %d targets skipped (fewer than min_count=%d rows or %d per label): %s",
                 len(skipped), min_count, min_per_class, skipped[:12])
    return out


def t3_problems(table: pd.DataFrame, cfg: T3Settings, cv: CVSettings) -> list[Problem]:
    """Truth label per relation (target = relation) and per meta-category (target =
    ``meta:<name>``), CV on one split, folds grouped by image and caption (components bounded
    at ``cfg.max_group_rows``, the rows that would link two parts left out of every target) so
    the same folds serve text and image features. The grouping (sizes, rows left out) is in
    each problem's ``info``."""
    groups_all, keep = bounded_image_caption_groups(table, cfg.max_group_rows, cv.seed)
    y_all = table["label"].to_numpy().astype(int)
    info = {"groups": size_summary(groups_all[keep]), "rows_left_out_to_bound_groups": int((~keep).sum()),
            "max_group_rows": cfg.max_group_rows}
    out = []
    for kind, name, rows in t3_targets(table, cfg.min_count, cfg.min_per_class):
        rows = rows[keep[rows]]
        target = name if kind == "relation" else f"meta:{name}"
        folds = _cv(y_all[rows], groups_all[rows], cv, f"T3 {target}")
        out.append(Problem("T3", target, rows, y_all[rows], groups_all[rows], 2, folds,
                           ["False", "True"], info))
    return out


def t3_holdout_problems(train: pd.DataFrame, test: pd.DataFrame, cfg: T3Settings, cv: CVSettings,
                        task: str) -> list[Problem]:
    """Train -> test per relation and meta-category on stacked tables (train rows first);
    C chosen by grouped inner CV on the training rows."""
    both = pd.concat([train, test], ignore_index=True)
    groups_all = image_caption_groups(both)
    y_all = both["label"].to_numpy().astype(int)
    n_train = len(train)
    out = []
    tr_targets = {(k, n): r for k, n, r in t3_targets(train, cfg.min_count, cfg.min_per_class)}
    te_targets = {(k, n): r for k, n, r in t3_targets(test, 1, 1)}
    for (kind, name), tr in tr_targets.items():
        if (kind, name) not in te_targets:
            continue
        te = te_targets[(kind, name)] + n_train
        rows = np.r_[tr, te]
        y = y_all[rows]
        inner = grouped_kfold(y[:len(tr)], groups_all[tr], cv.inner_splits, cv.seed,
                              f"{task} {name} inner")
        fold = Fold(0, 0, np.arange(len(tr)), np.arange(len(tr), len(rows)), inner)
        target = name if kind == "relation" else f"meta:{name}"
        out.append(Problem(task, target, rows, y, groups_all[rows], 2, [fold], ["False", "True"]))
    return out

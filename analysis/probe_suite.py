"""Stage `probe_suite`: the sound probing design (T1 relation identity, T2 axis/polarity on
held-out words, T3 grounded truth), with nested-CV-tuned batched probes, baselines (bag of
words, random-weight encoders, CLIP zero-shot), control tasks, permutation nulls and layer-wise
probes. Writes out-of-fold predictions (``oof/{task}.parquet``, the contract in ARCHITECTURE.md)
and point-estimate scores (``scores.csv``); the `stats` stage adds CIs and paired tests.

Features are standardized with the mean and sd of the rows a probe may train on (all rows of
the split for CV: an unsupervised, label-free transform; the training split for train->test).
"""

from __future__ import annotations

import fnmatch
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.metrics import average_precision_score
from tqdm import tqdm

from analysis import store
from analysis.cli import stage_parser
from analysis.io import write_csv, write_json, write_parquet
from analysis.params import load_params, section
from analysis.probe_engine import BatchFit, balanced_weights, fit_batch
from analysis.tasks import (Problem, permuted_labels, t1_problems, t2_problems, t3_holdout_problems,
                            t3_problems)

log = logging.getLogger("probe_suite")

SUITE_DIR = store.SUITE_DIR
OOF_COLUMNS = ["task", "condition", "layer", "target", "repeat", "row_id", "group", "fold",
               "y_true", "y_pred", "score", "C"]


# --------------------------------------------------------------------------- features


def standardize(X: np.ndarray, fit_rows: np.ndarray | None = None) -> np.ndarray:
    """(X - mean) / sd with statistics from ``fit_rows`` (default all); constant columns are
    centred only."""
    X = np.asarray(X, dtype=np.float64)
    ref = X if fit_rows is None else X[fit_rows]
    mu, sd = ref.mean(0), ref.std(0)
    sd[sd < 1e-12] = 1.0
    return ((X - mu) / sd).astype(np.float32)


def bow_features(captions: list[str], min_df: int = 1) -> np.ndarray:
    """Unigram + bigram counts (the lexical ceiling), dense float32."""
    vec = CountVectorizer(ngram_range=(1, 2), min_df=min_df, lowercase=True)
    return vec.fit_transform(captions).toarray().astype(np.float32)


def interaction(i: np.ndarray, t: np.ndarray) -> np.ndarray:
    """[i; t; i*t; |i-t|] on L2-normalized vectors: lets a linear probe test agreement."""
    i = i / np.linalg.norm(i, axis=1, keepdims=True)
    t = t / np.linalg.norm(t, axis=1, keepdims=True)
    return np.hstack([i, t, i * t, np.abs(i - t)]).astype(np.float32)


def cosine(i: np.ndarray, t: np.ndarray) -> np.ndarray:
    return (i * t).sum(1) / (np.linalg.norm(i, axis=1) * np.linalg.norm(t, axis=1))


# --------------------------------------------------------------------------- metrics


def macro_f1(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """sklearn's ``f1_score(average="macro", labels=range(n_classes), zero_division=0)``,
    by hand because it is called for every inner fold x C x probe (sklearn's input checks
    dominate at that count)."""
    y = np.asarray(y, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    tp = np.bincount(y[y == pred], minlength=n_classes)[:n_classes]
    n_true = np.bincount(y, minlength=n_classes)[:n_classes]
    n_pred = np.bincount(pred, minlength=n_classes)[:n_classes]
    denom = n_true + n_pred
    f1 = np.divide(2 * tp, denom, out=np.zeros(n_classes), where=denom > 0)
    return float(f1.mean())


def auprc(y: np.ndarray, proba: np.ndarray, n_classes: int) -> float:
    """Average precision (binary: ``proba`` = P(1); multiclass: macro one-vs-rest over the
    classes present, ``proba`` (n, M))."""
    if n_classes == 2:
        return float(average_precision_score(y, proba)) if 0 < y.sum() < len(y) else np.nan
    vals = [average_precision_score(y == c, proba[:, c]) for c in range(n_classes) if (y == c).any()]
    return float(np.mean(vals))


def chance_f1(y_test: np.ndarray, y_train: np.ndarray, n_classes: int) -> tuple[float, float]:
    """Macro F1 of the majority class of the training rows, and the expected macro F1 of a
    stratified random guesser (ratio of expectations: F1_c = 2 n_c q_c / (n_c + N q_c))."""
    maj = np.bincount(y_train, minlength=n_classes).argmax()
    majority = macro_f1(y_test, np.full_like(y_test, maj), n_classes)
    q = np.bincount(y_train, minlength=n_classes) / len(y_train)
    n_c = np.bincount(y_test, minlength=n_classes).astype(float)
    denom = n_c + len(y_test) * q
    f1 = np.divide(2 * n_c * q, denom, out=np.zeros(n_classes), where=denom > 0)
    return majority, float(f1.mean())


# --------------------------------------------------------------------------- nested CV runner


def _select_C(block: list[Problem], X: np.ndarray, Cs: list[float], M: int, eng: dict,
              patience: int | None = 2) -> dict:
    """Inner CV: every (problem, outer fold, inner split) as a column, solved along the C grid
    (ascending, warm-started); returns {(problem index, fold index): chosen C} maximizing the
    mean inner macro F1 (ties -> the smaller C). A (problem, fold) leaves the path once its
    score has not improved for ``patience`` grid steps (the costly large-C fits are often
    not needed)."""
    cols = [(p, f, i) for p, prob in enumerate(block) for f, fold in enumerate(prob.folds)
            for i in range(len(fold.inner))]
    n = X.shape[0]
    Y = np.zeros((n, len(cols)), dtype=int)
    mask = np.zeros((n, len(cols)), dtype=bool)
    test_of = []
    for k, (p, f, i) in enumerate(cols):
        prob = block[p]
        tr, te = prob.folds[f].inner[i]
        Y[prob.rows, k] = prob.y
        mask[prob.rows[tr], k] = True
        test_of.append(prob.rows[te])
    W = balanced_weights(Y, mask, n_classes=M if M > 2 else 2)
    group = pd.factorize(pd.Series([f"{p}/{f}" for p, f, _ in cols]))[0]
    n_groups = group.max() + 1
    scores = np.full((n_groups, len(Cs)), -np.inf)
    live = np.ones(len(cols), dtype=bool)
    fit, prev = None, None
    for c, C in enumerate(Cs):
        idx = np.flatnonzero(live)
        init = None if fit is None else _subset(fit, np.isin(prev, idx))
        fit = fit_batch(X, Y[:, idx], C, W[:, idx], n_classes=M, init=init, **eng["inner"])
        prev = idx
        pred = fit.predict(X)
        inner = np.zeros(len(idx))
        for j, k in enumerate(idx):
            te = test_of[k]
            inner[j] = macro_f1(Y[te, k], pred[te, j], max(M, 2))
        g = group[idx]
        ug = np.unique(g)
        scores[ug, c] = np.bincount(g, inner, n_groups)[ug] / np.bincount(g, minlength=n_groups)[ug]
        best = scores.argmax(1)
        done = best <= c - (patience if patience else len(Cs))
        live = ~done[group]
        if not live.any():
            break
    chosen = {}
    for k, (p, f, _) in enumerate(cols):
        chosen[(p, f)] = Cs[int(scores[group[k]].argmax())]
    return chosen


def _subset(fit, keep: np.ndarray):
    """The fitted probes ``keep`` (bool over columns), for warm starts."""
    return BatchFit(fit.coef[keep], fit.intercept[keep], fit.objective[keep], fit.n_iter[keep],
                    fit.converged[keep], fit.n_classes)


def _outer(block: list[Problem], X: np.ndarray, chosen: dict, M: int, eng: dict,
           labels: list[np.ndarray] | None = None):
    """Outer fits at the chosen C; yields (problem index, fold index, test rows, predictions,
    probabilities (n_test,) or (n_test, M), chosen C, whether the fit reached the tolerance)."""
    cols = [(p, f) for p, prob in enumerate(block) for f in range(len(prob.folds))]
    n = X.shape[0]
    Y = np.zeros((n, len(cols)), dtype=int)
    mask = np.zeros((n, len(cols)), dtype=bool)
    for k, (p, f) in enumerate(cols):
        prob = block[p]
        Y[prob.rows, k] = prob.y if labels is None else labels[p]
        mask[prob.rows[prob.folds[f].train], k] = True
    W = balanced_weights(Y, mask, n_classes=M if M > 2 else 2)
    C = np.array([chosen[c] for c in cols])
    fit = fit_batch(X, Y, C, W, n_classes=M, **_outer_eng(eng))
    proba = fit.predict_proba(X)
    for k, (p, f) in enumerate(cols):
        te = block[p].rows[block[p].folds[f].test]
        pr = proba[te, k]
        pred = (pr > 0.5).astype(int) if M == 2 else pr.argmax(1)
        yield p, f, te, pred, pr, C[k], bool(fit.converged[k])


def _outer_eng(eng: dict) -> dict:
    return {k: v for k, v in eng.items() if k != "inner"}


def _blocks(problems: list[Problem]) -> list[list[Problem]]:
    """Problems batched together: same rows and the same number of classes."""
    out: dict = {}
    for prob in problems:
        out.setdefault((prob.n_classes, prob.rows.tobytes()), []).append(prob)
    return list(out.values())


def _score_rows(prob: Problem, condition: str, layer: int, oof: pd.DataFrame,
                full_proba: dict, y_train_of: dict) -> list[dict]:
    """Point estimates (mean over repeats) of macro F1, AUPRC and accuracy, with chance
    levels and the collapsed flag (a single predicted class on every test fold)."""
    M = max(prob.n_classes, 2)
    f1s, aps, accs, majs, strs, prevs, maj_acc = [], [], [], [], [], [], []
    collapsed = True
    for r, part in oof.groupby("repeat"):
        y, pred = part["y_true"].to_numpy(), part["y_pred"].to_numpy()
        f1s.append(macro_f1(y, pred, M))
        accs.append(float((y == pred).mean()))
        aps.append(auprc(y, full_proba[r] if M > 2 else part["score"].to_numpy(), M))
        for f, fp in part.groupby("fold"):
            collapsed &= fp["y_pred"].nunique() == 1
        ytr = np.concatenate([y_train_of[(r, f)] for f in part["fold"].unique()])
        mj, st = chance_f1(y, ytr, M)
        majs.append(mj)
        strs.append(st)
        prevs.append(float(np.mean([(y == c).mean() for c in range(M)])) if M > 2 else float(y.mean()))
        maj_acc.append(float((y == np.bincount(ytr, minlength=M).argmax()).mean()))
    base = {"task": prob.task, "condition": condition, "layer": layer, "target": prob.target,
            "n": int(oof["row_id"].nunique()), "n_repeats": int(oof["repeat"].nunique()),
            "collapsed": bool(collapsed), "C_median": float(oof.groupby(["repeat", "fold"])["C"].first().median())}
    return [
        {**base, "metric": "macro_f1", "estimate": np.mean(f1s), "chance": max(np.mean(majs), np.mean(strs))},
        {**base, "metric": "macro_f1_majority", "estimate": np.mean(majs), "chance": np.nan},
        {**base, "metric": "macro_f1_stratified", "estimate": np.mean(strs), "chance": np.nan},
        {**base, "metric": "auprc", "estimate": np.nanmean(aps), "chance": np.mean(prevs)},
        {**base, "metric": "accuracy", "estimate": np.mean(accs), "chance": np.mean(maj_acc)},
    ]


def c_grid(cfg: dict) -> list[float]:
    """The log-spaced C grid of params ``C_grid`` (ascending: the warm-start path)."""
    g = cfg["C_grid"]
    try:
        lo, hi, num = float(g["min"]), float(g["max"]), int(g["num"])
    except (TypeError, ValueError):
        raise ValueError(f"probe_suite.C_grid must have numeric min, max, num; got {g}") from None
    if not 0 < lo <= hi or num < 1:
        raise ValueError(f"probe_suite.C_grid: need 0 < min <= max and num >= 1; got {g}")
    return list(np.logspace(np.log10(lo), np.log10(hi), num))


def run_problems(X: np.ndarray, problems: list[Problem], table_row_ids: np.ndarray,
                 condition: str, layer: int, cfg: dict, eng: dict, desc: str = "",
                 permute: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Nested CV for every problem on the features ``X`` (rows aligned with the table):
    returns OOF predictions, tidy scores and permutation null scores."""
    Cs = c_grid(cfg)
    oofs, scores, nulls = [], [], []
    for block in tqdm(_blocks(problems), desc=desc or condition, leave=False, mininterval=5):
        rows = block[0].rows
        Xb = X[rows]
        local = [Problem(p.task, p.target, np.arange(len(rows)), p.y, p.groups, p.n_classes,
                         p.folds, p.classes, p.info) for p in block]
        M = block[0].n_classes
        chosen = _select_C(local, Xb, Cs, M, eng, cfg.get("C_patience"))
        per: dict[int, list] = {p: [] for p in range(len(block))}
        unconverged = np.zeros(len(block), dtype=int)
        for p, f, te, pred, pr, C, ok in _outer(local, Xb, chosen, M, eng):
            per[p].append((f, te, pred, pr, C))
            unconverged[p] += not ok
        for p, prob in enumerate(block):
            frames, full, ytr = [], {}, {}
            for f, te, pred, pr, C in per[p]:
                fold = prob.folds[f]
                score = pr if M == 2 else pr[np.arange(len(te)), prob.y[fold.test]]
                frames.append(pd.DataFrame({
                    "repeat": fold.repeat, "fold": fold.fold, "pos": fold.test,
                    "y_true": prob.y[fold.test], "y_pred": pred, "score": score, "C": C}))
                if M > 2:
                    full.setdefault(fold.repeat, []).append(pr)
                ytr[(fold.repeat, fold.fold)] = prob.y[fold.train]
            df = pd.concat(frames, ignore_index=True)
            full = {r: np.vstack(v) for r, v in full.items()}
            df.insert(0, "row_id", table_row_ids[prob.rows[df["pos"]]])
            df.insert(1, "group", prob.groups[df["pos"]])
            df = df.drop(columns="pos")
            df.insert(0, "target", prob.target)
            df.insert(0, "layer", layer)
            df.insert(0, "condition", condition)
            df.insert(0, "task", prob.task)
            oofs.append(df[OOF_COLUMNS])
            rows_scores = _score_rows(prob, condition, layer, df, full, ytr)
            for r in rows_scores:  # outer fits stopped at engine.max_iter before the tolerance
                r["unconverged_folds"] = int(unconverged[p])
            if prob.info.get("derived_ovr"):
                d_oof, d_scores = derived_ovr(prob, df, per[p], condition, layer)
                oofs.append(d_oof)
                scores.extend(d_scores)
            if permute and M == 2 and any(fnmatch.fnmatch(f"{prob.task}:{prob.target}", pat)
                                          for pat in permute):
                null = permutation_null(Xb, local[p], chosen, p, cfg, eng)
                obs = _repeat0_f1(df)
                pval = (1 + (null >= obs - 1e-12).sum()) / (1 + len(null))
                rows_scores[0]["p_value"] = float(pval)
                nulls.append(pd.DataFrame({"task": prob.task, "condition": condition,
                                           "layer": layer, "target": prob.target,
                                           "permutation": np.arange(len(null)),
                                           "metric": "macro_f1", "estimate": null,
                                           "observed": obs}))
            scores.extend(rows_scores)
    return (pd.concat(oofs, ignore_index=True) if oofs else pd.DataFrame(columns=OOF_COLUMNS),
            pd.DataFrame(scores), pd.concat(nulls, ignore_index=True) if nulls else pd.DataFrame())


def derived_ovr(prob: Problem, oof: pd.DataFrame, outer: list, condition: str,
                layer: int) -> tuple[pd.DataFrame, list[dict]]:
    """One-vs-rest rows per class read off the multinomial probe (task ``<task>_ovr``):
    y_true = (class == r), y_pred = (argmax == r), score = P(r). No extra fits."""
    P = np.vstack([pr for _, _, _, pr, _ in outer])  # rows in the order of ``oof``
    ytr = {}
    for f, _, _, _, _ in outer:
        fold = prob.folds[f]
        ytr[(fold.repeat, fold.fold)] = prob.y[fold.train]
    frames, rows = [], []
    pred = oof["y_pred"].to_numpy()
    y = oof["y_true"].to_numpy()
    for c, name in enumerate(prob.classes):
        df = oof.assign(task=f"{prob.task}_ovr", target=name, y_true=(y == c).astype(int),
                        y_pred=(pred == c).astype(int), score=P[:, c])
        frames.append(df)
        sub = Problem(f"{prob.task}_ovr", name, prob.rows, (prob.y == c).astype(int), prob.groups,
                      2, prob.folds)
        rows.extend(_score_rows(sub, condition, layer, df,
                                {}, {k: (v == c).astype(int) for k, v in ytr.items()}))
    return pd.concat(frames, ignore_index=True), rows


def _repeat0_f1(oof: pd.DataFrame) -> float:
    part = oof[oof["repeat"] == oof["repeat"].min()]
    return macro_f1(part["y_true"].to_numpy(), part["y_pred"].to_numpy(), 2)


def permutation_null(X: np.ndarray, prob: Problem, chosen: dict, p: int, cfg: dict,
                     eng: dict) -> np.ndarray:
    """Macro F1 of the first repeat under labels shuffled within CV groups, every permutation
    a batch of extra label columns refit at the fold's chosen C (one solve per chunk)."""
    n_perm = cfg["permutation"]["n"]
    folds = [(f, fold) for f, fold in enumerate(prob.folds) if fold.repeat == prob.folds[0].repeat]
    perms = permuted_labels(prob.y, prob.groups, n_perm, cfg["permutation"]["seed"])
    n = len(prob.y)
    preds = np.zeros((n, n_perm), dtype=int)
    chunk = max(1, cfg["max_columns"] // len(folds))
    for start in range(0, n_perm, chunk):
        idx = np.arange(start, min(n_perm, start + chunk))
        Y = np.repeat(perms[:, idx], len(folds), axis=1)  # column = perm-major, fold-minor
        mask = np.zeros(Y.shape, dtype=bool)
        C = np.zeros(Y.shape[1])
        for j, (f, fold) in enumerate(folds):
            mask[fold.train, j::len(folds)] = True
            C[j::len(folds)] = chosen[(p, f)]
        W = balanced_weights(Y, mask)
        fit = fit_batch(X, Y, C, W, **{**_outer_eng(eng), "tol": cfg["permutation"]["tol"]})
        pr = fit.predict(X)
        for j, (f, fold) in enumerate(folds):
            preds[fold.test[:, None], idx[None, :]] = pr[fold.test][:, j::len(folds)]
    test = np.unique(np.concatenate([fold.test for _, fold in folds]))
    return np.array([macro_f1(perms[test, k], preds[test, k], 2) for k in range(n_perm)])


def zeroshot_oof(score: np.ndarray, problems: list[Problem], table_row_ids: np.ndarray,
                 condition: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """CLIP zero-shot: predict True when cosine >= a threshold chosen on the training rows of
    each fold (the midpoint maximizing macro F1)."""
    oofs, scores = [], []
    for prob in problems:
        s = score[prob.rows]
        frames, ytr = [], {}
        for fold in prob.folds:
            st, yt = s[fold.train], prob.y[fold.train]
            cand = np.unique(st)
            cand = np.r_[cand[0] - 1e-6, (cand[1:] + cand[:-1]) / 2, cand[-1] + 1e-6]
            f1 = [macro_f1(yt, (st >= c).astype(int), 2) for c in cand]
            thr = cand[int(np.argmax(f1))]
            frames.append(pd.DataFrame({
                "task": prob.task, "condition": condition, "layer": -1, "target": prob.target,
                "repeat": fold.repeat, "row_id": table_row_ids[prob.rows[fold.test]],
                "group": prob.groups[fold.test], "fold": fold.fold, "y_true": prob.y[fold.test],
                "y_pred": (s[fold.test] >= thr).astype(int), "score": s[fold.test], "C": np.nan}))
            ytr[(fold.repeat, fold.fold)] = yt
        df = pd.concat(frames, ignore_index=True)
        oofs.append(df)
        scores.extend(_score_rows(prob, condition, -1, df, {}, ytr))
    return pd.concat(oofs, ignore_index=True), pd.DataFrame(scores)


# --------------------------------------------------------------------------- I/O


def aligned(condition: str, variant: str, split: str, view: str | None, table: pd.DataFrame,
            root: Path = store.EMBED_DIR, layered: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A condition's vectors in the table's row order, and which table rows it covers (rows
    an image condition excluded are False)."""
    emb = store.load_embeddings(condition, variant, split, view=view, root=root)
    if layered and emb.X.shape[1] != len(emb.row_ids) and emb.X.shape[0] == len(emb.row_ids):
        emb = store.Embeddings(np.transpose(emb.X, (1, 0, 2)), emb.row_ids, emb.meta)  # (N, L, D)
    pos = pd.Index(emb.row_ids).get_indexer(table["row_id"])
    extra = np.setdiff1d(emb.row_ids, table["row_id"])
    if extra.size:
        raise ValueError(f"{condition} {variant}/{split}: {extra.size} embedding row ids are not in "
                         f"the table, e.g. {extra[:3].tolist()}")
    covered = pos >= 0
    X = emb.X[:, np.where(covered, pos, 0)] if layered else emb.X[np.where(covered, pos, 0)]
    return X, covered


def _view(cfg: dict, condition: str) -> str | None:
    return (cfg.get("views") or {}).get(condition)


def _engine(cfg: dict) -> dict:
    """Engine settings for outer fits, with ``inner`` (looser: C selection only needs the
    ranking of C values) for the inner-CV fits."""
    e = cfg["engine"]
    base = {"tol": float(e["tol"]), "max_iter": int(e["max_iter"]), "max_cg": int(e["max_cg"]),
            "device": e["device"], "dtype": getattr(torch, e["dtype"])}
    return {**base, "inner": {**base, "tol": float(e["inner_tol"]), "warn": False,
                              "max_iter": int(e["inner_max_iter"])}}


def _layer_settings(cfg: dict) -> tuple[dict, dict]:
    """Settings of the layer-wise probes: the suite's, with the overrides of ``layers``
    (``n_splits``, ``n_repeats``, ``inner_splits``, ``C_grid``): nested CV at every hidden
    layer is the suite's largest cost, and one outer repeat is enough to draw a curve."""
    lay = cfg["layers"]
    cv = {**cfg["cv"], "n_splits": int(lay.get("n_splits", cfg["cv"]["n_splits"])),
          "n_repeats": int(lay.get("n_repeats", cfg["cv"]["n_repeats"])),
          "inner_splits": int(lay.get("inner_splits", cfg["cv"]["inner_splits"]))}
    return {**cfg, "cv": cv, "C_grid": lay.get("C_grid") or cfg["C_grid"]}, cv



def _holdout_features(cfg, text, pairs, variant, tabs, root):
    """name -> [(features tuple, covered) for train, test]; text conditions give (X,), pairs
    (image, text). Conditions lacking either split are left out with a warning."""
    out = {}
    specs = [(c, [(c, _view(cfg, c))]) for c in text]
    specs += [(p["name"], [(p["image"], p.get("image_view")), (p["text"], p.get("text_view"))])
              for p in pairs]
    for name, parts in specs:
        try:
            per_split = []
            for s, tab in zip(("train", "test"), tabs):
                got = [aligned(c, variant, s, v, tab, root) for c, v in parts]
                per_split.append((tuple(g[0] for g in got),
                                  np.logical_and.reduce([g[1] for g in got])))
        except FileNotFoundError as e:
            log.warning("T3 holdout on %s: %s left out (%s)", variant, name, e)
            continue
        out[name] = per_split
    return out


def run_suite(cfg: dict, embed_root: Path = store.EMBED_DIR, vsr_root: Path = store.VSR_DIR):
    """Every task on every condition present; returns (oof by task, scores, nulls, report)."""
    eng = _engine(cfg)
    cv = cfg["cv"]
    variant, split = cfg["variant"], cfg["split"]
    table = store.load_split(variant, split, vsr_root)
    row_ids = table["row_id"].to_numpy()
    present = store.available_conditions(variant, split, embed_root)
    report: dict = {"variant": variant, "split": split, "rows": len(table), "timings_s": {}}
    text = [c for c in cfg["text_conditions"] if c in present]
    report["missing_conditions"] = [c for c in cfg["text_conditions"] if c not in present]
    pairs = [p for p in cfg["t3"]["pairs"] if p["text"] in present and p["image"] in present]
    report["missing_conditions"] += sorted({c for p in cfg["t3"]["pairs"] if p not in pairs
                                            for c in (p["text"], p["image"]) if c not in present})
    report["missing_conditions"] = list(dict.fromkeys(report["missing_conditions"]))
    if report["missing_conditions"]:
        log.warning("conditions without embeddings on %s/%s (left out): %s", variant, split,
                    report["missing_conditions"])
    permute = cfg["permutation"]["targets"] if cfg["permutation"]["n"] > 0 else []

    feats: dict[str, np.ndarray] = {}
    for c in text:
        X, covered = aligned(c, variant, split, _view(cfg, c), table, embed_root)
        if not covered.all():
            raise ValueError(f"text condition {c} lacks {int((~covered).sum())} rows of "
                             f"{variant}/{split}, e.g. {row_ids[~covered][:3].tolist()}")
        feats[c] = standardize(X)
    if cfg["bow"]["enabled"]:
        feats["bow"] = standardize(bow_features(table["caption"].tolist(), cfg["bow"]["min_df"]))

    t1 = t1_problems(table, cfg["t1"], cv, ovr=cfg["t1"]["ovr"])
    if cfg["t1"]["control"]:
        t1 += t1_problems(table, cfg["t1"], cv, control_seed=cfg["t1"]["control_seed"],
                          ovr=cfg["t1"]["control_ovr"])
    t2 = t2_problems(table, cfg["t2"], cv)
    report["t1_unparsed_noun_pairs"] = t1[0].info["unparsed_noun_pairs"]
    report["t2"] = {f"{p.task}:{p.target}": p.info for p in t2}

    # T3 rows: those every T3 feature set covers, so conditions are compared on identical rows
    pair_feats = {}
    t3_mask = np.ones(len(table), dtype=bool)
    for p in pairs:
        i, ci = aligned(p["image"], variant, split, p.get("image_view"), table, embed_root)
        t, ct = aligned(p["text"], variant, split, p.get("text_view"), table, embed_root)
        pair_feats[p["name"]] = (i, t)
        t3_mask &= ci & ct
    report["t3_rows_excluded_missing_image"] = int((~t3_mask).sum())
    t3_table = table[t3_mask].reset_index(drop=True)
    t3_idx = np.flatnonzero(t3_mask)
    t3 = t3_problems(t3_table, cfg["t3"], cv)
    t3_ids = t3_table["row_id"].to_numpy()

    oofs, scores, nulls = [], [], []

    def collect(res):
        oofs.append(res[0])
        scores.append(res[1])
        if len(res) > 2 and len(res[2]):
            nulls.append(res[2])

    t3_text = cfg["t3"].get("text_conditions")  # hypothesis-only T3: these (None: all) and bow
    t3_ok = lambda c: t3_text is None or c in t3_text or c == "bow"  # noqa: E731
    ctl = cfg["t1"].get("control_conditions")  # control task for these (None: every condition)
    t1_of = lambda c: t1 if ctl is None or c in ctl else [  # noqa: E731
        p for p in t1 if not p.task.startswith("T1_control")]
    for c, X in feats.items():
        for name, probs, Xc, ids in (("T1", t1_of(c), X, row_ids), ("T2", t2, X, row_ids),
                                     ("T3", t3 if t3_ok(c) else [], X[t3_idx], t3_ids)):
            if not probs:
                continue
            start = time.perf_counter()
            collect(run_problems(Xc, probs, ids, c, -1, cfg, eng, f"{c} {name}", permute))
            report["timings_s"][f"{c}:{name}"] = round(time.perf_counter() - start, 1)
            log.info("%s: %s in %.0fs", c, name, report["timings_s"][f"{c}:{name}"])
    for p in pairs:
        start = time.perf_counter()
        i, t = (a[t3_idx] for a in pair_feats[p["name"]])
        for cond, X in ((p["image"], i), (f"{p['name']}_concat", np.hstack([i, t])),
                        (f"{p['name']}_interaction", interaction(i, t))):
            collect(run_problems(standardize(X), t3, t3_ids, cond, -1, cfg, eng, f"{cond} T3",
                                 permute))
        collect(zeroshot_oof(cosine(i, t), t3, t3_ids, f"{p['name']}_zeroshot"))
        report["timings_s"][p["name"]] = round(time.perf_counter() - start, 1)

    for hv in cfg["t3"]["holdout"]:
        start = time.perf_counter()
        tabs = [store.load_split(hv, s, vsr_root) for s in ("train", "test")]
        sets = _holdout_features(cfg, [c for c in text if t3_ok(c)], pairs, hv, tabs, embed_root)
        if not sets:
            log.warning("T3 holdout on %s: no condition has train and test embeddings", hv)
            continue
        keep = [np.logical_and.reduce([v[k][1] for v in sets.values()]) for k in range(2)]
        tr_k, te_k = (tab[m].reset_index(drop=True) for tab, m in zip(tabs, keep))
        probs = t3_holdout_problems(tr_k, te_k, cfg["t3"], cv, f"T3_holdout_{hv}")
        ids = np.r_[tr_k["row_id"].to_numpy(), te_k["row_id"].to_numpy()]
        n_tr = len(tr_k)
        for name, ((f_tr, _), (f_te, _)) in sets.items():
            stack = [np.vstack([a[keep[0]], b[keep[1]]]) for a, b in zip(f_tr, f_te)]
            if len(stack) == 1:
                conds = [(name, stack[0])]
            else:
                i, t = stack
                img = next(p["image"] for p in pairs if p["name"] == name)
                conds = [(img, i), (f"{name}_concat", np.hstack([i, t])),
                         (f"{name}_interaction", interaction(i, t))]
                collect(zeroshot_oof(cosine(i, t), probs, ids, f"{name}_zeroshot"))
            for cond, X in conds:
                collect(run_problems(standardize(X, np.arange(n_tr)), probs, ids, cond, -1, cfg,
                                     eng, f"{cond} T3 {hv} train->test"))
        report["timings_s"][f"T3_holdout_{hv}"] = round(time.perf_counter() - start, 1)

    lay = cfg["layers"]
    lay_cfg, lay_cv = _layer_settings(cfg)
    lay_conds = [c for c in text if c in lay.get("conditions", text)]
    lay_text = [c for c in lay_conds if store.has_view(c, variant, split, "layers", embed_root)]
    if lay["tasks"] and lay_text:
        probs = [p for p in t1_problems(table, cfg["t1"], lay_cv,
                                        ovr="derived" if cfg["t1"]["ovr"] == "derived" else False)
                 + t2_problems(table, {**cfg["t2"], "max_assignments": lay.get(
                     "t2_max_assignments", cfg["t2"]["max_assignments"])}, lay_cv)
                 if p.task in lay["tasks"]]
        for c in lay_text:
            L, _ = aligned(c, variant, split, "layers", table, embed_root, layered=True)
            start = time.perf_counter()
            for layer in tqdm(range(L.shape[0]), desc=f"{c} layers", leave=False, disable=None):
                collect(run_problems(standardize(L[layer]), probs, row_ids, c, layer, lay_cfg,
                                     eng, f"{c} layer {layer}"))
            report["timings_s"][f"{c}_layers"] = round(time.perf_counter() - start, 1)
    # T3 layer-wise with images: each hidden layer of the image tower (CLS) beside the
    # caption's final text embedding, [image layer; text], on the T3 rows and folds
    lay_pairs = [p for p in pairs if "T3" in lay["tasks"] and p["image"] in lay.get("conditions", [p["image"]])
                 and store.has_view(p["image"], variant, split, "layers", embed_root)]
    if lay_pairs:
        t3_lay = t3_problems(t3_table, cfg["t3"], lay_cv)
        for p in lay_pairs:
            L, _ = aligned(p["image"], variant, split, "layers", table, embed_root, layered=True)
            t = standardize(pair_feats[p["name"]][1][t3_idx])
            start = time.perf_counter()
            for layer in tqdm(range(L.shape[0]), desc=f"{p['image']} layers", leave=False,
                              disable=None):
                X = np.hstack([standardize(L[layer][t3_idx]), t])
                collect(run_problems(X, t3_lay, t3_ids, f"{p['name']}_concat", layer, lay_cfg, eng,
                                     f"{p['name']} image layer {layer}"))
            report["timings_s"][f"{p['image']}_layers"] = round(time.perf_counter() - start, 1)
    report["layerwise"] = lay_text + [p["image"] for p in lay_pairs]

    oof = pd.concat(oofs, ignore_index=True)
    sc = pd.concat(scores, ignore_index=True)
    for col in ("ci_low", "ci_high", "p_value", "p_holm", "p_bh"):
        if col not in sc:
            sc[col] = np.nan
    front = ["task", "condition", "layer", "target", "metric", "estimate", "ci_low", "ci_high", "n",
             "chance", "p_value", "p_holm", "p_bh"]
    sc = sc[front + [c for c in sc.columns if c not in front]]
    null = pd.concat(nulls, ignore_index=True) if nulls else pd.DataFrame()
    probes = sc.drop_duplicates(["task", "condition", "layer", "target"])
    report["probes_with_unconverged_folds"] = int((probes["unconverged_folds"].fillna(0) > 0).sum())
    return {t: g.reset_index(drop=True) for t, g in oof.groupby("task")}, sc, null, report


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("probe_suite", __doc__.splitlines()[0])
    args = parser.parse_args(argv)
    params = load_params(args.params)
    cfg = section(params, "probe_suite", args.params)
    start = time.perf_counter()
    oof, scores, null, report = run_suite(cfg)
    for task, df in oof.items():
        write_parquet(store.OOF_DIR / f"{task}.parquet", df)
    write_csv(SUITE_DIR / "scores.csv", scores)
    if len(null):
        write_parquet(store.NULL_PATH, null)
    report["total_s"] = round(time.perf_counter() - start, 1)
    write_json(SUITE_DIR / "report.json", report)
    log.info("probe suite: %d score rows, %d OOF rows over %d tasks in %.0fs", len(scores),
             sum(len(d) for d in oof.values()), len(oof), report["total_s"])
    return 0

"""Nested cross-validation of batched probes: C chosen per outer fold by inner CV along a
warm-started C path, outer fits at the chosen C, out-of-fold predictions and point scores,
permutation nulls, one-vs-rest scores read off multinomial probes, and CLIP's zero-shot
threshold. Arrays and `Problem`s in, tables out (no I/O)."""

from __future__ import annotations

import fnmatch
from dataclasses import replace

import numpy as np
import pandas as pd
import torch
from scipy import sparse
from tqdm import tqdm

from analysis.common.store import OOF_COLUMNS
from analysis.inference.resampling import min_attainable_p, permutation_pvalue
from analysis.probes.engine import BatchFit, balanced_weights, fit_batch
from analysis.probes.features import fold_scale
from analysis.probes.metrics import auprc, chance_f1, macro_f1
from analysis.probes.settings import EngineSettings, SuiteSettings
from analysis.probes.tasks import Problem, block_null_problems, word_null_problems


def engine_options(e: EngineSettings) -> dict:
    """Keyword arguments of `fit_batch` for outer fits, with ``inner`` (looser: C selection
    only needs the predictions at each C, not the last digits of the optimum) for the
    inner-CV fits. Both stop on the gradient AND the relative Newton-decrement test."""
    base = {"tol": float(e.tol), "rtol": float(e.rtol), "max_iter": int(e.max_iter),
            "max_cg": int(e.max_cg), "device": e.device, "dtype": getattr(torch, e.dtype)}
    return {**base, "inner": {**base, "tol": float(e.inner_tol), "rtol": float(e.inner_rtol),
                              "warn": False, "max_iter": int(e.inner_max_iter)}}


def collapse_duplicates(X: np.ndarray, Y: np.ndarray, W: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows identical in their features, in every probe column's label and in which columns
    use them, merged into one row whose sample weight per column is their sum: the weighted
    log-loss is the same function of the coefficients, so every fit is unchanged while each
    solver matmul runs over fewer rows (VSR repeats a caption for each image it was written
    about: 4,288 distinct of random/train's 7,680). Returns (X, Y, W) over the kept rows."""
    _, first, inv = np.unique(np.ascontiguousarray(X).view(np.dtype((np.void, X.dtype.itemsize * X.shape[1]))).ravel(),
                              return_index=True, return_inverse=True)
    inv = inv.ravel()
    if len(first) == len(X):
        return X, Y, W
    rep = first[inv]
    same = (Y == Y[rep]).all(1) & ((W > 0) == (W[rep] > 0)).all(1)
    # a row that differs from its first copy in a label or a mask stays a row of its own
    gid = np.where(same, inv, len(first) + np.arange(len(X)))
    keep, gid = np.unique(gid, return_inverse=True)
    rows = np.where(keep < len(first), first[np.minimum(keep, len(first) - 1)],
                    keep - len(first))
    merge = sparse.csr_matrix((np.ones(len(X)), (gid, np.arange(len(X)))), shape=(len(rows), len(X)))
    return X[rows], Y[rows], np.asarray(merge @ W)


TIE = 1e-12  # inner scores this close are equal (floating-point noise of the fold means)


def _best(scores: np.ndarray) -> np.ndarray:
    """Per row, the first (smallest-C) column whose score is within ``TIE`` of the row's
    maximum: grid search's argmax over an ascending grid, robust to summation noise."""
    top = scores.max(1, keepdims=True)
    return np.argmax(scores >= top - TIE, axis=1)


def _select_C(block: list[Problem], X: np.ndarray, Cs: list[float], M: int, eng: dict,
              patience: int | None = 2, occurs: np.ndarray | None = None, min_df: int = 1) -> dict:
    """Inner CV: every (problem, outer fold, inner split) as a column, solved along the C grid
    (ascending, each fit warm-started from the previous C's and run to the inner tolerance,
    whose relative test makes the fits at large C reach their own optimum); returns
    {(problem index, fold index): chosen C}, the C maximizing the mean inner macro F1 over the
    inner splits, as ``LogisticRegressionCV(Cs, cv=<the inner splits>, scoring="f1_macro",
    class_weight="balanced")`` (balanced weights per inner training set; they equal
    LogisticRegressionCV's, which are computed once on the outer training rows, whenever the
    inner splits are exactly stratified). Ties (means within ``TIE``) go to the smallest C, as
    the argmax over the ascending grid does there.

    ``patience`` (a speed setting; None = the whole grid): a (problem, fold) leaves the path
    once its best score was last improved (strictly, by more than ``TIE``) ``patience`` grid
    steps ago; its choice is then the best C among those it was scored on, which is the grid
    search's choice unless a later, larger C would have scored higher still.

    Every inner fit standardizes (and, with ``occurs``, picks its bag-of-words vocabulary) on
    its own inner training rows (`features.fold_scale`)."""
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
    S = fold_scale(X, mask, occurs, min_df)  # on every row, before duplicates are merged
    Xu, Yu, Wu = collapse_duplicates(X, Y, W)
    group = pd.factorize(pd.Series([f"{p}/{f}" for p, f, _ in cols]))[0]
    n_groups = group.max() + 1
    scores = np.full((n_groups, len(Cs)), -np.inf)
    live = np.ones(len(cols), dtype=bool)
    fit, prev = None, None
    for c, C in enumerate(Cs):
        idx = np.flatnonzero(live)
        init = None if fit is None else _subset(fit, np.isin(prev, idx))
        fit = fit_batch(Xu, Yu[:, idx], C, Wu[:, idx], n_classes=M, init=init, scale=S[idx],
                        **eng["inner"])
        prev = idx
        pred = fit.predict(X)
        inner = np.zeros(len(idx))
        for j, k in enumerate(idx):
            te = test_of[k]
            inner[j] = macro_f1(Y[te, k], pred[te, j], max(M, 2))
        g = group[idx]
        ug = np.unique(g)
        scores[ug, c] = np.bincount(g, inner, n_groups)[ug] / np.bincount(g, minlength=n_groups)[ug]
        done = _best(scores) <= c - (patience if patience else len(Cs))
        live = ~done[group]
        if not live.any():
            break
    best = _best(scores)
    return {(p, f): Cs[int(best[group[k]])] for k, (p, f, _) in enumerate(cols)}


def _subset(fit, keep: np.ndarray):
    """The fitted probes ``keep`` (bool over columns), for warm starts."""
    return BatchFit(fit.coef[keep], fit.intercept[keep], fit.objective[keep], fit.n_iter[keep],
                    fit.converged[keep], fit.n_classes,
                    None if fit.scale is None else fit.scale[keep])


def _outer(block: list[Problem], X: np.ndarray, chosen: dict, M: int, eng: dict,
           occurs: np.ndarray | None = None, min_df: int = 1):
    """Outer fits at the chosen C, standardized (and the bag-of-words vocabulary chosen) on
    each fold's training rows; yields (problem index, fold index, test rows, predictions,
    probabilities (n_test,) or (n_test, M), chosen C, whether the fit reached the tolerance)."""
    cols = [(p, f) for p, prob in enumerate(block) for f in range(len(prob.folds))]
    n = X.shape[0]
    Y = np.zeros((n, len(cols)), dtype=int)
    mask = np.zeros((n, len(cols)), dtype=bool)
    for k, (p, f) in enumerate(cols):
        prob = block[p]
        Y[prob.rows, k] = prob.y
        mask[prob.rows[prob.folds[f].train], k] = True
    W = balanced_weights(Y, mask, n_classes=M if M > 2 else 2)
    C = np.array([chosen[c] for c in cols])
    S = fold_scale(X, mask, occurs, min_df)  # on every row, before duplicates are merged
    Xu, Yu, Wu = collapse_duplicates(X, Y, W)
    fit = fit_batch(Xu, Yu, C, Wu, n_classes=M, scale=S, **_outer_eng(eng))
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


def run_problems(X: np.ndarray, problems: list[Problem], table_row_ids: np.ndarray,
                 condition: str, layer: int, cfg: SuiteSettings, eng: dict, desc: str = "",
                 permute: list[str] | None = None, progress: bool = True,
                 occurs: np.ndarray | None = None, min_df: int = 1,
                 ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Nested CV for every problem on the features ``X`` (rows aligned with the table):
    returns OOF predictions, tidy scores and permutation null scores. Each fit standardizes
    on its own training rows; ``occurs``/``min_df`` (bag of words, `features.bow_features`)
    restrict each fit to the n-grams in ``min_df`` of its training rows."""
    Cs = cfg.C_grid.values()  # ascending: the warm-start path
    oofs, scores, nulls = [], [], []
    for block in tqdm(_blocks(problems), desc=desc or condition, leave=False, mininterval=5,
                      disable=not progress):
        rows = block[0].rows
        Xb = X[rows]
        vocab = {"occurs": None if occurs is None else occurs[rows], "min_df": min_df}
        local = [replace(p, rows=np.arange(len(rows))) for p in block]
        M = block[0].n_classes
        chosen = _select_C(local, Xb, Cs, M, eng, cfg.C_patience, **vocab)
        per: dict[int, list] = {p: [] for p in range(len(block))}
        unconverged = np.zeros(len(block), dtype=int)
        for p, f, te, pred, pr, C, ok in _outer(local, Xb, chosen, M, eng, **vocab):
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
                obs = rows_scores[0]["estimate"]  # the printed statistic: mean over all repeats
                null, exact, scheme = null_distribution(X, prob, table_row_ids, condition, layer,
                                                        cfg, eng, occurs, min_df)
                rows_scores[0]["p_value"] = permutation_pvalue(obs, null, exact)
                rows_scores[0]["null_scheme"] = scheme
                rows_scores[0]["null_size"] = int(len(null))
                rows_scores[0]["min_attainable_p"] = min_attainable_p(len(null), exact)
                nulls.append(pd.DataFrame({"task": prob.task, "condition": condition,
                                           "layer": layer, "target": prob.target,
                                           "permutation": np.arange(len(null)),
                                           "metric": "macro_f1", "estimate": null,
                                           "observed": obs, "exact": exact, "scheme": scheme}))
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


def null_distribution(X: np.ndarray, prob: Problem, table_row_ids: np.ndarray, condition: str,
                      layer: int, cfg: SuiteSettings, eng: dict, occurs: np.ndarray | None = None,
                      min_df: int = 1) -> tuple[np.ndarray, bool, str]:
    """The probe's macro F1 (mean over all its repeats, C chosen by the same inner CV) under
    the null that breaks what its test claims: for a held-out-word problem, the words dealt
    anew into classes (`tasks.word_null_problems`, exhaustive where there are few); otherwise
    whole groups' labels exchanged among same-size groups (`tasks.block_null_problems`).
    Returns the null values, whether they are exhaustive, and the scheme's name."""
    perm = cfg.permutation
    if prob.words is not None:
        probs, exact = word_null_problems(prob, cfg.t2, cfg.cv, perm.max_relabelings, perm.seed)
        scheme = "words relabelled"
    else:
        probs, exact = block_null_problems(prob, perm.n, perm.seed), False
        scheme = "group labels exchanged (same-size groups)"
    per_problem = max(1, sum(len(f.inner) + 1 for f in prob.folds))  # solver columns per problem
    chunk = max(1, cfg.max_columns // per_problem)
    values = []
    for lo in range(0, len(probs), chunk):
        part = [replace(p, target=f"{p.target}#null{lo + k}") for k, p in enumerate(probs[lo:lo + chunk])]
        _, sc, _ = run_problems(X, part, table_row_ids, condition, layer, cfg, eng,
                                progress=False, occurs=occurs, min_df=min_df)
        f1 = sc[sc["metric"] == "macro_f1"].set_index("target")["estimate"]
        values += [float(f1[p.target]) for p in part]
    return np.asarray(values), exact, scheme


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


def run_per_fold(sets: list[tuple[np.ndarray, Problem]], prob: Problem,
                 table_row_ids: np.ndarray, condition: str, layer: int, cfg: SuiteSettings,
                 eng: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Nested CV of one binary problem whose features differ per outer fold (``sets``: one
    (features over the problem's rows, single-fold problem) per fold, e.g.
    `controls.pca_fold_problems`): each fold is fit on its own features, the folds' OOF rows
    are joined and scored as `run_problems` scores a problem."""
    if prob.n_classes != 2:
        raise ValueError(f"{prob.task} {prob.target}: per-fold features need a binary problem")
    ids = table_row_ids[prob.rows]
    frames, ytr, unconverged = [], {}, 0
    for X, local in sets:
        oof, sc, _ = run_problems(X, [local], ids, condition, layer, cfg, eng, progress=False)
        frames.append(oof)
        unconverged += int(sc["unconverged_folds"].iloc[0])
        fold = local.folds[0]
        ytr[(fold.repeat, fold.fold)] = prob.y[fold.train]
    oof = pd.concat(frames, ignore_index=True)
    rows = _score_rows(prob, condition, layer, oof, {}, ytr)
    for r in rows:
        r["unconverged_folds"] = unconverged
    return oof, pd.DataFrame(rows)

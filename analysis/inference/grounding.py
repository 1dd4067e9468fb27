"""The pre-registered grounding effect on matched encoder pairs (``paper/preregistration_zoo.md``):
for a text tower trained against images from a text-only checkpoint (``after``) and that
checkpoint (``before``), the change (after - before) in the log-odds that a held-out item of the
matched task is classified correctly, per axis, averaged over the axes, and vertical - horizontal.

- Per pair (`pair_effects`): the same population-averaged model as the first pre-registration's
  contrast (GEE, logit link, one mean per axis x side, clustered by held-out word pair,
  Mancl-DeRouen bias-reduced sandwich, t on the contrast's clusters less one per axis).
- Across pairs (`across_pairs`, the test): the difference of empirical logits per pair x axis x
  held-out word pair (`cell_differences`), in a linear mixed model (statsmodels ``MixedLM``,
  REML) with a fixed mean per (axis, word pair), a random intercept per matched pair and a pair x
  axis variance component; t on (pairs - 1) degrees of freedom because the pairs are what is
  sampled. `tests/inference/test_grounding.py` checks both intervals' coverage by simulation.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy import stats

from analysis.inference.confirmatory import Contrast, cell_means_gee

SIDES = ("before", "after")
CELL_COLUMNS = ["pair", "axis", "cluster", "n", "correct_before", "correct_after",
                "logit_before", "logit_after", "difference"]


def _weights(axes: tuple[str, ...], asymmetry: tuple[str, str]) -> dict[str, dict[str, float]]:
    """Contrast name -> axis weights: each axis, their equal-weight mean, the asymmetry."""
    hi, lo = asymmetry
    return ({a: {a: 1.0} for a in axes} | {"mean over axes": {a: 1 / len(axes) for a in axes}}
            | {f"{hi} - {lo}": {hi: 1.0, lo: -1.0}})


def _side_rows(rows: pd.DataFrame, before: str, after: str, axes: tuple[str, ...]) -> pd.DataFrame:
    side = rows["condition"].map({before: "before", after: "after"})
    df = rows.assign(side=side)
    df = df[df["side"].notna() & df["axis"].isin(axes)].reset_index(drop=True)
    absent = [(a, s) for a in axes for s in SIDES
              if not ((df["axis"] == a) & (df["side"] == s)).any()]
    if absent:
        raise ValueError(f"grounding effect {after} - {before}: no rows for (axis, side) {absent}")
    y = df["correct"].to_numpy(float)
    if not ((y == 0) | (y == 1)).all():
        raise ValueError("grounding rows: 'correct' must be 0 or 1")
    return df


def pair_effects(rows: pd.DataFrame, before: str, after: str,
                 axes: tuple[str, ...] = ("vertical", "horizontal", "depth"),
                 asymmetry: tuple[str, str] = ("vertical", "horizontal"),
                 ci: float = 0.95) -> list[Contrast]:
    """One matched pair's grounding effect (after - before) per axis, its mean over ``axes`` and
    the ``asymmetry`` difference, from one row per (condition, held-out item): columns
    ``condition``, ``axis``, ``cluster`` (the held-out word pair) and ``correct`` (0/1)."""
    df = _side_rows(rows, before, after, axes)
    # both sides' rows of a held-out word pair form one cluster: the same items, paired
    beta, cov, col, n_clusters = cell_means_gee(df, "side", SIDES, axes)
    per_axis = df.groupby("axis")["cluster"].nunique()
    out = []
    for name, w in _weights(axes, asymmetry).items():
        L = np.zeros(len(col))
        for a, wa in w.items():
            L[col[(a, "after")]] += wa
            L[col[(a, "before")]] -= wa
        # t on the clusters the contrast rests on, less one mean per axis: one axis tested on two
        # word pairs gets 1 degree of freedom (the simulation's per-axis coverage needs it)
        dof = max(1, int(sum(per_axis[a] - 1 for a in w)))
        t_crit = stats.t.ppf(0.5 + ci / 2, dof)
        est, se = float(L @ beta), float(np.sqrt(L @ cov @ L))
        p = float(2 * stats.t.sf(abs(est) / se, dof)) if se > 0 else float("nan")
        out.append(Contrast(name, est, se, est - t_crit * se, est + t_crit * se, dof, p,
                            n_clusters, len(df), 0.0))
    return out


def empirical_logit(k: np.ndarray, n: np.ndarray) -> np.ndarray:
    """log((k + 1/2) / (n - k + 1/2)): finite at 0 and n correct (Haldane-Anscombe)."""
    k, n = np.asarray(k, float), np.asarray(n, float)
    return np.log((k + 0.5) / (n - k + 0.5))


def cell_differences(rows: pd.DataFrame, pairs: dict[str, tuple[str, str]],
                     axes: tuple[str, ...] = ("vertical", "horizontal", "depth")) -> pd.DataFrame:
    """Per matched pair x axis x held-out word pair: items, correct counts and empirical logits
    of both sides, and their difference (after - before). Both sides must have been tested on
    the same number of items in every cell (same rows and folds), else a ValueError."""
    out = []
    for name, (before, after) in pairs.items():
        df = _side_rows(rows, before, after, axes)
        g = df.groupby(["axis", "cluster", "side"])["correct"].agg(["size", "sum"]).unstack("side")
        if g.isna().any().any():
            missing = g.index[g.isna().any(axis=1)].tolist()
            raise ValueError(f"grounding pair {name}: cells tested on one side only {missing}")
        if not (g[("size", "before")] == g[("size", "after")]).all():
            raise ValueError(f"grounding pair {name}: {before} and {after} were tested on "
                             "different items (same rows and folds are required)")
        n = g[("size", "after")].to_numpy()
        kb, ka = g[("sum", "before")].to_numpy(), g[("sum", "after")].to_numpy()
        lb, la = empirical_logit(kb, n), empirical_logit(ka, n)
        out.append(pd.DataFrame({"pair": name, "axis": g.index.get_level_values("axis"),
                                 "cluster": g.index.get_level_values("cluster"), "n": n,
                                 "correct_before": kb, "correct_after": ka,
                                 "logit_before": lb, "logit_after": la, "difference": la - lb}))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=CELL_COLUMNS)


def across_pairs(cells: pd.DataFrame, axes: tuple[str, ...] = ("vertical", "horizontal", "depth"),
                 asymmetry: tuple[str, str] = ("vertical", "horizontal"),
                 ci: float = 0.95) -> list[Contrast]:
    """The grounding effect across matched pairs (the pre-registered test): per axis, the mean
    over axes and the asymmetry, from `cell_differences`' rows. Needs at least two pairs."""
    df = cells[cells["axis"].isin(axes)].reset_index(drop=True)
    n_pairs = df["pair"].nunique()
    if n_pairs < 2:
        raise ValueError(f"grounding effect across pairs: {n_pairs} matched pair(s), need 2")
    df = df.assign(cell=df["axis"].astype(str) + "|" + df["cluster"].astype(str))
    cells_of = {a: sorted(df.loc[df["axis"] == a, "cell"].unique()) for a in axes}
    with warnings.catch_warnings():
        # a variance component estimated at zero (the boundary) is expected with few pairs
        warnings.simplefilter("ignore")
        try:
            fit = smf.mixedlm("difference ~ 0 + C(cell)", df, groups="pair", re_formula="1",
                              vc_formula={"axis": "0 + C(axis)"}).fit(reml=True)
        except (np.linalg.LinAlgError, ValueError) as exc:
            raise ValueError(f"grounding effect across pairs: the mixed model did not fit ({exc})") from None
    names = list(fit.fe_params.index)
    beta = fit.fe_params.to_numpy()
    cov = fit.cov_params().loc[names, names].to_numpy()
    if not np.isfinite(cov).all():
        raise ValueError("grounding effect across pairs: the mixed model's covariance is not finite "
                         "(the differences may be identical in every cell)")
    dof = n_pairs - 1
    t_crit = stats.t.ppf(0.5 + ci / 2, dof)
    out = []
    for name, w in _weights(axes, asymmetry).items():
        L = np.zeros(len(names))
        for a, wa in w.items():
            for c in cells_of[a]:  # an axis: the equal-weight mean of its word pairs
                L[names.index(f"C(cell)[{c}]")] += wa / len(cells_of[a])
        est, se = float(L @ beta), float(np.sqrt(L @ cov @ L))
        p = float(2 * stats.t.sf(abs(est) / se, dof)) if se > 0 else float("nan")
        out.append(Contrast(name, est, se, est - t_crit * se, est + t_crit * se, dof, p,
                            n_pairs, len(df), 0.0))
    return out

"""The pre-registered confirmatory contrast (``paper/preregistration.md``): what training adds
to a grounded text encoder beyond what it adds to a distributional one,

    (grounded - grounded random) - (distributional - distributional random),

on the log-odds that a held-out test item is classified correctly, per axis and averaged over
the axes with equal weight, plus the vertical - horizontal difference of that contrast.

The unit of inference is the held-out word pair: a population-averaged logistic model (GEE,
logit link, independence working correlation) with one cell mean per axis x encoder kind,
clustered by the test word pair, with the Mancl-DeRouen bias-reduced sandwich covariance and a
t reference on (clusters - axes) degrees of freedom, since the tests rest on a dozen word pairs.
Random-weight encoders enter with several seeds; the spread of their per-seed log-odds
(variance of the seed mean) is added to the variance, so a lucky seed cannot carry the result.
`tests/inference/test_confirmatory.py` checks the intervals' coverage by simulation with known
answers. statsmodels' Bayesian mixed GLM was tried first and undercovered (about 75%: its MAP
and variational fits set the word-pair x encoder variance to zero), so it is not used.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats

KINDS = ("distributional_random", "distributional", "grounded_random", "grounded")


@dataclass(frozen=True)
class Contrast:
    """One contrast on the log-odds scale with its interval and test (H0: contrast = 0)."""

    name: str
    estimate: float
    se: float
    ci_low: float
    ci_high: float
    df: int
    p_value: float
    n_clusters: int
    n_rows: int
    seed_variance: float  # the part of se**2 from the random-weight seeds

    def as_dict(self) -> dict:
        return asdict(self)


def twin(condition: str, base: str) -> str | None:
    """"trained" for ``base``, "random" for its random-weight twins (any seed), else None."""
    if condition == base:
        return "trained"
    return "random" if re.fullmatch(rf"{re.escape(base)}_random(_s\d+)?", condition) else None


def encoder_kind(condition: str, grounded: str, distributional: str) -> str | None:
    """Which of `KINDS` a condition is (``clip_text_random_s3`` -> grounded_random), or None."""
    for base, kind in ((grounded, "grounded"), (distributional, "distributional")):
        t = twin(condition, base)
        if t is not None:
            return kind if t == "trained" else f"{kind}_random"
    return None


def cell_means_gee(df: pd.DataFrame, by: str, levels: tuple[str, ...], axes: tuple[str, ...]
                   ) -> tuple[np.ndarray, np.ndarray, dict[tuple[str, str], int], int]:
    """The population-averaged cell-means model of `correct` on axis x ``by``: GEE, logit link,
    independence working correlation, clustered by held-out word pair within axis (every
    encoder's rows of a word pair in one cluster), Mancl-DeRouen bias-reduced sandwich.
    Returns coefficients (each the logit of its cell's accuracy), their covariance, the column
    of each (axis, level) and the number of clusters."""
    col = {(a, k): i for i, (a, k) in enumerate((a, k) for a in axes for k in levels)}
    X = np.zeros((len(df), len(col)))
    X[np.arange(len(df)), [col[(a, k)] for a, k in zip(df["axis"], df[by])]] = 1.0
    clusters = pd.factorize(df["axis"].astype(str) + "|" + df["cluster"].astype(str))[0]
    fit = sm.GEE(df["correct"].to_numpy(float), X, groups=clusters, family=sm.families.Binomial(),
                 cov_struct=sm.cov_struct.Independence()).fit(cov_type="bias_reduced")
    return np.asarray(fit.params), np.asarray(fit.cov_params()), col, int(clusters.max() + 1)


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1 - p))


def training_contrasts(rows: pd.DataFrame, grounded: str, distributional: str,
                       axes: tuple[str, ...] = ("vertical", "horizontal", "depth"),
                       asymmetry: tuple[str, str] = ("vertical", "horizontal"),
                       ci: float = 0.95) -> list[Contrast]:
    """The contrast per axis, its equal-weight mean over ``axes`` (the primary contrast) and
    the ``asymmetry`` difference, from one row per (condition, held-out item): columns
    ``condition``, ``axis``, ``cluster`` (the item's held-out word pair) and ``correct`` (0/1).
    Rows of other conditions or axes are ignored; each axis needs every encoder kind."""
    need = {"condition", "axis", "cluster", "correct"} - set(rows.columns)
    if need:
        raise ValueError(f"confirmatory rows lack columns {sorted(need)}")
    df = rows.assign(kind=[encoder_kind(c, grounded, distributional) for c in rows["condition"]])
    df = df[df["kind"].notna() & df["axis"].isin(axes)].reset_index(drop=True)
    cells = df.groupby(["axis", "kind"]).size()
    absent = [(a, k) for a in axes for k in KINDS if (a, k) not in cells.index]
    if absent:
        raise ValueError(f"confirmatory contrast: no rows for (axis, encoder) {absent}")
    y = df["correct"].to_numpy(float)
    if not ((y == 0) | (y == 1)).all():
        raise ValueError("confirmatory rows: 'correct' must be 0 or 1")
    beta, cov, col, n_clusters = cell_means_gee(df, "kind", KINDS, axes)
    dof = max(1, n_clusters - len(axes))

    def did(a: str) -> np.ndarray:
        L = np.zeros(len(col))
        L[col[(a, "grounded")]], L[col[(a, "grounded_random")]] = 1, -1
        L[col[(a, "distributional")]], L[col[(a, "distributional_random")]] = -1, 1
        return L

    weights = {f"{a}": {a: 1.0} for a in axes}
    weights["mean over axes"] = {a: 1 / len(axes) for a in axes}
    hi, lo = asymmetry
    weights[f"{hi} - {lo}"] = {hi: 1.0, lo: -1.0}
    seeds = _seed_logits(df, axes)
    t_crit = stats.t.ppf(0.5 + ci / 2, dof)
    out = []
    for name, w in weights.items():
        L = sum(wa * did(a) for a, wa in w.items())
        est = float(L @ beta)
        v_seed = _seed_variance(seeds, w)
        se = float(np.sqrt(L @ cov @ L + v_seed))
        p = float(2 * stats.t.sf(abs(est) / se, dof)) if se > 0 else float("nan")
        out.append(Contrast(name, est, se, est - t_crit * se, est + t_crit * se, dof, p,
                            n_clusters, len(df), v_seed))
    return out


def training_effects(rows: pd.DataFrame, encoder: str,
                     axes: tuple[str, ...] = ("vertical", "horizontal", "depth"),
                     ci: float = 0.95) -> list[Contrast]:
    """One encoder's side of the contrast, trained - random (its seeds), per axis and averaged
    over the axes: what is available before the other encoder has run. Same model and
    intervals as `training_contrasts`."""
    df = rows.assign(kind=[twin(c, encoder) for c in rows["condition"]])
    df = df[df["kind"].notna() & df["axis"].isin(axes)].reset_index(drop=True)
    absent = [(a, k) for a in axes for k in ("random", "trained")
              if not ((df["axis"] == a) & (df["kind"] == k)).any()]
    if absent:
        raise ValueError(f"training effect of {encoder}: no rows for (axis, encoder) {absent}")
    beta, cov, col, n_clusters = cell_means_gee(df, "kind", ("random", "trained"), axes)
    dof = max(1, n_clusters - len(axes))
    seeds = {"random": _seed_logits(df.assign(kind=df["kind"].replace({"random": "r"})), axes, ("r",))["r"]}
    t_crit = stats.t.ppf(0.5 + ci / 2, dof)
    weights = {a: {a: 1.0} for a in axes} | {"mean over axes": {a: 1 / len(axes) for a in axes}}
    out = []
    for name, w in weights.items():
        L = np.zeros(len(col))
        for a, wa in w.items():
            L[col[(a, "trained")]] += wa
            L[col[(a, "random")]] -= wa
        est = float(L @ beta)
        v_seed = _seed_variance(seeds, w)
        se = float(np.sqrt(L @ cov @ L + v_seed))
        p = float(2 * stats.t.sf(abs(est) / se, dof)) if se > 0 else float("nan")
        out.append(Contrast(f"{encoder} - random: {name}", est, se, est - t_crit * se,
                            est + t_crit * se, dof, p, n_clusters, len(df), v_seed))
    return out


def _seed_logits(df: pd.DataFrame, axes: tuple[str, ...],
                 kinds: tuple[str, ...] = ("grounded_random", "distributional_random")
                 ) -> dict[str, pd.DataFrame]:
    """Random kind -> per-seed (rows) x axis (columns) log-odds of accuracy."""
    out = {}
    for kind in kinds:
        sub = df[df["kind"] == kind]
        acc = sub.groupby(["condition", "axis"])["correct"].mean().unstack("axis")[list(axes)]
        out[kind] = pd.DataFrame(_logit(acc.clip(1e-3, 1 - 1e-3).to_numpy()), index=acc.index,
                                 columns=list(axes))
    return out


def _seed_variance(seeds: dict[str, pd.DataFrame], w: dict[str, float]) -> float:
    """Variance of the seed mean of the contrast's random-encoder terms (0 with one seed)."""
    total = 0.0
    for logits in seeds.values():
        if len(logits) < 2:
            continue
        per_seed = sum(wa * logits[a] for a, wa in w.items())
        total += float(np.var(per_seed, ddof=1) / len(per_seed))
    return total


def contrasts_table(contrasts: list[Contrast]) -> pd.DataFrame:
    return pd.DataFrame([c.as_dict() for c in contrasts], columns=list(Contrast.__dataclass_fields__))


def matched_rows(oof: pd.DataFrame, relations: pd.DataFrame, task: str = "M_polarity") -> pd.DataFrame:
    """One row per (condition, split, held-out item) of the matched task at the primary layer:
    ``correct``, the ``axis`` (the probe's target) and its ``cluster``, the held-out word pair
    (the two relation words a split tests on)."""
    df = oof[(oof["task"] == task) & (oof["layer"] == -1)]
    if df.empty:
        return pd.DataFrame(columns=["condition", "axis", "cluster", "correct", "repeat", "row_id"])
    rel = relations.drop_duplicates("row_id").set_index("row_id")["relation"]
    df = df.assign(word=df["row_id"].astype(str).map(rel).to_numpy())
    if df["word"].isna().any():
        raise ValueError(f"{task}: {int(df['word'].isna().sum())} OOF rows not in the VSR tables")
    key = ["condition", "target", "repeat"]
    pair = df.groupby(key)["word"].agg(lambda w: " / ".join(sorted(set(w)))).rename("cluster")
    df = df.join(pair, on=key)
    return pd.DataFrame({"condition": df["condition"].astype(str).to_numpy(),
                         "axis": df["target"].astype(str).to_numpy(),
                         "cluster": df["cluster"].to_numpy(),
                         "correct": (df["y_true"] == df["y_pred"]).astype(int).to_numpy(),
                         "repeat": df["repeat"].to_numpy(), "row_id": df["row_id"].astype(str).to_numpy()})

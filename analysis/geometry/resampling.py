"""Resampling schemes of the geometry stage, none of which duplicates a stimulus, and the
intervals and p-values they give. Pure functions.

Why not the ordinary bootstrap: RDM and CKA statistics are functions of *pairs* of stimuli. A
bootstrap resample draws some stimuli twice, which copies every pair the stimulus is in and adds
pairs of a stimulus with its own copy (distance 0, Gram entry = squared norm); linear CKA and
rank correlations of such resamples are biased upwards, so the bootstrap distribution sits above
the estimate and its percentile interval can exclude it (issue 5). Here every replicate is a
*subset* of the stimuli (``weights`` in {0, 1}), so each replicate is the same statistic on fewer,
distinct stimuli:

- ``group_subsamples`` (VSR captions): m-out-of-G subsampling of the resampling groups without
  replacement (Politis & Romano 1994; Politis, Romano & Wolf 1999), half of the groups by default.
  The sampling distribution of the estimate is approximated by the deviations of the replicates
  from their mean, rescaled by ``sqrt(m / (G - m))`` (the finite-population correction: the
  variance of a mean of m of G units without replacement is (1/m - 1/G) S^2, of the full-sample
  mean S^2 / G; for half-sampling the scale is 1), and placed around the estimate:
  theta_hat - scale * (deviation quantiles), the subsampling interval (see ``pseudo_values``).
- ``noun_jackknife`` (the template set): the template items cross 10 nouns into 45 pairs, so a
  noun pair is dependent on both of its nouns and the nouns are the independent units. The
  delete-one-noun jackknife (each replicate drops every item containing one noun; Arvesen 1969
  for U-statistics, Snijders & Borgatti 1999 for dyadic data) gives a standard error; the
  interval is estimate +- t_{N-1} * se. Subsampling half of 10 nouns would keep 10 of 45 pairs
  (and with the smoke profile's 4 nouns, one pair), so the jackknife is the scheme that works at
  this number of units.

Correlation-type statistics (Spearman, tau-a, CKA; bounded by 1 in absolute value) are
resampled on Fisher's z scale (atanh) and the interval mapped back, so intervals near the ceiling
stay inside [-1, 1] and are not truncated on one side (percentile intervals of a statistic
piled against its bound undercover there).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.stats

TRANSFORMS = ("identity", "fisher")
_CLIP = 1 - 1e-12


@dataclass(frozen=True)
class Resamples:
    """Replicates of one stimulus set: ``weights[r, i]`` is 1 where stimulus i is in replicate
    r (never more than once), and how to turn the replicates into an interval."""

    weights: np.ndarray
    """(R, n) uint8 in {0, 1}"""
    kind: str
    """"subsample" (m-out-of-G groups without replacement) or "jackknife" (delete one unit)"""
    n_units: int
    """independent units (groups, nouns)"""
    m_units: int
    """units kept in each replicate"""
    unit: str
    """what the units are, for the tables' ``resampling`` column"""

    @property
    def scale(self) -> float:
        """Factor from replicate deviations to the sampling variability of the estimate."""
        if self.kind == "subsample":
            return float(np.sqrt(self.m_units / (self.n_units - self.m_units)))
        return float(np.sqrt(self.n_units - 1))  # jackknife: se^2 = (N-1)/N sum (theta_a - mean)^2

    @property
    def label(self) -> str:
        if self.kind == "subsample":
            return f"subsample {self.m_units} of {self.n_units} {self.unit}s"
        return f"jackknife over {self.n_units} {self.unit}s"

    def __len__(self) -> int:
        return len(self.weights)


def group_subsamples(groups: np.ndarray, n_resamples: int, seed: int, fraction: float = 0.5,
                     require: Sequence[np.ndarray] = (), unit: str = "group",
                     max_tries: int = 100) -> Resamples:
    """``n_resamples`` subsets of ``round(fraction * G)`` of the G distinct ``groups``, drawn
    without replacement; every stimulus of a drawn group is kept (weight 1), the others dropped.

    ``require``: stimulus indices or boolean masks (e.g. the rows of each relation) that must
    keep at least one stimulus in every replicate; subsets that lose one are redrawn (a statistic that is
    undefined without them, such as a relation centroid, is then defined in every replicate)."""
    if not 0 < fraction < 1:
        raise ValueError(f"subsample fraction must be in (0, 1), got {fraction}")
    _, codes = np.unique(np.asarray(groups), return_inverse=True)
    G = int(codes.max()) + 1 if len(codes) else 0
    m = int(round(fraction * G))
    if G < 2 or not 0 < m < G:
        raise ValueError(f"subsampling needs at least 2 groups (got {G}, keeping {m})")
    rng = np.random.default_rng(seed)
    need = []
    for r in require:
        r = np.asarray(r)
        idx = np.flatnonzero(r) if r.dtype == bool else r.astype(np.int64)
        if len(idx):
            need.append(np.unique(codes[idx]))

    def draw(k: int) -> np.ndarray:
        keys = rng.random((k, G))
        keep = np.zeros((k, G), dtype=bool)
        np.put_along_axis(keep, np.argpartition(keys, m - 1, axis=1)[:, :m], True, axis=1)
        return keep

    keep = draw(n_resamples)
    for _ in range(max_tries):
        bad = np.zeros(n_resamples, dtype=bool)
        for g in need:
            bad |= ~keep[:, g].any(axis=1)
        if not bad.any():
            break
        keep[bad] = draw(int(bad.sum()))
    else:
        raise ValueError("could not draw subsamples that keep every required set of stimuli")
    return Resamples(keep[:, codes].astype(np.uint8), "subsample", G, m, unit)


def noun_jackknife(nouns: np.ndarray, unit: str = "noun") -> Resamples:
    """Delete-one-noun replicates of stimuli made of two nouns each: ``nouns`` is (n, 2) integer
    codes (0..N-1); replicate a keeps the stimuli that do not contain noun a."""
    nouns = np.asarray(nouns)
    if nouns.ndim != 2 or nouns.shape[1] != 2 or (nouns < 0).any():
        raise ValueError("noun_jackknife needs (n, 2) non-negative noun codes")
    N = int(nouns.max()) + 1
    if N < 3:
        raise ValueError(f"the noun jackknife needs at least 3 nouns, got {N}")
    a = np.arange(N)[:, None]
    keep = (nouns[None, :, 0] != a) & (nouns[None, :, 1] != a)
    return Resamples(keep.astype(np.uint8), "jackknife", N, N - 1, unit)


# ----------------------------------------------------------------------------- intervals


def _fwd(x: np.ndarray | float, transform: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if transform == "fisher":
        return np.arctanh(np.clip(x, -_CLIP, _CLIP))
    if transform == "identity":
        return x
    raise ValueError(f"unknown transform {transform!r}: use one of {TRANSFORMS}")


def _back(z: np.ndarray | float, transform: str) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    return np.tanh(z) if transform == "fisher" else z


def pseudo_values(estimate: float, replicates: np.ndarray, res: Resamples, ref: float | None = None,
                  transform: str = "identity", center: str = "mean") -> np.ndarray:
    """Subsampling: draws from the approximate sampling distribution of the estimate,
    g^-1(g(estimate) - scale * (g(replicate) - c)), NaN replicates dropped, with c the mean of
    the g(replicates) (``center="mean"``, the default) or g(ref) (``center="estimate"``: ``ref``
    is the full-sample value computed exactly as the replicates are, e.g. on the same pair
    subsample or rank bins; by default the estimate itself).

    Both centrings are asymptotically equivalent (Politis, Romano & Wolf 1999, ch. 2). Centring
    at the replicates' mean keeps the interval around the estimate (which is then inside it
    unless the replicates are extremely skewed) instead of shifting it by the difference between
    the half-sample and full-sample biases, and makes approximations the replicates share (pair
    subsample, rank bins) cancel without a reference value; in the coverage simulations
    (tests/geometry/test_resampling.py) it covers at least as well."""
    if res.kind != "subsample":
        raise ValueError("pseudo_values apply to subsampling replicates")
    rep = np.asarray(replicates, dtype=np.float64)
    rep = rep[np.isfinite(rep)]
    ref = estimate if ref is None else ref
    zr = _fwd(rep, transform)
    c = _fwd(ref, transform) if center == "estimate" else zr.mean()
    return _back(_fwd(estimate, transform) - res.scale * (zr - c), transform)


def two_sided_p(draws: np.ndarray, null: float = 0.0) -> float:
    """Twice the smaller share of draws on either side of ``null``, +1 corrected (never 0)."""
    draws = np.asarray(draws, dtype=np.float64)
    draws = draws[np.isfinite(draws)]
    b = len(draws)
    if b == 0:
        return float("nan")
    below, above = int((draws <= null).sum()), int((draws >= null).sum())
    return float(min(1.0, 2 * min(below + 1, above + 1) / (b + 1)))


def interval(estimate: float, replicates: np.ndarray, res: Resamples, level: float,
             ref: float | None = None, transform: str = "identity",
             null: float = 0.0, center: str = "mean") -> dict[str, Any]:
    """Estimate, ``level`` interval and two-sided p-value for H0: value == ``null`` from the
    replicates of ``res`` (one per row of its weights).

    subsample: the percentile interval and p-value of the pseudo-values (the Politis-Romano
    subsampling interval); jackknife: g(estimate) +- t_{N-1} se_J on the transformed scale,
    p from the t distribution with N-1 degrees of freedom. ``n_boot`` = replicates used."""
    estimate = float(estimate)
    rep = np.asarray(replicates, dtype=np.float64)
    out = {"estimate": estimate, "ci_low": np.nan, "ci_high": np.nan, "p_value": np.nan,
           "n_boot": 0, "h0": f"={null:g}"}
    if not np.isfinite(estimate) or rep.size == 0:
        return out
    alpha = (1 - level) / 2
    if res.kind == "subsample":
        draws = pseudo_values(estimate, rep, res, ref, transform, center)
        if len(draws) == 0:
            return out
        lo, hi = np.quantile(draws, [alpha, 1 - alpha])
        return {**out, "ci_low": float(lo), "ci_high": float(hi),
                "p_value": two_sided_p(draws, null), "n_boot": int(len(draws))}
    if not np.isfinite(rep).all():  # a jackknife needs every delete-one value
        return out
    z = _fwd(rep, transform)
    N = len(z)
    se = float(np.sqrt((N - 1) / N * np.sum((z - z.mean()) ** 2)))
    ze = float(_fwd(estimate, transform))
    t = scipy.stats.t.ppf(1 - alpha, N - 1)
    lo, hi = _back(ze - t * se, transform), _back(ze + t * se, transform)
    if se > 0:
        p = 2 * scipy.stats.t.sf(abs(ze - float(_fwd(null, transform))) / se, N - 1)
    else:
        p = 0.0 if ze != float(_fwd(null, transform)) else 1.0
    return {**out, "ci_low": float(lo), "ci_high": float(hi), "p_value": float(p), "n_boot": N}

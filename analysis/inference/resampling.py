"""Statistics over out-of-fold (OOF) probe predictions: grouped, stratified bootstrap CIs,
paired condition comparisons, permutation p-values, multiplicity corrections and the
pre-specified vertical-vs-horizontal asymmetry contrast.

Every resampling scheme here is a matrix of weights (resamples × units), a unit being a CV group
or a (side, group) cell: a bootstrap replicate weights each group by how often it was drawn, a
permutation selects or swaps groups with 0/1 weights. Metrics are then computed for all
replicates at once: macro F1 and accuracy from per-unit confusion counts (one small matrix
product), AUPRC from weighted cumulative sums over one fixed score ordering.
``scipy.stats.bootstrap`` resamples observations, not groups, and cannot stratify, and calling
sklearn once per replicate (thousands of probes × 2,000 resamples) is far too slow, so the
resampling is vectorized numpy here; the tests check every weighted metric against sklearn's
``sample_weight`` and the intervals against ``scipy.stats.bootstrap``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import functools

import numpy as np
import pandas as pd
from scipy import sparse, stats
from scipy.sparse.csgraph import connected_components

METRICS = ("macro_f1", "auprc", "accuracy")
CI_METHODS = ("percentile", "bca")
_JACKKNIFE_BLOCK = 1024  # leave-one-group-out weight rows per block in the BCa jackknife


@dataclass(frozen=True)
class Predictions:
    """OOF predictions of one probe as items, one per (repeat, row): a repeat is an outer-CV
    seed (every row once) or a held-out-word assignment (its own test rows). Scores are computed
    per repeat and averaged. ``groups`` are the items' CV groups, ``rows`` their row ids."""

    y_true: np.ndarray  # (N,) int
    y_pred: np.ndarray  # (N,) int
    score: np.ndarray  # (N,) float: P(class 1) for binary probes
    groups: np.ndarray  # (N,) hashable
    repeat: np.ndarray  # (N,) int
    rows: np.ndarray  # (N,) hashable
    _by_repeat: list = field(init=False, repr=False, compare=False)
    _group_index: tuple = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        n = np.shape(self.y_true)
        for name in ("y_pred", "score", "groups", "repeat", "rows"):
            if np.shape(getattr(self, name)) != n or len(n) != 1:
                raise ValueError(f"Predictions: {name} has shape {np.shape(getattr(self, name))}, "
                                 f"y_true {n}; all must be 1-D of one length")
        order = np.argsort(self.repeat, kind="stable")
        cuts = np.flatnonzero(np.diff(self.repeat[order])) + 1
        object.__setattr__(self, "_by_repeat", np.split(order, cuts) if len(order) else [])

    @classmethod
    def aligned(cls, y_true, y_pred, score, groups, rows=None) -> "Predictions":
        """From (repeats × rows) arrays predicting the same rows in every repeat."""
        y_true, y_pred, score = (np.atleast_2d(np.asarray(a)) for a in (y_true, y_pred, score))
        R, n = y_true.shape
        rows = np.arange(n) if rows is None else np.asarray(rows)
        return cls(y_true.ravel(), y_pred.ravel(), score.ravel().astype(float), np.tile(np.asarray(groups), R),
                   np.repeat(np.arange(R), n), np.tile(rows, R))

    @property
    def n_items(self) -> int:
        return len(self.y_true)

    @property
    def n(self) -> int:
        """Distinct rows."""
        return len(pd.unique(self.rows))

    @property
    def n_repeats(self) -> int:
        return len(self._by_repeat)

    def by_repeat(self) -> list[np.ndarray]:
        """Item indices of each repeat."""
        return self._by_repeat

    def group_index(self) -> tuple[np.ndarray, int]:
        """Group codes 0..G-1 of the items, and G (computed once)."""
        if self._group_index is None:
            object.__setattr__(self, "_group_index", group_codes(self.groups))
        return self._group_index

    def take(self, idx: np.ndarray) -> "Predictions":
        """The items ``idx`` (in that order)."""
        return Predictions(self.y_true[idx], self.y_pred[idx], self.score[idx], self.groups[idx],
                           self.repeat[idx], self.rows[idx])


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its bootstrap interval (and a p-value where a test applies)."""

    metric: str
    estimate: float
    ci_low: float
    ci_high: float
    n: int
    n_groups: int
    n_resamples: int
    level: float
    method: str
    p_value: float = float("nan")
    n_permutations: int = 0

    def as_row(self) -> dict:
        return {"metric": self.metric, "estimate": self.estimate, "ci_low": self.ci_low,
                "ci_high": self.ci_high, "n": self.n, "n_groups": self.n_groups,
                "n_resamples": self.n_resamples, "ci_level": self.level, "ci_method": self.method,
                "p_value": self.p_value, "n_permutations": self.n_permutations}


# ---------------------------------------------------------------------------------------------
# metrics: weighted and vectorized over resamples (point estimates are unit weights)


def is_binary(pred: Predictions) -> bool:
    return set(np.unique(pred.y_true)) <= {0, 1} and set(np.unique(pred.y_pred)) <= {0, 1}


def metric_point(metric: str, pred: Predictions) -> float:
    """The metric on the OOF predictions, averaged over repeats: the weighted computation at
    unit weights, which equals sklearn's f1_score / average_precision_score / accuracy_score
    (the tests check this; sklearn's input validation costs ms a call, thousands of calls here)."""
    return float(metric_weighted(metric, pred, np.ones((1, pred.n_items)))[0])


def metric_weighted(metric: str, pred: Predictions, W: np.ndarray,
                    units: np.ndarray | None = None) -> np.ndarray:
    """The metric under every row of the weight matrix ``W`` at once, averaged over repeats.
    ``W`` is (B × n) row weights, or (B × U) unit weights with ``units`` (n,) naming each row's
    unit in 0..U-1. Equals sklearn's metric with ``sample_weight=W[b]`` (zero_division=0)."""
    W = np.atleast_2d(np.asarray(W))
    if not np.issubdtype(W.dtype, np.floating):
        W = W.astype(np.float64)
    if units is None:
        units = np.arange(pred.n_items)
    units = np.asarray(units, dtype=np.int64)
    if units.shape != (pred.n_items,) or (len(units) and (units.min() < 0 or units.max() >= W.shape[1])):
        raise ValueError(f"weights have {W.shape[1]} columns; units must map {pred.n_items} items into them")
    if metric == "auprc":
        _require_binary(pred, metric)
    fn = {"macro_f1": _macro_f1_w, "accuracy": _accuracy_w, "auprc": _auprc_w}.get(metric)
    if fn is None:
        raise ValueError(f"unknown metric {metric!r}; choose from {METRICS}")
    used = np.flatnonzero(np.bincount(units, minlength=W.shape[1]))
    if len(used) < W.shape[1] // 2:  # a probe on a few of many groups (one target of a family)
        local = np.zeros(W.shape[1], np.int64)
        local[used] = np.arange(len(used))
        W, units = W[:, used], local[units]
    if metric == "auprc":  # works on (units × resamples): transpose once for all repeats
        W = np.ascontiguousarray(W.T)
    out = np.zeros(W.shape[1] if metric == "auprc" else W.shape[0])
    for idx in pred.by_repeat():
        out += fn(pred.y_true[idx], pred.y_pred[idx], pred.score[idx], W, units[idx])
    return out / pred.n_repeats


def _require_binary(pred: Predictions, metric: str) -> None:
    if not set(np.unique(pred.y_true)) <= {0, 1}:
        raise ValueError(f"{metric} needs binary labels (0/1); got classes {np.unique(pred.y_true)[:10]}")


def _class_index(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """y and p as indices into the sorted classes seen in either, and their number."""
    both = np.concatenate([y, p])
    if both.min() < 0:
        labels, inv = np.unique(both, return_inverse=True)
        inv = inv.ravel()
        return inv[: len(y)], inv[len(y):], len(labels)
    seen = np.bincount(both) > 0  # class labels are small non-negative ints: no sort needed
    lookup = np.cumsum(seen) - 1
    return lookup[y], lookup[p], int(seen.sum())


def _macro_f1_w(y, p, s, W, units) -> np.ndarray:
    # sklearn's label set: every class seen in y_true or y_pred; F1 = 0 where undefined.
    # Per unit: [hits per class | predicted per class | true per class], by one bincount.
    yi, pi, k = _class_index(y, p)
    n_units = W.shape[1]
    base = units * (3 * k)
    idx = np.concatenate([base[yi == pi] + yi[yi == pi], base + k + pi, base + 2 * k + yi])
    per_unit = np.bincount(idx, minlength=n_units * 3 * k).reshape(n_units, 3 * k).astype(W.dtype)
    counts = W @ per_unit
    tp, n_pred, n_true = counts[:, :k], counts[:, k:2 * k], counts[:, 2 * k:]
    denom = n_pred + n_true  # = 2 TP + FP + FN
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    # A class with no weight at all in a resample (neither true nor predicted) has no F1: it is
    # left out of that resample's mean instead of counting as 0, so the label set is the full
    # data's (every class present at unit weights) and a resample missing a class is not biased
    # down. At unit weights every class is defined, so this equals sklearn's macro F1.
    defined = denom > 0
    n_def = defined.sum(axis=1)
    return np.divide(f1.sum(axis=1), n_def, out=np.full(len(f1), np.nan), where=n_def > 0)


def _accuracy_w(y, p, s, W, units) -> np.ndarray:
    n_units = W.shape[1]
    per_unit = np.c_[np.bincount(units, weights=(y == p), minlength=n_units),
                     np.bincount(units, minlength=n_units)].astype(W.dtype)
    right, total = (W @ per_unit).T
    return np.divide(right, total, out=np.full(len(W), np.nan), where=total > 0)


def _step_matrix(step: np.ndarray, units: np.ndarray, K: int, U: int, dtype) -> sparse.csr_array:
    """(K × U) counts of items per (threshold step, unit); ``step`` is sorted, so the CSR
    arrays are built directly (repeated units in a row are summed by the product)."""
    indptr = np.searchsorted(step, np.arange(K + 1))
    return sparse.csr_array((np.ones(len(units), dtype), units, indptr), shape=(K, U))


def _auprc_w(y, p, s, Wt, units) -> np.ndarray:
    # sklearn's step-wise AP: sum over distinct thresholds of (R_k - R_{k-1}) * P_k. Only
    # thresholds whose tie block holds a positive add recall, so only those K are evaluated:
    # the weight seen up to each is a cumulative sum over K of (K × units) sparse count matrices
    # times the weights, B·n work without gathering a (B × n) matrix.
    order = np.argsort(-s, kind="stable")
    ys, ss, us = y[order], s[order], units[order]
    block = np.r_[0, np.cumsum(ss[1:] != ss[:-1])]  # tie block of each sorted row
    pos_rows = np.flatnonzero(ys == 1)
    out = np.full(Wt.shape[1], np.nan)
    if not len(pos_rows):
        return out
    blocks_with_pos = np.unique(block[pos_rows])
    K, U = len(blocks_with_pos), Wt.shape[0]
    step = np.searchsorted(blocks_with_pos, block)  # first evaluated threshold that includes the row
    inside = step < K
    seen_inc = _step_matrix(step[inside], us[inside], K, U, Wt.dtype)
    pos_inc = _step_matrix(step[pos_rows], us[pos_rows], K, U, Wt.dtype)
    chunk = max(1, (8 << 20) // max(1, K))  # bounds the (K × chunk) products at ~8M values
    for lo in range(0, Wt.shape[1], chunk):
        Wc = Wt[:, lo:lo + chunk]  # (units × resamples); results are thresholds × resamples
        seen = np.cumsum(seen_inc @ Wc, axis=0)
        gain = pos_inc @ Wc
        tps = np.cumsum(gain, axis=0)
        precision = np.divide(tps, seen, out=np.zeros_like(tps), where=seen > 0)
        total = tps[-1]
        out[lo:lo + chunk] = np.divide(np.sum(gain * precision, axis=0), total,
                                       out=np.full(len(total), np.nan), where=total > 0)
    return out


# ---------------------------------------------------------------------------------------------
# resampling


def group_codes(groups: np.ndarray) -> tuple[np.ndarray, int]:
    """Integer codes 0..G-1 for group labels (in order of first appearance), and G."""
    groups = np.asarray(groups)
    codes, uniques = pd.factorize(groups if groups.dtype.kind in "iub" else groups.astype(object))
    return codes.astype(np.int64), len(uniques)


def shared_groups(a: Predictions, b: Predictions) -> tuple[np.ndarray, int]:
    """Group codes for paired items: a's groups when b agrees, else the merged grouping."""
    if np.array_equal(a.groups, b.groups):
        return a.group_index()
    return group_codes(merge_groups(a.groups, b.groups))


def group_strata(codes: np.ndarray, y: np.ndarray, n_groups: int) -> np.ndarray:
    """Stratum of each group: its most frequent class (ties: the smallest class). Groups can
    mix classes (a caption seen with both labels), so strata are per group, not per row."""
    classes, yi = np.unique(np.asarray(y).ravel(), return_inverse=True)
    k = len(classes)
    counts = np.bincount(np.asarray(codes) * k + yi.ravel(), minlength=n_groups * k).reshape(n_groups, k)
    return counts.argmax(axis=1)


def bootstrap_counts(strata: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """How often each group is drawn in each replicate (B × G): within each stratum, as many
    groups as it has, drawn with replacement (stratified cluster bootstrap)."""
    strata = np.asarray(strata)
    order = np.argsort(strata, kind="stable")  # strata as contiguous column blocks
    blocks = []
    for members in np.split(order, np.flatnonzero(np.diff(strata[order])) + 1):
        m = len(members)
        draws = rng.integers(0, m, size=(n_resamples, m), dtype=np.int64)
        draws += (np.arange(n_resamples, dtype=np.int64) * m)[:, None]
        blocks.append(np.bincount(draws.ravel(), minlength=n_resamples * m).reshape(n_resamples, m))
    counts = np.empty((n_resamples, len(strata)), dtype=np.float32)  # small integers: exact
    counts[:, order] = np.hstack(blocks)
    return counts


@functools.lru_cache(maxsize=4)  # targets are processed one after another
def _cached_counts(strata_key: bytes, n_resamples: int, seed: tuple) -> np.ndarray:
    counts = bootstrap_counts(np.frombuffer(strata_key, dtype=np.int64), n_resamples, np.random.default_rng(list(seed)))
    counts.flags.writeable = False
    return counts


def resample_counts(strata: np.ndarray, n_resamples: int, seed) -> np.ndarray:
    """``bootstrap_counts`` for a seed, cached: every condition and metric of one target (same
    groups, same seed) shares one set of resamples, as a paired analysis needs anyway."""
    key = tuple(int(x) for x in np.atleast_1d(np.asarray(seed, dtype=object)))
    return _cached_counts(np.asarray(strata, dtype=np.int64).tobytes(), int(n_resamples), key)


def merge_groups(*groupings: np.ndarray) -> np.ndarray:
    """Connected components of rows linked by any of the groupings (e.g. caption groups of one
    condition and image+caption groups of another): the coarsest grouping both respect."""
    n = len(groupings[0])
    offset, rows, cols = n, [], []
    for g in groupings:
        codes, k = group_codes(g)
        rows.append(np.arange(n))
        cols.append(codes + offset)
        offset += k
    r, c = np.concatenate(rows), np.concatenate(cols)
    adj = sparse.coo_matrix((np.ones(len(r)), (r, c)), shape=(offset, offset))
    _, labels = connected_components(adj, directed=False)
    return labels[:n]


def _interval(theta_hat: float, boots: np.ndarray, level: float, method: str,
              jackknife: Callable[[], np.ndarray] | None) -> tuple[float, float]:
    boots = boots[np.isfinite(boots)]
    if not len(boots) or not np.isfinite(theta_hat):
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    if method == "percentile":
        lo, hi = np.quantile(boots, [alpha, 1 - alpha])
        return float(lo), float(hi)
    if method != "bca":
        raise ValueError(f"unknown CI method {method!r}; choose from {CI_METHODS}")
    # BCa (Efron 1987), as scipy.stats.bootstrap computes it; jackknife over whole groups
    frac = (np.sum(boots < theta_hat) + np.sum(boots <= theta_hat)) / (2 * len(boots))
    z0 = stats.norm.ppf(np.clip(frac, 1 / (2 * len(boots)), 1 - 1 / (2 * len(boots))))
    jack = jackknife()
    jack = jack[np.isfinite(jack)]
    d = jack.mean() - jack
    denom = 6 * np.sum(d ** 2) ** 1.5
    a = np.sum(d ** 3) / denom if denom > 0 else 0.0
    z = stats.norm.ppf([alpha, 1 - alpha])
    adj = stats.norm.cdf(z0 + (z0 + z) / (1 - a * (z0 + z)))
    lo, hi = np.quantile(boots, adj)
    return float(lo), float(hi)


def _jackknife(stat: Callable[[np.ndarray], np.ndarray], n_groups: int) -> np.ndarray:
    """``stat`` with each group left out in turn (unit weights 1 − I)."""
    out, step = [], _JACKKNIFE_BLOCK
    for lo in range(0, n_groups, step):
        W = np.ones((min(step, n_groups - lo), n_groups), dtype=np.float32)
        W[np.arange(len(W)), lo + np.arange(len(W))] = 0.0
        out.append(stat(W))
    return np.concatenate(out)


def _resample_stat(stat: Callable[[np.ndarray], np.ndarray], theta_hat: float, codes: np.ndarray,
                   y_strata: np.ndarray | None, n_resamples: int, seed, level: float, method: str,
                   ) -> tuple[float, float]:
    """CI of ``stat`` (group weights B × G -> B values) under the stratified group bootstrap;
    ``codes`` (n,) are the rows' groups in 0..G-1."""
    n_groups = int(codes.max()) + 1
    strata = (np.zeros(n_groups, int) if y_strata is None else group_strata(codes, y_strata, n_groups))
    counts = resample_counts(strata, n_resamples, seed)
    boots = stat(counts)  # group-level weights are small (B × G); row-level work chunks itself
    return _interval(theta_hat, boots, level, method, lambda: _jackknife(stat, n_groups))


def bootstrap_ci(pred: Predictions, metric: str, n_resamples: int = 2000, seed=0,
                 level: float = 0.95, method: str = "percentile", stratify: bool = True) -> Estimate:
    """Metric with a CI from resampling whole groups, stratified by the groups' majority class."""
    theta = metric_point(metric, pred)
    codes, n_groups = pred.group_index()
    lo, hi = _resample_stat(lambda W: metric_weighted(metric, pred, W, codes), theta, codes,
                            pred.y_true if stratify else None, n_resamples, seed, level, method)
    return Estimate(metric, theta, lo, hi, pred.n, n_groups, n_resamples, level, method)


# ---------------------------------------------------------------------------------------------
# paired comparisons of two conditions on identical rows


def check_paired(a: Predictions, b: Predictions, same_labels: bool = True) -> None:
    """Paired predictions hold the same (repeat, row) items in the same order."""
    if a.n_items != b.n_items or not (np.array_equal(a.repeat, b.repeat) and np.array_equal(a.rows, b.rows)):
        raise ValueError("paired predictions must hold the same (repeat, row) items in the same order")
    if same_labels and not np.array_equal(a.y_true, b.y_true):
        raise ValueError("paired predictions disagree on y_true for the same rows")


def paired_bootstrap_ci(a: Predictions, b: Predictions, metric: str, n_resamples: int = 2000,
                        seed=0, level: float = 0.95, method: str = "percentile",
                        same_labels: bool = True) -> Estimate:
    """CI of metric(a) − metric(b): one resample of groups, applied to both conditions.
    Groups are merged across the two conditions' groupings so no linked rows are split."""
    check_paired(a, b, same_labels)
    codes, n_groups = shared_groups(a, b)
    theta = metric_point(metric, a) - metric_point(metric, b)

    def stat(W: np.ndarray) -> np.ndarray:
        return metric_weighted(metric, a, W, codes) - metric_weighted(metric, b, W, codes)

    # strata: a's classes, or (a's class, b's class) pairs when the labels differ (a task and its
    # control task), so neither side's classes can vanish from a resample
    strata = a.y_true if same_labels else a.y_true * (int(b.y_true.max()) + 1) + b.y_true
    lo, hi = _resample_stat(stat, theta, codes, strata, n_resamples, seed, level, method)
    return Estimate(metric, theta, lo, hi, a.n, n_groups, n_resamples, level, method)


def _stack(a: Predictions, b: Predictions) -> Predictions:
    """Rows of a followed by rows of b, so a swap is a choice of 0/1 weights over the stack."""
    return Predictions(*(np.concatenate([getattr(a, f), getattr(b, f)])
                         for f in ("y_true", "y_pred", "score", "groups", "repeat", "rows")))


def paired_permutation_pvalue(a: Predictions, b: Predictions, metric: str,
                              n_permutations: int = 1000, seed=0) -> float:
    """Two-sided p-value for metric(a) = metric(b): within each group, the two conditions'
    predictions are swapped with probability 1/2; p = (1 + #|d*| ≥ |d|) / (1 + P)."""
    check_paired(a, b)
    codes, n_groups = shared_groups(a, b)
    observed = metric_point(metric, a) - metric_point(metric, b)
    stacked, units = _stack(a, b), np.r_[codes, codes + n_groups]
    rng = np.random.default_rng(seed)
    swap = rng.integers(0, 2, size=(n_permutations, n_groups)).astype(np.float32)
    wa = np.hstack([1 - swap, swap])  # condition a's role: its own rows unless swapped
    d = metric_weighted(metric, stacked, wa, units) - metric_weighted(metric, stacked, 1 - wa, units)
    exceed = int(np.sum(np.abs(d) >= abs(observed) - 1e-12))
    return (1 + exceed) / (1 + n_permutations)


def permutation_pvalue(observed: float, null: Sequence[float], exact: bool) -> float:
    """One-sided p-value of ``observed`` against the statistic under permutations: the share of
    permutations at least as large when they are exhaustive (they include the observed
    labelling), else the add-one estimate (the observed labelling counts as one)."""
    null = np.asarray(null, dtype=float)
    null = null[np.isfinite(null)]
    if not len(null) or not np.isfinite(observed):
        return float("nan")
    hits = int(np.sum(null >= observed - 1e-9))
    return hits / len(null) if exact else (1 + hits) / (1 + len(null))


def min_attainable_p(n_null: int, exact: bool) -> float:
    return 1 / n_null if exact else 1 / (1 + n_null)


# ---------------------------------------------------------------------------------------------
# multiple comparisons


def holm(p: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values (family = the finite entries; NaN stays NaN).
    scipy has no Holm; this is the textbook step-down max of (m − i + 1)·p_(i)."""
    p = np.asarray(p, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    if not m:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adj = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adj, 1.0)
    return out


def bh(p: Sequence[float]) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (scipy.stats.false_discovery_control); NaN kept."""
    p = np.asarray(p, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = stats.false_discovery_control(p[ok], method="bh")
    return out


# ---------------------------------------------------------------------------------------------
# aggregates and contrasts


def concat_predictions(preds: Sequence[Predictions]) -> Predictions:
    """Pool the items of several probes (e.g. the relations of one side of a contrast); rows
    are renamed (part, row) so the same row in two probes counts twice."""
    codes = [group_codes(p.rows) for p in preds]
    offsets = np.cumsum([0] + [k for _, k in codes])
    rows = np.concatenate([c + offsets[i] for i, (c, _) in enumerate(codes)])
    return Predictions(*(np.concatenate([getattr(p, f) for p in preds])
                         for f in ("y_true", "y_pred", "score", "groups", "repeat")), rows)


def mean_of_targets_ci(preds: Sequence[Predictions], metric: str, n_resamples: int = 2000, seed=0,
                       level: float = 0.95, method: str = "percentile",
                       baseline: Sequence[Predictions] | None = None) -> Estimate:
    """Mean metric over several probes (e.g. the relations of one meta-category), with a CI from
    one shared group resample, so probes that share rows or groups stay correlated. With
    ``baseline`` (paired probes of another condition, same items), the mean difference."""
    if not preds:
        raise ValueError("no probes to aggregate")
    if baseline is not None:
        if len(baseline) != len(preds):
            raise ValueError(f"{len(preds)} probes but {len(baseline)} baseline probes")
        for a, b in zip(preds, baseline):
            check_paired(a, b)
    pooled = concat_predictions(preds)
    codes, n_groups = group_codes(pooled.groups if baseline is None
                                  else merge_groups(pooled.groups, concat_predictions(baseline).groups))
    bounds = np.cumsum([0] + [p.n_items for p in preds])

    def stat(W: np.ndarray) -> np.ndarray:
        vals = []
        for i, p in enumerate(preds):
            units = codes[bounds[i]:bounds[i + 1]]
            v = metric_weighted(metric, p, W, units)
            vals.append(v if baseline is None else v - metric_weighted(metric, baseline[i], W, units))
        return np.mean(vals, axis=0)

    theta = float(stat(np.ones((1, n_groups)))[0])
    lo, hi = _resample_stat(stat, theta, codes, pooled.y_true, n_resamples, seed, level, method)
    return Estimate(metric, theta, lo, hi, pooled.n, n_groups, n_resamples, level, method)


@dataclass(frozen=True)
class Contrast(Estimate):
    """A difference in differences: (a − b on the first side) − (a − b on the second side),
    with the two sides' mean paired differences, their rows and targets, and the permutation
    scheme behind ``p_value`` (targets exchanged between the sides)."""

    first_diff: float = float("nan")
    second_diff: float = float("nan")
    n_first: int = 0
    n_second: int = 0
    n_first_targets: int = 0
    n_second_targets: int = 0
    alternative: str = "greater"
    exact: bool = False
    min_p: float = float("nan")

    def as_row(self) -> dict:
        return {**super().as_row(), "first_diff": self.first_diff, "second_diff": self.second_diff,
                "n_first": self.n_first, "n_second": self.n_second,
                "n_first_targets": self.n_first_targets, "n_second_targets": self.n_second_targets,
                "alternative": self.alternative, "exact_permutation": self.exact,
                "min_attainable_p": self.min_p}


def side_assignments(n_first: int, n_second: int, n_permutations: int, seed) -> tuple[np.ndarray, bool]:
    """Ways to split ``n_first + n_second`` targets into sides of those sizes, as a (P × T) 0/1
    matrix (1 = first side; row 0 is the observed split): all of them when there are at most
    ``n_permutations + 1``, else the observed split and ``n_permutations`` random ones. Returns
    the matrix and whether it is exhaustive."""
    import itertools
    from math import comb

    T = n_first + n_second
    observed = np.r_[np.ones(n_first), np.zeros(n_second)]
    if comb(T, n_first) <= n_permutations + 1:
        rows = [observed]
        for pick in itertools.combinations(range(T), n_first):
            row = np.zeros(T)
            row[list(pick)] = 1
            if not np.array_equal(row, observed):
                rows.append(row)
        return np.array(rows, dtype=np.float32), True
    rng = np.random.default_rng(seed)
    perm = (np.argsort(rng.random((n_permutations, T)), axis=1) < n_first).astype(np.float32)
    return np.vstack([observed[None], perm]).astype(np.float32), False


def difference_in_differences(first: Sequence[tuple[Predictions, Predictions]],
                              second: Sequence[tuple[Predictions, Predictions]], metric: str,
                              n_resamples: int = 2000, n_permutations: int = 1000, seed=0,
                              level: float = 0.95, method: str = "percentile",
                              alternative: str = "greater") -> Contrast:
    """(mean over first-side targets of metric(a) − metric(b)) − (the same over the second
    side): e.g. (CLIP − SBERT on vertical relations) − (CLIP − SBERT on horizontal relations).
    Each (a, b) pair is one target's two conditions on identical items; every metric is
    computed on its own target's predictions and repeats (sides may have different numbers of
    repeats, rows and targets; nothing is subsampled).

    CI: one stratified group resample shared by every target and both conditions (groups with
    the same label are the same group on every target), conditional on the targets. p-value:
    the targets are the units of inference; under H0 the effect a − b does not depend on the
    side, so targets are exchanged between the sides (sizes kept), exhaustively when there are
    few splits (then the smallest attainable p-value is 1 / number of splits), one-sided
    (``greater``: the first side's effect is larger) or ``two-sided``."""
    if not first or not second:
        raise ValueError("difference_in_differences needs at least one target on each side")
    pairs = list(first) + list(second)
    for a, b in pairs:
        check_paired(a, b)
    all_groups = np.concatenate([np.concatenate([a.groups, b.groups]) for a, b in pairs])
    codes_all, n_groups = group_codes(all_groups)
    units, bounds = [], np.cumsum([0] + [a.n_items + b.n_items for a, b in pairs])
    for k, (a, b) in enumerate(pairs):
        c = codes_all[bounds[k]:bounds[k + 1]]
        units.append((c[:a.n_items], c[a.n_items:]))
    # groups linked across a and b (different groupings of the same rows) are one unit
    if any(not np.array_equal(a.groups, b.groups) for a, b in pairs):
        rows = np.concatenate([np.r_[ua, ub] for ua, ub in units])
        link = np.concatenate([np.r_[np.arange(a.n_items), np.arange(a.n_items)] + bounds[k]
                               for k, (a, b) in enumerate(pairs)])
        merged = merge_groups(rows, link)
        codes_all, n_groups = group_codes(merged)
        units = [(codes_all[bounds[k]:bounds[k] + a.n_items],
                  codes_all[bounds[k] + a.n_items:bounds[k + 1]]) for k, (a, b) in enumerate(pairs)]

    def effects(W: np.ndarray) -> np.ndarray:
        """(B × T) paired difference of every target under the group weights W."""
        return np.column_stack([metric_weighted(metric, a, W, ua) - metric_weighted(metric, b, W, ub)
                                for (a, b), (ua, ub) in zip(pairs, units)])

    n1 = len(first)
    side = np.r_[np.ones(n1), np.zeros(len(second))]

    def contrast(E: np.ndarray, on1: np.ndarray) -> np.ndarray:
        return (E @ on1.T) / on1.sum(1) - (E @ (1 - on1).T) / (1 - on1).sum(1)

    E0 = effects(np.ones((1, n_groups)))[0]
    d1, d2 = float(E0[:n1].mean()), float(E0[n1:].mean())
    theta = d1 - d2
    # stratum of a group: its majority class over all targets
    y_all = np.concatenate([a.y_true for a, _ in pairs])
    u_all = np.concatenate([ua for ua, _ in units])
    y_strata = group_strata(u_all, y_all, n_groups)
    counts = resample_counts(y_strata, n_resamples, seed)
    boots = contrast(effects(counts), side[None])[:, 0]

    def jack() -> np.ndarray:
        return _jackknife(lambda W: contrast(effects(W), side[None])[:, 0], n_groups)

    lo, hi = _interval(theta, boots, level, method, jack)
    splits, exact = side_assignments(n1, len(second), n_permutations,
                                     np.random.default_rng(seed).integers(2**32, size=2))
    d = contrast(E0[None], splits)[0]
    if alternative == "greater":
        hits = d >= theta - 1e-12
    elif alternative == "two-sided":
        hits = np.abs(d) >= abs(theta) - 1e-12
    else:
        raise ValueError(f"unknown alternative {alternative!r}")
    p = float(hits.mean())  # row 0 is the observed split: exact, or the add-one estimate
    return Contrast(metric, theta, lo, hi, int(sum(a.n for a, _ in pairs)), n_groups, n_resamples,
                    level, method, p_value=p, n_permutations=len(d) - 1, first_diff=d1,
                    second_diff=d2, n_first=int(sum(a.n for a, _ in first)),
                    n_second=int(sum(a.n for a, _ in second)), n_first_targets=n1,
                    n_second_targets=len(second), alternative=alternative, exact=exact,
                    min_p=1.0 / len(d))

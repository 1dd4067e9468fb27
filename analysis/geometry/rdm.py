"""Representational dissimilarity matrices, as pure functions: RDMs, rank correlations between
RDMs, their values on resampling replicates, and hypothesis model RDMs (CKA:
`analysis/geometry/cka.py`; the replicates themselves: `analysis/geometry/resampling.py`).
Arrays in, arrays out; no I/O.

Conventions: an RDM is a condensed vector (scipy ``pdist`` order: pairs (i, j), i < j, row-major);
a replicate is a vector of counts, one per stimulus. The stage's replicates are subsets (0/1
counts: subsampling without replacement, the noun jackknife), so a replicate's RDM is the
original RDM on the pairs whose two stimuli it keeps, each once; the rank statistics then rank
only those pairs. General counts (a bootstrap with replacement, ``bootstrap_counts``) are still
supported as weighted statistics over the original pairs with weights ``c_u * c_v`` (the
resampled RDM with the self-pairs of a duplicated stimulus dropped, as rsatoolbox's
``bootstrap_sample_pattern`` does), but duplicated stimuli copy pairs and bias pair statistics
upwards, which is why the stage no longer uses them.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.stats
from threadpoolctl import threadpool_limits

from analysis.inference.resampling import bootstrap_counts as stratified_cluster_counts

# ----------------------------------------------------------------------------- RDMs


def unit_rows(X: np.ndarray, metric: str) -> np.ndarray:
    """Rows scaled to unit norm (after centring each row, for correlation distance)."""
    X = np.asarray(X, dtype=np.float32)
    if metric == "correlation":
        X = X - X.mean(axis=1, keepdims=True)
    elif metric != "cosine":
        raise ValueError(f"unknown RDM metric {metric!r}: use 'cosine' or 'correlation'")
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    if (norms == 0).any():
        bad = np.flatnonzero(norms[:, 0] == 0)[:10].tolist()
        raise ValueError(f"{metric} distance undefined for constant/zero rows {bad}")
    return X / norms


def rdm(X: np.ndarray, metric: str = "cosine", block: int = 2048) -> np.ndarray:
    """Condensed cosine or correlation distance RDM of the rows of ``X`` (float32).

    Same values as ``scipy.spatial.distance.pdist(X, metric)`` but via float32 BLAS in row
    blocks, so 7,680 items take seconds and never hold the n x n matrix at once."""
    U = unit_rows(X, metric)
    n = len(U)
    out = np.empty(n * (n - 1) // 2, dtype=np.float32)
    pos = 0
    for start in range(0, n, block):
        S = U[start:start + block] @ U.T
        for r in range(S.shape[0]):
            i = start + r
            seg = S[r, i + 1:]
            out[pos:pos + len(seg)] = 1.0 - seg
            pos += len(seg)
    return out


def n_items(condensed_len: int) -> int:
    n = int(round((1 + np.sqrt(1 + 8 * condensed_len)) / 2))
    if n * (n - 1) // 2 != condensed_len:
        raise ValueError(f"{condensed_len} is not the length of a condensed RDM")
    return n


def condensed_to_pairs(k: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row/column (i < j) of condensed indices ``k`` of an n-item RDM."""
    k = np.asarray(k, dtype=np.int64)
    i = (n - 2 - np.floor(np.sqrt(-8 * k + 4 * n * (n - 1) - 7) / 2 - 0.5)).astype(np.int64)
    j = k + i + 1 - n * (n - 1) // 2 + (n - i) * ((n - i) - 1) // 2
    return i, j


def sample_pairs(n: int, max_pairs: int | None, seed: int) -> np.ndarray:
    """Sorted condensed indices of at most ``max_pairs`` distinct pairs, drawn uniformly
    (all pairs when there are no more than that)."""
    total = n * (n - 1) // 2
    if max_pairs is None or total <= max_pairs:
        return np.arange(total, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(total, size=int(max_pairs), replace=False))


def square(condensed: np.ndarray) -> np.ndarray:
    """Full symmetric matrix of a condensed RDM (zero diagonal)."""
    from scipy.spatial.distance import squareform
    return squareform(np.asarray(condensed, dtype=np.float64), checks=False)


# ----------------------------------------------------------------------------- rank correlations


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho with average ranks for ties (= scipy.stats.spearmanr)."""
    rx = scipy.stats.rankdata(x)
    ry = scipy.stats.rankdata(y)
    return _pearson(rx, ry)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = np.sqrt(np.dot(a, a) * np.dot(b, b))
    return float(np.dot(a, b) / den) if den > 0 else float("nan")


def _tie_pairs(x: np.ndarray) -> int:
    _, counts = np.unique(x, return_counts=True)
    counts = counts.astype(np.int64)
    return int((counts * (counts - 1) // 2).sum())


def tau_a(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-a: (concordant - discordant) / (n(n-1)/2), ties counted in the denominator
    (Nili et al. 2014's choice for comparing with categorical model RDMs). Computed from scipy's
    O(n log n) tau-b by undoing its tie correction."""
    x = np.asarray(x)
    y = np.asarray(y)
    n0 = len(x) * (len(x) - 1) // 2
    n1, n2 = _tie_pairs(x), _tie_pairs(y)
    if n0 == 0 or n1 == n0 or n2 == n0:
        return 0.0  # one side entirely tied: no concordant or discordant pair
    tau_b = scipy.stats.kendalltau(x, y, variant="b").statistic
    return float(tau_b * np.sqrt(float(n0 - n1) * float(n0 - n2)) / n0)


def tau_a_rows(X: np.ndarray, m: np.ndarray, chunk: int = 16) -> np.ndarray:
    """tau-a of every row of X (B, n) with one vector m (n,), for small n (relation RDMs over
    bootstrap resamples): sort each row once, then count earlier entries with smaller and larger
    m from cumulative level counts. Rows with tied values fall back to ``tau_a``."""
    X = np.asarray(X, dtype=np.float64)
    levels, code = np.unique(np.asarray(m), return_inverse=True)
    L, n = len(levels), X.shape[1]
    n0 = n * (n - 1) / 2
    order = np.argsort(X, axis=1)
    ms = code[order]
    out = np.empty(len(X))
    for s in range(0, len(X), chunk):
        onehot = (ms[s:s + chunk, :, None] == np.arange(L)).astype(np.float32)
        before = np.cumsum(onehot, axis=1) - onehot          # strictly earlier in x order
        at_most = np.cumsum(before, axis=2)                  # earlier with level <= l
        c = ms[s:s + chunk, :, None]
        le = np.take_along_axis(at_most, c, axis=2)[..., 0]
        lt = np.where(c[..., 0] > 0, np.take_along_axis(at_most, np.maximum(c - 1, 0), axis=2)[..., 0], 0)
        position = np.arange(n)[None, :]
        out[s:s + chunk] = (lt - (position - le)).sum(1, dtype=np.float64) / n0
    sx = np.take_along_axis(X, order, axis=1)
    tied = (np.diff(sx, axis=1) == 0).any(axis=1)
    for r in np.flatnonzero(tied):
        out[r] = tau_a(X[r], m)
    return out


def partial_spearman(x: np.ndarray, y: np.ndarray, controls: Sequence[np.ndarray]) -> float:
    """Spearman correlation of x and y with the (ranked) controls regressed out of both."""
    rx, ry = scipy.stats.rankdata(x), scipy.stats.rankdata(y)
    Z = np.column_stack([np.ones(len(rx))] + [scipy.stats.rankdata(c) for c in controls])
    beta_x, *_ = np.linalg.lstsq(Z, rx, rcond=None)
    beta_y, *_ = np.linalg.lstsq(Z, ry, rcond=None)
    return _pearson(rx - Z @ beta_x, ry - Z @ beta_y)


# ----------------------------------------------------------------------------- bootstrap


def bootstrap_counts(groups: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_stimuli) draw counts from resampling the *groups* with replacement: every
    stimulus of a group drawn k times gets count k. Not used by the stage (it duplicates
    stimuli; see `analysis.geometry.resampling`): kept as the reference the weighted statistics
    are tested against and for bench/bench_rsa.py's comparison."""
    _, gidx = np.unique(np.asarray(groups), return_inverse=True)
    one_stratum = np.zeros(int(gidx.max()) + 1, dtype=np.int64)
    return _cluster_counts(one_stratum, n_boot, seed)[:, gidx]


def stratified_counts(strata: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) counts from resampling items with replacement within each stratum (so every
    stratum, e.g. every relation, keeps its size in every resample)."""
    _, codes = np.unique(np.asarray(strata), return_inverse=True)
    return _cluster_counts(codes.astype(np.int64), n_boot, seed)


def _cluster_counts(strata: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """The stats module's stratified cluster bootstrap, as int32 counts."""
    return stratified_cluster_counts(strata, n_boot, np.random.default_rng(seed)).astype(np.int32)


def percentile_ci(boot: np.ndarray, level: float = 0.95, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of bootstrap replicates (NaN replicates ignored)."""
    alpha = (1 - level) / 2
    lo = np.nanquantile(boot, alpha, axis=axis)
    hi = np.nanquantile(boot, 1 - alpha, axis=axis)
    return lo, hi


def bootstrap_p(boot: np.ndarray, null: float = 0.0, axis: int = 0) -> np.ndarray:
    """Two-sided bootstrap p-value for H0: statistic == ``null``: twice the smaller share of
    replicates on either side of the null, with the +1 correction (never exactly 0)."""
    boot = np.asarray(boot, dtype=np.float64)
    valid = np.isfinite(boot)
    b = valid.sum(axis=axis)
    below = ((boot <= null) & valid).sum(axis=axis)
    above = ((boot >= null) & valid).sum(axis=axis)
    p = 2 * np.minimum(below + 1, above + 1) / (b + 1)
    return np.minimum(p, 1.0)


class RankedPairs:
    """Values of one RDM on a fixed set of pairs, coded by rank bin so that the weighted
    (bootstrap) midranks of any resample cost one ``bincount`` and one small-table lookup, with
    no per-resample sort or random-access pass over the pairs.

    Values with at most ``max_bins`` distinct levels (model RDMs, small cases) are coded exactly,
    so the midranks equal scipy's average ranks of the resampled vector. Continuous RDMs with more
    levels are coded into ``max_bins`` equal-count rank bins (neighbours within one bin tie), which
    moves Spearman's rho by O(1/max_bins^2); tests bound it against the exact computation."""

    def __init__(self, values: np.ndarray, max_bins: int = 1 << 16):
        values = np.asarray(values)
        levels, codes = np.unique(values, return_inverse=True)
        if len(levels) <= max_bins:
            self.bins, self.n_bins = codes.astype(np.int32), len(levels)
        else:
            lower = scipy.stats.rankdata(values, method="min") - 1  # ties share a bin
            self.bins = (lower * max_bins // len(values)).astype(np.int32)
            self.n_bins = max_bins
        self.exact = len(levels) <= max_bins

    def subset_midranks(self, sel: np.ndarray, out: np.ndarray | None = None) -> tuple[np.ndarray, float]:
        """Average ranks of the pairs ``sel`` (each once) among themselves, and their sum of
        squares: the subsampling case (0/1 weights), touching only the pairs kept."""
        b = self.bins[sel]
        gw = np.bincount(b, minlength=self.n_bins).astype(np.float64)
        table = np.cumsum(gw) - gw + (gw + 1) / 2
        return np.take(table, b, out=out, mode="clip"), float((gw * table * table).sum())

    def midranks(self, w: np.ndarray, out: np.ndarray | None = None) -> tuple[np.ndarray, float]:
        """Average ranks each pair would get in the sample where pair p appears w[p] times
        (same order as the values), and their weighted sum of squares (from the small table)."""
        gw = np.bincount(self.bins, weights=w, minlength=self.n_bins)
        table = np.cumsum(gw) - gw + (gw + 1) / 2
        # mode="clip" skips the buffered bounds check of take(out=...); bins are always valid
        return np.take(table, self.bins, out=out, mode="clip"), float((gw * table * table).sum())


def pair_weights(counts: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Multiplicity of each pair (i, j), i != j, in a resample with per-stimulus ``counts``."""
    c = counts.astype(np.float64)
    return c[i] * c[j]


def is_subset(counts: np.ndarray) -> bool:
    """Whether every replicate is a subset of the stimuli (0/1 counts: nothing duplicated)."""
    counts = np.asarray(counts)
    return bool(counts.size == 0 or (counts.min() >= 0 and counts.max() <= 1))


def kept_pairs(keep: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Indices of the pairs (i, j) whose two stimuli are both in the subset ``keep`` (0/1)."""
    k = np.asarray(keep).astype(bool)
    return np.flatnonzero(k[i] & k[j])


def _rank_corr_matrix(R: np.ndarray, w: np.ndarray | None, sq: np.ndarray) -> np.ndarray:
    """Weighted Pearson correlations among rows of R holding midranks of the weighted sample:
    every row sums (with weights w; None: each pair once) to W(W+1)/2 and its sum of squares
    ``sq`` comes from the rank table, so only the cross products need a pass over the pairs."""
    W = R.shape[1] if w is None else w.sum()
    if W == 0:
        return np.full((len(R), len(R)), np.nan)
    mean = (W + 1) / 2
    C = (R @ R.T if w is None else (R * w) @ R.T) - W * mean * mean
    np.fill_diagonal(C, sq - W * mean * mean)
    d = np.sqrt(np.clip(np.diag(C), 0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        return C / np.outer(d, d)


def bootstrap_spearman(
    values: Sequence[np.ndarray],
    i: np.ndarray,
    j: np.ndarray,
    counts: np.ndarray,
    n_jobs: int = 2,
    progress: bool = False,
    max_bins: int = 1 << 16,
) -> np.ndarray:
    """(n_boot, K, K) Spearman correlations among K RDMs (each given on the same pairs (i, j))
    in every replicate (rows of ``counts``), exactly as ranking the replicate's RDM vectors
    would. Subsets (0/1 counts) rank only the pairs they keep.

    Hand-written because rsatoolbox re-ranks the whole expanded vector per resample (1,000 x
    29.5M values for VSR train); here each resample costs one bincount per RDM."""
    ranked = [RankedPairs(v, max_bins) for v in values]
    i = np.asarray(i, dtype=np.int32)
    j = np.asarray(j, dtype=np.int32)
    binary = is_subset(counts)

    def one(b: int) -> np.ndarray:
        if binary:  # a subset of the stimuli: rank the pairs it keeps, each once
            sel = kept_pairs(counts[b], i, j)
            R = np.empty((len(ranked), len(sel)))
            sq = np.array([rp.subset_midranks(sel, out=R[k])[1] for k, rp in enumerate(ranked)])
            return _rank_corr_matrix(R, None, sq)
        w = pair_weights(counts[b], i, j)
        R = np.empty((len(ranked), len(w)))
        sq = np.array([rp.midranks(w, out=R[k])[1] for k, rp in enumerate(ranked)])
        return _rank_corr_matrix(R, w, sq)

    return _map(one, len(counts), n_jobs, progress, "spearman replicates")


def tau_a_from_histogram(H: np.ndarray) -> float:
    """tau-a of a sample given as a 2-D histogram of (x level, y level) multiplicities: pairs in
    the same row or column are ties (counted in the denominator only), as in tau_a."""
    W = H.sum()
    if W < 2:
        return float("nan")
    below = np.cumsum(H[::-1], axis=0)[::-1]        # sum over rows >= k, per column
    T = np.zeros_like(H)
    T[:-1] = below[1:]                              # strictly later rows
    cs = np.cumsum(T, axis=1)
    concordant = cs[:, -1:] - cs                    # later rows, later columns
    discordant = cs - T                             # later rows, earlier columns
    return float(np.sum(H * (concordant - discordant)) / (W * (W - 1) / 2))


def bootstrap_tau_a(
    values: Sequence[np.ndarray],
    pairs: Sequence[tuple[int, int]],
    i: np.ndarray,
    j: np.ndarray,
    counts: np.ndarray,
    n_jobs: int = 2,
    progress: bool = False,
    max_bins: int = 128,
) -> np.ndarray:
    """(n_boot, len(pairs)) tau-a between ``values[a]`` and ``values[b]`` for each (a, b) in
    ``pairs`` in every resample, from the weighted 2-D histogram of the two RDMs' rank bins: one
    bincount per comparison, no expanded vectors. Exact for RDMs with at most ``max_bins``
    levels (model RDMs); continuous RDMs are coded in ``max_bins`` equal-count bins, which adds ties: a shrinkage toward 0 of order 1/max_bins, nearly constant
    across resamples, which the caller removes by re-centring on the exact estimate."""
    coded = [RankedPairs(v, max_bins) for v in values]
    codes = []
    for a, b in pairs:
        ka, kb = coded[a], coded[b]
        codes.append((ka.bins.astype(np.int64) * kb.n_bins + kb.bins, (ka.n_bins, kb.n_bins)))
    i = np.asarray(i, dtype=np.int32)
    j = np.asarray(j, dtype=np.int32)

    binary = is_subset(counts)

    def one(b: int) -> np.ndarray:
        if binary:
            sel = kept_pairs(counts[b], i, j)
            return np.array([tau_a_from_histogram(
                np.bincount(code[sel], minlength=shape[0] * shape[1]).reshape(shape).astype(np.float64))
                for code, shape in codes])
        w = pair_weights(counts[b], i, j)
        return np.array([tau_a_from_histogram(np.bincount(code, weights=w, minlength=shape[0] * shape[1])
                                              .reshape(shape)) for code, shape in codes])

    return _map(one, len(counts), n_jobs, progress, "tau-a replicates")


def _map(fn, n: int, n_jobs: int, progress: bool, desc: str) -> np.ndarray:
    from tqdm.auto import tqdm
    bar = tqdm(total=n, desc=desc, disable=not progress, leave=False)
    out = []
    # one BLAS thread per worker: nested BLAS threading oversubscribes the cores
    with threadpool_limits(1):
        if n_jobs <= 1:
            for b in range(n):
                out.append(fn(b))
                bar.update()
        else:  # numpy releases the GIL in bincount/take/matmul, so threads share the cores
            with ThreadPoolExecutor(n_jobs) as ex:
                for r in ex.map(fn, range(n)):
                    out.append(r)
                    bar.update()
    bar.close()
    return np.asarray(out)


# ----------------------------------------------------------------------------- model RDMs


def categorical_rdm(labels: Sequence[object | None]) -> np.ndarray:
    """0 for pairs with the same label, 1 otherwise; NaN where either label is missing."""
    labels = list(labels)
    n = len(labels)
    i, j = np.triu_indices(n, 1)
    _, codes = np.unique([str(x) for x in labels], return_inverse=True)
    missing = np.array([x is None for x in labels])
    out = (codes[i] != codes[j]).astype(np.float64)
    out[missing[i] | missing[j]] = np.nan
    return out


def axis_rdm(axes: Sequence[str | None]) -> np.ndarray:
    """Axis hypothesis: relations on the same named axis (vertical, horizontal, depth) are
    close (0); every other pair, including two unaxed ('other') relations, is far (1)."""
    axes = [a if a not in (None, "other") else None for a in axes]
    n = len(axes)
    i, j = np.triu_indices(n, 1)
    same = np.array([axes[a] is not None and axes[a] == axes[b] for a, b in zip(i, j)], dtype=bool)
    return np.where(same, 0.0, 1.0)


def polarity_rdm(axes: Sequence[str | None], polarity: Sequence[str | None]) -> np.ndarray:
    """Polarity hypothesis on pairs sharing an axis: same polarity 0, opposite (antonyms) 1;
    NaN elsewhere. A positive fit means antonyms lie far apart, a negative one that they sit
    close together (as distributional similarity of antonyms predicts)."""
    n = len(axes)
    i, j = np.triu_indices(n, 1)
    out = np.full(len(i), np.nan)
    for k, (a, b) in enumerate(zip(i, j)):
        if axes[a] not in (None, "other") and axes[a] == axes[b] and polarity[a] and polarity[b]:
            out[k] = float(polarity[a] != polarity[b])
    return out


def lexical_overlap_rdm(phrases: Sequence[str]) -> np.ndarray:
    """Control: Jaccard distance between the word sets of the relation phrases ("left of" and
    "at the left side of" share words), the surface similarity a text encoder sees for free."""
    sets = [set(p.lower().split()) for p in phrases]
    i, j = np.triu_indices(len(sets), 1)
    return np.array([1 - len(sets[a] & sets[b]) / len(sets[a] | sets[b]) for a, b in zip(i, j)])


def profile_rdm(profiles: np.ndarray) -> np.ndarray:
    """Cosine distance between count profiles (e.g. each relation's noun counts): the
    noun-overlap control for relation centroids of VSR captions."""
    P = np.asarray(profiles, dtype=np.float64)
    P = P / np.linalg.norm(P, axis=1, keepdims=True)
    i, j = np.triu_indices(len(P), 1)
    return 1 - np.einsum("kd,kd->k", P[i], P[j])


def noun_overlap_pairs(subj: np.ndarray, obj: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Item-level noun-overlap model on pairs (i, j): Jaccard distance between the noun sets
    {subject, object} of two captions (integer-coded nouns; -1 = not parsed -> NaN)."""
    si, oi, sj, oj = subj[i], obj[i], subj[j], obj[j]
    inter = (((si == sj) | (si == oj)).astype(np.int8)
             + (((oi == sj) | (oi == oj)) & (oi != si)).astype(np.int8))
    size_i = 1 + (oi != si)
    size_j = 1 + (oj != sj)
    out = 1 - inter / (size_i + size_j - inter)
    out = out.astype(np.float32)
    out[(si < 0) | (oi < 0) | (sj < 0) | (oj < 0)] = np.nan
    return out


def label_pairs(codes: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Item-level categorical model on pairs (i, j): 0 same code, 1 different."""
    return (codes[i] != codes[j]).astype(np.float32)

"""Batched L2-regularized logistic regression: many probes on one feature matrix in one solve.

Every probe k minimizes sklearn's objective exactly,
``sum_i w_ik * logloss_i + ||coef_k||^2 / (2 C_k)`` with an unpenalized intercept, where the
sample weights ``w_ik`` carry the probe's row mask (0 = row not used) and its class weights.
Binary probes use the sigmoid link (as sklearn's binary LogisticRegression); with
``n_classes > 2`` each probe is one multinomial (softmax) model, as sklearn's lbfgs multinomial.

Written by hand because it is the hot loop of the suite: sklearn fits one probe at a time with
matrix-vector products, while here all probes share each matmul (BLAS-3, or the GPU). The solver
is a truncated Newton method (Newton-CG with a Jacobi preconditioner and an Armijo line search),
run in lockstep over the probes: Hessian-vector products for all probes are two matmuls
``X^T (D * (X V))``, and the line search is cheap because margins are linear in the step.

Convergence, per probe, at every C (the suite's grid runs from 1e-4 to 1e4). With ``f`` the
sample-weight-normalized objective (sklearn's divided by the sum of the weights) at the current
point, ``g`` its gradient and ``p`` the Newton direction from the CG solve made there, a probe
has converged when both

1. ``max |g| <= tol`` (sklearn's lbfgs ``gtol`` convention, the engine's only test before), and
2. the Newton decrement ``-g'p / 2`` (the quadratic model's predicted decrease, an estimate of
   ``f - f*``) is ``<= rtol * f``: a relative objective gap, the same at every C.

Test 1 alone is not enough: the penalty's curvature is ``1 / (C * sum of weights)``, so at large
C the objective is nearly flat along the directions the penalty holds and a small gradient can
sit far from the optimum (warm-started from the previous C on the grid, fits at C >= 10 met
``tol`` = 1e-3 with no Newton step at all, their objective 6x to 660x above the optimum). Test 2
scales with the objective, and because the direction is computed before the decision, the step
along it is always taken: every fit makes at least one Newton step, warm-started or not, and
the returned point is better than the one tested. A probe also stops when a step can no longer
decrease the objective at float64 precision (sklearn's ``ftol`` of 64 eps). ``n_iter`` counts
Newton steps; a probe that has not passed the test after ``max_iter`` steps is returned with
``converged`` False (and counted by the callers).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import expit

from analysis.common.device import PROBE_DEVICES, pick_device

log = logging.getLogger("probe_engine")

SMALL_WORK = 2e7  # n*d*columns below which a solve runs on one CPU thread
EXPAND = 10  # doublings of an accepted full Newton step tried by the line search (up to 1024x)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> cuda when present, else cpu (`analysis.common.device`)."""
    return torch.device(pick_device(device, PROBE_DEVICES))


@dataclass
class BatchFit:
    """Fitted probes: binary ``coef`` (K, d), ``intercept`` (K,); multinomial ``coef``
    (K, M, d), ``intercept`` (K, M), all on the features as given. ``objective`` is sklearn's
    (unnormalized) objective. With a feature ``scale`` (K, d), each probe was fitted (and
    penalized) on ``X * scale[k]``; ``coef`` already includes the scale."""

    coef: np.ndarray
    intercept: np.ndarray
    objective: np.ndarray
    n_iter: np.ndarray
    converged: np.ndarray
    n_classes: int
    scale: np.ndarray | None = None

    def penalized(self) -> np.ndarray:
        """The coefficients the penalty sees: on the scaled features (0 where a scale is 0)."""
        if self.scale is None:
            return self.coef
        s = self.scale if self.n_classes == 2 else self.scale[:, None, :]
        return np.divide(self.coef, s, out=np.zeros_like(self.coef), where=s > 0)

    def decision(self, X: np.ndarray) -> np.ndarray:
        """Margins: (n, K) binary, (n, K, M) multinomial."""
        X = np.asarray(X, dtype=np.float64)
        if self.n_classes == 2:
            return X @ self.coef.T + self.intercept
        K, M, d = self.coef.shape
        return (X @ self.coef.reshape(K * M, d).T).reshape(len(X), K, M) + self.intercept

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """P(class 1) (n, K) for binary probes; class probabilities (n, K, M) otherwise."""
        z = self.decision(X)
        if self.n_classes == 2:
            return expit(z)
        z = z - z.max(axis=2, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=2, keepdims=True)

    def predict(self, X: np.ndarray) -> np.ndarray:
        z = self.decision(X)
        return (z > 0).astype(int) if self.n_classes == 2 else z.argmax(axis=2)


def balanced_weights(Y: np.ndarray, mask: np.ndarray, n_classes: int = 2) -> np.ndarray:
    """sklearn's ``class_weight="balanced"`` per column: ``n / (n_classes * count_c)`` for the
    rows in the column's mask, 0 elsewhere. ``n_classes`` counts the classes present (as
    sklearn, which sees only the rows it is given)."""
    Y = np.asarray(Y)
    mask = np.asarray(mask, dtype=bool)
    if Y.shape != mask.shape:
        raise ValueError(f"labels {Y.shape} and mask {mask.shape} differ in shape")
    W = np.zeros(Y.shape, dtype=np.float64)
    for k in range(Y.shape[1]):
        m = mask[:, k]
        classes, inv, counts = np.unique(Y[m, k], return_inverse=True, return_counts=True)
        if classes.size == 0:
            raise ValueError(f"probe column {k}: no rows in its mask")
        W[m, k] = m.sum() / (classes.size * counts[inv])
    return W


class _Problem:
    """Loss, gradient and Hessian-vector products for J = K*M parameter columns."""

    def __init__(self, X, Y, W, C, M, dtype, device, S=None):
        self.X = X  # matmul precision; everything elementwise is float64
        self.X2 = None
        self.S = S  # per-probe feature scale (d, K) float64, or None: probe k sees X * S[:, k]
        self.n, self.d = X.shape
        self.M = M
        s = W.sum(0)
        self.Wn = W / s  # normalized weights (n, K): the objective divided by sum of weights
        self.lam = 1.0 / (C * s)  # (K,)
        self.Y = Y  # (n, K) float 0/1 for binary, long class index for multinomial
        if M > 1:
            self.onehot = torch.nn.functional.one_hot(Y, M).to(dtype)  # (n, K, M)

    def margins(self, theta, idx):
        """theta (d+1, Ka, M) -> (n, Ka, M)."""
        ka = theta.shape[1]
        w = theta[:-1] if self.S is None else theta[:-1] * self.S[:, idx, None]
        w = w.reshape(self.d, ka * self.M).to(self.X.dtype)
        z = (self.X @ w).to(torch.float64) + theta[-1].reshape(1, -1)
        return z.reshape(self.n, ka, self.M)

    def loss(self, Z, theta, idx):
        """Normalized objective per probe (Ka,) from margins Z and parameters theta."""
        wn = self.Wn[:, idx]
        if self.M == 1:
            z = Z[:, :, 0]
            pointwise = torch.nn.functional.softplus(z) - self.Y[:, idx] * z
        else:
            pointwise = torch.logsumexp(Z, 2) - (Z * self.onehot[:, idx]).sum(2)
        pen = 0.5 * self.lam[idx] * (theta[:-1] ** 2).sum((0, 2))
        return (wn * pointwise).sum(0) + pen

    def grad_curv(self, Z, theta, idx):
        """Gradient (d+1, Ka, M) and the curvature state for Hessian-vector products."""
        wn = self.Wn[:, idx]
        if self.M == 1:
            p = torch.sigmoid(Z)
            R = wn[:, :, None] * (p - self.Y[:, idx, None])
            curv = wn[:, :, None] * p * (1 - p)
        else:
            p = torch.softmax(Z, 2)
            R = wn[:, :, None] * (p - self.onehot[:, idx])
            curv = (wn, p)
        g = self.backproject(R, idx)
        g[:-1] += self.lam[idx][None, :, None] * theta[:-1]
        return g, curv

    def backproject(self, R, idx):
        """X~^T R for R (n, Ka, M) -> (d+1, Ka, M), X~ the (scaled) features and a 1 column."""
        ka = R.shape[1]
        top = self.X.T @ R.reshape(self.n, ka * self.M).to(self.X.dtype)
        top = top.to(torch.float64).reshape(self.d, ka, self.M)
        if self.S is not None:
            top = top * self.S[:, idx, None]
        return torch.cat([top, R.sum(0, keepdim=True)], 0)

    def hvp(self, curv, V, idx):
        XV = self.margins(V, idx)
        if self.M == 1:
            U = curv * XV
        else:
            wn, p = curv
            pv = p * XV
            U = wn[:, :, None] * (pv - p * pv.sum(2, keepdim=True))
        out = self.backproject(U, idx)
        out[:-1] += self.lam[idx][None, :, None] * V[:-1]
        return out

    def hess_diag(self, curv, idx):
        if self.M == 1:
            dd = curv
        else:
            wn, p = curv
            dd = wn[:, :, None] * p * (1 - p)
        ka = dd.shape[1]
        if self.X2 is None:
            self.X2 = self.X ** 2
        top = self.X2.T @ dd.reshape(self.n, ka * self.M).to(self.X.dtype)
        top = top.to(torch.float64).reshape(self.d, ka, self.M)
        if self.S is not None:
            top = top * self.S[:, idx, None] ** 2
        top = top + self.lam[idx][None, :, None]
        return torch.cat([top, dd.sum(0, keepdim=True)], 0)


def _dot(a, b):
    return (a * b).sum((0, 2))


def fit_batch(
    X: np.ndarray,
    Y: np.ndarray,
    C: np.ndarray | float,
    weights: np.ndarray | None = None,
    *,
    n_classes: int = 2,
    tol: float = 1e-6,
    rtol: float = 1e-9,
    max_iter: int = 100,
    max_cg: int = 250,
    init: BatchFit | None = None,
    scale: np.ndarray | None = None,
    device: str | torch.device = "auto",
    dtype: torch.dtype = torch.float32,
    warn: bool = True,
) -> BatchFit:
    """Fit K probes on the shared features ``X`` (n, d): labels ``Y`` (n, K) (0/1, or class
    index 0..M-1 when ``n_classes`` = M > 2), per-probe ``C`` (K,), sample ``weights`` (n, K)
    (0 drops a row from that probe; default: all rows, weight 1). ``init`` warm-starts.
    ``scale`` (K, d), non-negative: probe k is fitted and penalized on ``X * scale[k]``
    without the scaled copies being made (per-fold standardization, `fold_scale`; 0 drops a
    feature from a probe).
    A probe stops when ``max |gradient| <= tol`` and its Newton decrement is ``<= rtol`` times
    its objective (both on the weight-normalized objective; see the module docstring), or at
    ``max_iter`` Newton steps (``converged`` False) with at most ``max_cg`` CG steps each.
    ``dtype`` is the precision of the matmuls (float32 by default: several times faster on
    CPU and GPU); parameters, losses and the line search are always float64, which keeps the
    objective within ~1e-8 relative of sklearn's optimum on standardized features."""
    X = np.asarray(X)
    Y = np.asarray(Y)
    if Y.ndim == 1:
        Y = Y[:, None]
    n, d = X.shape
    K = Y.shape[1]
    if Y.shape[0] != n:
        raise ValueError(f"labels have {Y.shape[0]} rows, features {n}")
    W = np.ones((n, K)) if weights is None else np.asarray(weights, dtype=np.float64)
    if W.shape != (n, K):
        raise ValueError(f"weights {W.shape} must be (n, K) = {(n, K)}")
    if (W < 0).any() or not np.isfinite(W).all():
        raise ValueError("weights must be finite and non-negative")
    empty = np.flatnonzero(W.sum(0) <= 0)
    if empty.size:
        raise ValueError(f"probe columns {empty[:10].tolist()} have no rows (all weights 0)")
    C = np.broadcast_to(np.asarray(C, dtype=np.float64), (K,)).copy()
    if (C <= 0).any():
        raise ValueError("C must be positive")
    if scale is not None:
        scale = np.asarray(scale, dtype=np.float64)
        if scale.shape != (K, d):
            raise ValueError(f"scale {scale.shape} must be (K, d) = {(K, d)}")
        if (scale < 0).any() or not np.isfinite(scale).all():
            raise ValueError("scale must be finite and non-negative")
    M = 1 if n_classes == 2 else n_classes
    used = W > 0
    if M == 1:
        if not np.isin(Y[used], (0, 1)).all():
            raise ValueError("binary labels must be 0/1")
        for k in range(K):
            if np.unique(Y[used[:, k], k]).size < 2:
                raise ValueError(f"probe column {k}: only one class among its rows")
    else:
        for k in range(K):
            present = np.unique(Y[used[:, k], k])
            if present.size != M or present.min() < 0 or present.max() >= M:
                raise ValueError(f"probe column {k}: classes {present.tolist()} present, "
                                 f"expected all of 0..{M - 1}")

    dev = resolve_device(device)
    small = dev.type == "cpu" and n * d * K * max(M, 1) < SMALL_WORK
    threads = torch.get_num_threads()
    if small:  # thread start-up dominates tiny matmuls, and under contention by far
        torch.set_num_threads(1)
    try:
        return _solve(X, Y, W, C, n_classes, M, used, tol, rtol, max_iter, max_cg, init, scale,
                      dev, dtype, warn)
    finally:
        torch.set_num_threads(threads)


def _solve(X, Y, W, C, n_classes, M, used, tol, rtol, max_iter, max_cg, init, scale, dev, dtype,
           warn):
    n, d = X.shape
    K = Y.shape[1]
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64, device=dev)  # noqa: E731
    Xt = torch.as_tensor(np.asarray(X), dtype=dtype, device=dev)
    Yt = (t(np.where(used, Y, 0)) if M == 1 else
          torch.as_tensor(np.where(used, Y, 0), dtype=torch.long, device=dev))
    prob = _Problem(Xt, Yt, t(W), t(C), M, dtype, dev, None if scale is None else t(scale.T))

    theta = torch.zeros((d + 1, K, M), dtype=torch.float64, device=dev)
    if init is not None:
        # parameters on the scaled features, the warm start's scale divided out
        coef = BatchFit(init.coef, init.intercept, None, None, None, init.n_classes,
                        scale).penalized()
        coef = coef.reshape(K, M, d) if M > 1 else coef[:, None, :]
        theta[:-1] = t(np.transpose(coef, (2, 0, 1)))
        theta[-1] = t(np.asarray(init.intercept).reshape(K, M))
    n_iter = np.zeros(K, dtype=int)
    converged = np.zeros(K, dtype=bool)
    ftol = 64 * torch.finfo(torch.float64).eps
    active = torch.arange(K, device=dev)
    for it in range(max_iter + 1):
        th = theta[:, active]
        Z = prob.margins(th, active)
        f = prob.loss(Z, th, active)
        g, curv = prob.grad_curv(Z, th, active)
        gmax = g.abs().amax((0, 2))
        p = _newton_direction(prob, g, curv, active, max_cg)
        slope = _dot(g, p)
        # the Newton decrement: the quadratic model's decrease along p, -g'p/2 (CG iterates
        # satisfy p'Hp = -g'p), an estimate of f - f*; p = 0 with g != 0 (CG broke down) is
        # no evidence of an optimum
        gnorm = _dot(g, g).sqrt()
        decrement = torch.where(slope < 0, -0.5 * slope,
                                torch.where(gnorm > 0, torch.inf, 0.0))
        done = (gmax <= tol) & (decrement <= rtol * f.abs().clamp_min(1e-300))
        converged[active[done].cpu().numpy()] = True
        if it == max_iter:
            break
        # one Newton step for every active probe, the converged ones included (the direction
        # is already paid for): a fit always moves at least once, warm-started or not
        n_iter[active.cpu().numpy()] += 1
        bad = slope >= 0  # not a descent direction (numerical): fall back to steepest descent
        if bad.any():
            p[:, bad] = -g[:, bad]
            slope = _dot(g, p)
        step, f_new = _line_search(prob, theta, active, Z, f, p, slope)
        theta[:, active] = theta[:, active] + step[None, :, None] * p
        stalled = (f - f_new) <= ftol * torch.maximum(f.abs(), torch.ones_like(f))
        # no further decrease possible at this precision: stop, as sklearn's lbfgs ftol
        converged[active[stalled].cpu().numpy()] = True
        active = active[~(done | stalled)]
        if active.numel() == 0:
            break
    left = int((~converged).sum())
    if left and warn:
        log.warning("%d of %d probes did not reach tol=%g, rtol=%g in %d Newton iterations",
                    left, K, tol, rtol, max_iter)

    th = theta.cpu().numpy().astype(np.float64)
    coef = np.transpose(th[:-1], (1, 2, 0))  # (K, M, d)
    if scale is not None:
        coef = coef * scale[:, None, :]
    intercept = th[-1]  # (K, M)
    if M == 1:
        coef, intercept = coef[:, 0], intercept[:, 0]
    fit = BatchFit(coef=coef, intercept=intercept, objective=np.zeros(K), n_iter=n_iter,
                   converged=converged, n_classes=n_classes, scale=scale)
    fit.objective = objective(fit, X, Y, W, C)
    return fit


def _newton_direction(prob, g, curv, active, max_cg):
    """Preconditioned CG on H p = -g, per probe, stopping at the forcing tolerance
    ``min(0.5, sqrt(||g||)) ||g||`` (superlinear convergence) or after ``max_cg`` steps.
    Each step's Hessian-vector products are computed for the probes still iterating only:
    at large C a few ill-conditioned probes need many more steps than the rest."""
    Dinv = 1.0 / prob.hess_diag(curv, active).clamp_min(1e-30)
    gnorm = _dot(g, g).sqrt()
    eta = torch.minimum(torch.full_like(gnorm, 0.5), gnorm.sqrt())
    p = torch.zeros_like(g)
    r = -g
    z = Dinv * r
    q = z.clone()
    rz = _dot(r, z)
    live = torch.nonzero(gnorm > 0).squeeze(1)  # positions into ``active``
    for _ in range(max_cg):
        if live.numel() == 0:
            break
        ql = q[:, live]
        Hq = prob.hvp(_curv_columns(curv, live), ql, active[live])
        qHq = _dot(ql, Hq)
        ok = qHq > 0
        alpha = torch.where(ok, rz[live] / torch.where(ok, qHq, 1.0), 0.0)[None, :, None]
        p[:, live] += alpha * ql
        r[:, live] -= alpha * Hq
        rl = r[:, live]
        live = live[ok & (_dot(rl, rl).sqrt() > eta[live] * gnorm[live])]
        if live.numel() == 0:
            break
        zl = Dinv[:, live] * r[:, live]
        rz_new = _dot(r[:, live], zl)
        beta = (rz_new / rz[live].clamp_min(1e-300))[None, :, None]
        q[:, live] = zl + beta * q[:, live]
        rz[live] = rz_new
    return p


def _curv_columns(curv, cols):
    """The curvature state of `_Problem.grad_curv` for a subset of its probe columns."""
    if isinstance(curv, tuple):
        return tuple(c[:, cols] for c in curv)
    return curv[:, cols]


def _line_search(prob, theta, active, Z, f, p, slope):
    """Armijo backtracking along p (steps 1, 1/2, ...); margins are linear in the step, so
    each trial costs no matmul. Returns the accepted steps (0 where none) and losses."""
    XP = prob.margins(p, active)
    step = torch.ones_like(f)
    accepted = torch.zeros_like(f, dtype=torch.bool)
    f_new = f.clone()
    for _ in range(40):
        trial = theta[:, active] + step[None, :, None] * p
        f_try = prob.loss(Z + step[None, :, None] * XP, trial, active)
        ok = ~accepted & (f_try <= f + 1e-4 * step * slope)
        f_new = torch.where(ok, f_try, f_new)
        accepted |= ok
        if accepted.all():
            break
        step = torch.where(accepted, step, step * 0.5)
    step = torch.where(accepted, step, 0.0)
    # where the full step was taken, go on doubling while the objective keeps decreasing: far
    # from the optimum at large C the loss flattens along p faster than the quadratic model
    # says (the Newton step is too short), and these trials cost no matmul either
    grow = accepted & (step == 1.0)
    for _ in range(EXPAND):
        if not grow.any():
            break
        trial_step = step * 2.0
        f_try = prob.loss(Z + trial_step[None, :, None] * XP,
                          theta[:, active] + trial_step[None, :, None] * p, active)
        ok = grow & (f_try < f_new) & (f_try <= f + 1e-4 * trial_step * slope)
        step = torch.where(ok, trial_step, step)
        f_new = torch.where(ok, f_try, f_new)
        grow = ok
    return step, f_new


def objective(fit: BatchFit, X: np.ndarray, Y: np.ndarray, W: np.ndarray, C: np.ndarray) -> np.ndarray:
    """sklearn's objective ``sum_i w_i logloss_i + ||coef||^2/(2C)`` per probe (float64), the
    penalty on the scaled features' coefficients when the fit has a scale."""
    Z = fit.decision(np.asarray(X, dtype=np.float64))
    Y = np.asarray(Y)
    if fit.n_classes == 2:
        pointwise = np.logaddexp(0.0, Z) - Y * Z
        pen = (fit.penalized() ** 2).sum(1)
    else:
        lse = np.logaddexp.reduce(Z, axis=2)
        zy = np.take_along_axis(Z, np.where(W > 0, Y, 0)[:, :, None].astype(int), 2)[:, :, 0]
        pointwise = lse - zy
        pen = (fit.penalized() ** 2).sum((1, 2))
    return (W * pointwise).sum(0) + pen / (2 * np.asarray(C))

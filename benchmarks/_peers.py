"""Peer completion methods for the benchmarks, behind one interface.

Each ``run_*`` function takes ``(M_obs, mask, M_true, rank, cap_s, target)``
with ``M_obs`` dense (only entries under ``mask`` are read) and returns a
dict: ``error`` (final recovery error), ``time`` (s), ``history`` (lists
``iteration``, ``time``, ``recovery_error`` where the method exposes
iterations) and ``available``/``reason`` when the package is missing.

Implemented in benchmarks (not part of dmc):
- ``bm_gd``: Burer-Monteiro factored gradient descent ``X = L R^T`` with
  spectral initialization and the balancing term ``1/8 ||L^T L - R^T R||_F^2``
  (Chen & Chi 2018; Ma et al. 2018).
- ``scaled_gd``: ScaledGD (Tong, Ma, Chi, JMLR 2021): the same loss, steps
  preconditioned by ``(R^T R)^-1`` and ``(L^T L)^-1`` (damped by ``1e-10 *
  sigma_1`` so that an overestimated rank stays well defined).
- ``scaled_gd_lambda``: ScaledGD(lambda) (Xu, Shen, Chi, Ma, ICML 2023):
  the same preconditioned steps with a fixed, non-negligible damping
  ``lambda`` from a tiny random start, for an overestimated rank.

The three share one loop; the residual on the observed entries is a small
numba kernel (compiled before the timer starts), the products with it are
scipy's CSR products, so their times measure the methods, not numpy's
fancy indexing.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla


def _rel_error(X, M_true):
    return float(np.linalg.norm(X - M_true) / np.linalg.norm(M_true))


def _unavailable(reason):
    return dict(available=False, reason=reason, error=None, time=None, history=None)


def versions():
    out = {}
    for name in ("fancyimpute", "cmfrec", "sklearn"):
        try:
            module = __import__(name)
            out[name] = getattr(module, "__version__", None)
            if out[name] is None:
                from importlib.metadata import version
                out[name] = version(name)
        except Exception as exc:  # noqa: BLE001
            out[name] = f"unavailable: {type(exc).__name__}: {exc}"
    return out


# -- factored gradient methods (implemented here) ------------------------------
#: ScaledGD(lambda) constants (see run_scaled_gd_lambda): step eta, damping
#: lambda / s_1 and initial scale alpha, chosen on 600 x 500, true rank 4,
#: 25% observed, kappa 1..1000, rank budgets 4, 8, 16 (benchmarks/conditioning.py).
SGDL_STEP = 0.5
SGDL_DAMPING = 0.1
SGDL_INIT_SCALE = 1e-15


_RESIDUAL = []


def _residual_kernel():
    """``f(L, R, rows, cols, values, scale, out)``: ``out[e] = scale * ((L R^T)[rows[e], cols[e]]
    - values[e])``, compiled with numba when it is there (a numpy gather + einsum otherwise, several
    times slower), so the peers' time goes to their arithmetic.  Compiled once, outside the timed fit."""
    if not _RESIDUAL:
        try:
            import numba

            @numba.njit(cache=True, nogil=True)
            def residual(L, R, rows, cols, values, scale, out):
                k = L.shape[1]
                for e in range(rows.shape[0]):
                    i, j = rows[e], cols[e]
                    acc = 0.0
                    for c in range(k):
                        acc += L[i, c] * R[j, c]
                    out[e] = scale * (acc - values[e])

            one = np.ones((1, 1))
            residual(one, one, np.zeros(1, np.int64), np.zeros(1, np.int64), np.ones(1), 1.0, np.empty(1))
        except Exception:  # noqa: BLE001 - numba missing or unusable: numpy fallback
            def residual(L, R, rows, cols, values, scale, out):
                out[:] = scale * (np.einsum("ij,ij->i", L.take(rows, axis=0), R.take(cols, axis=0)) - values)
        _RESIDUAL.append(residual)
    return _RESIDUAL[0]


def _factored(M_obs, mask, M_true, rank, cap_s, target, rule, max_iter=20000, record_every=10,
              step=None, damping=None, init_scale=None, seed=0):
    """Gradient methods on ``X = L R^T`` with loss ``1/(2p) ||P_Omega(L R^T - M)||_F^2``.

    ``rule``: ``"bm"`` (spectral start, plain gradient plus balancing),
    ``"scaled"`` (spectral start, ScaledGD) or ``"scaled_lambda"`` (small
    random start, ScaledGD(lambda)).  ``max_iter`` caps the iterations.
    """
    residual = _residual_kernel()
    start = time.perf_counter()
    m, n = M_obs.shape
    rows, cols = np.nonzero(mask)  # row-major order = CSR order
    values = M_obs[rows, cols].astype(np.float64)
    p = len(values) / (m * n)
    pattern = sp.csr_matrix((np.ones_like(values), (rows, cols)), shape=(m, n))
    Y = sp.csr_matrix((values / p, (rows, cols)), shape=(m, n))
    v0 = np.random.default_rng(seed).standard_normal(min(m, n))
    k = rank
    if rule == "scaled_lambda":
        sigma1 = float(spla.svds(Y, k=1, v0=v0, return_singular_vectors=False)[0])
        rng = np.random.default_rng(seed)
        alpha = SGDL_INIT_SCALE if init_scale is None else init_scale
        L = alpha * np.sqrt(sigma1) * rng.standard_normal((m, k)) / np.sqrt(m)
        R = alpha * np.sqrt(sigma1) * rng.standard_normal((n, k)) / np.sqrt(n)
        eta = SGDL_STEP if step is None else step
        lam = (SGDL_DAMPING if damping is None else damping) * sigma1
    else:
        u, s, vt = spla.svds(Y, k=rank, v0=v0)
        L = u * np.sqrt(s)
        R = vt.T * np.sqrt(s)
        sigma1 = float(s.max())
        eta = step if step is not None else (0.5 if rule == "scaled" else 0.5 / sigma1)
        lam = 1e-10 * sigma1  # only keeps an overestimated rank's solve defined
    eye = np.eye(k)
    history = {"iteration": [], "time": [], "recovery_error": []}
    it = 0
    while True:
        if it % record_every == 0:
            err = _rel_error(L @ R.T, M_true) if M_true is not None else np.nan
            history["iteration"].append(it)
            history["time"].append(time.perf_counter() - start)
            history["recovery_error"].append(err)
            if err <= target or not np.isfinite(err) or err > 1e6 or history["time"][-1] > cap_s or it >= max_iter:
                break
        residual(np.ascontiguousarray(L), np.ascontiguousarray(R), rows, cols, values, 1.0 / p, pattern.data)
        GR, GtL = pattern @ R, pattern.T @ L  # gradients in L and R
        if rule == "bm":
            B = L.T @ L - R.T @ R
            L, R = L - eta * (GR + 0.5 * L @ B), R - eta * (GtL - 0.5 * R @ B)
        else:  # (R^T R + lam I) is symmetric: solve(A, G^T)^T = G A^-1
            try:
                L_new = L - eta * np.linalg.solve(R.T @ R + lam * eye, GR.T).T
                R = R - eta * np.linalg.solve(L.T @ L + lam * eye, GtL.T).T
            except np.linalg.LinAlgError:  # an exploded iterate: recorded as diverged
                L_new, R = np.full_like(L, np.nan), np.full_like(R, np.nan)
            L = L_new
        it += 1
    return dict(available=True, error=history["recovery_error"][-1], time=history["time"][-1],
                iterations=it, history=history)


def run_bm_gd(M_obs, mask, M_true, rank, cap_s=30.0, target=1e-6, max_iter=20000):
    return _factored(M_obs, mask, M_true, rank, cap_s, target, "bm", max_iter=max_iter)


def run_scaled_gd(M_obs, mask, M_true, rank, cap_s=30.0, target=1e-6, max_iter=20000):
    return _factored(M_obs, mask, M_true, rank, cap_s, target, "scaled", max_iter=max_iter)


def run_scaled_gd_lambda(M_obs, mask, M_true, rank, cap_s=30.0, target=1e-6, max_iter=20000, *,
                         step=None, damping=None, init_scale=None, seed=0):
    """ScaledGD(lambda) (Xu, Shen, Chi, Ma, ICML 2023), for a rank budget ``rank`` >= the true rank.

    Small random start ``L0 = alpha sqrt(s1) G / sqrt(m)``, ``R0 = alpha
    sqrt(s1) H / sqrt(n)`` (G, H standard Gaussian), then
    ``L <- L - eta grad_L (R^T R + lam I)^-1``, ``R <- R - eta grad_R (L^T L
    + lam I)^-1`` (both from the same iterate) with fixed damping ``lam =
    c_lam * s1``, where ``s1`` is the top singular value of the spectral
    estimate ``P_Omega(M) / p`` (``svds(., 1)``).  Defaults (module
    constants): ``eta = SGDL_STEP``, ``c_lam = SGDL_DAMPING``, ``alpha =
    SGDL_INIT_SCALE``; ``step``, ``damping`` (``c_lam``) and ``init_scale``
    override them.

    The paper's analysis (matrix sensing under RIP) takes, as we recall it
    (the abstract confirms only the small random start, the fixed damping
    and the log-kappa iteration count), ``lam`` within a constant factor of
    the target's smallest nonzero singular value, a constant step and an
    initial scale polynomially small in ``1 / (kappa n)``.  With
    the rank unknown that value is unknown too, so ``lam`` is tied to the
    spectral estimate's top value, and the constants were set by a sweep on
    the conditioning benchmark's problems (recovery error 1e-6 as target):

    - ``c_lam = 0.1``: while the surplus columns of an overestimated rank
      are tiny, their steps are scaled by ``1 / lam``, and sampling makes the
      residual they see ``P_Omega(E) / p - E``, about 0.3-0.4 ``||E||`` at 25%
      observed.  With ``c_lam = 0.01`` or ``0.03`` they grew and the fit stalled
      at 1e-2 to 1e-3 with budget 2r or 4r even at kappa 1 (0.01 was fine at
      the exact rank); 0.1 reached 1e-6 in 60-70 iterations at every budget.
      What counts is the ratio ``eta / c_lam``: 5 (0.5 / 0.1 or 0.25 / 0.05)
      reached 1e-6 at budget 2r and kappa 1, 10 (0.5 / 0.05) and 17
      (0.5 / 0.03) stalled at 3e-5 and 6e-4.  The price: a direction with
      ``sigma_i < lam`` converges at the rate ``(eta / c_lam) sigma_i / s_1``
      per iteration, so beyond kappa ~ 1 / c_lam the iteration count grows
      about like kappa (about 600 iterations at kappa 100, where
      ``eta / c_lam = 17`` took 190 but fails at kappa 1).
    - ``alpha = 1e-15``: with 1e-3 or 1e-8 the first, almost-power-method
      phase also grew the surplus columns along the noise directions of
      ``P_Omega(M) / p`` and the fit stalled (2e-6 to 1e-3 at budget 2r);
      1e-12 and 1e-15 did not (kappa 1, budget 2r).  A smaller alpha costs only about
      ``log(1 / alpha^2) / log(1 + eta / c_lam)`` (about 40) iterations.
    - ``eta = 0.5``, as for ScaledGD from the spectral start.
    """
    return _factored(M_obs, mask, M_true, rank, cap_s, target, "scaled_lambda", max_iter=max_iter,
                     step=step, damping=damping, init_scale=init_scale, seed=seed)


# -- fancyimpute ------------------------------------------------------------------
def _fancy(cls_name, M_obs, mask, M_true, cap_s, **params):
    try:
        import fancyimpute
    except Exception as exc:  # noqa: BLE001
        return _unavailable(f"fancyimpute not importable here ({type(exc).__name__}: {exc})")
    base = getattr(fancyimpute, cls_name)
    history = {"iteration": [], "time": [], "recovery_error": []}
    state = {"start": None}

    class Recorded(base):
        def _converged(self, X_old, X_new, missing_mask):
            history["iteration"].append(len(history["iteration"]) + 1)
            history["time"].append(time.perf_counter() - state["start"])
            history["recovery_error"].append(_rel_error(X_new, M_true))
            done = super()._converged(X_old, X_new, missing_mask)
            return done or history["time"][-1] > cap_s

    X = np.where(mask, M_obs, np.nan)
    state["start"] = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        filled = Recorded(verbose=False, **params).fit_transform(X)
    elapsed = time.perf_counter() - state["start"]
    return dict(available=True, error=_rel_error(filled, M_true), time=elapsed,
                iterations=len(history["iteration"]), history=history, params=params)


def run_softimpute(M_obs, mask, M_true, rank, cap_s=30.0, target=None):
    """fancyimpute SoftImpute, default shrinkage (sigma_max / 50), rank cap ``rank``."""
    return _fancy("SoftImpute", M_obs, mask, M_true, cap_s, max_rank=rank, max_iters=500,
                  convergence_threshold=1e-9)


def run_iterative_svd(M_obs, mask, M_true, rank, cap_s=30.0, target=None):
    """fancyimpute IterativeSVD (hard rank ``rank``)."""
    return _fancy("IterativeSVD", M_obs, mask, M_true, cap_s, rank=rank, max_iters=500,
                  convergence_threshold=1e-9)


# -- cmfrec -------------------------------------------------------------------------
def run_cmfrec(M_obs, mask, M_true, rank, cap_s=30.0, target=None):
    """cmfrec CMF (ALS), no biases, no centering, ridge 0.1, 1 thread."""
    try:
        import cmfrec
    except Exception as exc:  # noqa: BLE001
        return _unavailable(f"cmfrec not importable here ({type(exc).__name__}: {exc})")
    try:
        import pandas as pd
    except Exception as exc:  # noqa: BLE001
        return _unavailable(f"pandas (for cmfrec input) not importable ({type(exc).__name__}: {exc})")
    rows, cols = np.nonzero(mask)
    frame = pd.DataFrame({"UserId": rows, "ItemId": cols, "Rating": M_obs[rows, cols]})
    params = dict(k=rank, lambda_=0.1, method="als", niter=50, use_cg=False, user_bias=False,
                  item_bias=False, center=False, nthreads=1, verbose=False, random_state=0)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = cmfrec.CMF(**params).fit(frame)
    elapsed = time.perf_counter() - start
    R, C = np.meshgrid(np.arange(M_obs.shape[0]), np.arange(M_obs.shape[1]), indexing="ij")
    X = model.predict(R.ravel(), C.ravel()).reshape(M_obs.shape)
    return dict(available=True, error=_rel_error(X, M_true), time=elapsed, history=None,
                params={k: v for k, v in params.items() if k != "verbose"},
                note="lambda_=0.1 (smaller ridges made ALS unstable on these problems)")


# -- scikit-learn ------------------------------------------------------------------
def run_iterative_imputer(M_obs, mask, M_true, rank=None, cap_s=30.0, target=None):
    """scikit-learn IterativeImputer (BayesianRidge per column); small sizes only."""
    try:
        from sklearn.experimental import enable_iterative_imputer  # noqa: F401
        from sklearn.impute import IterativeImputer
    except Exception as exc:  # noqa: BLE001
        return _unavailable(f"scikit-learn IterativeImputer not importable ({type(exc).__name__}: {exc})")
    X = np.where(mask, M_obs, np.nan)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        filled = IterativeImputer(max_iter=10, random_state=0).fit_transform(X)
    return dict(available=True, error=_rel_error(filled, M_true), time=time.perf_counter() - start,
                history=None, params=dict(max_iter=10))


PEERS = {
    "BM-GD (spectral init; implemented in benchmarks)": run_bm_gd,
    "ScaledGD (Tong-Ma-Chi; implemented in benchmarks)": run_scaled_gd,
    "ScaledGD(lambda) (Xu-Shen-Chi-Ma, small random init; implemented in benchmarks)": run_scaled_gd_lambda,
    "fancyimpute SoftImpute": run_softimpute,
    "fancyimpute IterativeSVD": run_iterative_svd,
    "cmfrec CMF (ALS)": run_cmfrec,
    "sklearn IterativeImputer": run_iterative_imputer,
}

"""The invariant subspace of deep factorization dynamics (DESIGN.md section 3).

The wide model ``W_L ... W_1`` started at ``eps`` times orthogonal factors has
end-to-end matrix ``E0 = eps**L * Q``.  Its training dynamics stay in the
subspace pair spanned by

    V = orth([V_G, Q^T U_G]),   U = Q V,

where ``U_G, V_G`` are the top-``rank`` singular vectors of the initial
gradient ``G0 = P_Omega(E0 - M)``.  Everything here works on the observed
entries: ``G0`` is sparse, its truncated SVD comes from ARPACK (or, for very
large operators, a randomized range finder in blocks), and ``Q`` is an
operator applied to a few vectors, never an ``m x n`` array.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from .observations import Observations

__all__ = [
    "RandomOrthogonal",
    "DenseOrthogonal",
    "InitialSpectrum",
    "initial_gradient",
    "full_initial_gradient",
    "top_singular_triplets",
    "randomized_singular_triplets",
    "cholesky_qr",
    "invariant_subspace",
]


class RandomOrthogonal:
    """A random (semi-)orthogonal ``m x n`` operator that is cheap to apply.

    ``Q = [I_m 0] H S P [I_n; 0]^T`` with ``d = max(m, n)``: ``P`` a random
    permutation of ``d`` coordinates, ``S`` random signs and ``H`` a product of
    ``n_reflections`` random Householder reflections kept in compact WY form
    ``H = I - Y T Y^T``.  The signed permutation mixes every coordinate (so
    ``Q^T U_G`` is not aligned with ``V_G`` even for symmetric targets, where
    ``Q = I`` would make the basis lose rank); the reflections make ``Q`` dense.
    Applying ``Q`` costs O(d * n_reflections) per vector and one entry costs
    O(n_reflections), so ``P_Omega(E0)`` costs O(|Omega| * n_reflections).

    Parameters
    ----------
    shape : tuple of int
        ``(m, n)``.
    rng : numpy.random.Generator
    n_reflections : int, default=8
    """

    def __init__(self, shape, rng, n_reflections=8):
        m, n = (int(s) for s in shape)
        d = max(m, n)
        self.shape = (m, n)
        h = min(int(n_reflections), d)
        self._permutation = rng.permutation(d)
        self._signs = rng.choice(np.array([-1.0, 1.0]), size=d)
        Y = rng.standard_normal((d, h))
        Y /= np.linalg.norm(Y, axis=0)
        # H_1 H_2 ... H_h = I - Y T Y^T with H_j = I - 2 y_j y_j^T (LAPACK larft).
        T = np.zeros((h, h))
        for j in range(h):
            T[:j, j] = -2.0 * T[:j, :j] @ (Y[:, :j].T @ Y[:, j])
            T[j, j] = 2.0
        self._Y, self._T, self._d = Y, T, d

    def matvec(self, X):
        """``Q @ X`` for X of shape (n, k)."""
        m, n = self.shape
        Z = np.zeros((self._d, X.shape[1]), dtype=np.result_type(X, np.float64))
        Z[self._permutation[:n]] = self._signs[:n, None] * X
        Z -= self._Y @ (self._T @ (self._Y.T @ Z))
        return Z[:m]

    def rmatvec(self, Y):
        """``Q^T @ Y`` for Y of shape (m, k)."""
        m, n = self.shape
        Z = np.zeros((self._d, Y.shape[1]), dtype=np.result_type(Y, np.float64))
        Z[:m] = Y
        Z -= self._Y @ (self._T.T @ (self._Y.T @ Z))
        return self._signs[:n, None] * Z[self._permutation[:n]]

    def entries(self, rows, cols, chunk=1 << 18):
        """``Q[rows, cols]`` without forming Q: O(len(rows) * n_reflections).

        Computed ``chunk`` entries at a time, so the temporaries stay at
        O(chunk * n_reflections) instead of two |Omega| x n_reflections arrays.
        """
        out = np.empty(len(rows))
        for start in range(0, len(rows), chunk):
            r, c = rows[start:start + chunk], cols[start:start + chunk]
            targets = self._permutation[c]
            low_rank = np.einsum("ij,ij->i", self._Y[r] @ self._T, self._Y[targets])
            out[start:start + chunk] = self._signs[c] * ((r == targets) - low_rank)
        return out

    def dense(self):
        """The full ``m x n`` matrix (tests and the wide model only)."""
        return self.matvec(np.eye(self.shape[1]))


class DenseOrthogonal:
    """An explicit (semi-)orthogonal matrix behind the same interface.

    Used when ``Q`` is the product of the wide model's initial factors, so
    that the compressed and the wide model start from the same ``E0``.
    """

    def __init__(self, Q):
        self._Q = np.asarray(Q, dtype=np.float64)
        self.shape = self._Q.shape

    def matvec(self, X):
        return self._Q @ X

    def rmatvec(self, Y):
        return self._Q.T @ Y

    def entries(self, rows, cols):
        return self._Q[rows, cols]

    def dense(self):
        return self._Q


@dataclass(frozen=True)
class InitialSpectrum:
    """Top singular triplets of the initial gradient ``G0``.

    Attributes
    ----------
    left : ndarray of shape (m, rank)
        ``U_G``, the left singular vectors.
    singular_values : ndarray of shape (rank,)
        In descending order.
    right : ndarray of shape (n, rank)
        ``V_G``, the right singular vectors.
    """

    left: np.ndarray  # U_G, m x rank
    singular_values: np.ndarray  # descending
    right: np.ndarray  # V_G, n x rank


def initial_gradient(obs: Observations, q, end_to_end_scale: float) -> sp.csr_matrix:
    """``G0 = P_Omega(E0 - M)`` as a CSR matrix, ``E0 = end_to_end_scale * Q``.

    Uses float64 whatever the data dtype: the subspace is computed once and
    its accuracy bounds everything after it.
    """
    e0 = end_to_end_scale * q.entries(obs.observed_rows, obs.observed_cols)
    return obs.to_csr(e0 - obs.values.astype(np.float64))


def full_initial_gradient(sparse_part: sp.csr_matrix, q, end_to_end_scale: float):
    """``G0 = E0 + S0`` of a fully observed loss, as a matrix-free operator.

    For the loss over all entries (:func:`dmc.models.gram_loss_and_gradients`)
    the gradient at ``E0 = end_to_end_scale * Q`` is dense: ``E0`` plus the
    sparse ``S0`` on the interactions.  Products with it cost one product
    with ``Q`` (O(max(m, n) * n_reflections) per vector) and one with
    ``S0`` (O(|Omega|)), so its truncated SVD never forms an m x n array.

    Parameters
    ----------
    sparse_part : scipy.sparse matrix, shape (m, n)
        ``S0``.
    q : RandomOrthogonal or DenseOrthogonal
    end_to_end_scale : float

    Returns
    -------
    scipy.sparse.linalg.LinearOperator
    """
    S = sp.csr_matrix(sparse_part, dtype=np.float64)
    St = S.T.tocsr()
    c = float(end_to_end_scale)

    def matmat(X):
        X = np.asarray(X, dtype=np.float64).reshape(S.shape[1], -1)
        return c * q.matvec(X) + S @ X

    def rmatmat(Y):
        Y = np.asarray(Y, dtype=np.float64).reshape(S.shape[0], -1)
        return c * q.rmatvec(Y) + St @ Y

    return spla.LinearOperator(S.shape, matvec=matmat, rmatvec=rmatmat, matmat=matmat,
                               rmatmat=rmatmat, dtype=np.float64)


SVD_SOLVERS = ("arpack", "randomized")


def top_singular_triplets(G, rank: int, rng, *, solver: str = "arpack", n_iter: int = 4,
                          n_oversamples: int = 10) -> InitialSpectrum:
    """Top-``rank`` singular triplets of a sparse matrix or operator (truncated SVD).

    Never a full SVD of an ``m x n`` matrix (except below ``rank >=
    min(m, n)``, tiny problems only).  ``G`` may be a scipy.sparse matrix, a
    dense array or a ``LinearOperator`` (e.g. :func:`full_initial_gradient`).

    Parameters
    ----------
    G : sparse matrix, ndarray or scipy.sparse.linalg.LinearOperator, shape (m, n)
    rank : int
    rng : numpy.random.Generator
        Draws ARPACK's start vector or the randomized test matrix, so the
        result is reproducible.
    solver : {"arpack", "randomized"}, default="arpack"
        ``"arpack"``: Lanczos (``scipy.sparse.linalg.svds``), one vector
        product at a time, accurate to rounding.  ``"randomized"``:
        :func:`randomized_singular_triplets`, products in blocks of ``rank +
        n_oversamples`` columns; the choice for very large operators.
    n_iter, n_oversamples : int
        Passed to :func:`randomized_singular_triplets` (``"randomized"`` only).

    Returns
    -------
    InitialSpectrum
    """
    if solver not in SVD_SOLVERS:
        raise ValueError(f'solver must be "arpack" or "randomized"; got {solver!r}.')
    m, n = G.shape
    if solver == "randomized":
        return randomized_singular_triplets(G, rank, rng, n_iter=n_iter, n_oversamples=n_oversamples)
    v0 = rng.standard_normal(min(m, n))
    if rank >= min(m, n):  # ARPACK needs rank < min(m, n); tiny problems only
        dense = _dense(G)
        u, s, vt = np.linalg.svd(dense, full_matrices=False)
        u, s, vt = u[:, :rank], s[:rank], vt[:rank]
    else:
        u, s, vt = spla.svds(G, k=rank, v0=v0, solver="arpack")
        order = np.argsort(s)[::-1]
        u, s, vt = u[:, order], s[order], vt[order]
    return InitialSpectrum(u, s, vt.T)


def _dense(G):
    if sp.issparse(G):
        return G.toarray()
    if isinstance(G, np.ndarray):
        return G
    return G @ np.eye(G.shape[1])


def cholesky_qr(Y):
    """Orthonormal basis of range(Y) for a tall-skinny block Y (CholeskyQR2).

    ``R = chol(Y^T Y)``, ``Q = Y R^{-1}``, done twice: one pass costs a Gram
    product and a triangular solve (about half a Householder QR for
    ``m >> k``) but loses orthogonality like ``cond(Y)**2``; the second
    pass restores it to rounding whenever the first succeeded.  When the
    Gram matrix is not numerically positive definite (``Y`` rank deficient
    or too ill-conditioned), falls back to ``numpy.linalg.qr``.

    Parameters
    ----------
    Y : ndarray of shape (m, k), m >= k

    Returns
    -------
    ndarray of shape (m, k)
        Orthonormal columns spanning range(Y) (a completion of it when Y is
        rank deficient: Householder QR's columns).
    """
    Q = Y
    for _ in range(2):
        try:
            R = np.linalg.cholesky(Q.T @ Q).T  # upper triangular, Q^T Q = R^T R
        except np.linalg.LinAlgError:
            return np.linalg.qr(Y)[0]
        Q = sla.solve_triangular(R, Q.T, trans="T", lower=False).T  # Q R^{-1}
        if not np.all(np.isfinite(Q)):
            return np.linalg.qr(Y)[0]
    return Q


def _check_operator(G):
    shape = getattr(G, "shape", None)
    if shape is None or len(shape) != 2 or not callable(getattr(G, "__matmul__", None)):
        raise TypeError("G must be a 2-D matrix or operator with a shape and G @ X products "
                        f"(ndarray, scipy.sparse matrix or LinearOperator); got {type(G).__name__}.")
    return int(shape[0]), int(shape[1])


def randomized_singular_triplets(G, rank: int, rng, *, n_iter: int = 4,
                                 n_oversamples: int = 10) -> InitialSpectrum:
    """Top-``rank`` singular triplets by a randomized range finder with power iterations.

    Halko, Martinsson and Tropp (2011), algorithms 4.4 and 5.1: draw a
    Gaussian test block ``Omega`` (n x l, ``l = rank + n_oversamples``), take
    ``Y = G Omega``, run ``n_iter`` power iterations ``Y <- G (G^T Y)``
    with the block orthonormalised after every product (:func:`cholesky_qr`),
    then ``B = Q^T G`` (l x n) and the SVD of that small block.  Matrix-free:
    only products of ``G`` and ``G^T`` with l-column blocks, ``2 * n_iter + 2``
    of them; O((m + n) l) memory beyond the operator.  The error in the
    ``j``-th singular value shrinks like ``(sigma_{l+1} / sigma_j) **
    (2 * n_iter + 1)``, so a decaying spectrum needs few iterations.

    Parameters
    ----------
    G : ndarray, scipy.sparse matrix or scipy.sparse.linalg.LinearOperator, shape (m, n)
        Anything with ``shape``, ``G @ X`` and ``G.T @ Y`` for 2-D blocks.
    rank : int
        Number of triplets, ``1 <= rank <= min(m, n)``.
    rng : numpy.random.Generator
        Draws ``Omega``; the same state gives the same triplets.
    n_iter : int, default=4
        Power iterations (>= 0).
    n_oversamples : int, default=10
        Extra columns of the test block (>= 0); capped so that ``l <= min(m, n)``.

    Returns
    -------
    InitialSpectrum
        Singular values in descending order, orthonormal singular vectors.
    """
    m, n = _check_operator(G)
    for name, value, low in (("rank", rank, 1), ("n_iter", n_iter, 0),
                             ("n_oversamples", n_oversamples, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}; got {value!r}.")
    if rank > min(m, n):
        raise ValueError(f"rank={rank} exceeds min(m, n) = {min(m, n)} for a {m} x {n} operator.")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator; got {type(rng).__name__}.")
    block = min(int(rank) + int(n_oversamples), m, n)
    Q = cholesky_qr(np.asarray(G @ rng.standard_normal((n, block)), dtype=np.float64))
    for _ in range(int(n_iter)):
        Z = cholesky_qr(np.asarray(G.T @ Q, dtype=np.float64))
        Q = cholesky_qr(np.asarray(G @ Z, dtype=np.float64))
    Bt = np.asarray(G.T @ Q, dtype=np.float64)  # B^T = G^T Q, n x l
    v, s, ubt = np.linalg.svd(Bt, full_matrices=False)  # B = ubt^T diag(s) v^T
    u = Q @ ubt.T
    return InitialSpectrum(u[:, :rank], s[:rank], v[:, :rank])


def _orthonormal_basis(B, k, rng):
    """Orthonormal basis of range(B) completed with random directions to k columns.

    Rank loss in ``[V_G, Q^T U_G]`` (e.g. a symmetric target with ``Q = I``)
    leaves fewer than k independent columns; the missing ones are filled with
    random directions orthogonal to the rest so the model keeps width k.
    """
    u, s, _ = np.linalg.svd(B, full_matrices=False)
    tol = max(B.shape) * np.finfo(np.float64).eps * (s[0] if s.size else 1.0)
    basis = u[:, s > max(tol, 1e-10 * s[0])]
    missing = k - basis.shape[1]
    if missing > 0:
        extra = rng.standard_normal((B.shape[0], missing))
        extra -= basis @ (basis.T @ extra)
        extra, _ = np.linalg.qr(extra)
        extra -= basis @ (basis.T @ extra)  # second pass for accuracy
        extra, _ = np.linalg.qr(extra)
        basis = np.hstack([basis, extra])
    return basis


def invariant_subspace(spectrum: InitialSpectrum, q, rng):
    """``(U, V)`` of DESIGN.md section 3 from the initial gradient's triplets.

    ``V = orth([V_G, Q^T U_G])`` (n x 2 rank), ``U = Q V`` (m x 2 rank).  When
    ``m >= n``, ``Q`` has orthonormal columns and so has ``U``; when ``m < n``
    it need not, and it is kept as constructed (no re-orthonormalisation).
    """
    k = 2 * spectrum.left.shape[1]
    B = np.hstack([spectrum.right, q.rmatvec(spectrum.left)])
    V = _orthonormal_basis(B, k, rng)
    return q.matvec(V), V

"""A suite of small, real fitting problems for learning-rate-free minimisation.

Every problem is a :class:`Problem`: ``fun(x, *args) -> (f, g)`` in NumPy, a
*mean* loss over the rows of the arrays in ``args`` (so the same ``fun`` works on
a minibatch made of the same rows of every array of ``args`` with at least one
dimension), a deterministic ``x0``, ``batch_size`` (``None``: full batch) and
the reference minimum ``f_star`` of the full-data loss, computed by
:func:`reference` (scipy L-BFGS-B run to high precision, from x0 and from
several restarts near the solution, cross-checked with a second solver; for
some problems a closed form).  The references are cached in
``references.json`` next to this file; ``python problems.py --refresh``
recomputes and checks them.

Scoring: the relative excess ``(f(x) - f*) / max(|f*|, TINY)`` of the full-data
loss at the returned ``x``; solved when it is at most ``1e-5`` (full batch) or
``1e-3`` (minibatch).

Data: scikit-learn's bundled data sets with RAW (unstandardised) features, the
Puromycin enzyme-kinetics data (Treloar 1974, as in R's ``datasets``), and
generated data from fixed seeds.  No network access.

``holdout=True`` marks the problems that were not looked at while the
tuning-free defaults of :func:`nadam.minimize` were designed (docs/tuning-free.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.special import expit, logsumexp

TINY = 1e-6  # denominator floor of the relative excess (problems whose f* is 0)
TOL_FULL = 1e-5
TOL_MINIBATCH = 1e-3
HERE = Path(__file__).resolve().parent
REF_FILE = HERE / "references.json"


@dataclass
class Problem:
    name: str
    kind: str  # "full" or "minibatch"
    category: str
    fun: Callable
    x0: np.ndarray
    args: tuple = ()
    batch_size: int | None = None
    holdout: bool = False
    f_star: float = float("nan")
    note: str = ""
    closed_form: Callable | None = field(default=None, repr=False)  # -> f* (exact)
    ref_starts: list = field(default_factory=list, repr=False)  # more starts for reference()

    @property
    def n_rows(self) -> int | None:
        for a in self.args:
            if np.ndim(a) >= 1:
                return len(a)
        return None

    @property
    def tol(self) -> float:
        return TOL_FULL if self.batch_size is None else TOL_MINIBATCH

    def full(self, x) -> float:
        return float(self.fun(np.asarray(x, dtype=np.float64), *self.args)[0])

    def excess(self, x) -> float:
        f = self.full(x)
        if not np.isfinite(f):
            return float("inf")
        return (f - self.f_star) / max(abs(self.f_star), TINY)


# ----------------------------------------------------------------------------
# objectives (mean over rows; gradients by hand)
# ----------------------------------------------------------------------------


def _aug(X):
    return np.hstack([X, np.ones((len(X), 1))])


def logistic(w, X, y, lam):
    """Mean logistic loss, y in {0, 1}; X carries a column of ones; L2 on all
    but the last weight (the intercept)."""
    z = X @ w
    f = np.mean(np.logaddexp(0.0, z) - y * z)
    g = X.T @ (expit(z) - y) / len(y)
    f += 0.5 * lam * (w[:-1] @ w[:-1])
    g[:-1] += lam * w[:-1]
    return f, g


def least_squares(w, X, y):
    """Half mean squared error of a (possibly multi-output) linear model; w is
    (d*k,) for X (n, d) and y (n, k) or (n,)."""
    k = 1 if y.ndim == 1 else y.shape[1]
    W = w.reshape(X.shape[1], k)
    r = X @ W - y.reshape(len(y), k)
    return 0.5 * np.mean(np.sum(r * r, axis=1)), (X.T @ r / len(y)).ravel()


def huber(w, X, y, delta):
    r = X @ w - y
    a = np.abs(r)
    quad = a <= delta
    f = np.mean(np.where(quad, 0.5 * r * r, delta * (a - 0.5 * delta)))
    psi = np.where(quad, r, delta * np.sign(r))
    return f, X.T @ psi / len(y)


def softmax_reg(w, X, Y, lam):
    """Multinomial logistic loss, Y one-hot (n, k), X with a column of ones;
    L2 on all weights but the intercept row."""
    d, k = X.shape[1], Y.shape[1]
    W = w.reshape(d, k)
    Z = X @ W
    zmax = Z.max(axis=1, keepdims=True)
    E = np.exp(Z - zmax)
    s = E.sum(axis=1, keepdims=True)
    f = np.mean(zmax[:, 0] + np.log(s[:, 0])) - np.sum(Y * Z) / len(Y)
    G = X.T @ (E / s - Y) / len(Y)
    f += 0.5 * lam * np.sum(W[:-1] ** 2)
    G[:-1] += lam * W[:-1]
    return f, G.ravel()


def poisson_reg(w, X, y, lam):
    z = X @ w
    mu = np.exp(z)
    f = np.mean(mu - y * z) + 0.5 * lam * (w[:-1] @ w[:-1])
    g = X.T @ (mu - y) / len(y)
    g[:-1] += lam * w[:-1]
    return f, g


def curve_mse(model):
    """Mean squared error of ``model(p, t) -> (yhat, J)`` (J: (n, p) Jacobian)."""

    def fun(p, t, y):
        yhat, J = model(p, t)
        r = yhat - y
        return np.mean(r * r), 2.0 * (J.T @ r) / len(y)

    return fun


def _exp_decay(p, t):  # A exp(-t / tau) + c
    A, tau, c = p
    e = np.exp(-t / tau)
    return A * e + c, np.stack([e, A * e * t / tau**2, np.ones_like(t)], axis=1)


def _damped_sin(p, t):  # A exp(-t / tau) sin(omega t + phi)
    A, tau, om, ph = p
    e = np.exp(-t / tau)
    s, c = np.sin(om * t + ph), np.cos(om * t + ph)
    J = np.stack([e * s, A * e * s * t / tau**2, A * e * c * t, A * e * c], axis=1)
    return A * e * s, J


def _gauss_peak(p, t):  # A exp(-(t - mu)^2 / (2 s^2)) + b
    A, mu, s, b = p
    u = (t - mu) / s
    e = np.exp(-0.5 * u * u)
    J = np.stack([e, A * e * u / s, A * e * u * u / s, np.ones_like(t)], axis=1)
    return A * e + b, J


def _michaelis(p, S):  # Vmax S / (Km + S)
    V, K = p
    d = K + S
    return V * S / d, np.stack([S / d, -V * S / d**2], axis=1)


def _logistic_growth(p, t):  # K / (1 + exp(-r (t - t0)))
    K, r, t0 = p
    s = expit(r * (t - t0))
    ds = s * (1 - s)
    return K * s, np.stack([s, K * ds * (t - t0), -K * ds * r], axis=1)


def rosenbrock(x):
    a, b = x[:-1], x[1:]
    f = np.sum(100.0 * (b - a * a) ** 2 + (1 - a) ** 2)
    g = np.zeros_like(x)
    g[:-1] = -400.0 * a * (b - a * a) - 2 * (1 - a)
    g[1:] += 200.0 * (b - a * a)
    return f, g


def beale(x):
    a, b = x
    t1, t2, t3 = 1.5 - a + a * b, 2.25 - a + a * b * b, 2.625 - a + a * b**3
    f = t1 * t1 + t2 * t2 + t3 * t3
    ga = 2 * t1 * (b - 1) + 2 * t2 * (b * b - 1) + 2 * t3 * (b**3 - 1)
    gb = 2 * t1 * a + 2 * t2 * 2 * a * b + 2 * t3 * 3 * a * b * b
    return f, np.array([ga, gb])


def quadratic(x, A, b):
    """0.5 x'Ax - b'x (A symmetric positive definite, given dense or as a diagonal)."""
    Ax = A * x if A.ndim == 1 else A @ x
    return 0.5 * (x @ Ax) - b @ x, Ax - b


def matfact(shape):
    """Mean over the rows of M of the squared error ||M_i - U_i V'||^2 / n_cols,
    x = (U, V) flattened; args (idx, M): the rows' indices and the rows (so
    minibatches work)."""
    return lambda x, idx, M: _matfact(x, idx, M, shape)


def _matfact(x, idx, M, shape):
    """Mean over the rows of M of the squared error ||M_i - U_i V'||^2 / n_cols,
    x = (U, V) flattened; ``idx`` are the rows' indices (so minibatches work)."""
    m, n, r = shape
    U = x[: m * r].reshape(m, r)
    V = x[m * r :].reshape(n, r)
    Ui = U[idx]
    R = Ui @ V.T - M
    f = np.mean(np.sum(R * R, axis=1)) / n
    gU = np.zeros_like(U)
    np.add.at(gU, idx, 2.0 * R @ V / (n * len(idx)))
    gV = 2.0 * R.T @ Ui / (n * len(idx))
    return f, np.concatenate([gU.ravel(), gV.ravel()])


# ----------------------------------------------------------------------------
# the problems
# ----------------------------------------------------------------------------

PUROMYCIN_CONC = np.array([0.02, 0.02, 0.06, 0.06, 0.11, 0.11, 0.22, 0.22, 0.56, 0.56, 1.10, 1.10])
PUROMYCIN_RATE = np.array([76, 47, 97, 107, 123, 139, 159, 152, 191, 201, 207, 200], dtype=float)


def _poisson_newton(X, y, lam, iters=100):
    """Damped Newton for :func:`poisson_reg` (a second solver for the reference;
    L-BFGS-B overflows from zeros on raw features)."""
    w = np.zeros(X.shape[1])
    w[-1] = np.log(np.mean(y))
    R = lam * np.eye(X.shape[1])
    R[-1, -1] = 0
    for _ in range(iters):
        f, g = poisson_reg(w, X, y, lam)
        H = (X.T * np.exp(X @ w)) @ X / len(y) + R
        d = np.linalg.solve(H, g)
        s = 1.0
        while not poisson_reg(w - s * d, X, y, lam)[0] <= f and s > 1e-10:
            s /= 2
        w = w - s * d
    return w


def _onehot(y):
    k = int(y.max()) + 1
    return np.eye(k)[y]


def _build() -> list[Problem]:
    from sklearn import datasets as ds

    P: list[Problem] = []

    # --- scikit-learn bundled data, raw features -----------------------------
    bc = ds.load_breast_cancer()
    X = _aug(bc.data)
    P.append(
        Problem(
            "breast_cancer_logistic",
            "full",
            "real data",
            logistic,
            np.zeros(X.shape[1]),
            (X, bc.target.astype(float), 1e-3),
            note="569 x 30 raw features (up to 4254), L2 1e-3",
        )
    )

    dia = ds.load_diabetes(scaled=False)
    Xd = _aug(dia.data)
    P.append(
        Problem(
            "diabetes_least_squares",
            "full",
            "real data",
            least_squares,
            np.zeros(Xd.shape[1]),
            (Xd, dia.target.astype(float)),
            note="442 x 10 raw features, half MSE",
        )
    )
    P.append(
        Problem(
            "diabetes_huber",
            "full",
            "real data",
            huber,
            np.zeros(Xd.shape[1]),
            (Xd, dia.target.astype(float), 20.0),
            holdout=True,
            note="Huber delta 20 (target units)",
        )
    )

    ir = ds.load_iris()
    Xi = _aug(ir.data)
    P.append(
        Problem(
            "iris_softmax",
            "full",
            "real data",
            softmax_reg,
            np.zeros(Xi.shape[1] * 3),
            (Xi, _onehot(ir.target), 1e-2),
            note="150 x 4, 3 classes, L2 1e-2",
        )
    )

    wi = ds.load_wine()
    Xw = _aug(wi.data)
    P.append(
        Problem(
            "wine_softmax",
            "full",
            "real data",
            softmax_reg,
            np.zeros(Xw.shape[1] * 3),
            (Xw, _onehot(wi.target), 1e-2),
            holdout=True,
            note="178 x 13 raw (proline ~1000), L2 1e-2",
        )
    )

    dg = ds.load_digits()
    Xg = _aug(dg.data)
    P.append(
        Problem(
            "digits_softmax",
            "full",
            "real data",
            softmax_reg,
            np.zeros(Xg.shape[1] * 10),
            (Xg, _onehot(dg.target), 1e-2),
            note="1797 x 64 pixels 0-16, 10 classes, 650 parameters, L2 1e-2",
        )
    )

    ln = ds.load_linnerud()
    Xl = _aug(ln.data)
    P.append(
        Problem(
            "linnerud_multioutput",
            "full",
            "real data",
            least_squares,
            np.zeros(Xl.shape[1] * 3),
            (Xl, ln.target.astype(float)),
            note="20 x 3 exercise counts -> 3 physiological targets",
        )
    )

    # --- curve fits ----------------------------------------------------------
    rng = np.random.default_rng(1)
    t = np.linspace(0, 300, 200)
    y = _exp_decay(np.array([5.0, 50.0, 0.5]), t)[0] + 0.05 * rng.normal(size=t.size)
    P.append(
        Problem(
            "exp_decay",
            "full",
            "curve fit",
            curve_mse(_exp_decay),
            np.array([1.0, 10.0, 0.0]),
            (t, y),
            note="A e^{-t/tau} + c, tau = 50",
        )
    )

    rng = np.random.default_rng(2)
    t = np.linspace(0, 10, 300)
    y = _damped_sin(np.array([2.0, 3.0, 2 * np.pi * 0.8, 0.3]), t)[0] + 0.1 * rng.normal(
        size=t.size
    )
    P.append(
        Problem(
            "damped_sinusoid",
            "full",
            "curve fit",
            curve_mse(_damped_sin),
            np.array([1.0, 1.0, 5.0, 0.0]),
            (t, y),
            note="A e^{-t/tau} sin(omega t + phi), noise 0.1",
        )
    )

    rng = np.random.default_rng(3)
    t = np.linspace(400, 600, 250)
    y = _gauss_peak(np.array([1000.0, 503.0, 18.0, 50.0]), t)[0] + 10 * rng.normal(size=t.size)
    P.append(
        Problem(
            "gaussian_peak",
            "full",
            "curve fit",
            curve_mse(_gauss_peak),
            np.array([500.0, 490.0, 10.0, 0.0]),
            (t, y),
            holdout=True,
            note="A=1000, mu=503, s=18, b=50",
        )
    )

    P.append(
        Problem(
            "michaelis_menten_puromycin",
            "full",
            "curve fit",
            curve_mse(_michaelis),
            np.array([100.0, 1.0]),
            (PUROMYCIN_CONC, PUROMYCIN_RATE),
            note="real data (Treloar 1974), Vmax ~ 213, Km ~ 0.064",
        )
    )

    rng = np.random.default_rng(4)
    t = np.linspace(0, 50, 120)
    y = _logistic_growth(np.array([1e4, 0.3, 20.0]), t)[0] * (1 + 0.03 * rng.normal(size=t.size))
    P.append(
        Problem(
            "logistic_growth",
            "full",
            "curve fit",
            curve_mse(_logistic_growth),
            np.array([8000.0, 0.2, 15.0]),
            (t, y),
            note="K = 1e4, r = 0.3, t0 = 20",
        )
    )

    # --- classic test functions ----------------------------------------------
    P.append(
        Problem(
            "rosenbrock_2d",
            "full",
            "test function",
            rosenbrock,
            np.array([-1.2, 1.0]),
            closed_form=lambda: 0.0,
        )
    )
    P.append(
        Problem(
            "rosenbrock_10d",
            "full",
            "test function",
            rosenbrock,
            np.tile([-1.2, 1.0], 5),
            closed_form=lambda: 0.0,
        )
    )
    P.append(
        Problem(
            "beale",
            "full",
            "test function",
            beale,
            np.array([1.0, 1.0]),
            holdout=True,
            closed_form=lambda: 0.0,
        )
    )

    def quad(name, n, cond, rotate, seed, holdout=False):
        rng = np.random.default_rng(seed)
        lam = np.logspace(0, np.log10(cond), n)
        if rotate:
            Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
            A = (Q * lam) @ Q.T
            A = 0.5 * (A + A.T)
        else:
            A = lam
        b = rng.normal(size=n) * np.sqrt(lam)
        xs = np.linalg.solve(A, b) if rotate else b / lam

        P.append(
            Problem(
                name,
                "full",
                "test function",
                lambda x, A=A, b=b: quadratic(x, A, b),
                np.zeros(n),
                (),
                holdout=holdout,
                note=f"n={n}, condition {cond:g}" + (", rotated" if rotate else ", diagonal"),
                closed_form=lambda: float(-0.5 * b @ xs),
            )
        )

    quad("quadratic_diag_1e4", 100, 1e4, False, 11)
    quad("quadratic_diag_1e6", 100, 1e6, False, 12)
    quad("quadratic_rotated_1e3", 50, 1e3, True, 13)
    quad("quadratic_rotated_1e5", 50, 1e5, True, 14, holdout=True)

    # --- matrix factorisation ------------------------------------------------
    rng = np.random.default_rng(5)
    m, n, r = 30, 20, 3
    M = rng.normal(size=(m, r)) @ rng.normal(size=(r, n)) + 0.1 * rng.normal(size=(m, n))
    x0 = 0.1 * np.random.default_rng(6).normal(size=(m + n) * r)
    sv = np.linalg.svd(M, compute_uv=False)
    P.append(
        Problem(
            "matrix_factorisation",
            "full",
            "nonconvex",
            matfact((m, n, r)),
            x0,
            (np.arange(m), M),
            note="30 x 20 rank 3 + noise; f* = tail singular values (global)",
            closed_form=lambda: float(np.sum(sv[r:] ** 2) / (m * n)),
        )
    )

    # --- Poisson regression (full batch) ---------------------------------------
    rng = np.random.default_rng(7)
    scales = np.array([1.0, 10.0, 100.0, 0.1, 1000.0, 1.0])
    Z = rng.normal(size=(2000, 6))
    wtrue = np.array([0.3, -0.2, 0.1, 0.5, -0.05, 0.2])
    y = rng.poisson(np.exp(Z @ wtrue + 0.5)).astype(float)
    Xp = _aug(Z * scales + np.array([0, 5, 50, 0, 0, 2]))
    P.append(
        Problem(
            "poisson_regression",
            "full",
            "GLM",
            poisson_reg,
            np.zeros(7),
            (Xp, y, 1e-4),
            note="2000 x 6, feature scales 0.1 - 1000, L2 1e-4",
            ref_starts=[_poisson_newton(Xp, y, 1e-4)],
        )
    )

    # --- minibatch likelihoods ---------------------------------------------------
    rng = np.random.default_rng(8)
    N, d = 20000, 20
    sc = 10 ** rng.uniform(-1, 2, size=d)
    Z = rng.normal(size=(N, d))
    w = rng.normal(size=d) / np.sqrt(d)
    y = (Z @ w + 0.3 > rng.logistic(size=N)).astype(float)
    Xm = _aug(Z * sc)
    P.append(
        Problem(
            "mb_logistic",
            "minibatch",
            "minibatch GLM",
            logistic,
            np.zeros(d + 1),
            (Xm, y, 1e-4),
            batch_size=64,
            note="20000 x 20, feature scales 0.1 - 100, batch 64",
        )
    )

    rng = np.random.default_rng(9)
    N, d, k = 10000, 10, 5
    Z = rng.normal(size=(N, d)) * 3 + 1
    W = rng.normal(size=(d, k)) * 0.3
    logits = Z @ W
    yk = np.array([rng.choice(k, p=p) for p in np.exp(logits - logsumexp(logits, axis=1)[:, None])])
    Xs = _aug(Z)
    P.append(
        Problem(
            "mb_softmax",
            "minibatch",
            "minibatch GLM",
            softmax_reg,
            np.zeros((d + 1) * k),
            (Xs, _onehot(yk), 1e-4),
            batch_size=128,
            note="10000 x 10, 5 classes, batch 128",
        )
    )

    rng = np.random.default_rng(10)
    N, d = 5000, 8
    Z = rng.normal(size=(N, d)) * np.array([1, 2, 5, 10, 0.5, 1, 20, 3]) + 4
    w = rng.normal(size=d)
    yl = Z @ w + 2 + 3 * rng.normal(size=N)
    P.append(
        Problem(
            "mb_linear_regression",
            "minibatch",
            "minibatch GLM",
            least_squares,
            np.zeros(d + 1),
            (_aug(Z), yl),
            batch_size=32,
            note="5000 x 8, uncentred features, batch 32",
        )
    )

    P.append(
        Problem(
            "mb_breast_cancer_logistic",
            "minibatch",
            "minibatch GLM",
            logistic,
            np.zeros(X.shape[1]),
            (X, bc.target.astype(float), 1e-3),
            batch_size=32,
            note="breast cancer raw features (569 rows), batch 32",
        )
    )

    rng = np.random.default_rng(12)
    N, d = 8000, 5
    Z = rng.normal(size=(N, d)) * np.array([1.0, 3.0, 0.3, 10.0, 1.0]) + np.array([0, 2, 0, 5, 1])
    w = np.array([1.0, -0.5, 2.0, 0.1, -1.0])
    yh = Z @ w + 1.0 + rng.standard_t(2, size=N)
    P.append(
        Problem(
            "mb_huber_regression",
            "minibatch",
            "minibatch robust",
            huber,
            np.zeros(d + 1),
            (_aug(Z), yh, 1.0),
            batch_size=64,
            note="8000 x 5, Student-t(2) noise, Huber delta 1, batch 64",
        )
    )

    rng = np.random.default_rng(13)
    N, d, k = 30000, 20, 3
    sc = 10 ** rng.uniform(-1, 1.5, size=d)
    Z = rng.normal(size=(N, d))
    W = rng.normal(size=(d, k)) * 0.5
    logits = Z @ W
    cum = np.cumsum(np.exp(logits - logsumexp(logits, axis=1)[:, None]), axis=1)
    yk = np.minimum((rng.uniform(size=(N, 1)) > cum).sum(axis=1), k - 1)
    P.append(
        Problem(
            "mb_softmax_large",
            "minibatch",
            "minibatch GLM",
            softmax_reg,
            np.zeros((d + 1) * k),
            (_aug(Z * sc), _onehot(yk), 1e-4),
            batch_size=256,
            note="30000 x 20 (scales 0.1 - 30), 3 classes, batch 256",
        )
    )

    rng = np.random.default_rng(11)
    N, d = 10000, 6
    Z = rng.normal(size=(N, d)) * np.array([1, 0.5, 2, 1, 3, 0.2])
    w = np.array([0.3, -0.4, 0.1, 0.2, -0.1, 1.0])
    yp = rng.poisson(np.exp(Z @ w + 1.0)).astype(float)
    P.append(
        Problem(
            "mb_poisson",
            "minibatch",
            "minibatch GLM",
            poisson_reg,
            np.zeros(d + 1),
            (_aug(Z), yp, 1e-4),
            batch_size=128,
            holdout=True,
            note="10000 x 6 Poisson counts, batch 128",
        )
    )

    P.append(
        Problem(
            "mb_digits_softmax",
            "minibatch",
            "minibatch GLM",
            softmax_reg,
            np.zeros(Xg.shape[1] * 10),
            (Xg, _onehot(dg.target), 1e-2),
            batch_size=64,
            holdout=True,
            note="digits (1797 x 64 raw pixels), batch 64",
        )
    )
    return P


# ----------------------------------------------------------------------------
# references
# ----------------------------------------------------------------------------


def _lbfgs(p: Problem, x0, maxiter=200000):
    from scipy.optimize import minimize

    r = minimize(
        p.fun,
        x0,
        args=p.args,
        jac=True,
        method="L-BFGS-B",
        options={
            "maxiter": maxiter,
            "maxfun": 10 * maxiter,
            "ftol": 1e-15,
            "gtol": 1e-14,
            "maxcor": 50,
        },
    )
    return r


def reference(p: Problem, verbose=False) -> dict:
    """f* by L-BFGS-B to high precision from x0, polished by restarts from its
    own result (and from perturbations of it), cross-checked with BFGS / a
    trust-region Newton-CG from the same point; a closed form where known."""
    from scipy.optimize import minimize

    r = _lbfgs(p, p.x0)
    x, f = r.x, r.fun
    for s in p.ref_starts:
        r1 = _lbfgs(p, np.asarray(s, dtype=float))
        if r1.fun < f:
            x, f = r1.x, r1.fun
    for _ in range(5):  # restarts from the result (L-BFGS-B stalls on bad scaling)
        r2 = _lbfgs(p, x)
        if r2.fun < f:
            x, f = r2.x, r2.fun
    rng = np.random.default_rng(0)
    for _ in range(3):  # perturbed restarts: same basin, lower point?
        r2 = _lbfgs(p, x * (1 + 1e-3 * rng.normal(size=x.size)))
        if r2.fun < f:
            x, f = r2.x, r2.fun
    # second solver
    try:
        r3 = minimize(
            p.fun,
            x,
            args=p.args,
            jac=True,
            method="BFGS",
            options={"gtol": 1e-12, "maxiter": 20000},
        )
        f_bfgs = float(r3.fun)
        if r3.fun < f:
            x, f = r3.x, r3.fun
    except Exception:  # noqa: BLE001
        f_bfgs = float("nan")
    out = {
        "f_star": float(f),
        "f_lbfgs_x0": float(r.fun),
        "f_bfgs": f_bfgs,
        "gnorm": float(np.max(np.abs(p.fun(x, *p.args)[1]))),
        "x_star": x.tolist(),
    }
    if p.closed_form is not None:
        fc = p.closed_form()
        out["f_closed_form"] = fc
        out["f_star"] = float(min(fc, f)) if fc != 0 else 0.0
    if verbose:
        print(
            p.name,
            out["f_star"],
            out["f_lbfgs_x0"],
            out["f_bfgs"],
            out.get("f_closed_form"),
            out["gnorm"],
        )
    return out


def problems(holdout: bool | None = None, names=None) -> list[Problem]:
    """The suite with ``f_star`` filled in from references.json (computed and
    saved if missing).  ``holdout``: None all, True/False only those."""
    P = _build()
    refs = json.loads(REF_FILE.read_text()) if REF_FILE.exists() else {}
    changed = False
    for p in P:
        if p.name not in refs:
            refs[p.name] = reference(p)
            changed = True
        p.f_star = refs[p.name]["f_star"]
    if changed:
        REF_FILE.write_text(json.dumps(refs, indent=1))
    if holdout is not None:
        P = [p for p in P if p.holdout == holdout]
    if names:
        P = [p for p in P if p.name in names]
    return P


if __name__ == "__main__":
    import sys

    if "--refresh" in sys.argv:
        refs = {p.name: reference(p, verbose=True) for p in _build()}
        REF_FILE.write_text(json.dumps(refs, indent=1))
    for p in problems():
        print(
            f"{p.name:28s} {p.kind:9s} n={p.x0.size:4d} rows={p.n_rows} "
            f"holdout={p.holdout!s:5s} f*={p.f_star:.12g}"
        )

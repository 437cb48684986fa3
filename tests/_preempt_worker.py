"""A checkpointed :func:`nadam.minimize` run for ``tests/test_checkpoint.py`` to kill.

``python tests/_preempt_worker.py CHECKPOINT RESULT [DELAY]`` runs minibatch
Adam with a reduce-on-plateau schedule (so the sampler's position, the
optimizer's state and the schedule's state all have to survive), resuming from
CHECKPOINT if it exists, and saves the result to RESULT (an ``.npz``).  DELAY
seconds of sleep per evaluation stretch the run so that a test can kill it
mid-way; they change nothing in the numbers.  The test imports :func:`run` to
compute the uninterrupted reference in its own process.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from scipy.optimize import OptimizeResult

import nadam

MAXITER = 800
EVERY = 20  # checkpoint_every: often (a write takes ~10 ms), so kills land in writes too


def run(checkpoint: str | None = None, delay: float = 0.0) -> OptimizeResult:
    """The run, checkpointed to ``checkpoint`` (and resumed from it) if given."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 5))
    y = (X @ rng.normal(size=5) + 0.5 * rng.normal(size=400) > 0).astype(np.float64)

    def loss(w, X, y):
        if delay:
            time.sleep(delay)
        z = X @ w
        g = X.T @ (1.0 / (1.0 + np.exp(-z)) - y) / len(y)
        return np.mean(np.logaddexp(0.0, z) - y * z), g

    options = {
        "lr": nadam.schedules.reduce_on_plateau(0.05, factor=0.5, patience=100),
        "batch_size": 16,
        "seed": 7,
        "maxiter": MAXITER,
    }
    if checkpoint is not None:
        options.update(checkpoint=checkpoint, checkpoint_every=EVERY, resume=True)
    return nadam.minimize(loss, np.zeros(5), args=(X, y), jac=True, options=options)


if __name__ == "__main__":
    res = run(sys.argv[1], float(sys.argv[3]) if len(sys.argv) > 3 else 0.0)
    np.savez(
        sys.argv[2],
        x=res.x,
        fun=res.fun,
        nit=res.nit,
        nfev=res.nfev,
        status=res.status,
        message=res.message,
    )

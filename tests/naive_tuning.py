"""A naive reference of :func:`nadam.minimize` without ``lr`` (and without ``maxiter``),
written from docs/tuning-free.md in plain NumPy: one Python loop, separate arrays, the
step of ``adam_distance`` from ``tests/naive.py``.  Nothing of nadam is used but its
minibatch sampler (:class:`nadam.sampling.Minibatches`, tested on its own), so that both
see the same batches and the same evaluation rows.

:func:`run` returns ``(x, info)``: the answer before the final full-data evaluation, and
``nit``, ``nfev`` (objective calls), ``status`` (6 converged, 1 budget, 3 gave up after
divergences), ``step`` (the step size in force), ``cuts`` and ``starts`` (fresh starts).
"""

from __future__ import annotations

import math

import numpy as np
from naive import adam_distance

from nadam.sampling import Minibatches

CONVERGED, BUDGET, DIVERGED = 6, 1, 3


def run(
    fun,
    x0,
    args=(),
    *,
    batch_size=None,
    seed=0,
    maxiter=100_000,
    lr=None,
    window=None,
    ftol=None,
    average="poly",
):
    """The whole tuning-free run (see the module docstring).  ``lr`` None: the step
    size is found (cut by 2 on a stall, by 10 on a divergence); else it stays ``lr``."""
    adapt = lr is None
    step = step0 = 0.1 if adapt else lr
    x = np.array(x0, dtype=np.float64).reshape(-1)
    origin_x = x.copy()
    hyper = dict(
        lr=step,
        betas=(0.9, 0.999),
        eps=None,
        weight_decay=0.0,
        amsgrad=False,
        r_eps=1e-6,
        maximize=False,
        decoupled_weight_decay=False,
    )
    state: dict = {}
    sampler = Minibatches(args, batch_size, seed) if batch_size else None
    noisy = sampler is not None and sampler.batch_size < sampler.n_rows
    if noisy:
        epoch = sampler.n_rows / batch_size
        W = window or (2000 if epoch > 2000 else math.ceil(math.ceil(100 / epoch) * epoch))
        tol = 1e-6 if ftol is None else ftol
        stalls_max, grace = 3, 1
        rows = min(W * batch_size, sampler.n_rows)
        evaluation = sampler.subset(rows)
    else:
        W = window or 50
        tol = 1e-10 if ftol is None else ftol
        stalls_max, grace = 5, 0
    avg = x.copy() if noisy and average == "poly" else None
    best_f, best_x = math.inf, None  # the lowest loss evaluated (full batch)
    best_score, best_candidate = math.inf, None  # the best candidate (minibatches)
    progress = False
    nit = nfev = cuts = starts = 0
    # The lowest loss (best score) when the run last started afresh, and when a window
    # last made progress.
    fresh = mark = math.inf
    start = stalls = windows = origin = 0
    status = BUDGET

    def back_to_best():
        nonlocal x, avg, origin, windows
        if noisy:
            x = (best_candidate if best_candidate is not None else origin_x).copy()
        else:
            x = (best_x if best_x is not None else origin_x).copy()
        if avg is not None:
            avg = x.copy()
        origin, windows = nit, 0

    while True:
        if nit - start >= W:  # the end of a window: judge it
            start = nit
            windows += 1
            judged = not (noisy and windows <= grace)
            if judged:
                if noisy:
                    # x0 is the first candidate, scored at the first judged window.
                    firsts = [origin_x, x if avg is None else avg] if math.isinf(fresh) else []
                    for candidate in firsts or [x if avg is None else avg]:
                        score = float(fun(candidate, *evaluation)[0])
                        nfev += 1
                        score = score if math.isfinite(score) else math.inf
                        if math.isinf(best_score):
                            moved = score < best_score
                        else:
                            moved = score < best_score - tol * abs(best_score)
                        if score < best_score:
                            best_score, best_candidate = score, candidate.copy()
                else:
                    moved, progress = progress, False
                lowest = best_score if noisy else best_f
                if math.isinf(fresh):  # the first judged window
                    fresh = mark = lowest
                if moved:
                    stalls = 0
                    mark = lowest
                else:
                    stalls += 1
                    gained = mark < (fresh - 1e-5 * abs(fresh) if math.isfinite(fresh) else fresh)
                    if stalls >= stalls_max and adapt and gained:
                        # Not converged: on again, as a run started at the best point would.
                        fresh = mark = lowest
                        stalls, step = 0, step0
                        state.clear()
                        back_to_best()
                        starts += 1
                    elif stalls >= stalls_max:
                        status = CONVERGED
                        break
                    elif adapt:
                        step *= 0.5
                        cuts += 1
                        if step < 1e-12 * step0:
                            status = CONVERGED
                            break
                        back_to_best()
        batch = sampler.next() if sampler is not None else args
        f, g = fun(x, *batch)
        f, g = float(f), np.asarray(g, dtype=np.float64).reshape(-1)
        nfev += 1
        if not (math.isfinite(f) and np.all(np.isfinite(g))):
            if not adapt or step * 0.1 < 1e-12 * step0:
                status = DIVERGED
                break
            step *= 0.1
            for name in ("exp_avg", "exp_avg_sq"):
                state.pop(name, None)
            state["k"] = 0
            back_to_best()
            start = nit
            continue
        if f < best_f:
            if math.isinf(best_f) or f < best_f - tol * abs(best_f):
                progress = True
            best_f, best_x = f, x.copy()
        if nit >= maxiter:
            status = BUDGET
            break
        new = adam_distance(x, g, state, nit + 1, **{**hyper, "lr": step})
        if not np.all(np.isfinite(new)):  # not written: the run treats it as a divergence
            raise AssertionError("the reference does not model a non-finite step")
        x = new
        if avg is not None:
            w = 4.0 / (nit - origin + 1.0 + 3.0)
            avg = avg + w * (x - avg)
        nit += 1
    if noisy:
        answer = best_candidate if best_candidate is not None else (x if avg is None else avg)
    else:
        answer = best_x if best_x is not None else x
    info = {"nit": nit, "nfev": nfev, "status": status, "step": step, "cuts": cuts}
    info["starts"] = starts
    return answer, info

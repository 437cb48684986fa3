"""Run solvers on the fitting suite of ``problems.py`` and print Markdown tables.

    python benchmarks/fits/run.py [--solvers a,b,...] [--problems p,q,...]
                                  [--set design|holdout|all] [--json out.json]
    python benchmarks/fits/run.py --from-json out.json [--from-json more.json]

Solvers (``--solvers``, comma-separated; default: all of them):

* ``nadam``        ``nadam.minimize(fun, x0, args=args, jac=True,
                   options={"batch_size": b, "seed": 0})``: whatever nadam's
                   defaults are when the script runs;
* ``adam1e-3``     Adam lr 1e-3, 20,000 steps (nadam.minimize, gtol 0);
* ``adam_grid``    Adam, the best of lr in 1e-4, 3e-4, ..., 1 by final full-data
                   loss (an oracle), 20,000 steps each; evaluations and time are
                   those of the winning run (the search itself cost 9x);
* ``optax_prodigy``, ``optax_dadapt``, ``optax_dog``, ``optax_sf_adamw``:
                   optax.contrib with their defaults, float64, a jitted update,
                   20,000 steps; schedule-free scored at
                   ``schedule_free_eval_params``;
* ``torch_prodigy``, ``torch_sf_adamw``: ``prodigyopt.Prodigy`` and
                   ``schedulefree.AdamWScheduleFree`` defaults, float64,
                   20,000 steps (``.eval()`` before reading x);
* ``lbfgsb``       scipy L-BFGS-B with its defaults (full-batch problems only).

Every stochastic solver draws its minibatches from ``nadam.sampling.Minibatches``
with seed 0 (rows without replacement, epoch by epoch, the same batch sequence
for all), and every solver is scored on the FULL-data loss at the x it returns:
relative excess ``(f(x) - f*) / max(|f*|, 1e-6)``; solved when <= 1e-5 (full
batch) or <= 1e-3 (minibatch).  ``evals``: gradient evaluations (one per
minibatch or full-batch evaluation; an evaluation on more rows inside a minibatch
solver, such as nadam's evaluation set and its final full-data evaluation, counts
as ceil(rows / batch) of them).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings

# one thread each for BLAS, XLA and torch: the fits are small and the machine is shared
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")
os.environ.setdefault(
    "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

import problems as PR  # noqa: E402

STEPS = 20_000
GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------


class Oracle:
    """fun(x) -> (f, g) on the next minibatch (or the full data), counting."""

    def __init__(self, p, seed=0):
        from nadam.sampling import Minibatches

        self.p = p
        self.n = 0
        self.mb = Minibatches(p.args, p.batch_size, seed) if p.batch_size else None

    def __call__(self, x):
        self.n += 1
        a = self.mb.next() if self.mb is not None else self.p.args
        return self.p.fun(x, *a)


def _finite(f, g):
    return np.isfinite(f) and np.all(np.isfinite(g))


def _nadam(p, **opts):
    import nadam

    o = dict(opts)
    if p.batch_size:
        o["batch_size"] = p.batch_size
    o["seed"] = 0
    # Evaluations in batches: a call on more rows than a batch (the evaluation set of the
    # tuning-free stages, the full data at the end) counts as ceil(rows / batch) of them.
    calls = [0]

    def fun(x, *args):
        rows = next(len(a) for a in args if np.ndim(a) >= 1) if p.batch_size else 1
        calls[0] += math.ceil(rows / (p.batch_size or 1))
        return p.fun(x, *args)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = nadam.minimize(fun, p.x0.copy(), args=p.args, jac=True, options=o)
    return r.x, {"evals": calls[0], "message": r.message}


def solve_nadam(p):
    return _nadam(p)


def solve_adam(p, lr=1e-3, steps=STEPS):
    return _nadam(p, lr=lr, maxiter=steps, gtol=0.0)


def solve_adam_grid(p):
    best = None
    for lr in GRID:
        t = time.perf_counter()
        x, info = solve_adam(p, lr)
        info["time"] = time.perf_counter() - t
        e = p.excess(x)
        if best is None or (np.isfinite(e) and not e >= best[0]):
            best = (e, x, dict(info, lr=lr))
    e, x, info = best
    info["message"] = f"lr={info['lr']:g}"
    return x, info


def _optax_solver(name):
    def solve(p, steps=STEPS):
        import jax

        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp
        import optax
        import optax.contrib as oc

        opt = {
            "prodigy": oc.prodigy,
            "dadapt": oc.dadapt_adamw,
            "dog": oc.dog,
            "sf_adamw": oc.schedule_free_adamw,
        }[name]()
        params = jnp.asarray(p.x0, dtype=jnp.float64)
        state = opt.init(params)

        @jax.jit
        def step(params, state, g):
            u, state = opt.update(g, state, params)
            return optax.apply_updates(params, u), state

        F = Oracle(p)
        x_last = np.asarray(params)
        msg = "max steps"
        for _ in range(steps):
            x = np.asarray(params)
            f, g = F(x)
            if not _finite(f, g):
                msg = "non-finite"
                break
            x_last = x
            params, state = step(params, state, jnp.asarray(g))
        else:
            x_last = np.asarray(params)
        if name == "sf_adamw":
            x_last = np.asarray(oc.schedule_free_eval_params(state, jnp.asarray(x_last)))
        return np.array(x_last, dtype=float), {"evals": F.n, "message": msg}

    return solve


def _torch_solver(name):
    def solve(p, steps=STEPS):
        import torch

        torch.set_num_threads(1)
        t = torch.tensor(p.x0, dtype=torch.float64, requires_grad=True)
        if name == "prodigy":
            from prodigyopt import Prodigy

            opt = Prodigy([t])
        else:
            from schedulefree import AdamWScheduleFree

            opt = AdamWScheduleFree([t])
            opt.train()
        F = Oracle(p)
        msg = "max steps"
        x_ok = p.x0.copy()
        for _ in range(steps):
            x = t.detach().numpy().copy()
            f, g = F(x)
            if not _finite(f, g):
                msg = "non-finite"
                break
            x_ok = x
            t.grad = torch.from_numpy(np.asarray(g, dtype=np.float64).copy())
            opt.step()
        else:
            x_ok = None
        if name == "sf_adamw":
            opt.eval()
        if x_ok is None or name == "sf_adamw" and msg == "max steps":
            x_ok = t.detach().numpy().copy()
        return x_ok, {"evals": F.n, "message": msg}

    return solve


def solve_lbfgsb(p):
    if p.batch_size:
        return None
    from scipy.optimize import minimize

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = minimize(p.fun, p.x0.copy(), args=p.args, jac=True, method="L-BFGS-B")
    return r.x, {"evals": int(r.nfev), "message": str(r.message)}


SOLVERS = {
    "nadam": solve_nadam,
    "adam1e-3": solve_adam,
    "adam_grid": solve_adam_grid,
    "optax_prodigy": _optax_solver("prodigy"),
    "optax_dadapt": _optax_solver("dadapt"),
    "optax_dog": _optax_solver("dog"),
    "optax_sf_adamw": _optax_solver("sf_adamw"),
    "torch_prodigy": _torch_solver("prodigy"),
    "torch_sf_adamw": _torch_solver("sf_adamw"),
    "lbfgsb": solve_lbfgsb,
}


def run_one(p, solver):
    t = time.perf_counter()
    with np.errstate(all="ignore"):
        out = SOLVERS[solver](p)
        if out is None:
            return None
        x, info = out
        wall = time.perf_counter() - t
        e = p.excess(x)
    rec = {
        "problem": p.name,
        "solver": solver,
        "kind": p.kind,
        "holdout": p.holdout,
        "excess": float(e) if np.isfinite(e) else None,
        "solved": bool(e <= p.tol),
        "evals": int(info.get("evals", -1)),
        "time": info.get("time", wall),
        "message": str(info.get("message", info.get("stop", ""))),
    }
    return rec


# ----------------------------------------------------------------------------
# tables
# ----------------------------------------------------------------------------


def _fmt_e(e):
    if e is None:
        return "nan"
    if e <= 0:
        return "0"
    return f"{e:.1e}"


def tables(recs, solvers=None, problems=None):
    solvers = solvers or list(dict.fromkeys(r["solver"] for r in recs))
    by = {(r["problem"], r["solver"]): r for r in recs}
    names = problems or list(dict.fromkeys(r["problem"] for r in recs))
    order = {p.name: i for i, p in enumerate(PR._build())}
    names.sort(key=lambda n: order.get(n, len(order)))
    meta = {r["problem"]: r for r in recs}
    out = []
    for label, keep in (("design", False), ("hold-out", True)):
        ps = [n for n in names if meta[n]["holdout"] == keep]
        if not ps:
            continue
        out.append(
            f"\n### {label} set: relative excess of the full-data loss "
            "(**bold** = solved), gradient evaluations\n"
        )
        out.append("| problem | " + " | ".join(solvers) + " |")
        out.append("|---|" + "---|" * len(solvers))
        for n in ps:
            cells = []
            for s in solvers:
                r = by.get((n, s))
                if r is None:
                    cells.append("–")
                    continue
                e = _fmt_e(r["excess"])
                ev = r["evals"]
                ev = f"{ev / 1000:.1f}k" if ev >= 1000 else str(ev)
                cells.append((f"**{e}**" if r["solved"] else e) + f" ({ev})")
            kind = "" if meta[n]["kind"] == "full" else " (mb)"
            out.append(f"| {n}{kind} | " + " | ".join(cells) + " |")
        counts = []
        for s in solvers:
            rs = [by[(n, s)] for n in ps if (n, s) in by]
            counts.append(f"**{sum(r['solved'] for r in rs)}**/{len(rs)}")
        out.append("| **solved** | " + " | ".join(counts) + " |")
        times = []
        for s in solvers:
            rs = [by[(n, s)]["time"] for n in ps if (n, s) in by]
            times.append(f"{max(rs):.1f} s" if rs else "–")
        out.append("| max time / fit | " + " | ".join(times) + " |")
    return "\n".join(out)


def summary(recs):
    solvers = list(dict.fromkeys(r["solver"] for r in recs))
    lines = [
        "\n| solver | solved (design) | solved (hold-out) | solved (all) | "
        "median evals | max time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for s in solvers:
        rs = [r for r in recs if r["solver"] == s]
        d = [r for r in rs if not r["holdout"]]
        h = [r for r in rs if r["holdout"]]
        lines.append(
            f"| {s} | {sum(r['solved'] for r in d)}/{len(d)} | "
            f"{sum(r['solved'] for r in h)}/{len(h)} | "
            f"{sum(r['solved'] for r in rs)}/{len(rs)} | "
            f"{int(np.median([r['evals'] for r in rs]))} | "
            f"{max(r['time'] for r in rs):.1f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--solvers", default=",".join(SOLVERS))
    ap.add_argument("--problems", default="")
    ap.add_argument("--set", default="all", choices=("design", "holdout", "all"))
    ap.add_argument("--json", default="")
    ap.add_argument("--from-json", action="append", default=[])
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument(
        "--resume",
        action="store_true",
        help="keep the records already in --json and skip those pairs",
    )
    a = ap.parse_args(argv)
    if a.from_json:
        recs = []
        for f in a.from_json:
            recs += json.load(open(f))["records"]
        print(tables(recs))
        print(summary(recs))
        return
    hold = {"design": False, "holdout": True, "all": None}[a.set]
    ps = PR.problems(hold, [s for s in a.problems.split(",") if s] or None)
    solvers = [s for s in a.solvers.split(",") if s]
    recs = []
    if a.resume and a.json and os.path.exists(a.json):
        recs = json.load(open(a.json))["records"]
    done = {(r["problem"], r["solver"]) for r in recs}
    for p in ps:
        for s in solvers:
            if (p.name, s) in done:
                continue
            r = run_one(p, s)
            if r is None:
                continue
            recs.append(r)
            if not a.quiet:
                print(
                    f"{p.name:28s} {s:16s} excess={_fmt_e(r['excess']):>8s} "
                    f"{'SOLVED' if r['solved'] else '      '} evals={r['evals']:7d} "
                    f"t={r['time']:6.2f}s {r['message'][:60]}",
                    flush=True,
                )
        if a.json:
            json.dump({"records": recs}, open(a.json, "w"), indent=1)
    print(tables(recs))
    print(summary(recs))


if __name__ == "__main__":
    main()

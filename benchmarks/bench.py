"""Kernel benchmark: nadam's update kernels against a memory floor and the peers.

``python -m nadam bench [--quick]`` (from a source checkout), ``python
benchmarks/bench.py``, or :func:`main` times, in one process and
interleaved (round-robin, best and median of several rounds):

* ``nadam serial`` / ``nadam parallel``: the compiled kernel ``kernel(p, g, s, h)``
  of the rule (serial loop, ``prange`` loop);
* ``floor serial`` / ``floor parallel``: the *same* loop template with a trivial
  element function that reads and writes exactly the same arrays (``p``, ``g``
  and every state row: the bytes of :data:`BYTES` per element) -- what the memory
  system allows;
* ``nadam step``: the public ``Optimizer.step(g)`` (Python call, gradient checks,
  default ``nonfinite="raise"`` finiteness pass, host coefficients, kernel), and
  the same with ``nonfinite="ignore"``;
* ``numpy``: the textbook NumPy implementation (temporaries and all): the
  naive reference the tests check every rule against (``tests/naive.py``);
* when installed: the rule's reference implementation (``torch.optim`` for-loop,
  ``foreach``, ``fused`` where torch has it; ``prodigyopt``, ``schedulefree``)
  and ``optax`` under ``jax.jit`` (donated buffers).

The cases, the references and the textbook steps all come from the registry
(:data:`nadam.rules.RULES`) and the tests' naive references: a new rule is
benchmarked without an edit here.

It prints ns per element, the ratio of each kernel to its floor (serial to serial,
parallel to parallel), each peer's time over nadam's, and the effective bandwidth
(nominal bytes of the fused in-place step / time).  The machine is assumed to be
shared and noisy: only ratios measured in the same run mean anything, and the
ratios use the minimum over rounds (the median is printed next to it).

The scripts under ``benchmarks/`` build on these functions (full sweeps, the
plot, the compile and first-call latency, the serial/parallel crossover).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import importlib
import importlib.metadata as _metadata
import inspect
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numba
import numpy as np

from nadam import kernels as _kernels
from nadam.kernels import cpu
from nadam.kernels.tiered import wait
from nadam.optimizers import optimizer_class
from nadam.rules import RULES, Hyper, Rule, get_rule

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from naive import NaiveOptimizer  # noqa: E402 (the tests' references are the textbook steps)

__all__ = [
    "CASES",
    "Case",
    "floor_kernel",
    "interleave",
    "main",
    "markdown",
    "run",
    "run_case",
]

# ---------------------------------------------------------------------------------
# What is benchmarked
# ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One rule with one set of state-shaping options (``amsgrad``, ``centered``...)."""

    rule: str
    hyper: tuple = ()  # ((name, value), ...): hashable

    @property
    def kw(self) -> dict:
        return dict(self.hyper)

    @property
    def label(self) -> str:
        flags = ",".join(k if v is True else f"{k}={v}" for k, v in self.hyper)
        return f"{self.rule}({flags})" if flags else self.rule

    @property
    def flags(self) -> tuple:
        r = get_rule(self.rule)
        return r.flags({**r.defaults, **r.validate(self.kw)})


def cases() -> tuple[Case, ...]:
    """Every rule of the registry with its defaults, plus the variant of its examples
    with the most state rows where that is more (the heavy variants), with the
    defaults' step size."""
    out = []
    for name, rule in RULES.items():
        out.append(Case(name))
        default_rows = len(rule.slots(rule.flags(rule.defaults)))
        heaviest, rows = None, default_rows
        for example in rule.examples:
            shaping = {k: v for k, v in example.items() if k != "lr"}
            values = {**rule.defaults, **rule.validate(shaping)}
            n = len(rule.slots(rule.flags(values)))
            if n > rows:
                heaviest, rows = shaping, n
        if heaviest:
            out.append(Case(name, tuple(sorted(heaviest.items()))))
    return tuple(out)


#: The cases of :func:`cases` for the rules registered at import.
CASES: tuple[Case, ...] = cases()


# ---------------------------------------------------------------------------------
# The floor: the kernels' own loop template with a trivial element function
# ---------------------------------------------------------------------------------


@numba.njit(forceinline=True, error_model="numpy")
def _touch(p, g, s, h, i, flags):
    # What a pass moves, with one multiply-add each: flags[j] reads state row j,
    # flags[4 + j] writes it back.  h[0] is 0 in the benchmark: nothing changes.
    x = h[0] * g[i]
    y = p[i] + x
    if flags[0]:
        v = s[0, i] + x
        if flags[4]:
            s[0, i] = v
        else:
            y = y + h[0] * v
    if flags[1]:
        v = s[1, i] + x
        if flags[5]:
            s[1, i] = v
        else:
            y = y + h[0] * v
    if flags[2]:
        v = s[2, i] + x
        if flags[6]:
            s[2, i] = v
        else:
            y = y + h[0] * v
    if flags[3]:
        v = s[3, i] + x
        if flags[7]:
            s[3, i] = v
        else:
            y = y + h[0] * v
    return y, x


def floor_update(p, g, s, h, i, flags):
    """A pass that writes p: reads p, g and the flagged state rows, writes those
    flagged so and p, with trivial arithmetic (the kernels' loop writes p)."""
    y, x = _touch(p, g, s, h, i, flags)
    return y


def floor_accumulate(p, g, s, h, i, flags):
    """A first pass (p read, not written): as :func:`floor_update`, with two sums."""
    return _touch(p, g, s, h, i, flags)


def _floor_coefficients(hp, t, aux, h):  # never called: a Rule needs one
    pass


def _floor_finish(hp, t, aux, sums, h):  # never called: a two-pass Rule needs one
    pass


_FLOOR_HASH = hashlib.sha1(inspect.getsource(_touch.py_func).encode()).hexdigest()[:8]
_FLOORS: dict[tuple, Callable] = {}


def floor_kernel(read: int, written: int, writes_p: bool, parallel: bool):
    """The floor of one pass: ``floor(p, g, s, h)`` reading p, g and the first ``read``
    state rows, writing back the first ``written`` of them, and p if ``writes_p``.

    It is built by :func:`nadam.kernels.cpu.kernel` (a pass that writes p) or
    :func:`nadam.kernels.cpu.first_pass` (one that does not: a first pass, with its
    two sums) from the same loop templates, compile options and ``prange`` as the
    real passes: only the element function differs.  Call it with ``h[0] == 0`` to
    leave the arrays unchanged.
    """
    key = (read, written, writes_p, parallel)
    if key not in _FLOORS:
        name = f"floor{read}{written}{int(writes_p)}_{_FLOOR_HASH}"
        flags = tuple(j < read for j in range(4)) + tuple(j < written for j in range(4))
        rule = Rule(
            name,
            name.title(),
            "The memory floor.",
            "",
            floor_update,
            numba.njit(_floor_coefficients),
            1,
            (
                Hyper("lr", 0.0),
                Hyper("weight_decay", 0.0),
                Hyper("maximize", False, "bool"),
                Hyper("decoupled_weight_decay", False, "bool", fixed=True),
            ),
            ("lr", "weight_decay", "maximize"),
            "none",
            tuple(f"f{j}" for j in range(8)),
            slots=lambda flags: tuple(f"r{j}" for j in range(4) if flags[j]),
            accumulate=None if writes_p else floor_accumulate,
            finish=None if writes_p else numba.njit(_floor_finish),
        )
        if writes_p:
            _FLOORS[key] = cpu.kernel(rule, flags, parallel, "full")
        else:
            _FLOORS[key] = cpu.first_pass(rule, flags, parallel, "full")
    return _FLOORS[key]


# ---------------------------------------------------------------------------------
# Textbook NumPy implementations (ALGORITHMS.md, as a user would write them)
# ---------------------------------------------------------------------------------


def numpy_step(name: str, hyper: dict, p: np.ndarray, g: np.ndarray) -> Callable[[], None]:
    """One textbook NumPy step of rule ``name``: the tests' naive reference
    (``tests/naive.py``), new arrays and one pass per operation, as a user would
    write it first."""
    opt = NaiveOptimizer(name, p, **hyper)
    return lambda: opt.step(g)


# ---------------------------------------------------------------------------------
# Peers (optional)
# ---------------------------------------------------------------------------------


def reference_class(rule_name: str):
    """The class of the rule's reference implementation (``torch.optim.Adam``,
    ``prodigyopt.Prodigy``, ...), or None when its package is not installed."""
    module, _, name = get_rule(rule_name).reference.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError:
        return None


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def torch_steps(
    case: Case, p: np.ndarray, g: np.ndarray, variants: tuple = ("loop", "foreach", "fused")
) -> dict[str, Callable[[], None]]:
    """``torch.optim`` for-loop, foreach and (where torch has it) fused steps, sharing one
    copy of ``p`` and ``g``; empty if torch is not installed."""
    torch = _torch()
    if torch is None:
        return {}
    if torch.get_num_threads() != numba.get_num_threads():
        torch.set_num_threads(numba.get_num_threads())
    tp = torch.from_numpy(p.copy())
    tp.grad = torch.from_numpy(g.copy())
    cls = reference_class(case.rule)
    if cls is None:
        return {}
    accepted = inspect.signature(cls).parameters
    hyper = {k: v for k, v in case.kw.items() if k in accepted}
    out = {}
    for label, kw in (
        ("loop", dict(foreach=False)),
        ("foreach", dict(foreach=True)),
        ("fused", dict(fused=True)),
    ):
        if label not in variants:
            continue
        kw = {k: v for k, v in kw.items() if k in accepted}
        if label != "loop" and not kw:
            continue  # the reference has no such path (prodigyopt: one loop)
        try:
            opt = cls([tp], **hyper, **kw)
            if hasattr(opt, "train"):  # schedule-free: steps in train mode
                opt.train()
            opt.step()
        except (RuntimeError, TypeError, ValueError):
            continue  # no fused kernel for this rule on the CPU
        out[f"torch {label}"] = opt.step
    return out


_OPTAX = {
    "sgd": lambda o, kw: o.sgd(1e-3, momentum=kw.get("momentum")),
    "rmsprop": lambda o, kw: o.rmsprop(
        1e-2, decay=0.99, eps=1e-8, centered=kw.get("centered", False), momentum=kw.get("momentum")
    ),
    "adagrad": lambda o, kw: o.adagrad(1e-2),
    "adadelta": lambda o, kw: o.adadelta(1.0),
    "adam": lambda o, kw: o.amsgrad(1e-3) if kw.get("amsgrad") else o.adam(1e-3),
    "adamw": lambda o, kw: o.adamw(1e-3, weight_decay=1e-2),
    "adamax": lambda o, kw: o.adamax(2e-3),
    "nadam": lambda o, kw: o.nadam(2e-3),
    "radam": lambda o, kw: o.radam(1e-3),
}


def optax_step(case: Case, p: np.ndarray, g: np.ndarray) -> dict[str, Callable[[], None]]:
    """``optax`` under ``jax.jit`` with donated parameter and state buffers (same
    algorithm; optax's own conventions, e.g. rmsprop's eps, differ -- speed only)."""
    if os.environ.get("NADAM_BENCH_NO_JAX"):
        return {}
    try:
        import jax
        import optax
    except ImportError:
        return {}
    jax.config.update("jax_enable_x64", True)
    if case.rule not in _OPTAX:
        return {}
    tx = _OPTAX[case.rule](optax, case.kw)

    def update(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    jitted = jax.jit(update, donate_argnums=(0, 1))
    params = jax.numpy.asarray(p.copy())
    grads = jax.numpy.asarray(g.copy())
    box = [params, tx.init(params)]

    def step():
        box[0], box[1] = jitted(box[0], box[1], grads)
        box[0].block_until_ready()

    return {"optax jit": step}


# ---------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------


def others_cpu() -> dict[int, float]:
    """CPU seconds used so far by every other process, by pid (Linux ``/proc``;
    empty elsewhere).  See :func:`others_busy`."""
    me, out = os.getpid(), {}
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    try:
        entries = list(os.scandir("/proc"))
    except OSError:
        return out
    for entry in entries:
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            out[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick  # utime+stime
        except (OSError, IndexError, ValueError):
            continue
    return out


def others_busy(before: dict[int, float], seconds: float) -> float:
    """Share of the machine's cores that other processes kept busy since ``before``
    (:func:`others_cpu`) over ``seconds`` of wall time: 0 on a quiet machine, 0.5
    when one of two cores was taken all along.  nan where ``/proc`` is missing."""
    if not before:
        return math.nan
    after = others_cpu()
    used = sum(t - before.get(pid, 0.0) for pid, t in after.items())
    return max(0.0, used) / max(seconds, 1e-9) / (os.cpu_count() or 1)


def family(name: str) -> str:
    """The threading runtime a candidate runs on (numba, torch, optax or numpy)."""
    head = name.split()[0]
    return "numba" if head in ("nadam", "floor") else head


def interleave(
    cands: dict[str, Callable[[], object]],
    rounds: int = 7,
    sample_s: float = 2e-3,
    settle_s: float = 0.02,
) -> dict[str, np.ndarray]:
    """Per-call times (s) of each candidate, ``rounds`` samples each.

    Each candidate is warmed up and calibrated to ``inner`` calls per sample (at
    least ``sample_s`` seconds), then the candidates are timed round-robin, the
    order rotating every round.  Where two neighbours run on different thread
    pools (numba's, torch's, XLA's), the second waits ``settle_s`` first, so that
    the first one's threads, which spin a few milliseconds after each parallel
    call, do not steal its cores, then runs untimed for 3 ms (its own threads
    awake, the core's clock back up); otherwise a short candidate gets one untimed
    call first.
    """
    inner, short = {}, {}
    for name, f in cands.items():
        f()
        wait()  # a threaded step compiles in the background: time it, not the serial one
        f()
        t0 = time.perf_counter()
        f()
        dt = max(time.perf_counter() - t0, 1e-7)
        inner[name] = max(1, min(100_000, int(sample_s / dt)))
        short[name] = dt < 1e-3
    names = list(cands)
    times: dict[str, list[float]] = {n: [] for n in names}
    perf = time.perf_counter
    last = None
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            f, m = cands[name], inner[name]
            if family(name) != last:
                time.sleep(settle_s)
                last = family(name)
                # Untimed calls for a few ms: wake this runtime's threads and bring
                # the core's clock back up after the pause.
                t_end = perf() + 3e-3
                f()
                while perf() < t_end:
                    f()
            elif short[name]:
                f()
            t0 = perf()
            for _ in range(m):
                f()
            times[name].append((perf() - t0) / m)
    return {n: np.array(v) for n, v in times.items()}


# ---------------------------------------------------------------------------------
# One case
# ---------------------------------------------------------------------------------


@dataclass
class Result:
    case: Case
    dtype: str
    n: int
    bytes_per_element: int
    times: dict[str, np.ndarray] = field(default_factory=dict)
    #: Share of the machine's cores busy with other processes during the run.
    others: float = math.nan

    def best(self, name: str) -> float:
        return float(self.times[name].min())

    def median(self, name: str) -> float:
        return float(np.median(self.times[name]))

    def ratio(self, a: str, b: str) -> float:
        """best(a) / best(b), nan if either is missing."""
        if a not in self.times or b not in self.times:
            return math.nan
        return self.best(a) / self.best(b)

    def paired(self, a: str, b: str) -> float:
        """Median over rounds of time(a) / time(b) within the same round: a burst of
        load slows both of a pair timed back to back, so this is the robust ratio
        on a busy machine; nan if either is missing."""
        if a not in self.times or b not in self.times:
            return math.nan
        return float(np.median(self.times[a] / self.times[b]))

    def gbs(self, name: str) -> float:
        return self.bytes_per_element * self.n / self.best(name) / 1e9


def make_arrays(case: Case, n: int, dtype, seed: int = 0):
    """Parameters, gradient, state and coefficients of a case after a few steps
    (state away from its initial zeros), all of ``dtype``."""
    rng = np.random.default_rng(seed)
    p = rng.standard_normal(n).astype(dtype)
    g = rng.standard_normal(n).astype(dtype)
    s = _kernels.state(case.rule, n, dtype, params=p, **case.kw)
    hp = _kernels.hyperparameters(case.rule, **case.kw)
    aux = _kernels.aux(case.rule, **case.kw)
    h = _kernels.coefficient_buffer(case.rule, dtype)
    step = cpu.stepper(get_rule(case.rule), case.flags, False)
    for t in range(1, 11):
        step(p, g, s, hp, t, aux, h)
    return p, g, s, h, hp, aux


def run_case(
    case: Case,
    dtype,
    n: int,
    rounds: int = 7,
    peers: bool = True,
    numpy_ref: bool = True,
    kernels: bool = True,
    step: bool = True,
    parallel: bool | None = None,
    quick: bool = False,
) -> Result:
    """Time one case: kernels and floors (serial and parallel), the class step,
    the NumPy reference and the installed peers, interleaved."""
    dtype = np.dtype(dtype)
    rule = get_rule(case.rule)
    p, g, s, h, hp, aux = make_arrays(case, n, dtype)
    hz = np.zeros(1, dtype)  # the floor's one coefficient, 0
    # The floor of each pass: the same arrays read and written, trivial arithmetic.
    passes = rule.passes_moved(case.flags)
    threads = numba.get_num_threads() > 1
    kinds = [False, True] if threads else [False]
    if parallel is not None:
        kinds = [parallel]
    # Two groups, each interleaved: the kernels against their floors, and the
    # user-level steps against the peers.  Apart, because the peers' own arrays
    # (copies, state, temporaries) evict ours from the L3 cache: at sizes near
    # its capacity that would slow whichever kernel runs first after a peer.
    group_k: dict[str, Callable] = {}
    if kernels:
        for par in kinds:
            tag = "parallel" if par else "serial"
            floors = [(floor_kernel(r, w, wp, par), s[:r]) for r, w, wp in passes]
            group_k[f"floor {tag}"] = lambda fs=floors: [f(p, g, rows, hz) for f, rows in fs]
            if len(passes) == 1:
                k = cpu.kernel(rule, case.flags, par)
                group_k[f"nadam {tag}"] = lambda k=k: k(p, g, s, h)
            else:  # both passes, and the host arithmetic between them
                st = cpu.stepper(rule, case.flags, par, cpu.shared_mode(hp))
                group_k[f"nadam {tag}"] = lambda st=st: st(p, g, s, hp, 11, aux, h)
    group_p: dict[str, Callable] = {}
    if step:
        cls = optimizer_class(case.rule)
        kw = {k: v for k, v in case.kw.items()}
        x1 = p.copy()
        o1 = cls(x1, **kw)
        o2 = cls(x1, nonfinite="ignore", **kw)
        group_p["nadam step"] = lambda: o1.step(g)
        group_p["nadam step ignore"] = lambda: o2.step(g)
    if numpy_ref:
        x2 = p.copy()
        group_p["numpy"] = numpy_step(case.rule, case.kw, x2, g)
    if peers:
        variants = ("fused",) if quick else ("loop", "foreach", "fused")
        group_p.update(torch_steps(case, p, g, variants))
        if not quick:
            group_p.update(optax_step(case, p, g))
    res = Result(case, dtype.name, n, rule.traffic(case.flags) * dtype.itemsize)
    timing = (1e-3, 5e-3) if quick else ()
    c0, t0 = others_cpu(), time.perf_counter()
    res.times = {}
    for group in (group_k, group_p):
        if group:
            res.times.update(interleave(group, rounds, *timing))
    res.others = others_busy(c0, time.perf_counter() - t0)
    del group_k, group_p
    gc.collect()
    return res


# ---------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------

PEERS = ("numpy", "torch loop", "torch foreach", "torch fused", "optax jit")
# The closest peer again, as paired ratios (robust where the machine's memory
# bandwidth swings between rounds): against nadam's step without and with the
# finiteness check of the gradient.
PAIRED = (("torch fused", "nadam step ignore"), ("torch fused", "nadam step"))


def _fmt(x: float, spec: str = ".2f", suffix: str = "") -> str:
    return "-" if x != x else f"{x:{spec}}{suffix}"


def detail(res: Result, out=sys.stdout) -> None:
    """Every candidate of one case: ns/element (best, median), x floor (ratio of the
    best times, and median of the per-round ratios), x nadam step, GB/s."""
    n = res.n
    busy = ""
    if res.others == res.others:
        busy = f", other processes kept {res.others:.0%} of the cores busy"
    print(
        f"\n{res.case.label}  {res.dtype}  N={n:,}  ({res.bytes_per_element} B/element{busy})",
        file=out,
    )
    print(
        f"  {'candidate':20s} {'ns/el best':>11s} {'median':>9s} {'x floor':>8s} "
        f"{'paired':>7s} {'x nadam':>8s} {'GB/s':>7s}",
        file=out,
    )
    ref = "nadam step ignore" if "nadam step ignore" in res.times else None
    for name in res.times:
        fl = pf = math.nan
        for tag in ("serial", "parallel"):
            if name == f"nadam {tag}":
                fl = res.ratio(name, f"floor {tag}")
                pf = res.paired(name, f"floor {tag}")
        xn = res.ratio(name, ref) if ref else math.nan
        print(
            f"  {name:20s} {res.best(name) / n * 1e9:11.3f} {res.median(name) / n * 1e9:9.3f} "
            f"{_fmt(fl, '.3f'):>8s} {_fmt(pf, '.3f'):>7s} {_fmt(xn, '.2f'):>8s} "
            f"{res.gbs(name):7.1f}",
            file=out,
        )


def summary(results: list[Result], out=sys.stdout) -> None:
    """One line per case: kernels over floors, then each peer's time over nadam's step
    (>1: nadam is faster)."""
    print(
        "\nSummary.  x floor: kernel time / floor time (best of the rounds; 'paired': median of "
        "the per-round ratios).\nPeers: peer's time / nadam's Optimizer.step time "
        "(nonfinite='ignore'), best of the rounds; >1 means nadam is faster.\n"
        "fused/ign, fused/chk: torch fused over nadam's step with nonfinite='ignore' and with "
        "the default check, paired.\n"
        "busy: share of the cores other processes used during the case.",
        file=out,
    )
    head = (
        f"{'case':28s} {'dtype':7s} {'N':>10s} {'ser/floor':>9s} {'par/floor':>9s} "
        f"{'paired':>6s} {'GB/s':>6s} {'busy':>5s}"
    )
    for peer in PEERS:
        head += f" {peer:>13s}"
    head += f" {'fused/ign':>9s} {'fused/chk':>9s}"
    print(head, file=out)
    for r in results:
        best_name = min(
            (k for k in ("nadam serial", "nadam parallel") if k in r.times),
            key=r.best,
            default=None,
        )
        line = (
            f"{r.case.label:28s} {r.dtype:7s} {r.n:10,d} "
            f"{_fmt(r.ratio('nadam serial', 'floor serial'), '.3f'):>9s} "
            f"{_fmt(r.ratio('nadam parallel', 'floor parallel'), '.3f'):>9s} "
            f"{_fmt(r.paired('nadam parallel', 'floor parallel'), '.3f'):>6s} "
            f"{_fmt(r.gbs(best_name) if best_name else math.nan, '.1f'):>6s} "
            f"{_fmt(r.others * 100, '.0f', '%'):>5s}"
        )
        for peer in PEERS:
            line += f" {_fmt(r.ratio(peer, 'nadam step ignore'), '.2f', 'x'):>13s}"
        for a, b in PAIRED:
            line += f" {_fmt(r.paired(a, b), '.2f', 'x'):>9s}"
        print(line, file=out)


def markdown(results: list[Result]) -> str:
    """The summary as a Markdown table (for the docs)."""
    peers = [p for p in PEERS if any(p in r.times for r in results)]
    head = [
        "case",
        "dtype",
        "N",
        "serial / floor",
        "parallel / floor",
        "(paired)",
        "GB/s",
        "busy",
    ] + [f"{p} / nadam" for p in peers]
    paired = PAIRED if "torch fused" in peers else ()
    head += [f"{a} / {b} (paired)" for a, b in paired]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        best_name = min(
            (k for k in ("nadam serial", "nadam parallel") if k in r.times),
            key=r.best,
            default=None,
        )
        row = [
            r.case.label,
            r.dtype,
            f"{r.n:.0e}".replace("e+0", "e"),
            _fmt(r.ratio("nadam serial", "floor serial"), ".2f"),
            _fmt(r.ratio("nadam parallel", "floor parallel"), ".2f"),
            _fmt(r.paired("nadam parallel", "floor parallel"), ".2f"),
            _fmt(r.gbs(best_name) if best_name else math.nan, ".0f"),
            _fmt(r.others * 100, ".0f", "%"),
        ]
        row += [_fmt(r.ratio(p, "nadam step ignore"), ".2f", "x") for p in peers]
        row += [_fmt(r.paired(a, b), ".2f", "x") for a, b in paired]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def machine() -> str:
    """One line: CPU, threads, library versions."""
    cpu_name = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu_name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import llvmlite.binding as ll

    parts = [
        f"{cpu_name} ({ll.get_host_cpu_name()})",
        f"{os.cpu_count()} cpus",
        f"numba {numba.__version__} threads={numba.get_num_threads()}",
        f"numpy {np.__version__}",
    ]
    for dist in ("torch", "jax", "optax"):  # versions without importing them
        try:
            parts.append(f"{dist} {_metadata.version(dist)}")
        except _metadata.PackageNotFoundError:
            pass
    return ", ".join(parts)


# ---------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------


def run(
    quick: bool = False,
    cases=None,
    sizes=None,
    dtypes=None,
    rounds: int | None = None,
    peers: bool = True,
    verbose: bool = True,
) -> list[Result]:
    """Run the benchmark and print the tables; returns the results.

    ``quick``: Adam only, N = 10^3 and 10^6, float32 and float64, five rounds,
    torch's fused step as the only peer (importing torch is most of the run; JAX's
    import and compile would take longer than the whole run): a few seconds.
    """
    if quick:
        cases = cases or (Case("adam"),)
        sizes = sizes or (1_000, 1_000_000)
        rounds = rounds or 5
    cases = cases or CASES
    sizes = sizes or (1_000, 100_000, 10_000_000)
    dtypes = dtypes or ("float64", "float32")
    rounds = rounds or 7
    print(machine())
    results = []
    for case in cases:
        for dtype in dtypes:
            for n in sizes:
                res = run_case(case, dtype, n, rounds=rounds, peers=peers, quick=quick)
                results.append(res)
                if verbose:
                    detail(res)
    summary(results)
    return results


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m nadam bench [--quick] [--rules adam,sgd] [--sizes 1e3,1e7]
    [--dtypes float32] [--rounds 7] [--no-peers] [--brief]``."""
    ap = argparse.ArgumentParser(
        prog="python -m nadam bench",
        description="Time nadam's kernels against a memory floor, NumPy, torch.optim and optax.",
    )
    ap.add_argument("--quick", action="store_true", help="Adam only, two sizes: a few seconds")
    ap.add_argument("--rules", help="comma-separated rule names (default: all, with variants)")
    ap.add_argument("--sizes", help="comma-separated N, e.g. 1e3,1e5,1e7")
    ap.add_argument("--dtypes", help="float32, float64 or both (comma-separated)")
    ap.add_argument("--rounds", type=int, help="timed rounds per candidate (default 7)")
    ap.add_argument("--no-peers", action="store_true", help="skip torch and optax")
    ap.add_argument("--brief", action="store_true", help="summary table only")
    a = ap.parse_args(argv)
    cases = None
    if a.rules:
        names = [r.strip().lower() for r in a.rules.split(",") if r.strip()]
        for nm in names:
            get_rule(nm)
        cases = tuple(c for c in CASES if c.rule in names)
    sizes = tuple(int(float(x)) for x in a.sizes.split(",")) if a.sizes else None
    dtypes = tuple(a.dtypes.split(",")) if a.dtypes else None
    run(a.quick, cases, sizes, dtypes, a.rounds, not a.no_peers, not a.brief)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

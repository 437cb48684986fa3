"""CUDA kernels against the memory floor and against torch's fused CUDA Adam.

Run: ``python benchmarks/gpu.py [--n 100000000] [--dtype float32] [--rules adam,sgd]``

For each rule (default options, and Adam with amsgrad), in one run on one device:

* ``floor``   a kernel that reads and writes exactly the arrays the rule does
  (``p``, ``g`` and the ``k`` state rows: ``(3 + 2k)`` × itemsize bytes per
  element, ALGORITHMS.md) with one addition per element, same grid;
* ``kernel``  the rule's CUDA kernel, launched directly (what ``Optimizer.step``
  ends in);
* the device's copy bandwidth, measured with a device-to-device ``cudaMemcpy``.

It prints time per step, GB/s (bytes the step must move / time) and the ratios
kernel / floor and kernel GB/s / copy GB/s.  Then ``nadam.Adam.step`` end to end
(with and without the non-finite check, which adds one read of ``g`` and a
synchronisation), and torch's ``Adam(fused=True)`` on the same sizes when torch
with CUDA is installed.  Issue 6's goal: Adam at N = 1e8 float32 at >= 85 % of the
copy bandwidth and not slower than torch's fused Adam.

Times are CUDA-event times, the median of ``--repeat`` batches of ``--number``
back-to-back steps.  Report ratios: shared machines are noisy.  Without a GPU the
script exits with a message; ``--smoke`` runs it on the CUDA simulator with a
tiny N to check that it works (its timings mean nothing).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=float, default=1e8, help="elements (default 1e8)")
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    ap.add_argument("--rules", default="all", help="comma-separated rule names, or 'all'")
    ap.add_argument("--repeat", type=int, default=7, help="batches timed (median)")
    ap.add_argument("--number", type=int, default=10, help="steps per batch")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="run on the CUDA simulator with n=100 to check the script",
    )
    args = ap.parse_args()
    if args.smoke:
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
        args.n, args.repeat, args.number = 100, 1, 1
    return args


def load_cuda(smoke: bool):
    """numba.cuda, or exit with a message saying what is missing."""
    from nadam.kernels import cuda as ck

    try:
        cuda = ck.load()
    except ImportError as exc:
        sys.exit(f"benchmarks/gpu.py: {exc}")
    except RuntimeError as exc:
        sys.exit(f"benchmarks/gpu.py needs a CUDA GPU: {exc}")
    if ck.simulated() and not smoke:
        sys.exit(
            "benchmarks/gpu.py: the CUDA simulator is on (NUMBA_ENABLE_CUDASIM=1), whose "
            "timings mean nothing; unset it on a machine with a GPU, or pass --smoke"
        )
    return cuda


def timer(cuda, repeat: int, number: int, sync=None):
    """``measure(fn) -> seconds per call``: CUDA events around ``number`` calls, median
    of ``repeat`` batches, after one untimed call (which compiles)."""

    def measure(fn) -> float:
        fn()
        cuda.synchronize()
        times = []
        for _ in range(repeat):
            start, end = cuda.event(), cuda.event()
            wall = time.perf_counter()
            start.record()
            for _ in range(number):
                fn()
            end.record()
            end.synchronize()
            if sync is not None:
                sync()
            ms = start.elapsed_time(end)
            # The simulator's events record nothing (-1): fall back to the wall clock.
            times.append(ms / 1e3 if ms > 0 else time.perf_counter() - wall)
        return statistics.median(times) / number

    return measure


def _floor_template(p, g, s):
    # The same loads and stores as a rule's kernel (p, g, every state row), one
    # addition per element.  Globals bound by nadam.kernels.cuda._specialise.
    i = _index(cuda.grid(1))  # noqa: F821
    stride = _index(cuda.gridsize(1))  # noqa: F821
    n = _index(p.shape[0])  # noqa: F821
    k = s.shape[0]
    while i < n:
        x = g[i]
        for j in range(k):
            s[j, i] = s[j, i] + x
        p[i] = p[i] + x
        i += stride


def floor_kernel():
    """The floor kernel ``floor[blocks, threads](p, g, s)``."""
    from nadam.kernels import cuda as ck

    return ck._specialise(_floor_template, "floor_cuda", {})


def free(cuda) -> None:
    """Release device arrays that went out of scope now (numba defers frees)."""
    deallocations = getattr(cuda.current_context(), "deallocations", None)
    if deallocations is not None:
        deallocations.clear()


def main() -> None:
    args = parse()
    cuda = load_cuda(args.smoke)

    import nadam
    from nadam import rules
    from nadam.kernels import cuda as ck

    n, dtype = int(args.n), np.dtype(args.dtype)
    size = dtype.itemsize
    measure = timer(cuda, args.repeat, args.number)
    device = cuda.get_current_device()
    name = getattr(device, "name", b"simulator")
    name = name.decode() if isinstance(name, bytes) else name
    sms = getattr(device, "MULTIPROCESSOR_COUNT", 1)
    blocks, threads = ck.launch_config(n)
    print(f"device: {name} ({sms} SMs); N = {n:,} {dtype}; grid {blocks} x {threads}")
    if args.smoke:
        print("(--smoke: CUDA simulator, timings mean nothing)")

    # The device's copy bandwidth: read N elements + write N elements.
    src = cuda.to_device(np.ones(n, dtype))
    dst = cuda.device_array(n, dtype)
    t_copy = measure(lambda a=src, b=dst: b.copy_to_device(a))
    copy_gbs = 2 * n * size / t_copy / 1e9
    print(f"device-to-device copy: {t_copy * 1e3:.3f} ms, {copy_gbs:.0f} GB/s\n")
    del src, dst
    free(cuda)

    # (rule, hyperparameters): each rule with its defaults, and Adam with amsgrad.
    wanted = [(r, {}) for r in rules.RULES.values()]
    wanted.insert(list(rules.RULES).index("adam") + 1, (rules.ADAM, {"amsgrad": True}))
    if args.rules != "all":
        names = {name.strip().lower() for name in args.rules.split(",")}
        wanted = [(r, kw) for r, kw in wanted if r.name in names]

    floor = ck._configured(floor_kernel(), n)
    header = (
        f"{'rule':18s} {'B/elem':>6s} {'floor ms':>9s} {'kernel ms':>9s} {'GB/s':>7s} "
        f"{'kernel/floor':>12s} {'of copy BW':>10s}"
    )
    print(header)
    print("-" * len(header))
    rng = np.random.default_rng(0)
    for rule, kw in wanted:
        values = {**rule.defaults, **kw}
        opts = rule.flags(values)
        k = len(rule.slots(opts))
        p0 = rng.standard_normal(n).astype(dtype)
        s0 = np.abs(rng.standard_normal((k, n))).astype(dtype)  # valid for every rule
        p, s = cuda.to_device(p0), cuda.to_device(s0)
        g = cuda.to_device(rng.standard_normal(n).astype(dtype))
        hp = np.zeros(rule.n_hyper)
        rule.pack(values, hp)
        h = np.zeros(rule.n_coefficients, dtype)
        rule.coefficients(hp, 1, rule.initial_aux(rule.defaults), h)
        coefficients = tuple(h)
        launch = ck._configured(ck.kernel(rule, opts), n)
        t_floor = measure(lambda p=p, g=g, s=s: floor(p, g, s))
        p.copy_to_device(p0)  # the floor wrote nonsense (s += g): start the rule afresh
        s.copy_to_device(s0)
        t_kernel = measure(lambda p=p, g=g, s=s, c=coefficients, f=launch: f(p, g, s, c))
        moved = (3 + 2 * k) * size
        gbs = moved * n / t_kernel / 1e9
        label = rule.name + "".join(f"+{o}" for o in kw)
        print(
            f"{label:18s} {moved:6d} {t_floor * 1e3:9.3f} {t_kernel * 1e3:9.3f} {gbs:7.0f} "
            f"{t_kernel / t_floor:12.2f} {gbs / copy_gbs:10.1%}"
        )
        del p, g, s, p0, s0
        free(cuda)

    # Adam end to end through the optimizer class, and torch's fused Adam.
    print()
    x = cuda.to_device(rng.standard_normal(n).astype(dtype))
    g = cuda.to_device(rng.standard_normal(n).astype(dtype))
    adam_bytes = 7 * size * n
    results = {}
    for nonfinite in ("ignore", "raise"):
        opt = nadam.Adam(x, lr=1e-3, nonfinite=nonfinite)
        results[f"nadam.Adam.step (nonfinite={nonfinite!r})"] = measure(
            lambda o=opt, g=g: o.step(g)
        )
    del x, g, opt
    free(cuda)

    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and torch.cuda.is_available() and not args.smoke:
        tdtype = getattr(torch, args.dtype)
        tp = torch.randn(n, device="cuda", dtype=tdtype, requires_grad=True)
        tp.grad = torch.randn(n, device="cuda", dtype=tdtype)
        topt = torch.optim.Adam([tp], lr=1e-3, fused=True)
        results["torch.optim.Adam(fused=True).step"] = measure(topt.step)
        del tp, topt
        torch.cuda.empty_cache()
    elif not args.smoke:
        print("(torch with CUDA not installed: no comparison with torch's fused Adam)")

    base = results["nadam.Adam.step (nonfinite='ignore')"]
    for label, t in results.items():
        print(
            f"{label:42s} {t * 1e3:9.3f} ms {adam_bytes / t / 1e9:7.0f} GB/s {t / base:6.2f}x nadam"
        )


if __name__ == "__main__":
    main()

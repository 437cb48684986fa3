"""Bad input to every public entry point fails at once, clearly, and changes nothing.

One table: each row calls an entry point (optimizer classes and their methods,
``nadam.minimize`` and ``Minimizer``, ``nadam.methods.*``, ``nadam.schedules.*``,
the ``nadam.kernels`` helpers) with one bad argument, and states the exception
type and a pattern that the message must contain: the argument's name, and its
value where there is one to show.  Every row runs against fresh objects (an
optimizer that has taken a step, its parameters, x0, data, a schedule, a
checkpoint file), and the test checks that none of them changed: no
half-applied update.

The raw kernels (``nadam.kernels.adam(p, g, s, h)`` ...) are not in the table:
they are compiled loops for the caller's own ``@njit`` code and check only the
lengths of their arrays (``tests/test_kernels_api.py``); their helpers are.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import scipy.optimize as so
import scipy.sparse

import nadam
from nadam import Minimizer, kernels, methods, schedules


def quad(x):
    return float(x @ x), 2.0 * x


def zero_loss(x, *args):
    return 0.0, np.zeros_like(x)


def _readonly(n: int) -> np.ndarray:
    a = np.zeros(n)
    a.flags.writeable = False
    return a


def _minimize(e, **kw):
    call = {"fun": quad, "x0": e.x0, "jac": True, **kw}
    return nadam.minimize(**call)


def _options(e, **options):
    return _minimize(e, options=options)


def _with(state_dict, key, **changes):
    return {**state_dict, key: {**state_dict[key], **changes}}


def _fifo(path):
    os.mkfifo(path)
    return path


def _batch(e, args, **options):
    return nadam.minimize(zero_loss, e.x0, args=args, jac=True, options=options)


def _set(obj, name, value):
    setattr(obj, name, value)


def _seeded(e, seed, batch_size=None, checkpoint=False):
    # Issue 15 item 6: the option seed alone, with batch_size, with a checkpoint, with both.
    options = {"maxiter": 2, "seed": seed}
    if batch_size is not None:
        options["batch_size"] = batch_size
    if checkpoint:
        options["checkpoint"] = e.tmp / "seed.npz"  # not e.ckpt: a fresh file
    return nadam.minimize(zero_loss, e.x0, args=(e.A,), jac=True, options=options)


def _seed_rows() -> list[tuple[str, Any, type, str]]:
    """Issue 15 item 6: one validation of seed, whatever else is set, naming the option."""
    rows = []
    # bool is refused as for every int option (TypeError); -1 is out of range (ValueError).
    values = [(True, TypeError), ("abc", TypeError), (1.5, TypeError), (-1, ValueError)]
    where = {
        "": {},
        " checkpoint": {"checkpoint": True},
        " batch_size": {"batch_size": 2},
        " batch_size checkpoint": {"batch_size": 2, "checkpoint": True},
    }
    for label, kw in where.items():
        for value, exc in values:
            if kw.get("batch_size") and value is not True:
                continue  # already refused naming seed (Minibatches): not a defect
            rows.append(
                (
                    f"issue 15 item 6: seed {value!r}{label}",
                    lambda e, value=value, kw=kw: _seeded(e, value, **kw),
                    exc,
                    rf"\bseed\b.*{re.escape(repr(value))}",
                )
            )
    return rows


def _bad_at_third_call(kind: str):
    """Issue 15 item 8: a fun right at its first two calls, wrong at its third (the
    evaluation of iteration 2): a list gradient, a wrong shape, a wrong dtype, or a
    non-scalar f."""
    calls = []

    def fun(x):
        calls.append(None)
        f, g = float(x @ x), 2.0 * x
        if len(calls) == 3:
            if kind == "list":
                g = g.tolist()
            elif kind == "shape":
                g = g[:3].copy()
            elif kind == "dtype":
                g = g.astype(np.float32)
            else:
                f = np.ones(2)
        return f, g

    return fun


# The message names fun and the iteration (2: the third evaluation), or the step (3).
_AT_ITERATION_2 = r"(?s)^(?=.*\bfun\b)(?=.*\b(iteration 2|step 3)\b)"


# (id, action(env), exception type, regex the message must contain)
ROWS: list[tuple[str, Any, type, str]] = [
    # -- optimizer classes: hyperparameters ------------------------------------------
    ("Adam lr<0", lambda e: nadam.Adam(e.x, lr=-1.0), ValueError, r"Invalid lr: -1\.0"),
    ("Adam lr nan", lambda e: nadam.Adam(e.x, lr=np.nan), ValueError, r"Invalid lr: nan"),
    (
        "Adam lr str",
        lambda e: nadam.Adam(e.x, lr="0.1"),
        TypeError,
        r"Invalid lr: '0.1' \(str\); allowed: a finite real",
    ),
    ("Adam beta2=1", lambda e: nadam.Adam(e.x, betas=(0.9, 1.0)), ValueError, r"betas\[1\]: 1.0"),
    (
        "Adam betas",
        lambda e: nadam.Adam(e.x, betas=0.9),
        TypeError,
        r"Invalid betas: 0.9 \(float\); allowed: a pair",
    ),
    ("Adam eps<0", lambda e: nadam.Adam(e.x, eps=-1e-8), ValueError, r"Invalid eps: -1e-08"),
    (
        "Adam amsgrad",
        lambda e: nadam.Adam(e.x, amsgrad="yes"),
        TypeError,
        r"Invalid amsgrad: 'yes'",
    ),
    ("Adam unknown", lambda e: nadam.Adam(e.x, momentum=0.9), TypeError, r"'momentum'"),
    (
        "Adam nonfinite",
        lambda e: nadam.Adam(e.x, nonfinite="warn"),
        ValueError,
        r"Invalid nonfinite: 'warn'; allowed: one of",
    ),
    (
        "AdamW weight_decay inf",
        lambda e: nadam.AdamW(e.x, weight_decay=np.inf),
        ValueError,
        r"Invalid weight_decay: inf",
    ),
    (
        "SGD nesterov",
        lambda e: nadam.SGD(e.x, nesterov=True),
        ValueError,
        r"nesterov=True requires momentum > 0.*momentum=0.0",
    ),
    ("SGD momentum", lambda e: nadam.SGD(e.x, momentum=-0.1), ValueError, r"momentum: -0.1"),
    ("SGD dampening", lambda e: nadam.SGD(e.x, dampening=1.5), ValueError, r"dampening: 1.5"),
    ("RMSprop alpha", lambda e: nadam.RMSprop(e.x, alpha=1.5), ValueError, r"alpha: 1.5"),
    (
        "RMSprop centered",
        lambda e: nadam.RMSprop(e.x, centered=1.5),
        TypeError,
        r"Invalid centered: 1.5 \(float\); allowed: True or False",
    ),
    ("Adagrad lr_decay", lambda e: nadam.Adagrad(e.x, lr_decay=-1.0), ValueError, r"lr_decay: -1"),
    (
        "Adagrad initial_accumulator_value",
        lambda e: nadam.Adagrad(e.x, initial_accumulator_value=-1.0),
        ValueError,
        r"initial_accumulator_value: -1",
    ),
    ("Adadelta rho", lambda e: nadam.Adadelta(e.x, rho=1.5), ValueError, r"Invalid rho: 1.5"),
    ("Adamax eps str", lambda e: nadam.Adamax(e.x, eps="x"), TypeError, r"Invalid eps: 'x'"),
    (
        "NAdam momentum_decay",
        lambda e: nadam.NAdam(e.x, momentum_decay=-1.0),
        ValueError,
        r"Invalid momentum_decay: -1",
    ),
    ("RAdam beta1<0", lambda e: nadam.RAdam(e.x, betas=(-0.1, 0.9)), ValueError, r"betas\[0\]"),
    # -- optimizer classes: params ---------------------------------------------------
    (
        "params list",
        lambda e: nadam.Adam([0.0, 1.0]),
        TypeError,
        r"Invalid params: .*\(list\); allowed: a NumPy array",
    ),
    ("params int", lambda e: nadam.Adam(np.zeros(3, int)), TypeError, r"params .*got int64"),
    (
        "params float16",
        lambda e: nadam.SGD(np.zeros(3, np.float16)),
        TypeError,
        r"params must have dtype float32 or float64, got float16",
    ),
    (
        "params non-contiguous",
        lambda e: nadam.Adam(np.zeros(6)[::2]),
        TypeError,
        r"params must be C-contiguous",
    ),
    ("params read-only", lambda e: nadam.Adam(_readonly(3)), TypeError, r"params must be writable"),
    # -- optimizer classes: step, attributes, state_dict -----------------------------
    (
        "grad shape",
        lambda e: e.opt.step(np.ones(5)),
        ValueError,
        r"grad has shape \(5,\), but the parameters have shape \(6,\)",
    ),
    (
        "grad dtype",
        lambda e: e.opt.step(np.ones(6, np.float32)),
        TypeError,
        r"grad has dtype float32, but the parameters have dtype float64",
    ),
    ("grad list", lambda e: e.opt.step([1.0] * 6), TypeError, r"grad must be a NumPy array.*list"),
    (
        "grad non-finite",
        lambda e: e.opt.step(np.array([1.0, np.nan, 1.0, 1.0, np.inf, 1.0])),
        nadam.NonFiniteGradientError,
        r"gradient holds NaN or inf at step 2; parameters and state were left unchanged",
    ),
    (
        "lr schedule < 0",
        lambda e: nadam.Adam(e.x, lr=lambda t: -1.0).step(np.ones(6)),
        ValueError,
        r"lr schedule returned -1.0 at step 1",
    ),
    ("set lr<0", lambda e: _set(e.opt, "lr", -1.0), ValueError, r"Invalid lr: -1.0"),
    ("set betas", lambda e: _set(e.opt, "betas", (1.5, 0.9)), ValueError, r"betas\[0\]: 1.5"),
    (
        # Taken, and the first step raised a TypeError from inside the optimizer.
        "set lr to a schedule that takes no step",
        lambda e: _set(e.opt, "lr", lambda: 0.1),
        TypeError,
        r"Invalid lr: <function .*; allowed: a number, or a schedule called as lr\(t\)",
    ),
    (
        "set amsgrad",
        lambda e: _set(e.opt, "amsgrad", True),
        ValueError,
        r"changing amsgrad to True would change the state layout",
    ),
    (
        "load_state_dict of SGD",
        lambda e: e.opt.load_state_dict(nadam.SGD(np.zeros(6)).state_dict()),
        ValueError,
        r"state_dict is for rule='sgd'",
    ),
    (
        "load_state_dict of other size",
        lambda e: e.opt.load_state_dict(nadam.Adam(np.zeros(5)).state_dict()),
        ValueError,
        r"size=5.*size=6",
    ),
    (
        # Named the same state slots twice, as if they differed.
        "load_state_dict of amsgrad",
        lambda e: e.opt.load_state_dict(_with(e.opt.state_dict(), "hyper", amsgrad=True)),
        ValueError,
        r"state_dict\['hyper'\] gives \(amsgrad\) = \(True,\), but this optimizer has "
        r"\(False,\): construct it with the same amsgrad",
    ),
    (
        # Taken, and the next step raised OverflowError.
        "load_state_dict t past int64",
        lambda e: e.opt.load_state_dict({**e.opt.state_dict(), "t": 2**63}),
        ValueError,
        r"Invalid state_dict\['t'\]: 9223372036854775808; allowed: an int >= 0 and <= 92",
    ),
    (
        "load_state_dict junk",
        lambda e: e.opt.load_state_dict({"t": 3}),
        ValueError,
        r"state_dict is not an optimizer state_dict: missing 'rule'",
    ),
    # -- minimize: x0, method, fun, jac, tol, callback -------------------------------
    (
        "x0 nan",
        lambda e: _minimize(e, x0=[1.0, np.nan]),
        ValueError,
        r"x0 must be finite; x0\[1\] = nan",
    ),
    ("x0 inf", lambda e: _minimize(e, x0=[np.inf]), ValueError, r"x0 must be finite.* = inf"),
    ("x0 str", lambda e: _minimize(e, x0=["a"]), TypeError, r"x0 must hold real numbers.*<U1"),
    ("x0 complex", lambda e: _minimize(e, x0=[1j]), TypeError, r"x0 .*complex128"),
    ("x0 object", lambda e: _minimize(e, x0=[None]), TypeError, r"x0 .*object"),
    ("x0 empty", lambda e: _minimize(e, x0=[]), ValueError, r"x0 must have at least one element"),
    (
        "method unknown",
        lambda e: _minimize(e, method="adamm"),
        ValueError,
        r"Invalid method: 'adamm'; allowed: one of adadelta, adagrad, adam",
    ),
    (
        "method int",
        lambda e: _minimize(e, method=3),
        TypeError,
        r"Invalid method: 3 \(int\); allowed: a str",
    ),
    (
        "fun",
        lambda e: _minimize(e, fun=3),
        TypeError,
        r"Invalid fun: 3 \(int\); allowed: a callable",
    ),
    ("jac", lambda e: _minimize(e, jac="4-point"), ValueError, r"Invalid jac: '4-point'"),
    (
        "tol<0",
        lambda e: _minimize(e, tol=-1.0),
        ValueError,
        r"Invalid tol: -1.0; allowed: a finite real number >= 0",
    ),
    ("callback", lambda e: _minimize(e, callback=3), TypeError, r"Invalid callback: 3"),
    (
        "options list",
        lambda e: _minimize(e, options=[]),
        TypeError,
        r"Invalid options: \[\] \(list\); allowed: a dict",
    ),
    # -- minimize: loop options --------------------------------------------------------
    (
        "maxiter<0",
        lambda e: _options(e, maxiter=-1),
        ValueError,
        r"Invalid option maxiter: -1; allowed: an int >= 0",
    ),
    (
        "maxiter float",
        lambda e: _options(e, maxiter=1.5),
        TypeError,
        r"Invalid option maxiter: 1.5",
    ),
    ("gtol<0", lambda e: _options(e, gtol=-1.0), ValueError, r"Invalid option gtol: -1.0"),
    ("patience 0", lambda e: _options(e, patience=0), ValueError, r"Invalid option patience: 0"),
    ("smoothing 1", lambda e: _options(e, smoothing=1.0), ValueError, r"option smoothing.*< 1"),
    (
        "min_delta str",
        lambda e: _options(e, min_delta="x"),
        TypeError,
        r"Invalid option min_delta: 'x'",
    ),
    (
        "return_best",
        lambda e: _options(e, return_best="no"),
        TypeError,
        r"Invalid option return_best: 'no'",
    ),
    ("disp", lambda e: _options(e, disp=2), TypeError, r"Invalid option disp: 2"),
    (
        "seed<0",
        lambda e: _batch(e, (e.A,), batch_size=2, seed=-1),
        ValueError,
        r"Invalid option seed: -1",
    ),
    *_seed_rows(),
    (
        "finite_diff_rel_step 0",
        lambda e: _options(e, finite_diff_rel_step=0),
        ValueError,
        r"Invalid option finite_diff_rel_step: 0; allowed: a finite real number > 0",
    ),
    ("lr<0 option", lambda e: _options(e, lr=-1.0), ValueError, r"Invalid lr: -1.0"),
    # -- minimize: data, minibatches, bounds -------------------------------------------
    (
        "batch_size 0",
        lambda e: _batch(e, (e.A, e.b), batch_size=0),
        ValueError,
        r"Invalid option batch_size: 0",
    ),
    (
        "batch_size > rows",
        lambda e: _batch(e, (e.A, e.b), batch_size=11),
        ValueError,
        r"Invalid batch_size: 11",
    ),
    (
        "batch_size float",
        lambda e: _batch(e, (e.A, e.b), batch_size=2.0),
        TypeError,
        r"Invalid option batch_size: 2.0 \(float\)",
    ),
    (
        "args list with the sampled rows",
        lambda e: _batch(e, (e.A, list(e.b)), batch_size=2),
        TypeError,
        r"args\[1\] \(a list\) has 10 rows, as many as the arrays that batch_size samples "
        r"\(args\[0\]\), but only NumPy arrays are sampled",
    ),
    (
        "args sparse with the sampled rows",
        lambda e: _batch(e, (scipy.sparse.csr_matrix(e.A), e.b), batch_size=2),
        TypeError,
        r"args\[0\] \(a csr_matrix\) has 10 rows.*\(args\[1\]\).*toarray",
    ),
    (
        "args unequal lengths",
        lambda e: _batch(e, (e.A, e.b[:9]), batch_size=2),
        ValueError,
        r"args.*same length.*args\[0\]: 10, args\[1\]: 9",
    ),
    (
        "args without arrays",
        lambda e: _batch(e, (3.0,), batch_size=2),
        ValueError,
        r"batch_size needs at least one NumPy array in args",
    ),
    (
        "arrays inside a dict in args",
        lambda e: _batch(e, ({"X": e.A, "y": e.b},), batch_size=2),
        ValueError,
        r"got args of types \['dict'\]: pass the arrays to sample as arguments of their own",
    ),
    (
        "args stream + batch_size",
        lambda e: _batch(e, iter([(e.A,)]), batch_size=2),
        ValueError,
        r"option batch_size cannot be combined with streamed args",
    ),
    (
        "bounds length",
        lambda e: _minimize(e, bounds=[(0, 1)] * 3),
        ValueError,
        r"bounds has 3 \(low, high\) pairs but x0 has 4 elements",
    ),
    (
        "bounds low > high",
        lambda e: _minimize(e, bounds=[(0, 1), (2.0, 1.0), (0, 1), (0, 1)]),
        ValueError,
        r"bounds\[1\] has low > high \(2.0 > 1.0\)",
    ),
    (
        "bounds pair",
        lambda e: _minimize(e, bounds=[(0, 1), 5, (0, 1), (0, 1)]),
        ValueError,
        r"Invalid bounds\[1\]: 5; allowed: a \(low, high\) pair",
    ),
    (
        "Bounds lb size",
        lambda e: _minimize(e, bounds=so.Bounds(np.zeros(3), np.ones(3))),
        ValueError,
        r"bounds.lb has 3 elements but x0 has 4",
    ),
    ("bounds nan", lambda e: _minimize(e, bounds=[(0, np.nan)] * 4), ValueError, r"bounds .*NaN"),
    ("bounds type", lambda e: _minimize(e, bounds=3), TypeError, r"Invalid bounds: 3"),
    # -- minimize: what the objective returns --------------------------------------
    (
        "gradient shape",
        lambda e: _minimize(e, fun=lambda x: (1.0, np.zeros(3))),
        ValueError,
        r"gradient from fun \(with jac=True\) has shape \(3,\) at iteration 0, but x0 has "
        r"shape \(4,\)",
    ),
    (
        "gradient dtype",
        lambda e: _minimize(e, fun=lambda x: 1.0, jac=lambda x: np.zeros(4, np.float32)),
        TypeError,
        r"gradient from jac has dtype float32 at iteration 0, but x has dtype float64",
    ),
    (
        "gradient list",
        lambda e: _minimize(e, fun=lambda x: (1.0, [0.0] * 4)),
        TypeError,
        r"gradient from fun \(with jac=True\) must be a NumPy array.* got list",
    ),
    (
        "objective shape",
        lambda e: _minimize(e, fun=lambda x: (np.ones(2), x)),
        ValueError,
        r"fun must return a scalar objective value, got shape \(2,\)",
    ),
    (
        "objective str",
        lambda e: _minimize(e, fun=lambda x: ("a", x)),
        TypeError,
        r"fun must return a real scalar, got 'a'",
    ),
    (
        "scalar instead of (f, g)",
        lambda e: _minimize(e, fun=lambda x: 1.0),
        TypeError,
        r"fun must return \(f, g\) when jac=True; got float 1.0",
    ),
    # The usual slip: fun returns (f, g) and jac=True is left out.  Finite differences
    # check the loss before differencing it (it used to fail subtracting two tuples).
    (
        "(f, g) without jac=True",
        lambda e: _minimize(e, fun=quad, jac=None),
        TypeError,
        r"fun returned a tuple of 2 where the loss alone was expected: .*pass jac=True if "
        r"fun returns \(f, g\)",
    ),
    (
        "(f, g) with a callable jac",
        lambda e: _minimize(e, fun=quad, jac=lambda x: 2 * x),
        TypeError,
        r"fun returned a tuple of 2 at iteration 0 where the loss alone was expected",
    ),
    (
        "finite differences of a vector",
        lambda e: _minimize(e, fun=lambda x: x * x, jac="3-point"),
        ValueError,
        r"fun must return a scalar objective value, got shape \(4,\)",
    ),
    (
        "a column x0 broadcasts the loss",
        lambda e: nadam.minimize(
            lambda w: (np.sum((np.ones((5, 1)) @ w.T) ** 2, axis=0), w), np.zeros((3, 1)), jac=True
        ),
        ValueError,
        r"got shape \(3,\) at iteration 0; x has x0's shape \(3, 1\): pass x0.ravel\(\)",
    ),
    (
        "finite differences of None",
        lambda e: _minimize(e, fun=lambda x: None, jac="cs"),
        TypeError,
        r"fun must return a real scalar, got None of type NoneType",
    ),
    # Issue 15 item 8: the same checks after the first evaluation, naming fun and the
    # iteration, instead of numba's TypingError or the optimizer's message about `grad`.
    (
        "issue 15 item 8: gradient list at iteration 2",
        lambda e: _minimize(e, fun=_bad_at_third_call("list")),
        TypeError,
        _AT_ITERATION_2,
    ),
    (
        "issue 15 item 8: gradient shape at iteration 2",
        lambda e: _minimize(e, fun=_bad_at_third_call("shape")),
        ValueError,
        _AT_ITERATION_2,
    ),
    (
        "issue 15 item 8: gradient dtype at iteration 2",
        lambda e: _minimize(e, fun=_bad_at_third_call("dtype")),
        TypeError,
        _AT_ITERATION_2,
    ),
    (
        "issue 15 item 8: objective shape at iteration 2",
        lambda e: _minimize(e, fun=_bad_at_third_call("f")),
        ValueError,
        _AT_ITERATION_2,
    ),
    (
        "Minimizer.run max_steps",
        lambda e: Minimizer(quad, e.x0, jac=True).run(0),
        ValueError,
        r"Invalid max_steps: 0",
    ),
    (
        # Ran to the end, then failed to switch to the average it returns.
        "minimize schedule-free without an average",
        lambda e: _minimize(e, method="adamw_schedulefree", options={"betas": (0.0, 0.9)}),
        ValueError,
        r"AdamWScheduleFree's evaluation point \(eval\(\), and what minimize returns\) "
        r"needs betas\[0\] > 0, got 0.0",
    ),
    # -- minimize: checkpoint options -------------------------------------------------
    (
        "checkpoint type",
        lambda e: _options(e, checkpoint=3),
        TypeError,
        r"Invalid option checkpoint: 3 \(int\); allowed: a file path \(str or os.PathLike\) "
        r"or None",
    ),
    (
        "checkpoint directory missing",
        lambda e: _options(e, checkpoint=e.tmp / "nope" / "c.npz"),
        ValueError,
        r"option checkpoint: the directory '.*nope' of '.*c.npz' does not exist",
    ),
    (
        # The first write would have replaced the FIFO (or a device: /dev/null) by a file.
        "checkpoint is a FIFO",
        lambda e: _options(e, checkpoint=_fifo(e.tmp / "pipe")),
        ValueError,
        r"option checkpoint: '.*pipe' exists and is not a regular file \(a device, FIFO",
    ),
    (
        # os.access passed it; only the first write, at the end of the run, failed.
        "checkpoint name too long",
        lambda e: _options(e, checkpoint=e.tmp / ("c" * 300 + ".npz")),
        ValueError,
        r"option checkpoint: cannot write a file next to '.*ccc.npz' in '.*' \(\[Errno 36\]",
    ),
    (
        "checkpoint is a directory",
        lambda e: _options(e, checkpoint=e.tmp),
        ValueError,
        r"option checkpoint must be a file path, got the directory '",
    ),
    (
        "checkpoint ''",
        lambda e: _options(e, checkpoint=""),
        ValueError,
        r"Invalid option checkpoint: ''",
    ),
    (
        "checkpoint_every 0",
        lambda e: _options(e, checkpoint=e.ckpt, checkpoint_every=0),
        ValueError,
        r"Invalid option checkpoint_every: 0",
    ),
    (
        "checkpoint_every float",
        lambda e: _options(e, checkpoint=e.ckpt, checkpoint_every=2.5),
        TypeError,
        r"Invalid option checkpoint_every: 2.5",
    ),
    (
        "checkpoint_every without checkpoint",
        lambda e: _options(e, checkpoint_every=10),
        ValueError,
        r"option checkpoint_every needs option checkpoint",
    ),
    (
        "resume str",
        lambda e: _options(e, checkpoint=e.ckpt, resume="yes"),
        TypeError,
        r"Invalid option resume: 'yes'",
    ),
    (
        "resume without checkpoint",
        lambda e: _options(e, resume=True),
        ValueError,
        r"option resume needs option checkpoint",
    ),
    (
        "checkpoint with a stream",
        lambda e: _minimize(e, args=iter([()]), options={"checkpoint": e.ckpt}),
        ValueError,
        r"option checkpoint cannot be combined with streamed args",
    ),
    (
        "checkpoint of another method",
        lambda e: _minimize(e, method="sgd", options={"checkpoint": e.ckpt, "resume": True}),
        ValueError,
        r"checkpoint '.*c.npz' belongs to another run: method is 'adam_distance' in the "
        r"checkpoint but 'sgd' here",
    ),
    # -- nadam.methods ----------------------------------------------------------------
    (
        "methods lr via scipy",
        lambda e: so.minimize(quad, e.x0, jac=True, method=methods.adam, options={"lr": -1.0}),
        ValueError,
        r"Invalid lr: -1.0",
    ),
    (
        "methods maxiter",
        lambda e: methods.rmsprop(quad, e.x0, jac=True, maxiter=-1),
        ValueError,
        r"Invalid option maxiter: -1; allowed: an int >= 0",
    ),
    (
        "methods constraints",
        lambda e: so.minimize(
            quad, e.x0, jac=True, method=methods.sgd, constraints=[{"type": "eq", "fun": sum}]
        ),
        ValueError,
        r"constraints are not supported by nadam.methods.sgd",
    ),
    (
        "methods x0",
        lambda e: methods.nadam(quad, [np.nan], jac=True),
        ValueError,
        r"x0 must be finite",
    ),
    # -- nadam.schedules --------------------------------------------------------------
    ("constant str", lambda e: schedules.constant("x"), TypeError, r"Invalid lr: 'x' \(str\)"),
    ("step step_size", lambda e: schedules.step(1.0, 0), ValueError, r"Invalid step_size: 0"),
    ("step gamma", lambda e: schedules.step(1.0, 10, gamma=1.5), ValueError, r"gamma: 1.5"),
    ("exponential", lambda e: schedules.exponential(1.0, -0.5), ValueError, r"gamma: -0.5"),
    ("cosine lr", lambda e: schedules.cosine(-1.0, 10), ValueError, r"Invalid lr: -1.0"),
    ("cosine total", lambda e: schedules.cosine(1.0, 0), ValueError, r"total_steps: 0"),
    ("cosine warmup", lambda e: schedules.cosine(1.0, 10, 11), ValueError, r"warmup_steps: 11"),
    ("cosine min_lr", lambda e: schedules.cosine(1.0, 10, min_lr=2.0), ValueError, r"min_lr: 2"),
    ("inverse_sqrt", lambda e: schedules.inverse_sqrt(1.0, -1), ValueError, r"warmup_steps: -1"),
    (
        "plateau factor",
        lambda e: schedules.reduce_on_plateau(1.0, factor=1.0),
        ValueError,
        r"Invalid factor: 1.0",
    ),
    (
        "plateau patience",
        lambda e: schedules.reduce_on_plateau(1.0, patience=1.5),
        TypeError,
        r"Invalid patience: 1.5 \(float\); allowed: an int",
    ),
    (
        "schedule load_state_dict",
        lambda e: e.sched.load_state_dict(schedules.cosine(1.0, 10).state_dict()),
        ValueError,
        r"schedule state is for kind",
    ),
    # -- nadam.kernels helpers --------------------------------------------------------
    ("kernels.get", lambda e: kernels.get("bogus"), ValueError, r"Invalid method: 'bogus'"),
    ("kernels.get option", lambda e: kernels.get("adam", amsgrad="y"), TypeError, r"amsgrad.*'y'"),
    (
        # "no" was taken as true: the threaded kernel.
        "kernels.get parallel",
        lambda e: kernels.get("adam", parallel="no"),
        TypeError,
        r"Invalid parallel: 'no' \(str\); allowed: True or False",
    ),
    (
        "optimizer_class None",
        lambda e: nadam.optimizer_class(None),
        TypeError,
        r"Invalid rule: None \(NoneType\); allowed: a str",
    ),
    (
        "optimizer_class name",
        lambda e: nadam.optimizer_class("adamm"),
        ValueError,
        r"Invalid rule: 'adamm'; allowed: one of adadelta, adagrad, adam",
    ),
    (
        "kernels.hyperparameters",
        lambda e: kernels.hyperparameters("adam", lr=-1.0),
        ValueError,
        r"Invalid lr: -1.0",
    ),
    (
        "kernels.hyperparameters name",
        lambda e: kernels.hyperparameters("adam", foo=1.0),
        TypeError,
        r"Invalid hyperparameter of adam: 'foo'",
    ),
    (
        "kernels.hyperparameters schedule",
        lambda e: kernels.hyperparameters("adam", lr=schedules.constant(0.1)),
        TypeError,
        r"Invalid lr: .*kernels take one",
    ),
    ("kernels.slots", lambda e: kernels.slots("sgd", momentum=-1.0), ValueError, r"momentum: -1"),
    ("kernels.state n<0", lambda e: kernels.state("adam", -1), ValueError, r"Invalid n: -1"),
    ("kernels.state n", lambda e: kernels.state("adam", 2.5), TypeError, r"Invalid n: 2.5"),
    (
        "kernels.state dtype",
        lambda e: kernels.state("adam", 3, np.int64),
        TypeError,
        r"Invalid dtype: int64",
    ),
    (
        "kernels.coefficient_buffer",
        lambda e: kernels.coefficient_buffer("adam", np.int32),
        TypeError,
        r"Invalid dtype: int32",
    ),
    (
        "kernels.aux",
        lambda e: kernels.aux(3),
        TypeError,
        r"Invalid method: 3 \(int\); allowed: a str",
    ),
]


@pytest.fixture
def env(tmp_path: Path) -> SimpleNamespace:
    """Fresh objects for one row; the test checks that the row changed none of them."""
    x = np.linspace(-1.0, 1.0, 6)
    opt = nadam.Adam(x, lr=0.1)
    opt.step(np.ones(6))  # a state that is not the initial one
    e = SimpleNamespace(
        x=x,
        opt=opt,
        x0=np.array([0.5, -0.5, 1.5, 2.0]),
        A=np.arange(20.0).reshape(10, 2),
        b=np.arange(10.0),
        sched=schedules.reduce_on_plateau(0.1, patience=1),
        tmp=tmp_path,
        ckpt=tmp_path / "c.npz",
    )
    for loss in (3.0, 3.0, 3.0):
        e.sched.observe(loss)
    _minimize(e, options={"maxiter": 3, "checkpoint": e.ckpt})  # a checkpoint of an adam run
    return e


def _snapshot(e: SimpleNamespace) -> dict:
    sd = e.opt.state_dict()
    return {
        "x": e.x.copy(),
        "opt": (sd["t"], sd["aux"], dict(sd["hyper"]), {k: v for k, v in sd["state"].items()}),
        "x0": e.x0.copy(),
        "A": e.A.copy(),
        "b": e.b.copy(),
        "sched": e.sched.state_dict(),
        "ckpt": e.ckpt.read_bytes(),
    }


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_equal(u, v) for u, v in zip(a, b, strict=True))
    return a == b


@pytest.mark.parametrize("action, exc, pattern", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_bad_input_fails_at_once_naming_it_and_changes_nothing(env, action, exc, pattern):
    before = _snapshot(env)
    with pytest.raises(exc, match=pattern):
        action(env)
    after = _snapshot(env)
    changed = [k for k in before if not _equal(before[k], after[k])]
    assert not changed, f"half-applied: {changed} changed"


# ---------------------------------------------------------------------------
# Issue 15 item 12: a 0-d x0 takes a scalar gradient, not only a 0-d array
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dtype, as_gradient",
    [
        (np.float64, np.float64),
        (np.float64, float),
        (np.float32, np.float32),
    ],
    ids=["f64 numpy scalar", "f64 python float", "f32 numpy scalar"],
)
def test_0d_x0_accepts_a_scalar_gradient(dtype, as_gradient):
    """Issue 15 item 12: with a 0-d x0, fun may return its gradient as a NumPy scalar
    (what ``2 * x`` gives for a 0-d x) or a Python float, not only as ``np.asarray(g)``;
    the run is the one the 0-d array gradient gives, value for value."""

    def fun(x, wrap):
        return float(x * x), wrap(dtype(2.0) * x)

    def run(wrap):
        return nadam.minimize(
            fun, np.asarray(1.0, dtype), args=(wrap,), jac=True, options={"lr": 0.1, "maxiter": 50}
        )

    reference = run(np.asarray)
    assert reference.x.shape == () and reference.x.dtype == dtype
    res = run(as_gradient)  # today: TypeError "... shape () and dtype float64, got float64"
    assert res.x.shape == () and res.x.dtype == dtype
    np.testing.assert_array_equal(res.x, reference.x)
    for key in ("fun", "nit", "nfev", "status", "message"):
        assert res[key] == reference[key], key
    np.testing.assert_array_equal(res.jac, reference.jac)

r"""Optimizer classes: the reference implementations' names and defaults, bound to
one flat array.

>>> import numpy as np, nadam
>>> x = np.zeros(3)
>>> opt = nadam.Adam(x, lr=0.1)
>>> opt.step(np.array([1.0, -2.0, 0.0]))   # x is updated in place
>>> x
array([-0.1,  0.1,  0. ])

Every class updates its parameters in place with one compiled call per
:meth:`Optimizer.step`; hyperparameters are attributes (``opt.lr = 0.01`` takes
effect at the next step, and is validated at once); :meth:`Optimizer.state_dict`
returns a picklable snapshot from which :meth:`Optimizer.load_state_dict`
continues bit for bit.

The classes are made from the registry (:data:`nadam.rules.RULES`): each
rule's constructor signature, defaults and docstring come from its
:class:`~nadam.rules.Rule`, so they cannot drift apart.
:func:`optimizer_class` gives the class of any rule, also one registered at
run time.
"""

from __future__ import annotations

import inspect
import math
import pickle
import textwrap
import warnings
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from . import rules
from . import threads as threads_module
from ._checks import check_choice, check_int, fail, type_name
from .device import DeviceArrays
from .kernels import cpu
from .kernels import cuda as ck
from .kernels.tiered import Tiered
from .rules import RULES, Rule, get_rule

__all__ = [
    "NonFiniteGradientError",
    "Optimizer",
    "Snapshots",
    "TrainEval",
    "apply_state",
    "check_params",
    "checked_gradient",
    "checked_state",
    "check_switch",
    "export_state",
    "restart",
    "sharded_step",
    "optimizer_class",
    "switch_coefficients",
    "switch_point",
]

NonFinite = Literal["raise", "skip", "ignore"]
NONFINITE = ("raise", "skip", "ignore")


class NonFiniteGradientError(FloatingPointError, ValueError):
    """A gradient with a NaN or an infinity was passed to :meth:`Optimizer.step`.

    The parameters and the optimizer state were left untouched.
    """


def checked_gradient(params: np.ndarray, grad: Any) -> np.ndarray:
    """The flat view of ``grad``, after checking it matches the host ``params``."""
    if not isinstance(grad, np.ndarray):
        raise TypeError(
            f"grad must be a NumPy array of dtype {params.dtype}, got {type_name(grad)}"
        )
    if grad.shape != params.shape:
        raise ValueError(
            f"grad has shape {grad.shape}, but the parameters have shape {params.shape}"
        )
    if grad.dtype != params.dtype:
        raise TypeError(
            f"grad has dtype {grad.dtype}, but the parameters have dtype {params.dtype}; "
            "nadam never mixes precisions: cast the gradient"
        )
    return grad.reshape(-1)


def check_params(params: Any) -> np.ndarray:
    """Return ``params`` if nadam can update it in place, else raise ``TypeError``."""
    if not isinstance(params, np.ndarray):
        fail("params", params, "a NumPy array of float32 or float64 (updated in place)", TypeError)
    if params.dtype not in (np.float32, np.float64):
        raise TypeError(f"params must have dtype float32 or float64, got {params.dtype}")
    if not params.flags.c_contiguous:
        raise TypeError(
            "params must be C-contiguous so it can be updated in place; "
            "pass np.ascontiguousarray(params) and read the result from the optimizer"
        )
    if not params.flags.writeable:
        raise TypeError("params must be writable, got a read-only array")
    return params


class Snapshots:
    """The snapshot and copy protocol of :class:`Optimizer`: ``state_dict``,
    ``load_state_dict`` and pickling (``copy.deepcopy`` included)."""

    # -- checkpoints -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """A picklable snapshot: step count, hyperparameters, state arrays (host
        NumPy copies, also for parameters on a CUDA device)."""
        return export_state(self)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a snapshot from :meth:`state_dict`; the next step continues exactly.

        Hyperparameters are restored too, as in torch.  Everything is checked
        before anything changes.

        Raises
        ------
        ValueError
            If the snapshot belongs to another rule, size, dtype or state layout,
            or holds a value out of range (a negative step count, a state array of
            another shape or dtype, a non-finite host state), naming the field.
        """
        apply_state(self, *checked_state(self, state_dict))

    # -- copies ------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        if self._device is not None or self._comm is not None:
            where = "a CUDA array" if self._device is not None else "a shard (comm)"
            raise TypeError(
                f"an optimizer of {where} cannot be copied or pickled; save "
                f"{type(self).__name__}.state_dict() and load it into a new optimizer"
            )
        return {
            "params": self._p,
            "threads": self._threads,
            "nonfinite": self._nonfinite,
            "values": self._values,
            "state": self._state,
            "aux": self._aux,
            "t": self.t,
        }

    def __setstate__(self, saved: dict[str, Any]) -> None:
        # A copy owns its (copied) parameters: the flat view and the steppers are
        # made again from them, never copied (a copied view would update nothing).
        self._device, self._comm = None, None
        self._p = saved["params"]
        self._threads = saved["threads"]
        self._nonfinite = saved["nonfinite"]
        self._values = saved["values"]
        self._hp = np.zeros(self.rule.n_hyper)
        self.rule.pack(self._values, self._hp)
        self._flags = self.rule.flags(self._values)
        self._slots = self.rule.slots(self._flags)
        self._state, self._aux, self.t = saved["state"], saved["aux"], saved["t"]
        self._bind()


class Optimizer(Snapshots):
    """Base class: one update rule bound to one float array.

    Parameters
    ----------
    params : numpy.ndarray or CUDA array
        C-contiguous, writable float32 or float64 array of any shape, updated in
        place.  The optimizer's state has the same dtype; all arithmetic is done
        in it.  A CUDA device array (numba, CuPy, a torch CUDA tensor: anything
        with ``__cuda_array_interface__``; needs ``nadam[cuda]``) is updated on
        the device by one fused kernel per step, with the state kept there too.
    comm : mpi4py communicator, optional
        ``params`` is this rank's shard of one parameter vector split over the ranks of
        ``comm``: the sums over all elements that a rule takes (Prodigy's) are summed
        over the ranks, and so is the finiteness check, so that every rank takes the
        same step.  (Element-wise rules need nothing more; :func:`nadam.minimize`'s
        own ``comm`` is data-parallel, each rank holding all of x.)
    nonfinite : {"raise", "skip", "ignore"}
        What :meth:`step` does with a gradient holding a NaN or an infinity.
        ``"raise"`` (default) raises :class:`NonFiniteGradientError` and leaves
        the parameters and the state untouched; ``"skip"`` warns and skips the
        step (the step count does not advance); ``"ignore"`` skips the check (one
        read of the gradient less per step) and lets the values propagate.  On a
        CUDA device the check also waits for the device once per step (its
        verdict comes back to the host); ``"ignore"`` lets steps queue up.
    threads : int, optional
        Threads of the kernel on arrays of :data:`nadam.kernels.cpu.PARALLEL_THRESHOLD`
        float64 elements or more (twice as many float32 ones); default
        :func:`nadam.threads.get_threads` when the optimizer is made (the process's
        share of its cores).  The results are the same bits with any number.
    **hyper
        The rule's hyperparameters (see each subclass).

    Attributes
    ----------
    t : int
        Number of steps taken.

    Notes
    -----
    A copy (:func:`copy.deepcopy`, a pickle round trip) owns a copy of the
    parameters and updates that; an optimizer of a CUDA array cannot be copied
    (save its :meth:`state_dict` instead).
    """

    rule: Rule

    def __init__(
        self,
        params: Any,
        *,
        nonfinite: NonFinite = "raise",
        comm: Any = None,
        threads: int | None = None,
        **hyper: Any,
    ):
        rule = self.rule
        values = {**rule.defaults, **rule.validate(hyper)}
        self._threads = threads_module.check_threads("threads", threads)
        if comm is not None and not all(hasattr(comm, a) for a in ("Allreduce", "Get_size")):
            fail("comm", comm, "None or an mpi4py communicator", TypeError)
        if comm is not None and ck.is_device_array(params):
            raise ValueError("comm cannot be combined with parameters on a CUDA device")
        self._comm = comm
        # CUDA arrays get their DeviceArrays (nadam.device), which keeps the state on
        # the device; everything else must be a NumPy array.
        device = DeviceArrays(params) if ck.is_device_array(params) else None
        self._device = device
        self._p = params if device else check_params(params)
        self.nonfinite = nonfinite
        self._values = values
        self._hp = np.zeros(rule.n_hyper)
        rule.pack(values, self._hp)
        self._flags = rule.flags(values)
        self._slots = rule.slots(self._flags)
        self._aux = rule.initial_aux(values)
        self.t = 0
        self._bind()
        if device:
            state = rule.initial_state(values, self._flags, device.size, device.dtype)
            self._state = device.to_device(state)
        else:
            self._state = rule.initial_state(values, self._flags, self._flat.size, params.dtype)
        self._start()  # (again at the first step, which is when the references take p)

    def _bind(self) -> None:
        # Everything derived from the parameters and the hyperparameters: the flat
        # view, the coefficient buffer and the compiled steppers (made lazily).
        device = self._device
        self._flat = device.params if device else self._p.reshape(-1)
        self._h = np.zeros(self.rule.n_coefficients, dtype=self._flat.dtype)
        # The threads, fixed here: nadam.threads.set_threads affects later optimizers.
        self._nthreads = self._threads or threads_module.get_threads()
        flat = self._flat
        self._parallel = (
            False if device else cpu.choose_parallel(flat.size, self._nthreads, flat.itemsize)
        )
        self._shared = cpu.shared_mode(self._hp)
        self._steppers: dict[tuple, Callable] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Each public hyperparameter becomes a validated attribute: ``opt.lr = 0.01``
        # is checked at once and takes effect at the next step.
        super().__init_subclass__(**kwargs)
        rule = cls.__dict__.get("rule")
        for spec in () if rule is None else rule.hyper:  # (None: a base class)
            if not spec.fixed and spec.name not in cls.__dict__:
                setattr(
                    cls,
                    spec.name,
                    property(
                        lambda self, name=spec.name: self._values[name],
                        lambda self, value, name=spec.name: self._set_hyper(name, value),
                        doc=f"Hyperparameter ``{spec.name}`` (validated on assignment).",
                    ),
                )

    def _set_hyper(self, name: str, value: Any) -> None:
        new = {**self._values, **self.rule.validate({name: value}, base=self._values)}
        if self.rule.flags(new) != self._flags:
            raise ValueError(
                f"changing {name} to {value!r} would change the state layout "
                f"({', '.join(self.rule.flag_names)}); create a new optimizer instead"
            )
        self.rule.pack(new, self._hp)
        self._values = new
        shared = cpu.shared_mode(self._hp)
        if shared != self._shared:  # another loop of the kernel: compiled when used
            self._shared = shared
            self._steppers.clear()

    # -- the compiled steps ---------------------------------------------------------
    def stepper(self, kind: str = "plain", lengths: bool = True) -> Callable:
        """The compiled step of this optimizer's variant (rule, flags, threads,
        shared options), on its own arrays or any others of the same layout.

        ``"plain"``: ``step(p, g, s, hp, t, aux, h) -> None``; ``"checked"``: the
        same returning False (and touching nothing) for a non-finite ``g``;
        ``"guarded"``: ``step(p, g, s, hp, t, aux, h, avg, w) -> int``, the step
        of :func:`nadam.minimize`'s loops (:func:`nadam.kernels.cpu.guarded_stepper`).
        A threaded step runs its serial twin (the same bits) until it is compiled, in
        the background, and then whichever of the two has been faster of late
        (:class:`nadam.kernels.tiered.Tiered`).  With ``lengths`` False, the CPU
        step does not check its arrays' lengths (what the optimizer's own steps use,
        on its arrays and a gradient checked already).
        """
        # In a child forked from a GNU OpenMP parent, the serial loop (the same bits).
        parallel = self._parallel and threads_module.threaded_ok()
        key = (kind, parallel, lengths)
        step = self._steppers.get(key)
        if step is None:
            # cpu.stepper, cpu.checked_stepper, cpu.guarded_stepper, or the device's.
            name = "stepper" if kind == "plain" else f"{kind}_stepper"
            if self._device is not None:
                step = getattr(self._device, name)(self.rule, self._flags)
            else:
                make = getattr(cpu, name)
                step = make(self.rule, self._flags, parallel, self._shared, lengths)
                if parallel:  # serial while the threaded step compiles; then the faster
                    serial = make(self.rule, self._flags, False, self._shared, lengths)
                    step = Tiered(step, serial)
            self._steppers[key] = step
        return step

    @property
    def threads(self) -> int:
        """The threads of the kernel when it runs threaded (see :attr:`variant`)."""
        return self._nthreads

    @property
    def variant(self) -> tuple[Rule, tuple, bool, str]:
        """``(rule, flags, parallel, shared)``: what selects this optimizer's compiled
        code (:mod:`nadam.kernels.cpu`); the compiled loop inlines the same pieces."""
        return self.rule, self._flags, self._parallel, self._shared

    @property
    def arrays(self) -> tuple[Any, Any, np.ndarray, np.ndarray]:
        """``(state, hp, aux, h)``: the arrays a stepper takes besides ``p``, ``g``, ``t``
        (the optimizer's own, updated in place by its steps)."""
        return self._state, self._hp, self._aux, self._h

    def advance(self, grad: Any, avg: Any = None, weight: float = 0.0) -> int:
        """One step of :func:`nadam.minimize`'s loops: the guarded stepper on a flat
        gradient that the loop has already checked (no checks here).

        Returns the number of elements whose new value was not finite (they kept
        their old value); the step counts either way.  ``avg`` (flat, or None)
        moves towards the new iterate by ``weight``.
        """
        if self.t == 0:
            self._start()
        if callable(self._values["lr"]):
            self._hp[rules.LR] = self.current_lr()
        if self._parallel:
            threads_module.use(self._nthreads)
        args = (self._flat, grad, self._state, self._hp, self.t + 1, self._aux, self._h)
        bad = self.stepper("guarded", lengths=False)(*args, avg, weight)
        self.t += 1
        return bad

    def _start(self) -> None:
        # The state slots that start as the parameters (at the first step, as the
        # reference implementations take them).
        for name in self.rule.from_params:
            self._state[self._slots.index(name)] = self._flat

    # -- the public interface -------------------------------------------------------------
    @property
    def nonfinite(self) -> NonFinite:
        """What :meth:`step` does with a non-finite gradient: "raise", "skip" or "ignore"."""
        return self._nonfinite

    @nonfinite.setter
    def nonfinite(self, value: NonFinite) -> None:
        self._nonfinite = check_choice("nonfinite", value, NONFINITE)

    @property
    def params(self) -> Any:
        """The array being optimised (the one passed in, updated in place)."""
        return self._p

    @property
    def state(self) -> dict[str, Any]:
        """The state slots by the reference's names, as views (not copies) of the
        state (device arrays when the parameters are on a CUDA device)."""
        return {name: self._state[k] for k, name in enumerate(self._slots)}

    def current_lr(self, t: int | None = None) -> float:
        """The learning rate at step ``t`` (default: the next step)."""
        lr = self._values["lr"]
        if not callable(lr):
            return lr
        t = self.t + 1 if t is None else t
        value = float(lr(t))
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"lr schedule returned {value!r} at step {t}; allowed: finite >= 0")
        return value

    def step(self, grad: Any) -> None:
        """Apply one update from ``grad`` to the parameters, in place.

        Parameters
        ----------
        grad : numpy.ndarray or CUDA array
            Same shape and dtype as the parameters, and on the same side: a
            device array (any ``__cuda_array_interface__`` object) for
            parameters on a CUDA device.

        Returns
        -------
        None
        """
        g = self._device.grad(grad) if self._device else checked_gradient(self._p, grad)
        if self.t == 0:
            self._start()
        if callable(self._values["lr"]):
            self._hp[rules.LR] = self.current_lr()
        if self._parallel:
            threads_module.use(self._nthreads)
        args = (self._flat, g, self._state, self._hp, self.t + 1, self._aux, self._h)
        if self._comm is not None:
            done = sharded_step(self, args)
        elif self._nonfinite == "ignore":
            done = self.stepper("plain", lengths=False)(*args) is None
        else:
            done = self.stepper("checked", lengths=False)(*args)
        if not done:
            if self._nonfinite == "raise":
                raise NonFiniteGradientError(
                    f"gradient holds NaN or inf at step {self.t + 1}; "
                    "parameters and state were left unchanged"
                )
            warnings.warn(
                f"skipped step {self.t + 1}: the gradient holds NaN or inf",
                RuntimeWarning,
                stacklevel=2,
            )
            return
        self.t += 1

    def __repr__(self) -> str:
        hyper = ", ".join(f"{k}={self._values[k]!r}" for k in self.rule.arguments)
        kind = f"{self._flat.dtype}{' device' if self._device else ''} array"
        return f"{type(self).__name__}(<{kind} of {self._flat.size}>, {hyper})"


def restart(opt: Optimizer, whole: bool = False) -> None:
    """Start the moment estimates of ``opt`` afresh: the state slots its rule's ``restart``
    names go back to their initial value and its host state ``aux`` to the initial one;
    the rest (and the step count ``t``) is kept.  With ``whole``, every state slot starts
    again, from the current parameters (the slots ``from_params`` names take them): the
    steps go on as those of an optimizer created at the current parameters would, the
    step count ``t`` aside.  (nadam's tuning-free runs restart after a divergence, and
    restart whole when their windows stall: :mod:`nadam.loop.stages`.)

    Raises
    ------
    TypeError
        For a rule without a restart (its bias corrections count ``t`` itself).
    """
    names = opt.rule.restart
    if not names:
        raise TypeError(f"{type(opt).__name__} has no restart (its rule names no slots)")
    initial = opt.rule.initial(opt._values)
    for k, name in enumerate(opt._slots):
        if whole and name in opt.rule.from_params:
            opt._state[k] = opt._flat
        elif whole or name in names:
            if opt._device is not None:
                opt._device.fill(opt._state[k], initial)
            else:
                opt._state[k] = initial
    opt._aux[...] = opt.rule.initial_aux(opt._values)


def export_state(opt: Optimizer) -> dict[str, Any]:
    """:meth:`Optimizer.state_dict`: the snapshot of ``opt``."""
    state = opt._device.to_host(opt._state) if opt._device else opt._state
    saved = {k: getattr(opt, k) for k in opt.rule.arguments}
    # Fixed hyperparameters are not arguments.  An lr schedule that cannot be pickled
    # (a lambda, a closure) is left out, as torch's LambdaLR leaves out its
    # functions: load_state_dict then keeps the optimizer's own schedule.
    if callable(saved["lr"]):
        try:
            pickle.dumps(saved["lr"])
        except (pickle.PicklingError, AttributeError, TypeError):
            del saved["lr"]
    return {
        "rule": opt.rule.name,
        "t": opt.t,
        "hyper": saved,
        "state": {name: row.copy() for name, row in zip(opt._slots, state, strict=True)},
        "aux": opt._aux.copy(),
        "dtype": opt._flat.dtype.name,
        "size": opt._flat.size,
    }


def sharded_step(opt: Optimizer, args: tuple) -> bool:
    """One step of an optimizer whose parameters are one rank's shard (``comm``): the
    finiteness check and a two-pass rule's sums summed over the ranks.  False (and
    nothing touched, on every rank) when some rank's gradient is not finite."""
    from mpi4py import MPI  # a communicator was given: mpi4py is there

    comm = opt._comm
    if opt._nonfinite != "ignore":
        bad = np.array([0.0 if cpu.all_finite(args[1]) else 1.0])
        comm.Allreduce(MPI.IN_PLACE, bad, op=MPI.SUM)
        if bad[0]:
            return False
    if opt.rule.accumulate is None:
        opt.stepper("plain", lengths=False)(*args)
        return True
    begin, end = cpu.split_stepper(opt.rule, opt._flags, opt._parallel, opt._shared, False)
    sums = begin(*args)
    comm.Allreduce(MPI.IN_PLACE, sums, op=MPI.SUM)
    end(*args, sums, None, 0.0)
    return True


def apply_state(opt: Optimizer, values: dict, rows: list, aux: np.ndarray, t: int) -> None:
    """Load what :func:`checked_state` checked into ``opt``."""
    if opt._device:
        host = np.empty((len(opt._slots), opt._flat.size), opt._flat.dtype)
        for k, row in enumerate(rows):
            host[k] = row
        opt._device.copy_in(opt._state, host)
    else:
        for k, row in enumerate(rows):
            opt._state[k] = row
    opt._values = values
    opt.rule.pack(values, opt._hp)
    opt._aux[...] = aux
    opt.t = t
    opt._shared = cpu.shared_mode(opt._hp)
    opt._steppers.clear()


def checked_state(opt: Optimizer, sd: Any) -> tuple[dict, list, np.ndarray, int]:
    """``(values, state rows, aux, t)`` of the snapshot ``sd`` for ``opt``, every field
    checked (:meth:`Optimizer.load_state_dict`)."""
    try:
        rule, size, dtype = sd["rule"], sd["size"], sd["dtype"]
        hyper, state, aux, t = sd["hyper"], sd["state"], sd["aux"], sd["t"]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"state_dict is not an optimizer state_dict: missing {exc}") from None
    n, dt = opt._flat.size, opt._flat.dtype
    mine = (opt.rule.name, n, dt.name)
    if (rule, size, dtype) != mine:
        raise ValueError(
            f"state_dict is for rule={rule!r}, size={size}, dtype={dtype}; "
            f"this optimizer has rule={mine[0]!r}, size={mine[1]}, dtype={mine[2]}"
        )
    values = {**opt._values, **opt.rule.validate(hyper)}
    flags = opt.rule.flags(values)
    if flags != opt._flags:
        names = ", ".join(opt.rule.flag_names)
        raise ValueError(
            f"state_dict['hyper'] gives ({names}) = {flags}, but this optimizer has "
            f"{opt._flags}: construct it with the same {names}"
        )
    if not isinstance(state, dict) or tuple(state) != opt._slots:
        shown = tuple(state) if isinstance(state, dict) else state
        raise ValueError(
            f"state_dict has state {shown} but this optimizer has {opt._slots}; "
            f"construct it with the same {', '.join(opt.rule.flag_names)}"
        )
    t = check_int("state_dict['t']", t, 0, np.iinfo(np.int64).max - 1)  # t + 1 is an int64
    rows = []
    for name, row in state.items():
        if not (
            isinstance(row, np.ndarray)
            and row.shape == (n,)
            and row.dtype == dt
            and np.all(np.isfinite(row))
        ):
            shown = f"{type_name(row)} of shape {np.shape(row)}"
            if isinstance(row, np.ndarray):
                shown += f" and dtype {row.dtype}"
            raise ValueError(
                f"Invalid state_dict['state'][{name!r}]: {shown}; allowed: a NumPy array of "
                f"finite values, shape ({n},) and dtype {dt}"
            )
        rows.append(row)
    aux = np.asarray(aux)
    if aux.shape != opt._aux.shape or aux.dtype != np.float64 or not np.all(np.isfinite(aux)):
        fail("state_dict['aux']", aux, f"finite float64 values of shape {opt._aux.shape}")
    return values, rows, aux, t


# ---------------------------------------------------------------------------
# The classes, made from the registry
# ---------------------------------------------------------------------------


def _default_text(value: Any) -> str:
    return repr(value) if not isinstance(value, float) else f"{value:g}"


def _docstring(rule: Rule) -> str:
    """The class docstring: summary, the update as math, notes, parameters."""
    math_block = textwrap.indent(rule.math, "    ")
    lines = [rule.summary, "", ".. math::", "", math_block, ""]
    if rule.notes:
        lines += [textwrap.fill(rule.notes, 88), ""]
    if rule.reference:
        lines += [
            f"Equals ``{rule.reference}`` (its single-tensor implementation) step for step.",
            "",
        ]
    else:
        lines += ["nadam's own rule: tested against its formulas (``tests/naive.py``).", ""]
    lines += [
        "Parameters",
        "----------",
        "params : numpy.ndarray or CUDA array",
        "    Updated in place (see :class:`Optimizer`).",
    ]
    specs = {spec.name: spec for spec in rule.hyper}
    for name in rule.signature:
        if name == "*":
            continue
        spec = specs[name]
        kind = spec.annotation.replace(" | Callable[[int], float]", " or callable")
        lines.append(f"{name} : {kind}, default {_default_text(spec.default)}")
        if spec.doc:
            lines.append(textwrap.indent(textwrap.fill(spec.doc, 84), "    "))
    lines += [
        'nonfinite : {"raise", "skip", "ignore"}, default "raise"',
        "    See :class:`Optimizer`.",
        "comm : mpi4py communicator, optional",
        "    ``params`` is this rank's shard of a vector split over the ranks of ``comm``:",
        "    a rule's sums over all elements are summed over them (see :class:`Optimizer`).",
        "threads : int, optional",
        "    Threads of the kernel on large arrays (see :class:`Optimizer`).",
    ]
    return "\n".join(lines)


class TrainEval(Optimizer):
    """Base of the classes whose rule trains at one point and evaluates at another
    (schedule-free: the parameters hold ``y`` while training, the average ``x`` for
    evaluation).  The class starts in train mode; :meth:`step` needs it."""

    rule: Rule

    def __init__(
        self, params: Any, *, nonfinite: NonFinite = "raise", comm: Any = None, **hyper: Any
    ):
        super().__init__(params, nonfinite=nonfinite, comm=comm, **hyper)
        self._train_mode = True

    @property
    def train_mode(self) -> bool:
        """Whether the parameters hold the training point (see :meth:`train`, :meth:`eval`)."""
        return self._train_mode

    def eval(self) -> None:
        """Switch the parameters to the point to evaluate (schedule-free: the average x),
        in place; a no-op in eval mode and before the first step."""
        if self._train_mode:
            self._switch(self._flat, to_eval=True)
            self._train_mode = False

    def train(self) -> None:
        """Switch the parameters back to the training point (schedule-free: y), in
        place; a no-op in train mode and before the first step."""
        if not self._train_mode:
            self._switch(self._flat, to_eval=False)
            self._train_mode = True

    def evaluation_point(self) -> Any:
        """A copy of the point to evaluate, the optimizer left as it is (in train mode)."""
        if not self._train_mode:
            raise RuntimeError("in eval mode the parameters are the evaluation point")
        point = self._flat.copy()
        self._switch(point, to_eval=True)
        return point.reshape(self._p.shape)

    def _switch(self, p: Any, to_eval: bool) -> None:
        if self.t == 0:
            return
        if self._device is not None:
            h = switch_coefficients(self.rule, self._hp, to_eval, self._flat.dtype)
            self._device.switcher(self.rule, self._flags)(p, self._state, h)
        else:
            switch_point(self.rule, self._flags, self._hp, self._state, p, to_eval, self._parallel)

    def step(self, grad: Any) -> None:
        if not self._train_mode:
            raise RuntimeError(
                f"{type(self).__name__}.step() in eval mode: call train() first (the "
                "gradient is taken at the training point)"
            )
        super().step(grad)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "train_mode": self._train_mode}

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "train_mode": self._train_mode}

    def __setstate__(self, saved: dict[str, Any]) -> None:
        super().__setstate__(saved)
        self._train_mode = saved["train_mode"]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        mode = state_dict.get("train_mode", True) if isinstance(state_dict, dict) else True
        if not isinstance(mode, (bool, np.bool_)):
            fail("state_dict['train_mode']", mode, "True or False", TypeError)
        super().load_state_dict(state_dict)
        self._train_mode = bool(mode)


def check_switch(rule: Rule, hp: np.ndarray) -> None:
    """Raise ``ValueError`` if the packed hyperparameters ``hp`` of a schedule-free
    rule leave it no evaluation point: with beta1 = 0 (allowed for training, as in
    the reference package), the average x is not kept apart from z."""
    if rule.switch is not None and hp[4] == 0.0:
        name = "betas[0]" if "betas" in rule.arguments else "momentum"
        raise ValueError(
            f"{rule.class_name}'s evaluation point (eval(), and what minimize returns) needs "
            f"{name} > 0, got 0.0: with 0, the average x is not kept apart from z"
        )


def switch_coefficients(rule: Rule, hp: np.ndarray, to_eval: bool, dtype: Any) -> np.ndarray:
    """The coefficients of a schedule-free rule's switch between its training point y
    and its evaluation point x (:meth:`TrainEval.eval`), in the parameters' dtype."""
    if to_eval:
        check_switch(rule, hp)
    h = np.zeros(3, dtype=dtype)
    rule.switch_coefficients(hp, to_eval, h)
    return h


def switch_point(
    rule: Rule,
    flags: tuple,
    hp: np.ndarray,
    state: np.ndarray,
    p: np.ndarray,
    to_eval: bool,
    parallel: bool = False,
) -> None:
    """Switch the host parameters ``p`` of a schedule-free rule (after its first step)
    between the training and the evaluation point, in place, from its ``(k, n)`` state
    and hyperparameters ``hp``: the arrays of a :class:`TrainEval` or of one run of
    :func:`nadam.minimize_many`."""
    h = switch_coefficients(rule, hp, to_eval, p.dtype)
    cpu.switch_kernel(rule, flags, parallel)(p, state, h)


def _signature(rule: Rule) -> inspect.Signature:
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    specs = {spec.name: spec for spec in rule.hyper}
    params = [inspect.Parameter("params", kind, annotation="np.ndarray")]
    for name in rule.signature:
        if name == "*":
            kind = inspect.Parameter.KEYWORD_ONLY
            continue
        spec = specs[name]
        params.append(
            inspect.Parameter(name, kind, default=spec.default, annotation=spec.annotation)
        )
    params.append(
        inspect.Parameter(
            "nonfinite", inspect.Parameter.KEYWORD_ONLY, default="raise", annotation="NonFinite"
        )
    )
    for name in ("comm", "threads"):
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None))
    return inspect.Signature(params)


def _init(signature: inspect.Signature) -> Callable[..., None]:
    """The ``__init__`` of a class with this signature: the arguments bound by it (the
    reference's order and keyword-only names), then the base class's."""

    def __init__(self: Optimizer, params: Any, *args: Any, **kwargs: Any) -> None:
        hyper = dict(signature.bind(params, *args, **kwargs).arguments)
        del hyper["params"]
        base = TrainEval if isinstance(self, TrainEval) else Optimizer
        nonfinite, comm = hyper.pop("nonfinite", "raise"), hyper.pop("comm", None)
        threads = hyper.pop("threads", None)
        base.__init__(self, params, nonfinite=nonfinite, comm=comm, threads=threads, **hyper)

    self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    __init__.__signature__ = signature.replace(
        parameters=[self_param, *signature.parameters.values()]
    )
    return __init__


_CLASSES: dict[str, type[Optimizer]] = {}


def optimizer_class(rule: Rule | str) -> type[Optimizer]:
    """The optimizer class of a rule (a :class:`~nadam.rules.Rule` or its name),
    made from the rule on first use: its signature, defaults and docstring are the
    rule's."""
    if not isinstance(rule, Rule):
        rule = get_rule(rule, "rule")  # a name, or a TypeError naming what it got
    cls = _CLASSES.get(rule.name)
    if cls is None or cls.rule is not rule:
        signature = _signature(rule)
        namespace = {
            "rule": rule,
            "__init__": _init(signature),
            "__doc__": _docstring(rule),
            "__signature__": signature,
            "__module__": __name__,
            "__qualname__": rule.class_name,
        }
        base = Optimizer if rule.switch is None else TrainEval
        cls = type(rule.class_name, (base,), namespace)
        _CLASSES[rule.name] = cls
    return cls


def __getattr__(name: str) -> type[Optimizer]:
    # The class of a rule registered at run time, by its class name (and for pickle).
    for rule in RULES.values():
        if rule.class_name == name:
            return optimizer_class(rule)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


for _rule in list(RULES.values()):
    globals()[_rule.class_name] = optimizer_class(_rule)
    __all__.append(_rule.class_name)
del _rule

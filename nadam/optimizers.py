r"""Optimizer classes: torch.optim's names and defaults, bound to one flat array.

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
"""

from __future__ import annotations

import math
import pickle
import warnings
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from . import rules
from .kernels import cpu, cuda
from .rules import Rule

__all__ = [
    "Optimizer",
    "SGD",
    "RMSprop",
    "Adagrad",
    "Adadelta",
    "Adam",
    "AdamW",
    "Adamax",
    "NAdam",
    "RAdam",
    "NonFiniteGradientError",
]

LR = float | Callable[[int], float]
NonFinite = Literal["raise", "skip", "ignore"]
_NONFINITE = ("raise", "skip", "ignore")


class NonFiniteGradientError(FloatingPointError, ValueError):
    """A gradient with a NaN or an infinity was passed to :meth:`Optimizer.step`.

    The parameters and the optimizer state were left untouched.
    """


def check_params(params: Any) -> np.ndarray:
    """Return ``params`` if nadam can update it in place, else raise ``TypeError``."""
    if not isinstance(params, np.ndarray):
        raise TypeError(
            f"params must be a NumPy array of float32 or float64 (updated in place), "
            f"got {type(params).__name__}"
        )
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


class Optimizer:
    """Base class: one update rule bound to one float array.

    Parameters
    ----------
    params : numpy.ndarray or CUDA array
        C-contiguous, writable float32 or float64 array of any shape, updated in
        place.  The optimizer's state has the same dtype; all arithmetic is done
        in it.  A CUDA device array (numba, CuPy, a torch CUDA tensor: anything
        with ``__cuda_array_interface__``; needs ``nadam[cuda]``) is updated on
        the device by one fused kernel per step, with the state kept there too.
    nonfinite : {"raise", "skip", "ignore"}
        What :meth:`step` does with a gradient holding a NaN or an infinity.
        ``"raise"`` (default) raises :class:`NonFiniteGradientError` and leaves
        the parameters and the state untouched; ``"skip"`` warns and skips the
        step (the step count does not advance); ``"ignore"`` skips the check (one
        read of the gradient less per step) and lets the values propagate.  On a
        CUDA device the check also waits for the device once per step (its
        verdict comes back to the host); ``"ignore"`` lets steps queue up.
    **hyper
        The rule's hyperparameters (see each subclass).

    Attributes
    ----------
    t : int
        Number of steps taken.
    """

    rule: Rule

    def __init__(self, params: np.ndarray, *, nonfinite: NonFinite = "raise", **hyper: Any):
        # CUDA arrays get a Device (nadam.kernels.cuda), which keeps the state on
        # the device; everything else must be a NumPy array, as before.
        device = cuda.Device(params) if cuda.is_device_array(params) else None
        self._device = device
        self._p = params if device else check_params(params)
        self._flat = device.params if device else params.reshape(-1)
        self.nonfinite = nonfinite
        rule = self.rule
        values = {**rule.defaults, **rule.validate(hyper)}
        self._values = values
        self._hp = np.zeros(rule.n_hyper)
        rule.pack(values, self._hp)
        self._opts = rule.options(values)
        self._slots = rule.slots(self._opts)
        dtype = self._flat.dtype
        state = rule.initial_state(values, self._opts, self._flat.size, dtype)
        self._aux = np.array(rule.aux_init, dtype=np.float64)
        self._h = np.zeros(rule.n_coefficients, dtype=dtype)
        self.t = 0
        if device:
            self._state = device.to_device(state)
            self._step = device.stepper(rule, self._opts)
            self._checked_step = device.checked_stepper(rule, self._opts)
        else:
            self._state = state
            parallel = cpu.choose_parallel(self._flat.size)
            self._step = cpu.stepper(rule, self._opts, parallel)
            # The finiteness check and the step in one compiled call: one
            # dispatch less on the small arrays where dispatch is the cost.
            self._checked_step = cpu.checked_stepper(rule, self._opts, parallel)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Each public hyperparameter becomes a validated attribute: ``opt.lr = 0.01``
        # is checked at once and takes effect at the next step.
        super().__init_subclass__(**kwargs)
        for spec in cls.rule.hyper:
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
        if self.rule.options(new) != self._opts:
            raise ValueError(
                f"changing {name} to {value!r} would change the state layout "
                f"({', '.join(self.rule.option_names)}); create a new optimizer instead"
            )
        self.rule.pack(new, self._hp)
        self._values = new

    @property
    def nonfinite(self) -> NonFinite:
        """What :meth:`step` does with a non-finite gradient: "raise", "skip" or "ignore"."""
        return self._nonfinite

    @nonfinite.setter
    def nonfinite(self, value: NonFinite) -> None:
        if value not in _NONFINITE:
            raise ValueError(f"nonfinite must be one of {_NONFINITE}, got {value!r}")
        self._nonfinite = value

    @property
    def params(self) -> np.ndarray:
        """The array being optimised (the one passed in, updated in place)."""
        return self._p

    @property
    def state(self) -> dict[str, np.ndarray]:
        """The state slots by torch's names, as views (not copies) of the state
        (device arrays when the parameters are on a CUDA device)."""
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

    # -- the step ------------------------------------------------------------------
    def step(self, grad: np.ndarray) -> None:
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
        g = self._check_grad(grad)
        if callable(self._values["lr"]):
            self._hp[rules.LR] = self.current_lr()
        args = (self._flat, g, self._state, self._hp, self.t + 1, self._aux, self._h)
        if self._nonfinite == "ignore":
            self._step(*args)
        elif not self._checked_step(*args):
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

    def _check_grad(self, grad: Any) -> np.ndarray:
        if self._device:
            return self._device.grad(grad)
        if not isinstance(grad, np.ndarray):
            raise TypeError(
                f"grad must be a NumPy array of dtype {self._p.dtype}, got {type(grad).__name__}"
            )
        if grad.shape != self._p.shape:
            raise ValueError(
                f"grad has shape {grad.shape}, but the parameters have shape {self._p.shape}"
            )
        if grad.dtype != self._p.dtype:
            raise TypeError(
                f"grad has dtype {grad.dtype}, but the parameters have dtype {self._p.dtype}; "
                "nadam never mixes precisions: cast the gradient"
            )
        return grad.reshape(-1)

    # -- checkpoints -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """A picklable snapshot: step count, hyperparameters, state arrays (host
        NumPy copies, also for parameters on a CUDA device)."""
        state = self._device.to_host(self._state) if self._device else self._state
        return {
            "rule": self.rule.name,
            "t": self.t,
            "hyper": self._saved_hyper(),
            "state": {name: row.copy() for name, row in zip(self._slots, state, strict=True)},
            "aux": self._aux.copy(),
            "dtype": self._flat.dtype.name,
            "size": self._flat.size,
        }

    def _saved_hyper(self) -> dict[str, Any]:
        # Fixed hyperparameters are not arguments.  An lr schedule that cannot be
        # pickled (a lambda, a closure) is left out, as torch's LambdaLR leaves out
        # its functions: load_state_dict then keeps the optimizer's own schedule.
        saved = {k: self._values[k] for k in self.rule.arguments}
        if callable(saved["lr"]):
            try:
                pickle.dumps(saved["lr"])
            except (pickle.PicklingError, AttributeError, TypeError):
                del saved["lr"]
        return saved

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a snapshot from :meth:`state_dict`; the next step continues exactly.

        Hyperparameters are restored too, as in torch.  Raises ``ValueError`` if
        the snapshot belongs to another rule, size, dtype or state layout.
        """
        sd = state_dict
        try:
            rule, size, dtype = sd["rule"], sd["size"], sd["dtype"]
            hyper, state, aux, t = sd["hyper"], sd["state"], sd["aux"], sd["t"]
        except (KeyError, TypeError) as exc:
            raise ValueError(f"state_dict is not an optimizer state_dict: missing {exc}") from None
        mine = (self.rule.name, self._flat.size, self._flat.dtype.name)
        if (rule, size, dtype) != mine:
            raise ValueError(
                f"state_dict is for rule={rule!r}, size={size}, dtype={dtype}; "
                f"this optimizer has rule={mine[0]!r}, size={mine[1]}, dtype={mine[2]}"
            )
        values = {**self._values, **self.rule.validate(hyper)}
        opts = self.rule.options(values)
        if opts != self._opts or tuple(state) != self._slots:
            raise ValueError(
                f"state_dict has state {tuple(state)} but this optimizer has {self._slots}; "
                f"construct it with the same {', '.join(self.rule.option_names)}"
            )
        if self._device:
            host = np.empty((len(self._slots), self._flat.size), self._flat.dtype)
            for row, name in zip(host, self._slots, strict=True):
                row[...] = state[name]
            self._device.copy_in(self._state, host)
        else:
            for row, name in zip(self._state, self._slots, strict=True):
                row[...] = state[name]
        self._values = values
        self.rule.pack(values, self._hp)
        self._aux[...] = aux
        self.t = int(t)

    def __repr__(self) -> str:
        hyper = ", ".join(f"{k}={self._values[k]!r}" for k in self.rule.arguments)
        kind = f"{self._flat.dtype}{' device' if self._device else ''} array"
        return f"{type(self).__name__}(<{kind} of {self._flat.size}>, {hyper})"


class SGD(Optimizer):
    r"""Stochastic gradient descent with optional (Nesterov) momentum.

    .. math::

        b_t &= \mu b_{t-1} + (1-\tau) g_t \quad (b_1 = g_1) \\
        d_t &= g_t + \mu b_t \text{ if nesterov else } b_t \\
        p_t &= p_{t-1} - \gamma d_t

    Parameters
    ----------
    params : numpy.ndarray
        Updated in place.
    lr : float or callable, default 1e-3
        Learning rate :math:`\gamma`, or a schedule ``t -> lr``.
    momentum : float, default 0
        :math:`\mu`; 0 disables the momentum buffer.
    dampening : float, default 0
        :math:`\tau`, in [0, 1].
    weight_decay : float, default 0
        L2 penalty: :math:`g \leftarrow g + \lambda p`.
    nesterov : bool, default False
        Nesterov momentum (needs momentum > 0 and dampening 0).
    maximize : bool, default False
        Maximise instead of minimise.
    nonfinite : {"raise", "skip", "ignore"}
        See :class:`Optimizer`.
    """

    rule = rules.SGD

    def __init__(
        self,
        params: np.ndarray,
        lr: LR = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        nonfinite: NonFinite = "raise",
    ):
        super().__init__(
            params,
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
            nonfinite=nonfinite,
        )


class RMSprop(Optimizer):
    r"""RMSprop (Hinton), optionally centered and with momentum; no bias correction.

    .. math::

        v_t &= \alpha v_{t-1} + (1-\alpha) g_t^2 \\
        \bar g_t &= \alpha \bar g_{t-1} + (1-\alpha) g_t, \quad
            \tilde v_t = v_t - \bar g_t^2 \text{ (centered) else } v_t \\
        b_t &= \mu b_{t-1} + g_t / (\sqrt{\tilde v_t} + \epsilon), \quad
            p_t = p_{t-1} - \gamma b_t \\
        &\text{(without momentum: } p_t = p_{t-1} - \gamma g_t / (\sqrt{\tilde v_t} + \epsilon))

    Note that eps is added *outside* the root, as in torch (optax puts it inside).

    Parameters
    ----------
    params : numpy.ndarray
        Updated in place.
    lr : float or callable, default 1e-2
    alpha : float, default 0.99
        Smoothing constant, in [0, 1].
    eps : float, default 1e-8
    weight_decay : float, default 0
    momentum : float, default 0
    centered : bool, default False
    maximize : bool, default False
    nonfinite : {"raise", "skip", "ignore"}
    """

    rule = rules.RMSPROP

    def __init__(
        self,
        params: np.ndarray,
        lr: LR = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        *,
        maximize: bool = False,
        nonfinite: NonFinite = "raise",
    ):
        super().__init__(
            params,
            lr=lr,
            alpha=alpha,
            eps=eps,
            weight_decay=weight_decay,
            momentum=momentum,
            centered=centered,
            maximize=maximize,
            nonfinite=nonfinite,
        )


class Adagrad(Optimizer):
    r"""Adagrad (Duchi et al., 2011).

    .. math::

        \gamma_t &= \gamma / (1 + (t-1)\,\eta) \\
        s_t &= s_{t-1} + g_t^2, \quad s_0 = \text{initial\_accumulator\_value} \\
        p_t &= p_{t-1} - \gamma_t\, g_t / (\sqrt{s_t} + \epsilon)

    Parameters
    ----------
    params : numpy.ndarray
        Updated in place.
    lr : float or callable, default 1e-2
    lr_decay : float, default 0
        :math:`\eta`.
    weight_decay : float, default 0
    initial_accumulator_value : float, default 0
    eps : float, default 1e-10
    maximize : bool, default False
    nonfinite : {"raise", "skip", "ignore"}
    """

    rule = rules.ADAGRAD

    def __init__(
        self,
        params: np.ndarray,
        lr: LR = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        *,
        maximize: bool = False,
        nonfinite: NonFinite = "raise",
    ):
        super().__init__(
            params,
            lr=lr,
            lr_decay=lr_decay,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            eps=eps,
            maximize=maximize,
            nonfinite=nonfinite,
        )


class Adadelta(Optimizer):
    r"""Adadelta (Zeiler, 2012).

    .. math::

        v_t &= \rho v_{t-1} + (1-\rho) g_t^2 \\
        \Delta_t &= \sqrt{u_{t-1} + \epsilon} / \sqrt{v_t + \epsilon}\; g_t \\
        u_t &= \rho u_{t-1} + (1-\rho) \Delta_t^2 \\
        p_t &= p_{t-1} - \gamma \Delta_t

    Parameters
    ----------
    params : numpy.ndarray
        Updated in place.
    lr : float or callable, default 1.0
    rho : float, default 0.9
        In [0, 1].
    eps : float, default 1e-6
    weight_decay : float, default 0
    maximize : bool, default False
    nonfinite : {"raise", "skip", "ignore"}
    """

    rule = rules.ADADELTA

    def __init__(
        self,
        params: np.ndarray,
        lr: LR = 1.0,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        nonfinite: NonFinite = "raise",
    ):
        super().__init__(
            params,
            lr=lr,
            rho=rho,
            eps=eps,
            weight_decay=weight_decay,
            maximize=maximize,
            nonfinite=nonfinite,
        )


_ADAM_MATH = r"""
    .. math::

        m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t \\
        v_t &= \beta_2 v_{t-1} + (1-\beta_2) g_t^2
            \quad (\text{amsgrad: } v_t \leftarrow \max(v^{\max}_{t-1}, v_t)) \\
        p_t &= p_{t-1} - \frac{\gamma}{1-\beta_1^t}\,
            \frac{m_t}{\sqrt{v_t}/\sqrt{1-\beta_2^t} + \epsilon}

    eps is added after the bias-corrected root, as in torch and the paper
    (Kingma & Ba, 2015); scikit-learn's "efficient version" folds the bias
    correction into the step size instead, which leaves eps uncorrected.
"""


class Adam(Optimizer):
    __doc__ = (
        r"""Adam (Kingma & Ba, 2015), optionally AMSGrad.
"""
        + _ADAM_MATH
        + r"""
    Parameters
    ----------
    params : numpy.ndarray
        Updated in place.
    lr : float or callable, default 1e-3
    betas : (float, float), default (0.9, 0.999)
        Each in [0, 1).
    eps : float, default 1e-8
    weight_decay : float, default 0
        L2 penalty added to the gradient, or, with ``decoupled_weight_decay``,
        :math:`p \leftarrow (1 - \gamma\lambda) p` before the update (AdamW).
    amsgrad : bool, default False
    maximize : bool, default False
    decoupled_weight_decay : bool, default False
    nonfinite : {"raise", "skip", "ignore"}
    """
    )

    rule = rules.ADAM

    def __init__(
        self,
        params: np.ndarray,
        lr: LR = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        decoupled_weight_decay: bool = False,
        nonfinite: NonFinite = "raise",
    ):
        super().__init__(
            params,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            decoupled_weight_decay=decoupled_weight_decay,
            nonfinite=nonfinite,
        )


class AdamW(Optimizer):
    __doc__ = (
        r"""AdamW (Loshchilov & Hutter, 2019): Adam with decoupled weight decay,
    :math:`p \leftarrow (1 - \gamma\lambda) p` before the Adam update.
"""
        + _ADAM_MATH
        + r"""
    Parameters
    ----------
    params : numpy.ndarray
        Updated in place.
    lr : float or callable, default 1e-3
    betas : (float, float), default (0.9, 0.999)
    eps : float, default 1e-8
    weight_decay : float, default 1e-2
    amsgrad : bool, default False
    maximize : bool, default False
    nonfinite : {"raise", "skip", "ignore"}
    """
    )

    rule = rules.ADAMW

    def __init__(
        self,
        params: np.ndarray,
        lr: LR = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        nonfinite: NonFinite = "raise",
    ):
        super().__init__(
            params,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            nonfinite=nonfinite,
        )


class Adamax(Optimizer):
    r"""Adamax: Adam with the infinity norm (Kingma & Ba, 2015, section 7).

    .. math::

        m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t \\
        u_t &= \max(\beta_2 u_{t-1}, |g_t| + \epsilon) \\
        p_t &= p_{t-1} - \frac{\gamma}{1-\beta_1^t} \frac{m_t}{u_t}

    Parameters
    ----------
    params : numpy.ndarray
        Updated in place.
    lr : float or callable, default 2e-3
    betas : (float, float), default (0.9, 0.999)
    eps : float, default 1e-8
    weight_decay : float, default 0
    maximize : bool, default False
    nonfinite : {"raise", "skip", "ignore"}
    """

    rule = rules.ADAMAX

    def __init__(
        self,
        params: np.ndarray,
        lr: LR = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        nonfinite: NonFinite = "raise",
    ):
        super().__init__(
            params,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            maximize=maximize,
            nonfinite=nonfinite,
        )


class NAdam(Optimizer):
    r"""NAdam: Adam with Nesterov momentum (Dozat, 2016), with momentum decay.

    .. math::

        \mu_t &= \beta_1 (1 - \tfrac12 0.96^{t\psi}), \quad \Pi_t = \prod_{i\le t} \mu_i \\
        m_t, v_t &\text{ as Adam}, \quad d_t = \sqrt{v_t / (1-\beta_2^t)} + \epsilon \\
        p_t &= p_{t-1} - \gamma \frac{1-\mu_t}{1-\Pi_t} \frac{g_t}{d_t}
              - \gamma \frac{\mu_{t+1}}{1-\Pi_t\mu_{t+1}} \frac{m_t}{d_t}

    Parameters
    ----------
    params : numpy.ndarray
        Updated in place.
    lr : float or callable, default 2e-3
    betas : (float, float), default (0.9, 0.999)
    eps : float, default 1e-8
    weight_decay : float, default 0
    momentum_decay : float, default 4e-3
        :math:`\psi`.
    decoupled_weight_decay : bool, default False
    maximize : bool, default False
    nonfinite : {"raise", "skip", "ignore"}
    """

    rule = rules.NADAM

    def __init__(
        self,
        params: np.ndarray,
        lr: LR = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum_decay: float = 4e-3,
        decoupled_weight_decay: bool = False,
        *,
        maximize: bool = False,
        nonfinite: NonFinite = "raise",
    ):
        super().__init__(
            params,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            momentum_decay=momentum_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            maximize=maximize,
            nonfinite=nonfinite,
        )


class RAdam(Optimizer):
    r"""RAdam: rectified Adam (Liu et al., 2020).

    .. math::

        \rho_\infty &= 2/(1-\beta_2) - 1, \quad
            \rho_t = \rho_\infty - 2t\beta_2^t/(1-\beta_2^t) \\
        r_t &= \sqrt{\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}
                         {(\rho_\infty-4)(\rho_\infty-2)\rho_t}} \\
        p_t &= p_{t-1} - \frac{\gamma}{1-\beta_1^t} m_t \cdot
            \begin{cases} r_t \sqrt{1-\beta_2^t} / (\sqrt{v_t} + \epsilon) & \rho_t > 5 \\
            1 & \text{otherwise} \end{cases}

    Parameters
    ----------
    params : numpy.ndarray
        Updated in place.
    lr : float or callable, default 1e-3
    betas : (float, float), default (0.9, 0.999)
    eps : float, default 1e-8
    weight_decay : float, default 0
    decoupled_weight_decay : bool, default False
    maximize : bool, default False
    nonfinite : {"raise", "skip", "ignore"}
    """

    rule = rules.RADAM

    def __init__(
        self,
        params: np.ndarray,
        lr: LR = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        *,
        maximize: bool = False,
        nonfinite: NonFinite = "raise",
    ):
        super().__init__(
            params,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            maximize=maximize,
            nonfinite=nonfinite,
        )


#: Optimizer class by rule name.
OPTIMIZERS: dict[str, type[Optimizer]] = {
    cls.rule.name: cls
    for cls in (SGD, RMSprop, Adagrad, Adadelta, Adam, AdamW, Adamax, NAdam, RAdam)
}

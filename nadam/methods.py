r"""nadam's methods as scipy custom minimizers.

For every rule in :data:`nadam.rules.RULES` this module has a callable of the
same name that :func:`scipy.optimize.minimize` accepts as ``method``:

>>> import numpy as np, scipy.optimize, nadam
>>> def f(x):
...     return float(np.sum((x - 3.0) ** 2)), 2 * (x - 3.0)
>>> res = scipy.optimize.minimize(f, np.zeros(2), jac=True, method=nadam.methods.adam,
...                               options={"lr": 0.1, "maxiter": 2000})
>>> np.round(res.x, 4)
array([3., 3.])

scipy calls a custom method as ``method(fun, x0, args=args, jac=jac, hess=hess,
hessp=hessp, bounds=bounds, constraints=constraints, callback=callback,
**options)``, with ``tol`` (if given) among the options; ``jac=True`` reaches
it split by scipy into a memoising ``fun`` and its ``derivative``, which nadam
joins again (scipy memoises on ``x`` alone, which a minibatch run must not).
The options and the result are those of :func:`nadam.minimize`; ``hess`` and
``hessp`` are ignored (first-order methods), and constraints other than bounds
are refused.  The methods are made from the registry on first use, so a rule
registered at run time (:func:`nadam.rules.register`) is a method too.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from scipy.optimize import OptimizeResult

from .minimizer import Minimizer
from .rules import RULES

__all__ = sorted(RULES)


@cache
def method(name: str) -> Callable[..., OptimizeResult]:
    """The scipy custom method of the rule ``name``."""

    def run(
        fun: Callable,
        x0: Any,
        args: Any = (),
        jac: Any = None,
        hess: Any = None,
        hessp: Any = None,
        bounds: Any = None,
        constraints: Any = (),
        callback: Callable | None = None,
        **options: Any,
    ) -> OptimizeResult:
        if constraints:
            raise ValueError(
                f"constraints are not supported by nadam.methods.{name} (got {constraints!r}); "
                "only bounds are"
            )
        tol = options.pop("tol", None)
        return Minimizer(
            fun, x0, args, name, jac, bounds, tol, callback, options, _stacklevel=4
        ).run()

    run.__name__ = run.__qualname__ = name
    run.__module__ = __name__
    run.__doc__ = (
        f"``{name}`` as a custom method of :func:`scipy.optimize.minimize`.\n\n"
        f"``scipy.optimize.minimize(fun, x0, method=nadam.methods.{name}, options={{...}})``"
        f" runs ``nadam.minimize(fun, x0, method={name!r}, ...)``; see :mod:`nadam.methods`\n"
        "and :func:`nadam.minimize` for the options and the result.\n"
    )
    return run


def __getattr__(name: str) -> Callable[..., OptimizeResult]:
    if name in RULES:
        return method(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *RULES])

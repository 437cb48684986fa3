"""The package's shape: layers, no cycles, no private names across modules, small
classes, everything made from the registry, and a rule added at run time that works
everywhere (docs/architecture.md)."""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import CLASSES, assert_close
from cudasim import GPU  # noqa: F401 (enables the simulator where no GPU is present)
from numba import njit

import nadam
from nadam import kernels, methods, rules
from nadam.rules import RULES, Hyper, Rule, common_coefficients, shared_hyperparameters

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "nadam"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    package = module.split(".")
    if not MODULES[module].name == "__init__.py":
        package = package[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


# ---------------------------------------------------------------------------------
# Layers and names
# ---------------------------------------------------------------------------------


def test_the_import_contracts_hold():
    """The layers of pyproject.toml's import-linter contracts (also run by .ci/run)."""
    pytest.importorskip("importlinter")
    out = subprocess.run(
        [sys.executable, "-m", "importlinter.cli", "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if "No module named" in out.stderr:
        out = subprocess.run(
            [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
    assert out.returncode == 0, out.stdout + out.stderr


def test_no_import_cycle_imports_in_functions_included():
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                target = _resolve(module, node)
                names = [f"{target}.{a.name}" for a in node.names]
                for name in [target, *names]:
                    if name in MODULES and name != module:
                        graph[module].add(name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in MODULES and alias.name != module:
                        graph[module].add(alias.name)
    # The package's __init__ imports its modules lazily, by name (importlib): not an edge.
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            cycle = path[path.index(node) :] + [node]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if node in done:
            return
        for nxt in graph[node]:
            if nxt != "nadam":
                visit(nxt, path + [node])
        done.add(node)

    for module in graph:
        visit(module, [])


def _defined_names(tree: ast.AST) -> set[str]:
    own = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            own.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            own.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            own.add(node.attr)
        elif isinstance(node, ast.arg):
            own.add(node.arg)
    return own


def test_no_module_uses_another_modules_private_names():
    """No ``from x import _name`` across modules, and no ``obj._name`` of a private
    name that another nadam module defines and the reading module does not (a helper
    shared across modules is a public name of its module)."""
    trees = {module: ast.parse(path.read_text()) for module, path in MODULES.items()}
    defined = {module: _defined_names(tree) for module, tree in trees.items()}
    nadams = set().union(*defined.values())
    problems = []
    for module, tree in trees.items():
        own = defined[module]
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                target = _resolve(module, node)
                if target.startswith("nadam") and target != module:
                    problems += [
                        f"{module} imports {target}.{a.name}"
                        for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")
                    ]
            elif isinstance(node, ast.Attribute):
                name = node.attr
                private = name.startswith("_") and not name.startswith("__")
                if private and name in nadams and name not in own:
                    problems.append(f"{module} reads {ast.unparse(node)}")
    assert not problems, "\n".join(problems)


def test_no_class_over_300_lines():
    long = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 300:
                long.append(f"{module}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not long, long


def test_no_module_is_hidden_by_a_function_of_the_same_name():
    for name in dir(nadam):
        obj = getattr(nadam, name)
        if callable(obj) and not inspect.isclass(obj):
            assert f"nadam.{name}" not in MODULES, name


def test_minimizer_and_status_are_public():
    assert nadam.Minimizer.__module__ == "nadam.minimizer"
    assert nadam.Status.GTOL == 0 and "Minimizer" in nadam.__all__


# ---------------------------------------------------------------------------------
# The registry is the single source
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(RULES))
def test_class_signatures_and_docstrings_come_from_the_rule(name):
    rule, cls = RULES[name], CLASSES[name]
    params = list(inspect.signature(cls).parameters.values())
    assert params[0].name == "params"
    assert [p.name for p in params[-3:]] == ["nonfinite", "comm", "threads"]
    specs = {h.name: h for h in rule.hyper}
    order = [n for n in rule.signature if n != "*"]
    assert [p.name for p in params[1:-3]] == order
    keyword_only = rule.signature[rule.signature.index("*") + 1 :] if "*" in rule.signature else ()
    for p in params[1:-3]:
        assert p.default == specs[p.name].default
        assert (p.kind is p.KEYWORD_ONLY) == (p.name in keyword_only)
        default = specs[p.name].default
        shown = repr(default) if not isinstance(default, float) else f"{default:g}"
        assert f"{p.name} : " in cls.__doc__ and f"default {shown}" in cls.__doc__
    assert rule.summary in cls.__doc__ and rule.reference in cls.__doc__
    assert cls is getattr(nadam, rule.class_name) and name in methods.__all__


def test_every_rule_has_docs_text_and_a_naive_reference():
    from naive import DEFAULTS, REFERENCES

    headings = [
        line
        for line in (ROOT / "docs" / "rules.md").read_text().splitlines()
        if line.startswith("###")
    ]
    for name, rule in RULES.items():
        assert name in REFERENCES and DEFAULTS[name] == {
            k: v for k, v in rule.defaults.items() if k in rule.arguments
        }
        described = any(re.search(rf"\b{rule.class_name}\b", line) for line in headings)
        assert described, f"docs/rules.md has no section on {rule.class_name}"


def test_the_docs_table_of_rules_is_made_from_the_registry():
    sys.path.insert(0, str(ROOT / "docs" / "hooks"))
    import rules_table

    page = rules_table.on_page_markdown(f"x\n{rules_table.MARKER}\ny")
    for rule in RULES.values():
        assert f"`{rule.class_name}`" in page and rule.reference in page


# ---------------------------------------------------------------------------------
# A rule registered at run time works everywhere
# ---------------------------------------------------------------------------------


def signsgd_update(p, g, s, h, i, flags):
    d = h[0] * g[i] + h[1] * p[i]
    step = h[3] if d > h[4] else (-h[3] if d < h[4] else h[4])
    return h[2] * p[i] - step


@njit(cache=True)
def signsgd_coefficients(hp, t, aux, h):
    common_coefficients(hp, h)
    h[3] = hp[0]
    h[4] = 0.0


def naive_signsgd(p, g, lr, weight_decay=0.0, maximize=False):
    d = (-g if maximize else g) + weight_decay * p
    return p - lr * np.sign(d)


SIGNSGD = Rule(
    "signsgd",
    "SignSGD",
    "signSGD (Bernstein et al., 2018): a step of lr against the sign of the gradient.",
    r"p_t &= p_{t-1} - \gamma\, \mathrm{sign}(g_t)",
    signsgd_update,
    signsgd_coefficients,
    5,
    (Hyper("lr", 0.01, doc="Step size."), *shared_hyperparameters()),
    ("lr", "weight_decay", "*", "maximize"),
    "tests.test_architecture.naive_signsgd",
    examples=({"lr": 0.05},),
)


@pytest.fixture
def signsgd():
    rules.register(SIGNSGD)
    yield SIGNSGD
    rules.unregister("signsgd")


def quadratic(x):
    return float(x @ x), 2.0 * x


def test_a_rule_registered_at_run_time_works_everywhere(signsgd):
    """One Rule (and its naive reference, here) is all a new algorithm needs."""
    x0 = np.array([1.0, -0.5, 0.25, 0.0])
    lr = 0.05
    # The optimizer class, made from the rule.
    cls = nadam.optimizer_class("signsgd")
    assert cls.__name__ == "SignSGD" and "signSGD" in cls.__doc__
    x = x0.copy()
    opt = cls(x, lr=lr)
    ref = x0.copy()
    for _ in range(7):
        opt.step(2.0 * x)
        ref = naive_signsgd(ref, 2.0 * ref, lr)
    np.testing.assert_array_equal(x, ref)
    # minimize(method=...), the same iterates.
    res = nadam.minimize(
        quadratic, x0, jac=True, method="signsgd", options={"lr": lr, "maxiter": 7}
    )
    np.testing.assert_array_equal(res.x, ref)
    # nadam.methods through scipy.
    import scipy.optimize

    via_scipy = scipy.optimize.minimize(
        quadratic, x0, jac=True, method=methods.signsgd, options={"lr": lr, "maxiter": 7}
    )
    np.testing.assert_array_equal(via_scipy.x, ref)
    # nadam.kernels.get and the kernels' namespace.
    p, g = x0.copy(), 2.0 * x0
    s = kernels.state("signsgd", 4)
    hp = kernels.hyperparameters("signsgd", lr=lr)
    h = kernels.coefficient_buffer("signsgd")
    kernels.signsgd_coefficients(hp, 1, kernels.aux("signsgd"), h)
    kernels.get("signsgd", parallel=False)(p, g, s, h)
    np.testing.assert_array_equal(p, naive_signsgd(x0, 2.0 * x0, lr))
    assert "signsgd" in kernels.__dir__() and "signsgd" in dir(methods)


def test_a_rule_registered_at_run_time_runs_on_the_cuda_simulator(signsgd):
    pytest.importorskip("numba_cuda")
    from nadam.kernels import cuda as ck

    cuda = ck.load()
    x0 = np.array([1.0, -0.5, 0.25, 0.0, -2.0])
    h = np.zeros(5)
    signsgd_coefficients(kernels.hyperparameters("signsgd", lr=0.1), 1, np.zeros(0), h)
    d_p, d_g = cuda.to_device(x0), cuda.to_device(3.0 * x0)
    d_s = cuda.to_device(np.zeros((0, 5)))
    ck.kernel(signsgd, ())[1, 32](d_p, d_g, d_s, tuple(h))
    assert_close(d_p.copy_to_host(), naive_signsgd(x0, 3.0 * x0, 0.1))


def test_registering_refuses_duplicates_and_non_rules(signsgd):
    with pytest.raises(ValueError, match="signsgd"):
        rules.register(SIGNSGD)
    with pytest.raises(TypeError, match="Invalid rule"):
        rules.register("signsgd")

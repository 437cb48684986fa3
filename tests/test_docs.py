"""The examples of the documentation run, and say what they claim.

Every ```` ```python ```` block of ``README.md`` and of each page under ``docs/`` is
executed, page by page, in order, in one namespace per page (a block may use what
an earlier block of its page defined), in a temporary working directory, with
matplotlib on its non-interactive backend.  A block fails the test if it raises.

Conventions for writers of the docs:

* Only fences opened with ```` ```python ```` run (``bash``, ``text``, ``pycon``,
  ``yaml`` ... are shown, never run).
* To show a Python block without running it, put an HTML comment that starts with
  ``skip:`` and gives the reason on the line right before the fence (blank lines
  between are allowed); the comment is invisible on the site::

      <!-- skip: needs a GPU -->
      ```python
      ...
      ```

  A ``skip`` comment without a reason is an error, so skipping stays deliberate.
* Keep each page's examples fast (a few seconds in all): they run in every CI job.

The CUDA simulator is enabled (``cudasim``) where no GPU is present, so device
examples that do run, run on it.  Doctests of the public modules not covered by
``test_minimize.py`` run here too.
"""

from __future__ import annotations

import doctest
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from cudasim import GPU  # noqa: F401  (turns the CUDA simulator on where there is no GPU)

import nadam
import nadam.kernels
import nadam.optimizers
import nadam.plot
import nadam.vmath

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
HAVE_MPL = importlib.util.find_spec("matplotlib") is not None

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*)$")
_SKIP = re.compile(r"^\s*<!--\s*skip\b:?(?P<reason>.*?)-->\s*$")


@dataclass
class Block:
    """One fenced code block of a page."""

    page: Path
    line: int  # 1-based line of the first line of code
    lang: str
    code: str
    skip: str | None  # the reason, when marked to be skipped


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of ``page``, in order."""
    lines = page.read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence = m["indent"], m["fence"]
        lang = m["info"].strip().split(" ")[0].lower() if m["info"].strip() else ""
        prev = next((ln for ln in reversed(lines[:i]) if ln.strip()), "")
        skip = _SKIP.match(prev)
        j = i + 1
        while j < len(lines) and not (
            lines[j].strip().startswith(fence[0] * len(fence))
            and not lines[j].strip()[len(fence) :].strip()
        ):
            j += 1
        # Blocks nested in lists or admonitions are indented: strip the fence's indent.
        code = "\n".join(
            ln[len(indent) :] if ln.startswith(indent) else ln for ln in lines[i + 1 : j]
        )
        out.append(Block(page, i + 2, lang, code, skip["reason"].strip() if skip else None))
        i = j + 1
    return out


def python_blocks(page: Path) -> list[Block]:
    return [b for b in blocks(page) if b.lang in ("python", "py", "python3")]


PAGES_WITH_CODE = [p for p in PAGES if python_blocks(p)]


def _id(page: Path) -> str:
    return str(page.relative_to(ROOT))


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A scratch working directory and a headless matplotlib; figures closed after."""
    monkeypatch.chdir(tmp_path)
    if HAVE_MPL:
        import matplotlib

        matplotlib.use("Agg")
    yield tmp_path
    if HAVE_MPL:
        import matplotlib.pyplot as plt

        plt.close("all")


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=_id)
def test_page_examples_run(page, sandbox):
    todo = [b for b in python_blocks(page) if b.skip is None]
    if not HAVE_MPL and any("plot_history" in b.code for b in todo):
        pytest.skip("matplotlib is not installed (nadam[plot])")
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for b in todo:
        # Pad with newlines so tracebacks give the line number in the page.
        code = compile("\n" * (b.line - 1) + b.code, str(page), "exec")
        try:
            exec(code, namespace)
        except Exception as exc:
            raise AssertionError(f"{_id(page)}, block at line {b.line} raised {exc!r}") from exc


def test_every_page_is_found_and_skips_are_explained():
    assert (ROOT / "README.md") in PAGES_WITH_CODE
    assert len(PAGES_WITH_CODE) >= 4
    for page in PAGES:
        for b in python_blocks(page):
            if b.skip is not None:
                assert b.skip, f"{_id(page)}:{b.line}: <!-- skip: ... --> needs a reason"


def test_block_parser(tmp_path):
    text = (
        "intro\n```python\na = 1\n```\n\n<!-- skip: needs a GPU -->\n\n```python\nb = 2\n```\n"
        "```bash\nls\n```\n- item\n\n    ```python\n    c = 3\n    ```\n"
    )
    page = tmp_path / "example.md"
    page.write_text(text)
    got = [(b.lang, b.code, b.skip, b.line) for b in blocks(page)]
    assert got == [
        ("python", "a = 1", None, 3),
        ("python", "b = 2", "needs a GPU", 9),
        ("bash", "ls", None, 12),
        ("python", "c = 3", None, 17),
    ]


# Doctests of the public modules that test_minimize.py does not already run.
DOCTEST_MODULES = [nadam.optimizers, nadam.kernels, nadam.vmath]
if HAVE_MPL:
    DOCTEST_MODULES.append(nadam.plot)


@pytest.mark.parametrize("module", DOCTEST_MODULES, ids=lambda m: m.__name__)
def test_module_doctests(module, sandbox):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0

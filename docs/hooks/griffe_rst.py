"""A griffe extension: the reStructuredText bits of nadam's numpydoc docstrings as Markdown.

nadam's docstrings follow numpydoc, which is reStructuredText: Sphinx roles
(``:func:`minimize```, ``:math:`\\gamma```) and ``.. math::`` blocks.  mkdocstrings
renders docstrings as Markdown, where these would show up verbatim; this extension
rewrites them, once per docstring, into what the site's Markdown understands:

* ``:math:`x``` -> ``\\(x\\)`` and ``.. math::`` blocks -> ``\\[ ... \\]`` (rendered by
  pymdownx.arithmatex and MathJax; several lines become an ``aligned``/``gathered``
  environment, as Sphinx does with ``split``);
* ``:func:`a.b```, ``:class:`~a.b``` and the other Python roles -> inline code
  (``~`` keeps the last component, as in Sphinx).

Loaded by mkdocstrings (``extensions:`` in mkdocs.yml); the source stays Sphinx-compatible.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(math|func|meth|class|mod|attr|data|exc|obj):`([^`]+)`")
_DIRECTIVE = re.compile(r"^(\s*)\.\. math::(.*)$")


def _role(match: re.Match) -> str:
    kind, text = match.groups()
    if kind == "math":
        return f"\\({text}\\)"
    if text.startswith("~"):
        text = text[1:].rsplit(".", 1)[-1]
    if kind in ("func", "meth") and not text.endswith(")"):
        text += "()"
    return f"`{text}`"


def _math_block(indent: str, body: list[str]) -> list[str]:
    # Equations separated by blank lines are separate rows, as in Sphinx.
    paragraphs = [p.strip() for p in "\n".join(body).split("\n\n") if p.strip()]
    tex = " \\\\\n".join(paragraphs)
    # Only line breaks outside an environment (cases, matrix) need one around them.
    outer = re.sub(r"\\begin\{(\w+)\}.*?\\end\{\1\}", "", tex, flags=re.S)
    if "\\\\" in outer:
        env = "aligned" if "&" in outer else "gathered"
        tex = f"\\begin{{{env}}}\n{tex}\n\\end{{{env}}}"
    body = [indent + line for line in tex.splitlines()]
    return ["", f"{indent}\\[", *body, f"{indent}\\]", ""]


def rst_to_markdown(text: str) -> str:
    """Rewrite the roles and ``.. math::`` blocks of a docstring (see the module)."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        m = _DIRECTIVE.match(lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        indent, inline = m.groups()
        j = i + 1
        while j < len(lines) and (
            not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > len(indent)
        ):
            j += 1
        body = textwrap.dedent("\n".join(lines[i + 1 : j])).splitlines()
        out += _math_block(indent, [inline.strip(), ""] + body if inline.strip() else body)
        i = j
    return _ROLE.sub(_role, "\n".join(out))


class RstToMarkdown(griffe.Extension):
    """Rewrite every docstring with :func:`rst_to_markdown` as it is loaded."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rst_to_markdown(obj.docstring.value)

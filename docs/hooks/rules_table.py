"""mkdocs hook: the table of rules on docs/rules.md, made from the registry.

Replaces the line ``<!-- rules-table -->`` of a page with one row per rule of
:data:`nadam.rules.RULES`: its class, defaults, state slots and memory traffic, so
that the docs cannot drift from the code.
"""

from __future__ import annotations

from nadam.rules import RULES

MARKER = "<!-- rules-table -->"


def _value(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def table() -> str:
    """The Markdown table of every rule."""
    rows = [
        "| rule | reference | defaults | state | arrays moved per element |",
        "|---|---|---|---|---|",
    ]
    for rule in RULES.values():
        defaults = ", ".join(
            f"{h.name} {_value(h.default)}"
            for h in rule.hyper
            if not h.fixed and h.name not in ("weight_decay", "maximize", "decoupled_weight_decay")
        )
        layouts = {}
        for example in ({}, *rule.examples):
            values = {**rule.defaults, **rule.validate(dict(example))}
            flags = rule.flags(values)
            layouts[flags] = (rule.slots(flags), rule.traffic(flags))
        slots = sorted({s for names, _ in layouts.values() for s in names})
        traffic = sorted({t for _, t in layouts.values()})
        moved = (
            " to ".join(map(str, (traffic[0], traffic[-1])))
            if len(traffic) > 1
            else str(traffic[0])
        )
        rows.append(
            f"| `{rule.class_name}` | `{rule.reference}` | {defaults} | "
            f"{', '.join(f'`{s}`' for s in slots) or '—'} | {moved} |"
        )
    return "\n".join(rows)


def on_page_markdown(markdown: str, **kwargs) -> str:
    return markdown.replace(MARKER, table()) if MARKER in markdown else markdown

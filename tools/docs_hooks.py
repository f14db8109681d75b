"""MkDocs hooks of the documentation site (``mkdocs.yml``: ``hooks``).

* ``<!-- umtl:config-reference -->`` in a page becomes the reference of every key of a training
config, generated from the dataclasses of :mod:`uncertainty_mtl.config`: the key, its type, its
default and the comment written beside the field in the source. A field's comment is the one on
its line and the comment-only lines that follow it.
* In the rendered pages, the Sphinx roles of the docstrings (``:class:`~a.B` ``, which the API
  reference shows as written) become plain code: ``B``'s full name, without the role.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from typing import Any

import yaml

__all__ = ["config_reference", "field_comments", "on_page_content", "on_page_markdown"]

PLACEHOLDER = "<!-- umtl:config-reference -->"

_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj):(<code>)~?")
_FIELD = re.compile(r"^\s{4}(\w+):[^#]*?(?:#\s?(.*))?$")
_COMMENT = re.compile(r"^\s{4}#\s?(.*)$")


def field_comments(cls: type) -> dict[str, str]:
    """The comment of each field of the dataclass ``cls``, as written in its source."""
    comments: dict[str, list[str]] = {}
    current: str | None = None
    for line in inspect.getsource(cls).splitlines():
        if (m := _COMMENT.match(line)) and current is not None:
            comments[current].append(m.group(1).strip())
        elif m := _FIELD.match(line):
            current = m.group(1)
            comments[current] = [m.group(2).strip()] if m.group(2) else []
        elif current is not None and re.match(r"^(\s{8}|\s{4}\))", line):
            if "#" in line:  # the closing line of a field written over several lines
                comments[current].append(line.split("#", 1)[1].strip())
        elif line.strip():
            current = None
    return {name: " ".join(parts) for name, parts in comments.items()}


def _type_name(hint: Any) -> str:
    if typing.get_args(hint) or not hasattr(hint, "__name__"):
        return repr(hint).replace("typing.", "")
    return str(hint.__name__)


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _rows(cls: type, prefix: str) -> list[tuple[str, str, str, str]]:
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    rows: list[tuple[str, str, str, str]] = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            rows += _rows(typing.cast(type, hint), f"{key}.")
            continue
        shown = yaml.safe_dump(_default(f), default_flow_style=True, sort_keys=False)
        shown = shown.removesuffix("\n").removesuffix("\n...")  # as written in a YAML config
        rows.append((key, _type_name(hint), shown, comments.get(f.name, "")))
    return rows


def config_reference() -> str:
    """Markdown: one table per section of :class:`~uncertainty_mtl.config.TrainConfig`."""
    from uncertainty_mtl.config import TrainConfig

    out: list[str] = []
    top = [r for r in _rows(TrainConfig, "") if "." not in r[0]]
    if top:
        out.append(_table("Top level", top))
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            cls = typing.cast(type, hint)
            title = f"`{f.name}`: {inspect.getdoc(cls) or ''}".rstrip(": ")
            out.append(_table(title, _rows(cls, f"{f.name}.")))
    return "\n\n".join(out) + "\n"


def _table(title: str, rows: list[tuple[str, str, str, str]]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = [f"### {title}", "", "| key | type | default | meaning |", "|---|---|---|---|"]
    lines += [f"| `{k}` | `{cell(t)}` | `{cell(d)}` | {cell(c)} |" for k, t, d, c in rows]
    return "\n".join(lines)


def on_page_markdown(markdown: str, **_: Any) -> str:
    """Replaces the placeholder of the config reference by the generated tables."""
    if PLACEHOLDER in markdown:
        markdown = markdown.replace(PLACEHOLDER, config_reference())
    return markdown


def on_page_content(html: str, **_: Any) -> str:
    """Drops the Sphinx roles the docstrings write (``:class:``, ``:func:``, ...) before their
    code, and the ``~`` that shortens a name in Sphinx."""
    return _ROLE.sub(r"\1", html)

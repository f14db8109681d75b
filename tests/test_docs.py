"""The README and the documentation site: every Python block runs, as the site renders it.

A page's ``--8<-- "FILE[:SECTION]"`` lines are expanded first (the README's quickstart, loss and
"which weighting" sections are included by the docs), so the code that is tested is the code a
reader sees. The blocks of one page run in order in one namespace, as a reader pastes them, in
an empty working directory.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

mktestdocs = pytest.importorskip("mktestdocs", reason="the 'docs' extra is not installed")

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
#: The results of the studies: written by the code, no code blocks.
GENERATED = {"results", "two-task-digits", "two-task-fashion-mnist", "qm9"}
PAGES = [
    page
    for page in [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
    if page.parent == ROOT or page.relative_to(DOCS).parts[0] not in GENERATED
    if "```python" in page.read_text(encoding="utf-8")
]
INCLUDE = re.compile(r'^[ \t]*--8<-- "([^":]+)(?::([\w-]+))?"[ \t]*$', re.M)
#: A titled block that shows a whole file, e.g. ```python title="examples/x.py"
SHOWN_FILE = re.compile(r'^```python title="([^"]+)"\n--8<-- "\1"\n```$', re.M)


def expand(text: str) -> str:
    """``text`` with each snippet line replaced by the file (or its section) it names."""

    def one(match: re.Match[str]) -> str:
        body = (ROOT / match.group(1)).read_text(encoding="utf-8")
        if section := match.group(2):
            start = re.search(rf"^.*--8<-- \[start:{section}\].*\n", body, re.M)
            end = re.search(rf"^.*--8<-- \[end:{section}\].*$", body, re.M)
            assert start and end, f"{match.group(1)} has no section {section!r}"
            body = body[start.end() : end.start()]
        return body.rstrip("\n")

    return INCLUDE.sub(one, text)


def _page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_python_block_of_the_page_runs(page, tmp_path, monkeypatch):
    text = page.read_text(encoding="utf-8")
    shown = SHOWN_FILE.findall(text)
    recipes_test = (ROOT / "tests" / "test_recipes.py").read_text(encoding="utf-8")
    for path in shown:  # whole files: run by their own tests, not here
        assert Path(path).stem in recipes_test, f"{page.name} shows {path}, which no test runs"
    blocks = mktestdocs.grab_code_blocks(expand(SHOWN_FILE.sub("", text)), lang="python")
    assert blocks or shown
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "__main__"}
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"{page.name}[block {i}]", "exec"), namespace)
        except Exception as err:  # pragma: no cover - the failure message
            pytest.fail(f"{_page_id(page)}, Python block {i}: {type(err).__name__}: {err}")


def test_expand_takes_a_section_and_the_readme_sections_exist():
    text = expand('a\n--8<-- "README.md:loss"\nb')
    assert text.startswith("a\n```python\nimport torch") and text.endswith("```\nb")
    assert "--8<--" not in text
    for section in ("quickstart", "first-run", "loss", "which"):
        assert "--8<--" not in expand(f'--8<-- "README.md:{section}"')


def _hooks() -> Any:
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "tools" / "docs_hooks.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("docs_hooks", module)
    spec.loader.exec_module(module)
    return module


def _leaves(cls: type, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out |= _leaves(hints[f.name], f"{prefix}{f.name}.")
        else:
            out[f"{prefix}{f.name}"] = getattr(cls(), f.name)
    return out


def test_the_config_reference_has_every_key_with_its_default_and_comment():
    from uncertainty_mtl.config import TrainConfig

    reference = _hooks().config_reference()
    rows = {
        m.group(1): (m.group(2), m.group(3))
        for m in re.finditer(r"^\| `([\w.]+)` \| `[^`]*` \| `([^`]*)` \| (.*) \|$", reference, re.M)
    }
    leaves = _leaves(TrainConfig)
    assert set(rows) == set(leaves)
    for key, value in leaves.items():
        assert yaml.safe_load(rows[key][0]) == value, key
        assert rows[key][1].strip(), f"{key} has no comment in uncertainty_mtl/config.py"
    # a comment over several lines, and one on the closing line of a field
    assert 'or "auto" (each task\'s optimum' in rows["weighting.init_log_var"][1]
    assert rows["data.synth_split_sizes"][1] == "frames per split of the generated city"


def test_the_hook_replaces_the_placeholder_only():
    hooks = _hooks()
    page = f"# Configs\n\n{hooks.PLACEHOLDER}\n"
    assert "`optim.lr`" in hooks.on_page_markdown(page) and hooks.PLACEHOLDER not in (
        hooks.on_page_markdown(page)
    )
    assert hooks.on_page_markdown("no placeholder") == "no placeholder"


def test_the_docstring_roles_become_plain_code():
    html = "see :class:<code>~uncertainty_mtl.config.TrainConfig</code> and :func:<code>f</code>"
    assert _hooks().on_page_content(html) == (
        "see <code>uncertainty_mtl.config.TrainConfig</code> and <code>f</code>"
    )


def test_the_docstring_examples_run():
    import doctest

    from uncertainty_mtl.weighting import step, uncertainty

    found = doctest.testmod(uncertainty, raise_on_error=False)
    assert found.attempted >= 4 and found.failed == 0
    found = doctest.testmod(step, raise_on_error=False)
    assert found.attempted >= 10 and found.failed == 0


def test_make_docs_is_strict_and_not_quiet():
    """``mkdocs build --strict --quiet`` exits 0 on warnings (quiet stops them being counted),
    which let a broken anchor through once: ``make docs`` must stay strict and not quiet."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    (recipe,) = [line for line in makefile.splitlines() if "mkdocs build" in line]
    assert "--strict" in recipe
    assert "--quiet" not in recipe and " -q" not in recipe

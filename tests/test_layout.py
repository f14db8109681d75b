"""The package's shape: imports point one way (no cycle, between modules or packages), layers
are held, and no module imports another package's private names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "uncertainty_mtl"

#: Packages (or top-level modules) by layer: a module imports from its own layer (with no cycle
#: between packages, checked below) or from a lower one. weighting/ and tasks/ need torch alone.
LAYERS: dict[str, int] = {
    **dict.fromkeys(["_io", "_procs", "_install", "errors", "weighting", "tasks"], 0),
    **dict.fromkeys(["models", "data", "metrics", "reporting"], 1),
    "inference": 2,
    "config": 3,
    "engine": 4,
    "experiments": 5,
    **dict.fromkeys(["cli", "__main__", "__init__"], 6),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """``(module, names)`` of every ``uncertainty_mtl`` import in a file, functions included."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("uncertainty_mtl"):
                found.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.startswith("uncertainty_mtl")]
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for target, names in _imports(path):
            for candidate in [f"{target}.{n}" for n in names] or [target]:
                hit = candidate if candidate in modules else target
                if hit in modules and hit != name:
                    graph[name].add(hit)
    return graph


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_between_modules():
    assert _cycle(_graph()) is None


def test_no_import_cycle_between_packages():
    packages: dict[str, set[str]] = {}
    for module, targets in _graph().items():
        if _package(module) == "__init__":
            continue  # the top-level package re-exports the loss library
        packages.setdefault(_package(module), set()).update(
            _package(t) for t in targets if _package(t) != _package(module)
        )
    assert _cycle(packages) is None


def test_every_import_points_to_the_same_package_or_a_lower_layer():
    wrong = []
    for module, targets in _graph().items():
        for target in targets:
            a, b = _package(module), _package(target)
            if a != b and LAYERS[b] > LAYERS[a]:
                wrong.append(f"{module} -> {target}")
    assert wrong == []


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: p.name)
def test_no_private_name_is_imported_from_another_package(path):
    module = _module_name(path)
    for target, names in _imports(path):
        if target in ("uncertainty_mtl._io", "uncertainty_mtl._procs", "uncertainty_mtl._install"):
            continue  # the package's shared file, process and install helpers, private to it
        if _package(target) == _package(module):
            continue
        private = [n for n in names if n.startswith("_")]
        private += [p for p in target.split(".") if p.startswith("_")]
        assert not private, f"{module} imports {private} from {target}"


#: The most lines a module may have: past it, a module holds several jobs.
MAX_LINES = 500


def test_every_module_is_under_the_line_limit():
    sizes = {
        str(p.relative_to(SRC)): len(p.read_text(encoding="utf-8").splitlines())
        for p in SRC.rglob("*.py")
    }
    over = {name: n for name, n in sizes.items() if n > MAX_LINES}
    assert over == {}, f"over {MAX_LINES} lines: {over}"


#: experiments/ by job: what every study shares at its top, each study family in its own
#: subpackage (the paper's scene studies, the methods benchmark, two-task, QM9).
EXPERIMENT_JOBS = {"paper", "benchmark", "two_task", "qm9"}
EXPERIMENT_SHARED = {"__init__.py", "runner.py", "executors.py"}


def test_experiments_are_grouped_by_job():
    root = SRC / "experiments"
    loose = {p.name for p in root.glob("*.py")} - EXPERIMENT_SHARED
    packages = {p.name for p in root.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert loose == set() and packages == EXPERIMENT_JOBS, (loose, packages)


def test_a_check_that_the_layout_tests_can_fail():
    """The helpers see what they must: a cycle, and the one training loop's users."""
    assert _cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    graph = _graph()
    users = {m for m, targets in graph.items() if "uncertainty_mtl.engine.loop" in targets}
    assert {
        "uncertainty_mtl.engine.scene",
        "uncertainty_mtl.engine.in_memory",
    } <= users

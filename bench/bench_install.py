"""How much each install of the package brings: the core (the loss: torch and numpy) against
each extra and ``all``. Prints JSON; run on demand in the project's environment.

Sizes are the installed files of every distribution an install needs (its requirements'
closure, markers evaluated for this machine), read from the distributions' RECORDs; the
project itself is excluded.

    python bench/bench_install.py
"""

from __future__ import annotations

import importlib.metadata as md
import json
import platform

from packaging.requirements import Requirement

EXTRAS = ("scene", "report", "slurm", "all")


def _closure(requirements: list[Requirement]) -> set[str]:
    seen: set[str] = set()
    todo = list(requirements)
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        dist = md.distribution(req.name)
        name = dist.metadata["Name"].lower()
        if name in seen:
            continue
        seen.add(name)
        todo += [Requirement(r) for r in dist.requires or []]
    return seen


def _requirements(extra: str | None) -> list[Requirement]:
    """The project's own requirements for ``pip install uncertainty-mtl[extra]``."""
    found = []
    for text in md.requires("uncertainty-mtl") or []:
        req = Requirement(text)
        wanted = req.marker is None or (extra and req.marker.evaluate({"extra": extra}))
        if not wanted:
            continue
        if req.name.lower() == "uncertainty-mtl":  # `all` names the other extras
            for inner in req.extras:
                found += _requirements(inner)
        else:
            req.marker = None  # chosen; its dependencies' markers are judged in the closure
            found.append(req)
    return found


def _size(names: set[str]) -> int:
    total = 0
    for name in names:
        for file in md.distribution(name).files or []:
            total += file.size or 0
    return total


def main() -> None:
    installs = {"core": _closure(_requirements(None))}
    for extra in EXTRAS:
        installs[extra] = installs["core"] | _closure(_requirements(extra))
    sizes = {name: _size(names) for name, names in installs.items()}
    torch_only = _size(_closure([Requirement("torch")]))
    print(
        json.dumps(
            {
                "machine": platform.platform(),
                "installed_mib": {k: round(v / 2**20, 1) for k, v in sizes.items()},
                "distributions": {k: len(v) for k, v in installs.items()},
                "core_beyond_torch_mib": round((sizes["core"] - torch_only) / 2**20, 1),
                "all_over_core_mib": round((sizes["all"] - sizes["core"]) / 2**20, 1),
                "core_distributions": sorted(installs["core"]),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

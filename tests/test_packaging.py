"""The light install: the wheel's core needs torch and numpy only, and the loss works with
nothing else; the scene commands then say which extra to install."""

from __future__ import annotations

import importlib.metadata as md
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import uncertainty_mtl

ROOT = Path(__file__).resolve().parents[1]


def _closure(requirements: list[str]) -> set[str]:
    """The installed distributions ``requirements`` need (markers evaluated, no extras)."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = md.distribution(req.name).metadata["Name"]
        if name.lower() in seen:
            continue
        seen.add(name.lower())
        todo += [Requirement(r) for r in md.requires(name) or []]
    return seen


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The sdist and the wheel of ``python -m build``, as a release would make them."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (sdist,) = out.glob("uncertainty_mtl-*.tar.gz")
    (wheel,) = out.glob("uncertainty_mtl-*.whl")
    return sdist, wheel


@pytest.fixture(scope="module", params=["wheel", "sdist"])
def wheel(request: pytest.FixtureRequest, release, tmp_path_factory) -> Path:
    """The release's wheel, or a wheel built from its sdist alone (what pip does with it)."""
    sdist, built = release
    if request.param == "wheel":
        return built
    unpacked = tmp_path_factory.mktemp("sdist")
    with tarfile.open(sdist) as tar:
        tar.extractall(unpacked, filter="data")
    (source,) = unpacked.iterdir()
    out = tmp_path_factory.mktemp("from-sdist")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(source),
        ],
        check=True,
    )
    (path,) = out.glob("uncertainty_mtl-*.whl")
    return path


def _core_requirements(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        (name,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = z.read(name).decode()
    requires = re.findall(r"^Requires-Dist: (.+)$", metadata, flags=re.M)
    return [r for r in requires if "extra ==" not in r]


@pytest.mark.slow
def test_core_install_is_torch_and_numpy_and_the_loss_works_alone(wheel, tmp_path):
    core = _core_requirements(wheel)
    assert sorted(Requirement(r).name.lower() for r in core) == ["numpy", "torch"]
    assert f"-{uncertainty_mtl.__version__}-" in wheel.name  # the one version source

    # A fresh environment holding the wheel and what its core needs, nothing else.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    visible = tmp_path / "core-deps"
    visible.mkdir()
    for dist in _closure(core):
        for file in md.distribution(dist).files or []:
            top = Path(str(file)).parts[0]
            source = Path(str(md.distribution(dist).locate_file(top)))
            target = visible / top
            if not target.exists() and top != ".." and source.exists():
                target.symlink_to(source)
    (site / "core-deps.pth").write_text(str(visible) + "\n")
    python = str(venv / "bin" / "python")

    script = (
        "import torch, uncertainty_mtl\n"
        "from uncertainty_mtl import UncertaintyWeighting, parameter_groups, weighting_step\n"
        "w = UncertaintyWeighting({'a': 'gaussian', 'b': 'laplace'})\n"
        "total = w({'a': torch.tensor(2.0), 'b': torch.tensor(3.0)})\n"
        "assert abs(float(total) - (0.5 * 2.0 + 3.0)) < 1e-6, float(total)\n"
        "for missing in ('sklearn', 'torchvision', 'yaml', 'matplotlib', 'tqdm'):\n"
        "    try:\n"
        "        __import__(missing)\n"
        "    except ModuleNotFoundError:\n"
        "        continue\n"
        "    raise SystemExit(f'{missing} is importable in the core environment')\n"
        "print(uncertainty_mtl.__file__)\n"
    )
    done = subprocess.run([python, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert str(site) in done.stdout  # the wheel's copy, not the source tree

    for command in (
        ["reproduce", "table1", "--preset", "smoke"],
        ["train", "--config", "smoke", "--out", "run"],
    ):
        done = subprocess.run(
            [python, "-m", "uncertainty_mtl", *command],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "'scene' extra" in lines[0], done.stderr
        assert "pip install 'uncertainty-mtl[scene]'" in lines[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_the_sdist_holds_what_a_build_and_a_reader_need(release):
    sdist, wheel = release
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for needed in (
        "pyproject.toml",
        "README.md",
        "LICENSE",
        "CHANGELOG.md",
        "src/uncertainty_mtl/py.typed",
        "src/uncertainty_mtl/configs/smoke.yaml",
        "src/uncertainty_mtl/configs/cpu/three-task.yaml",
    ):
        assert needed in names, needed
    with zipfile.ZipFile(wheel) as z:
        inside = set(z.namelist())
    assert "uncertainty_mtl/configs/paper/cityscapes/three-task.yaml" in inside
    assert not any(n.startswith(("tests/", "docs/")) for n in inside)


def test_the_changelog_has_the_version_of_the_package():
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert f"## {uncertainty_mtl.__version__}" in text


@pytest.mark.parametrize(
    ("origin", "expected"),
    [
        (
            {"url": "file:///home/me/uncertainty-mtl", "dir_info": {"editable": True}},
            "pip install -e '/home/me/uncertainty-mtl[qm9]'",
        ),
        ({"url": "file:///srv/umtl", "dir_info": {}}, "pip install '/srv/umtl[qm9]'"),
        (
            {
                "url": "https://example.org/umtl.git",
                "vcs_info": {"vcs": "git", "commit_id": "0123abc"},
            },
            "pip install 'uncertainty-mtl[qm9] @ git+https://example.org/umtl.git@0123abc'",
        ),
        ({}, "pip install 'uncertainty-mtl[qm9]'"),  # from an index
    ],
)
def test_an_extra_is_added_from_where_the_package_came_from(origin, expected):
    from uncertainty_mtl._install import install_command

    assert install_command("qm9", origin) == expected


def test_this_clone_names_itself_in_the_hint():
    from uncertainty_mtl._install import install_command

    # make install puts the clone in editable: the hint must point at this directory
    assert install_command("qm9") == f"pip install -e '{ROOT}[qm9]'"

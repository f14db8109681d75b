"""QM9 (Ramakrishnan et al., 2014), the many-task regression benchmark, from the CSV files that
the PyPI package ``qm9pack`` ships in its wheel (``pip install 'uncertainty-mtl[qm9]'``).

Our own reader of ``qm9pack/data/qm9_part{1,2,3}.csv``: the package's loader needs
``pkg_resources`` and pandas, so it is never imported; its data directory is found from its
install location. Nothing is downloaded.

* :data:`TARGETS`: the files' 12 properties, each in its own unit as the files give it (Debye,
  bohr³, Hartree, bohr², cal/(mol·K)); :data:`ATOMISATION`: the four energies less their atoms'
  reference energies (:data:`ATOM_REFERENCE`), which is what the multi-task literature trains;
  :data:`LITERATURE_TARGETS`: the 11 targets of Nash-MTL's protocol (FAMO's code trains the
  same): every property but the gap, the energies as atomisation energies;
* :func:`read_qm9`: the molecules (elements, coordinates in Å) and their targets; a bad or
  missing value is a :class:`~uncertainty_mtl.errors.DataError` naming the file, the line and
  the column;
* :func:`coulomb_eigenvalues`: the sorted eigenvalues of each molecule's Coulomb matrix (Rupp
  et al., 2012), a descriptor invariant to rotation, translation and the atoms' order;
* :func:`split_indices`: the seeded 110,000 / 10,000 / rest split of Nash-MTL's protocol, and
  :func:`target_statistics` from the training split only.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from uncertainty_mtl._io import atomic_write
from uncertainty_mtl.errors import DataError

__all__ = [
    "ALL_TARGETS",
    "ATOMISATION",
    "ATOM_REFERENCE",
    "FILES",
    "LITERATURE_TARGETS",
    "MAX_ATOMS",
    "TARGETS",
    "Molecules",
    "QM9Arrays",
    "Target",
    "atomisation_energies",
    "coulomb_eigenvalues",
    "how_to_get_qm9",
    "load_qm9_arrays",
    "qm9pack_dir",
    "read_qm9",
    "split_indices",
    "target_statistics",
]

FILES = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")


def how_to_get_qm9() -> str:
    """How to get QM9's files: the extra (for this installation), or a directory of them."""
    from uncertainty_mtl._install import install_command

    return (
        f"install the extra: {install_command('qm9')} (the PyPI package qm9pack, 104 MB, "
        "ships the CSV files), or give the directory that holds " + ", ".join(FILES)
    )


#: The largest molecule of QM9 (heavy atoms and hydrogens).
MAX_ATOMS = 29
#: Nuclear charge of QM9's elements.
CHARGES = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}
_ANGSTROM_IN_BOHR = 1.0 / 0.529177210903


@dataclass(frozen=True)
class Target:
    """One regression target: its name, the CSV column it is read from and its unit."""

    name: str
    column: str
    unit: str
    label: str


#: The properties the files give, in their units.
TARGETS: tuple[Target, ...] = (
    Target("mu", "Dipole_debye", "D", "dipole moment"),
    Target("alpha", "Polarizability_bohr3", "bohr³", "isotropic polarisability"),
    Target("homo", "HOMO_au", "Ha", "HOMO energy"),
    Target("lumo", "LUMO_au", "Ha", "LUMO energy"),
    Target("gap", "HOMO_LUMO_gap_au", "Ha", "HOMO-LUMO gap"),
    Target("r2", "R2_bohr2", "bohr²", "electronic spatial extent ⟨R²⟩"),
    Target("zpve", "ZPVE_au", "Ha", "zero-point vibrational energy"),
    Target("u0", "InternalEnergy_0K_au", "Ha", "internal energy at 0 K"),
    Target("u", "InternalEnergy_298K_au", "Ha", "internal energy at 298.15 K"),
    Target("h", "Enthalphy_298K_au", "Ha", "enthalpy at 298.15 K"),
    Target("g", "GibbsFreeEnergy_298K_au", "Ha", "free energy at 298.15 K"),
    Target("cv", "Heatcapacity_Cv_cal_mol_K", "cal/(mol·K)", "heat capacity at 298.15 K"),
)
_COLUMNS = ("XYZ_file", "N_atoms", "Elements", "XYZ_Ang")
#: Each element's energy as a free atom at the files' level of theory (B3LYP/6-31G(2df,p)),
#: in Hartree, for U0, U, H and G: the reference table published with QM9 (``atomref``).
ATOM_REFERENCE: dict[int, tuple[float, float, float, float]] = {
    1: (-0.500273, -0.498857, -0.497912, -0.510927),
    6: (-37.846772, -37.845355, -37.844411, -37.861317),
    7: (-54.583861, -54.582445, -54.581501, -54.598897),
    8: (-75.064579, -75.063163, -75.062219, -75.079532),
    9: (-99.718730, -99.717314, -99.716370, -99.733544),
}
#: U0, U, H and G less the sum of their atoms' :data:`ATOM_REFERENCE` (the energy that
#: binds the atoms), computed by :func:`atomisation_energies`; ``column`` names the source.
ATOMISATION: tuple[Target, ...] = (
    Target("u0_atom", "InternalEnergy_0K_au", "Ha", "atomisation energy U0"),
    Target("u_atom", "InternalEnergy_298K_au", "Ha", "atomisation energy U"),
    Target("h_atom", "Enthalphy_298K_au", "Ha", "atomisation enthalpy H"),
    Target("g_atom", "GibbsFreeEnergy_298K_au", "Ha", "atomisation free energy G"),
)
#: The columns of :attr:`QM9Arrays.targets`.
ALL_TARGETS: tuple[Target, ...] = TARGETS + ATOMISATION
#: Nash-MTL's 11 targets, in its order (its ``target_idx`` of PyG's QM9: the gap left out,
#: the energies as atomisation energies, Cv last).
LITERATURE_TARGETS = (
    "mu",
    "alpha",
    "homo",
    "lumo",
    "r2",
    "zpve",
    "u0_atom",
    "u_atom",
    "h_atom",
    "g_atom",
    "cv",
)


@dataclass(frozen=True)
class Molecules:
    """QM9's molecules, in file order.

    Attributes:
        names: each molecule's ``XYZ_file`` (``dsgdb9nsd_000001.xyz``, ...).
        charges: ``[N, MAX_ATOMS]`` nuclear charges, 0 past a molecule's last atom.
        positions: ``[N, MAX_ATOMS, 3]`` coordinates in Å, 0 past the last atom.
        targets: ``[N, len(TARGETS)]`` float64, in :data:`TARGETS`' order and units.
    """

    names: tuple[str, ...]
    charges: np.ndarray
    positions: np.ndarray
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.names)


def qm9pack_dir() -> Path | None:
    """The data directory of the installed ``qm9pack`` (found without importing it), or
    ``None`` when it is not installed."""
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    return folder if folder.is_dir() else None


def _parse_list(text: str, where: str, column: str) -> list[Any]:
    try:  # Python literals: the files write 0. and 1. (not JSON) and quote with '
        value = ast.literal_eval(text)
    except (SyntaxError, ValueError):
        raise DataError(f"{where}: column {column}: not a list: {text[:40]!r}") from None
    if not isinstance(value, list):
        raise DataError(f"{where}: column {column}: not a list: {text[:40]!r}")
    return value


def _read_file(path: Path) -> tuple[list[str], list[np.ndarray], list[np.ndarray], np.ndarray]:
    names: list[str] = []
    charges: list[np.ndarray] = []
    positions: list[np.ndarray] = []
    targets: list[list[float]] = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}: empty file; expected a QM9 CSV of qm9pack")
        wanted = (*_COLUMNS, *(t.column for t in TARGETS))
        missing = [c for c in wanted if c not in header]
        if missing:
            raise DataError(f"{path}: missing column(s) {missing}; expected qm9pack's CSV format")
        col = {c: header.index(c) for c in wanted}
        for line, row in enumerate(reader, start=2):
            where = f"{path}:{line}"
            if len(row) != len(header):
                raise DataError(f"{where}: {len(row)} fields, the header has {len(header)}")
            elements = _parse_list(row[col["Elements"]], where, "Elements")
            xyz = _parse_list(row[col["XYZ_Ang"]], where, "XYZ_Ang")
            unknown = sorted({str(e) for e in elements if e not in CHARGES})
            if unknown:
                raise DataError(
                    f"{where}: column Elements: unknown element(s) {unknown}; expected "
                    f"{sorted(CHARGES)}"
                )
            if not 0 < len(elements) <= MAX_ATOMS:
                raise DataError(
                    f"{where}: column Elements: {len(elements)} atoms; expected 1..{MAX_ATOMS}"
                )
            try:
                coords = np.asarray(xyz, dtype=np.float64)
            except (TypeError, ValueError):
                raise DataError(f"{where}: column XYZ_Ang: not a list of [x, y, z]") from None
            if coords.shape != (len(elements), 3) or not np.isfinite(coords).all():
                raise DataError(
                    f"{where}: column XYZ_Ang: shape {list(coords.shape)}, expected "
                    f"[{len(elements)}, 3] finite coordinates (one per element)"
                )
            values = []
            for target in TARGETS:
                text = row[col[target.column]]
                try:
                    value = float(text)
                except ValueError:
                    value = float("nan")
                if not np.isfinite(value):
                    raise DataError(f"{where}: column {target.column}: {text!r} is not a number")
                values.append(value)
            names.append(row[col["XYZ_file"]])
            charges.append(np.array([CHARGES[e] for e in elements], dtype=np.int64))
            positions.append(coords)
            targets.append(values)
    return (
        names,
        charges,
        positions,
        np.asarray(targets, dtype=np.float64).reshape(-1, len(TARGETS)),
    )


def read_qm9(
    folder: str | os.PathLike[str] | None = None, files: Sequence[str] = FILES
) -> Molecules:
    """The molecules of ``files`` in ``folder`` (default: the installed ``qm9pack``'s).

    Raises:
        DataError: no folder and no ``qm9pack``, a missing file, or a bad row (named by file,
            line and column).
    """
    root = Path(folder) if folder is not None else qm9pack_dir()
    if root is None:
        raise DataError(f"QM9 needs its CSV files: qm9pack is not installed; {how_to_get_qm9()}")
    absent = [name for name in files if not (root / name).is_file()]
    if absent:
        raise DataError(f"{root}: no {', '.join(absent)}; {how_to_get_qm9()}")
    names: list[str] = []
    charges: list[np.ndarray] = []
    positions: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    for name in files:
        n, c, p, t = _read_file(root / name)
        names += n
        charges += c
        positions += p
        targets.append(t)
    count = len(names)
    padded_charges = np.zeros((count, MAX_ATOMS), dtype=np.int64)
    padded_positions = np.zeros((count, MAX_ATOMS, 3), dtype=np.float64)
    for i, (z, xyz) in enumerate(zip(charges, positions, strict=True)):
        padded_charges[i, : len(z)] = z
        padded_positions[i, : len(z)] = xyz
    return Molecules(tuple(names), padded_charges, padded_positions, np.concatenate(targets))


def coulomb_eigenvalues(
    charges: np.ndarray, positions: np.ndarray, *, chunk: int = 8192
) -> np.ndarray:
    """Each molecule's Coulomb-matrix eigenvalues, largest magnitude first (so the padded
    atoms' zeros come last).

    ``C_ii = 0.5·Z_i^2.4`` and ``C_ij = Z_i·Z_j / |R_i − R_j|`` with distances in bohr.

    Args:
        charges: ``[N, A]`` nuclear charges (0 = no atom).
        positions: ``[N, A, 3]`` in Å.
        chunk: molecules per batch of the computation (bounds its memory).

    Returns:
        ``[N, A]`` float32.
    """
    out = np.empty(charges.shape, dtype=np.float32)
    eye = np.eye(charges.shape[1], dtype=bool)
    for start in range(0, len(charges), chunk):
        z = charges[start : start + chunk].astype(np.float64)
        r = positions[start : start + chunk] * _ANGSTROM_IN_BOHR
        distance = np.linalg.norm(r[:, :, None, :] - r[:, None, :, :], axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            pairs = z[:, :, None] * z[:, None, :] / distance
        matrix = np.where(eye, 0.5 * z[:, :, None] ** 2.4, pairs)
        matrix = np.where(np.isfinite(matrix), matrix, 0.0)  # padded atoms: 0/0
        values = np.linalg.eigvalsh(matrix)
        order = np.argsort(-np.abs(values), axis=1, kind="stable")  # largest |λ| first
        out[start : start + chunk] = np.take_along_axis(values, order, axis=1)
    return out


def atomisation_energies(charges: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """U0, U, H and G of each molecule less its atoms' reference energies.

    Args:
        charges: ``[N, A]`` nuclear charges (0 = no atom).
        targets: ``[N, len(TARGETS)]`` in :data:`TARGETS`' order.

    Returns:
        ``[N, 4]`` float64 in Hartree, in :data:`ATOMISATION`'s order.
    """
    table = np.zeros((max(ATOM_REFERENCE) + 1, 4))
    for z, energies in ATOM_REFERENCE.items():
        table[z] = energies
    atoms = table[charges].sum(axis=1)  # padded atoms (Z = 0) add nothing
    index = {t.column: i for i, t in enumerate(TARGETS)}
    total = targets[:, [index[t.column] for t in ATOMISATION]]
    out: np.ndarray = total - atoms
    return out


def split_indices(
    count: int, seed: int = 0, train: int = 110_000, val: int = 10_000
) -> dict[str, np.ndarray]:
    """A seeded permutation cut into ``train`` / ``val`` / the rest (``test``)."""
    if train + val >= count:
        raise DataError(f"QM9 split: {train} + {val} molecules leave no test set of {count}")
    order = np.random.default_rng(seed).permutation(count)
    return {"train": order[:train], "val": order[train : train + val], "test": order[train + val :]}


def target_statistics(targets: np.ndarray, train: np.ndarray) -> dict[str, np.ndarray]:
    """Each target's mean and standard deviation over the training split only."""
    chosen = targets[train]
    return {"mean": chosen.mean(axis=0), "std": chosen.std(axis=0)}


@dataclass(frozen=True)
class QM9Arrays:
    """What a QM9 study trains on: each molecule's descriptor and targets, and the split.

    Attributes:
        features: ``[N, MAX_ATOMS]`` float32 Coulomb-matrix eigenvalues.
        targets: ``[N, len(ALL_TARGETS)]`` float64 in each target's own unit.
        split: ``train`` / ``val`` / ``test`` -> molecule indices.
        source: the files' directory.
        charges: ``[N, MAX_ATOMS]`` int8 nuclear charges, 0 past the last atom (a graph
            network's input).
        positions: ``[N, MAX_ATOMS, 3]`` float32 coordinates in Å.
    """

    features: np.ndarray
    targets: np.ndarray
    split: dict[str, np.ndarray]
    source: str
    charges: np.ndarray | None = None
    positions: np.ndarray | None = None


def load_qm9_arrays(
    folder: str | os.PathLike[str] | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    sizes: tuple[int, int] = (110_000, 10_000),
) -> QM9Arrays:
    """The descriptors, targets and split, read once and then from a cache.

    Args:
        folder: the CSV files' directory (default: the installed ``qm9pack``'s).
        cache_dir: where the arrays are kept, named by the files' sizes and modification times
            (``None``: not cached).
        seed: the split's seed.
        sizes: train and val sizes (the rest is test).
    """
    root = Path(folder) if folder is not None else qm9pack_dir()
    if root is None:
        raise DataError(f"QM9 needs its CSV files: qm9pack is not installed; {how_to_get_qm9()}")
    cached = None
    if cache_dir is not None:
        stamp = [
            (name, (root / name).stat().st_size, (root / name).stat().st_mtime_ns)
            for name in FILES
            if (root / name).is_file()
        ]
        key = hashlib.sha1(repr((str(root.resolve()), stamp, 3)).encode()).hexdigest()[:12]
        cached = Path(cache_dir) / f"qm9-{key}.npz"
    if cached is not None and cached.is_file():
        with np.load(cached) as saved:
            arrays = {name: saved[name] for name in saved.files}
    else:
        molecules = read_qm9(root)
        arrays = {
            "features": coulomb_eigenvalues(molecules.charges, molecules.positions),
            "targets": np.concatenate(
                [molecules.targets, atomisation_energies(molecules.charges, molecules.targets)],
                axis=1,
            ),
            "charges": molecules.charges.astype(np.int8),
            "positions": molecules.positions.astype(np.float32),
        }
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(cached, lambda f: np.savez(f, **arrays))
    split = split_indices(len(arrays["targets"]), seed, *sizes)
    return QM9Arrays(split=split, source=str(root), **arrays)

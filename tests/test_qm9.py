"""QM9: our reader of qm9pack's CSV files (a fixture in their exact format, and the real files
when the extra is installed), the Coulomb-matrix descriptor, the split, and the study end to
end on the fixture."""

from __future__ import annotations

import csv
import functools
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from uncertainty_mtl._install import install_command
from uncertainty_mtl.data import qm9 as data
from uncertainty_mtl.errors import ConfigError, DataError
from uncertainty_mtl.experiments import qm9
from uncertainty_mtl.experiments.runner import SMOKE_NOTE

HEADER = [
    "XYZ_file",
    "Index",
    "SMILES",
    "InChi",
    "N_atoms",
    "Stoichiometry",
    "Elements",
    "XYZ_Ang",
    "Mulliken_pop",
    "Harmonic_Freq_cmi",
    "RotA_GHz",
    "RotB_GHz",
    "RotC_GHz",
    "Dipole_debye",
    "Polarizability_bohr3",
    "HOMO_au",
    "LUMO_au",
    "HOMO_LUMO_gap_au",
    "R2_bohr2",
    "ZPVE_au",
    "InternalEnergy_0K_au",
    "InternalEnergy_298K_au",
    "Enthalphy_298K_au",
    "GibbsFreeEnergy_298K_au",
    "Heatcapacity_Cv_cal_mol_K",
]
#: qm9pack's first molecule, methane, as its file writes it (targets read once from the file).
METHANE = [
    "dsgdb9nsd_000001.xyz", "1", "C", "InChI=1S/CH4/h1H4", "5", "[4,1,0,0,0]",
    "['C','H','H','H','H']",
    "[[-0.0126981359,1.0858041578,0.0080009958],[0.002150416,-0.0060313176,0.0019761204],"
    "[1.0117308433,1.4637511618,0.0002765748],[-0.540815069,1.4475266138,-0.8766437152],"
    "[-0.5238136345,1.4379326443,0.9063972942]]",
    "[-0.535689,0.133921,0.133922,0.133923,0.133923]", "[1341.307,1341.3284]",
    "157.7118", "157.70997", "157.70699",
    "0.", "13.21", "-0.3877", "0.1171", "0.5048", "35.3641", "0.044749",
    "-40.47893", "-40.476062", "-40.475117", "-40.498597", "6.469",
]  # fmt: skip
METHANE_TARGETS = [0.0, 13.21, -0.3877, 0.1171, 0.5048, 35.3641, 0.044749,
                   -40.47893, -40.476062, -40.475117, -40.498597, 6.469]  # fmt: skip


def molecule_row(
    index: int, elements: list[str], xyz: np.ndarray, targets: list[float]
) -> list[str]:
    coords = "[" + ",".join("[" + ",".join(repr(float(v)) for v in p) + "]" for p in xyz) + "]"
    symbols = "[" + ",".join(f"'{e}'" for e in elements) + "]"
    return [
        f"dsgdb9nsd_{index:06d}.xyz", str(index), "X", "InChI=", str(len(elements)), "[0]",
        symbols, coords, "[0]", "[0]", "1.0", "1.0", "1.0", *(repr(float(t)) for t in targets),
    ]  # fmt: skip


def write_fixture(folder: Path, count: int = 0, seed: int = 0) -> Path:
    """qm9pack's three files: methane first, then ``count`` random small molecules whose
    targets depend on their descriptor (so that a network can learn something)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = [METHANE]
    for i in range(count):
        atoms = int(rng.integers(2, 8))
        elements = list(rng.choice(["H", "C", "N", "O", "F"], size=atoms))
        xyz = rng.normal(scale=1.5, size=(atoms, 3))
        z = np.array([data.CHARGES[e] for e in elements], dtype=float)
        base = [z.sum(), (z**2).sum(), float(np.abs(xyz).mean())]
        targets = [base[k % 3] * (k + 1) * 10.0 ** (k % 4 - 2) for k in range(12)]
        rows.append(molecule_row(i + 2, elements, xyz, targets))
    parts = np.array_split(np.arange(len(rows)), 3)
    for name, part in zip(data.FILES, parts, strict=True):
        lines = [",".join(HEADER), *(_as_in_the_files(rows[i]) for i in part)]
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def _as_in_the_files(row: list[str]) -> str:
    """qm9pack's quoting: numbers bare, every other field in double quotes."""

    def cell(text: str) -> str:
        try:
            float(text)
        except ValueError:
            return '"' + text + '"'
        return text

    return ",".join(cell(x) for x in row)


def test_the_reader_gives_each_molecule_its_atoms_and_targets(tmp_path):
    folder = write_fixture(tmp_path / "qm9", count=5)
    molecules = data.read_qm9(folder)
    assert len(molecules) == 6 and molecules.names[0] == "dsgdb9nsd_000001.xyz"
    assert molecules.targets[0].tolist() == METHANE_TARGETS  # the files' own units
    assert molecules.charges[0].tolist() == [6, 1, 1, 1, 1] + [0] * 24
    assert molecules.positions[0, 1].tolist() == [0.002150416, -0.0060313176, 0.0019761204]
    assert not molecules.positions[0, 5:].any()
    # Nash-MTL's 11: no gap, the energies as atomisation energies, Cv last
    assert qm9.QM9_TASKS == (
        "mu", "alpha", "homo", "lumo", "r2", "zpve", "u0_atom", "u_atom", "h_atom", "g_atom", "cv",
    )  # fmt: skip


def test_atomisation_energies_subtract_each_atom_s_reference_by_hand(tmp_path):
    folder = write_fixture(tmp_path / "qm9")  # methane alone
    molecules = data.read_qm9(folder)
    got = data.atomisation_energies(molecules.charges, molecules.targets)[0]
    # methane, CH4: U0 −40.47893 less C −37.846772 and 4 × H −0.500273, and so on for U, H, G
    expected = [
        -40.47893 - (-37.846772 + 4 * -0.500273),
        -40.476062 - (-37.845355 + 4 * -0.498857),
        -40.475117 - (-37.844411 + 4 * -0.497912),
        -40.498597 - (-37.861317 + 4 * -0.510927),
    ]
    assert got.tolist() == pytest.approx(expected, abs=1e-9)
    assert got[0] == pytest.approx(-0.631066, abs=1e-9)  # methane's binding energy, in Ha


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("HOMO_au", "n/a", "column HOMO_au: 'n/a' is not a number"),
        ("ZPVE_au", "nan", "column ZPVE_au: 'nan' is not a number"),
        ("Elements", "['C','Xx']", "column Elements: unknown element(s) ['Xx']"),
        ("Elements", "[]", "column Elements: 0 atoms; expected 1..29"),
        ("XYZ_Ang", "[[0.,1.,2.]]", "column XYZ_Ang: shape [1, 3], expected [5, 3]"),
        ("XYZ_Ang", "[[0.,1.", "column XYZ_Ang: not a list"),
    ],
)
def test_a_bad_value_is_named_by_file_line_and_column(tmp_path, column, value, message):
    folder = write_fixture(tmp_path / "qm9", count=5)
    path = folder / data.FILES[0]
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    rows[1][HEADER.index(column)] = value
    lines = [",".join(rows[0]), *(_as_in_the_files(r) for r in rows[1:])]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"qm9_part1\.csv:2: {re.escape(message)}"):
        data.read_qm9(folder)


def test_missing_files_and_columns_say_how_to_get_them(tmp_path):
    hint = re.escape(install_command("qm9"))  # the pip command for this installation
    with pytest.raises(DataError, match=rf"no qm9_part1\.csv.*{hint}"):
        data.read_qm9(tmp_path)
    folder = write_fixture(tmp_path / "qm9")
    text = (folder / data.FILES[0]).read_text().replace("HOMO_au", "HOMO")
    (folder / data.FILES[0]).write_text(text)
    with pytest.raises(DataError, match=r"missing column\(s\) \['HOMO_au'\]"):
        data.read_qm9(folder)


def test_coulomb_eigenvalues_by_hand_and_their_invariances():
    # H2 at 0.74 Å: C = [[0.5, 1/d], [1/d, 0.5]] with d in bohr: eigenvalues 0.5 ± 1/d
    d = 0.74 / 0.529177210903
    charges = np.array([[1, 1, 0]])
    positions = np.array([[[0, 0, 0], [0, 0, 0.74], [0, 0, 0]]], dtype=float)
    values = data.coulomb_eigenvalues(charges, positions)
    np.testing.assert_allclose(values[0], [0.5 + 1 / d, 0.5 - 1 / d, 0.0], rtol=1e-6)
    # rotating, translating and reordering the atoms changes nothing
    rng = np.random.default_rng(1)
    z = np.array([[8, 1, 1, 6, 0, 0]])
    xyz = np.concatenate([rng.normal(size=(1, 4, 3)), np.zeros((1, 2, 3))], axis=1)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    moved = xyz.copy()
    moved[0, :4] = xyz[0, :4] @ q.T + 3.0
    order = [3, 0, 2, 1, 4, 5]
    np.testing.assert_allclose(
        data.coulomb_eigenvalues(z[:, order], moved[:, order]),
        data.coulomb_eigenvalues(z, xyz),
        rtol=1e-5,
    )
    assert data.coulomb_eigenvalues(z, xyz)[0, 0] > 0.5 * 8**2.4  # the largest first


def test_the_split_is_seeded_disjoint_and_statistics_read_train_only():
    split = data.split_indices(100, seed=3, train=60, val=20)
    assert [len(split[s]) for s in ("train", "val", "test")] == [60, 20, 20]
    assert len(np.unique(np.concatenate(list(split.values())))) == 100
    again = data.split_indices(100, seed=3, train=60, val=20)
    assert all((split[s] == again[s]).all() for s in split)
    targets = np.arange(200.0).reshape(100, 2)
    stats = data.target_statistics(targets, split["train"])
    targets[split["test"]] = 1e9  # the test split never moves them
    assert np.allclose(data.target_statistics(targets, split["train"])["mean"], stats["mean"])
    with pytest.raises(DataError, match="no test set"):
        data.split_indices(100, train=90, val=10)


def test_arrays_are_cached_by_the_files_they_came_from(tmp_path):
    folder = write_fixture(tmp_path / "qm9", count=40)
    first = data.load_qm9_arrays(folder, cache_dir=tmp_path / "cache", sizes=(20, 10))
    (cached,) = (tmp_path / "cache").glob("qm9-*.npz")
    again = data.load_qm9_arrays(folder, cache_dir=tmp_path / "cache", sizes=(20, 10))
    assert (again.features == first.features).all() and (again.targets == first.targets).all()
    assert first.features.shape == (41, data.MAX_ATOMS)
    assert first.targets.shape == (41, len(data.ALL_TARGETS)) == (41, 16)
    u0 = [t.name for t in data.ALL_TARGETS].index("u0_atom")
    assert first.targets[0, u0] == pytest.approx(-0.631066)  # methane's, appended
    assert first.charges is not None and first.charges[0, :5].tolist() == [6, 1, 1, 1, 1]
    assert first.positions is not None and first.positions.shape == (41, data.MAX_ATOMS, 3)
    assert len(list((tmp_path / "cache").glob("qm9-*.npz"))) == 1  # the second read hit it
    text = (folder / data.FILES[2]).read_text()
    (folder / data.FILES[2]).write_text(text.replace("1.0", "2.0", 1))  # another file
    changed = data.load_qm9_arrays(folder, cache_dir=tmp_path / "cache", sizes=(20, 10))
    assert len(list((tmp_path / "cache").glob("qm9-*.npz"))) == 2 and cached.is_file()
    assert changed.targets.shape == first.targets.shape


def test_errors_are_reported_in_each_target_s_own_unit():
    from uncertainty_mtl.models import DescriptorMLP

    net = DescriptorMLP(3, ["a", "b"], hidden=(4,))
    with torch.no_grad():
        for head in net.heads.values():
            head.weight.zero_()
            head.bias.fill_(1.0)  # every prediction: 1 in standardised units
    x = torch.zeros(2, 3)
    y = torch.tensor([[10.0, 0.0], [14.0, 1.0]], dtype=torch.float64)
    centre = torch.tensor([11.0, 0.5], dtype=torch.float64)
    scale = torch.tensor([2.0, 0.1], dtype=torch.float64)
    errors = qm9.mean_absolute_errors(net, x, y, centre, scale)
    # a: 1·2 + 11 = 13 against 10 and 14: MAE 2; b: 0.6 against 0 and 1: MAE 0.5
    assert errors == pytest.approx({"a": 2.0, "b": 0.5})


def test_the_study_end_to_end_on_the_fixture(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = write_fixture(tmp_path / "qm9", count=300)
    config = replace(
        qm9.smoke_config(qm9.PRESETS["cpu"]),
        data_dir=str(folder),
        split=(200, 50),
        methods=("equal", "uncertainty", "uncertainty-auto", "pcgrad"),
    )
    summary = qm9.run_study(config, tmp_path / "out", progress=False)
    # One seed writes its tables too: its intervals say n = 1 (a traceback once)
    one = qm9.run_study(replace(config, seeds=1), tmp_path / "one", progress=False)
    table = (tmp_path / "one" / "qm9.md").read_text()
    assert "## What raw units cost each row" in table and "(n = 1)" in table
    assert one["seeds"] == [0]
    saved = json.loads((tmp_path / "out" / "qm9.json").read_text())
    assert saved["units"].keys() == {"standardised", "raw"}
    raw = saved["units"]["raw"]
    assert set(raw["rows"]) == {"equal", "uncertainty", "uncertainty-auto", "pcgrad"}
    equal = raw["rows"]["equal"]
    # Δm of each seed from the runs' own MAEs and the single-task means
    single = {t: raw["single_task_mae"][t]["mean"] for t in qm9.QM9_TASKS}
    maes = [{t: equal["mae"][t]["values"][s] for t in qm9.QM9_TASKS} for s in range(2)]
    assert equal["delta_m"]["values"] == pytest.approx([qm9.delta_m(m, single) for m in maes])
    paired = raw["rows"]["uncertainty"]["paired"]["equal"]["delta_m"]
    assert paired["differences"] == pytest.approx(
        [
            a - b
            for a, b in zip(
                raw["rows"]["uncertainty"]["delta_m"]["values"],
                equal["delta_m"]["values"],
                strict=True,
            )
        ]
    )
    sigma = raw["rows"]["uncertainty-auto"]["sigma_vs_mae"]
    assert set(sigma["targets"]) == set(qm9.QM9_TASKS) and -1 <= sigma["spearman"] <= 1
    assert raw["rows"]["pcgrad"]["step_cost_vs_equal"] > 0
    table = (tmp_path / "out" / "qm9.md").read_text()
    assert "## Targets raw" in table and table.startswith(SMOKE_NOTE)
    # one set of single-task references (standardised) serves both scalings
    assert saved["single_task_units"] == "standardised"
    assert raw["single_task_mae"] == saved["units"]["standardised"]["single_task_mae"]
    effect = saved["units_effect"]["uncertainty"]
    std = saved["units"]["standardised"]["rows"]["uncertainty"]["delta_m"]["values"]
    assert effect["differences"] == pytest.approx(
        [a - b for a, b in zip(raw["rows"]["uncertainty"]["delta_m"]["values"], std, strict=True)]
    )
    assert "## What raw units cost each row" in (tmp_path / "out" / "qm9.md").read_text()
    # Δm with the references' spread: 2 seeds of the row × 2 seeds of references
    refs = [{t: raw["single_task_mae"][t]["values"][j] for t in qm9.QM9_TASKS} for j in range(2)]
    expected = [qm9.delta_m(m, ref) for m in maes for ref in refs]
    assert equal["delta_m_all_pairs"]["values"] == pytest.approx(expected)
    assert (tmp_path / "out" / "qm9.png").stat().st_size > 10_000
    assert summary["runs_trained"] == 2 * 11 + 2 * 2 * 4
    assert qm9.run_study(config, tmp_path / "out", progress=False)["runs_trained"] == 0


def test_the_cli_study_refuses_missing_files_in_one_line(tmp_path, capsys):
    from uncertainty_mtl.cli import main

    out = tmp_path / "out"
    argv = ["reproduce", "qm9", "--data-dir", str(tmp_path), "--out", str(out), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no qm9_part1.csv" in err[0] and "[qm9]" in err[0]
    assert not out.exists()  # refused before anything was written


@pytest.mark.skipif(data.qm9pack_dir() is None, reason="pip install 'uncertainty-mtl[qm9]'")
def test_the_real_files_of_qm9pack():
    folder = data.qm9pack_dir()
    assert folder is not None
    first = data.read_qm9(folder, files=(data.FILES[0],))
    assert len(first) == 43_610 and first.names[0] == "dsgdb9nsd_000001.xyz"
    assert first.targets[0].tolist() == METHANE_TARGETS
    assert first.charges[0, :5].tolist() == [6, 1, 1, 1, 1]
    rows = 0
    for name in data.FILES:  # one line a molecule: no field spans lines
        with open(folder / name, encoding="utf-8") as f:
            rows += sum(1 for _ in f) - 1
    assert rows == 130_831


def test_an_mlp_run_keeps_its_identity_and_a_schnet_run_names_its_model():
    base = qm9.PRESETS["cpu"]
    mlp = qm9.QM9Study(base).resolve(qm9.method_run("equal", "raw"))
    # the keys an MLP run had before the graph network came: its finished runs stay finished
    assert set(mlp.identity()) == {
        "epochs", "batch_size", "lr", "hidden", "max_train", "max_eval", "split", "tasks",
        "method", "units",
    }  # fmt: skip
    gnn = qm9.QM9Study(replace(base, model="schnet")).resolve(qm9.method_run("equal", "raw"))
    assert gnn.identity()["model"] == "schnet" and "hidden" not in gnn.identity()
    with pytest.raises(ConfigError, match="model: 'gcn'"):
        replace(base, model="gcn")


def test_the_molecule_graph_joins_every_close_pair_within_a_molecule_only():
    from uncertainty_mtl.models.molecule_gnn import MoleculeGraph

    generator = torch.Generator().manual_seed(0)
    counts = [3, 1, 4, 2]
    pos = torch.randn(sum(counts), 3, generator=generator) * 2
    batch = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    edges, distance = MoleculeGraph(cutoff=2.5)(pos, batch)
    expected = {
        (i, j)
        for i in range(len(pos))
        for j in range(len(pos))
        if i != j and batch[i] == batch[j] and float((pos[i] - pos[j]).norm()) < 2.5
    }
    found = list(zip(edges[0].tolist(), edges[1].tolist(), strict=True))
    assert set(found) == expected and len(found) == len(expected) > 0
    for (i, j), d in zip(found, distance.tolist(), strict=True):
        assert d == pytest.approx(float((pos[i] - pos[j]).norm()))


def _molecules(count: int, atoms: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    charges = torch.zeros(count, atoms, dtype=torch.long)
    positions = torch.zeros(count, atoms, 3)
    for m in range(count):
        n = 2 + m % (atoms - 1)
        charges[m, :n] = torch.tensor([1, 6, 7, 8, 9])[torch.randint(5, (n,), generator=generator)]
        positions[m, :n] = torch.randn(n, 3, generator=generator)
    return charges, positions


def test_schnet_sees_each_molecule_alone_and_ignores_its_pose_and_atom_order():
    pytest.importorskip("torch_geometric")
    from uncertainty_mtl.models.molecule_gnn import SchNetMultiTask

    torch.manual_seed(0)
    net = SchNetMultiTask(["a", "b"], hidden=16, interactions=2, cutoff=5.0).eval()
    charges, positions = _molecules(5)
    with torch.no_grad():
        together = net((charges, positions))
        alone = [net((charges[m : m + 1], positions[m : m + 1])) for m in range(5)]
        q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(1)))
        present = (charges > 0).unsqueeze(-1)
        moved = torch.where(present, positions @ q.T + torch.tensor([3.0, -1.0, 2.0]), 0.0)
        order = torch.tensor([1, 0, 2, 3, 4, 5])  # the first two atoms of every molecule swap
        turned = net((charges[:, order], moved[:, order]))
    for t in ("a", "b"):
        assert together[t].shape == (5,)
        stacked = torch.cat([a[t] for a in alone])
        torch.testing.assert_close(together[t], stacked, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(turned[t], together[t], rtol=1e-4, atol=1e-4)
    assert net.outputs(net.features((charges, positions)))["a"].shape == (5,)


def test_schnet_without_pyg_says_which_extra(monkeypatch):
    import sys

    from uncertainty_mtl.models.molecule_gnn import SchNetMultiTask

    monkeypatch.setitem(sys.modules, "torch_geometric.nn.models", None)
    with pytest.raises(ConfigError, match=re.escape(install_command("gnn"))):
        SchNetMultiTask(["a"])


def test_the_study_trains_schnet_on_the_fixture(tmp_path, monkeypatch):
    pytest.importorskip("torch_geometric")
    monkeypatch.chdir(tmp_path)
    folder = write_fixture(tmp_path / "qm9", count=120)
    config = replace(
        qm9.smoke_config(qm9.PRESETS["cpu"]),
        data_dir=str(folder),
        split=(80, 20),
        seeds=1,
        units=("standardised",),
        methods=("equal", "uncertainty"),
        model="schnet",
    )
    summary = qm9.run_study(config, tmp_path / "out", progress=False)
    assert "SchNet" in summary["model"] and summary["runs_trained"] == 11 + 2
    row = summary["units"]["standardised"]["rows"]["uncertainty"]
    assert all(np.isfinite(row["mae"][t]["mean"]) for t in qm9.QM9_TASKS)
    (found,) = (tmp_path / "out" / "runs").glob("uncertainty-standardised-*/seed0/results.json")
    assert json.loads(found.read_text())["training"]["steps"] == 2 * 3  # 2 epochs of 80 at 32


def test_the_committed_study_is_of_these_targets_and_rows():
    """docs/qm9/ holds the study of this code: the literature's 11 targets, both scalings, the
    default rows and seeds (a change of the targets or rows must regenerate it)."""
    saved = json.loads((Path(__file__).parent.parent / "docs" / "qm9" / "qm9.json").read_text())
    preset = qm9.PRESETS["cpu"]
    assert tuple(saved["targets"]) == qm9.QM9_TASKS and saved["seeds"] == list(range(preset.seeds))
    assert tuple(saved["units"]) == preset.units
    for part in saved["units"].values():
        assert tuple(part["rows"]) == preset.methods


def test_a_run_killed_mid_way_resumes_to_the_uninterrupted_run(
    tmp_path, monkeypatch, killed_and_resumed
):
    monkeypatch.chdir(tmp_path)
    folder = write_fixture(tmp_path / "qm9", count=120)
    config = replace(
        qm9.smoke_config(qm9.PRESETS["cpu"]), data_dir=str(folder), split=(80, 20), epochs=3
    )
    run = qm9.QM9Study(config).resolve(qm9.method_run("uncertainty-auto", "standardised"))
    from uncertainty_mtl.experiments.qm9.training import QM9Loop
    from uncertainty_mtl.experiments.runner import loop_job

    steps_per_epoch = -(-80 // run.batch_size)
    assert steps_per_epoch >= 2
    job = functools.partial(loop_job, QM9Loop)  # what the study's executor calls
    result = killed_and_resumed("qm9", run, job, kill_at=steps_per_epoch + 1)
    assert len(result["history"]) == 3  # one validation an epoch

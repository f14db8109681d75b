"""``umtl reproduce qm9``: eleven targets in eleven units.

The 11 single-task references (standardised targets) and, per target scaling
(:data:`~uncertainty_mtl.experiments.qm9.config.UNITS`), every multi-task row, for every seed;
then per row each target's test MAE in its unit, Δm against the single-task references, the
per-seed paired Δm difference against ``equal`` and against the uncertainty weighting, the step
cost, and, for the learned rows, whether the learned σ_t tracks each target's error (a Gaussian
with standard deviation σ has a mean absolute error of σ·√(2/π)). With both scalings, each
row's paired Δm difference raw − standardised: what the units cost that method.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from uncertainty_mtl.config import split_weighting
from uncertainty_mtl.data.qm9 import ALL_TARGETS
from uncertainty_mtl.experiments.benchmark.methods_stats import adjusted_verdict
from uncertainty_mtl.experiments.executors import Executor, Job, LocalExecutor
from uncertainty_mtl.experiments.qm9.config import (
    QM9_TASKS,
    REFERENCE_UNITS,
    QM9Run,
    QM9StudyConfig,
    method_run,
    single_run,
)
from uncertainty_mtl.experiments.qm9.figures import plot_qm9
from uncertainty_mtl.experiments.qm9.training import RESULT_FILE, QM9Loop, load_arrays
from uncertainty_mtl.experiments.runner import Run, Runner, loop_job
from uncertainty_mtl.reporting.stats import delta_m as stats_delta_m
from uncertainty_mtl.reporting.stats import format_interval, holm_family, paired_difference
from uncertainty_mtl.reporting.tables import format_mean_std, markdown_table, summarise

__all__ = ["QM9Study", "delta_m", "run_study"]

_UNIT = {t.name: t.unit for t in ALL_TARGETS}
_MODEL_TEXT = {
    "mlp": "DescriptorMLP on Coulomb-matrix eigenvalues (not the literature's GNNs)",
    "schnet": "PyG's SchNet, a shared per-molecule code and one linear head per target",
}


@dataclass
class QM9Study:
    """The QM9 study's runs for the runner."""

    config: QM9StudyConfig
    device: str = "cpu"
    result_file: str = RESULT_FILE

    @property
    def smoke(self) -> bool:
        return self.config.max_train is not None  # cut splits: the smoke preset's

    def resolve(self, run: Run, *, parallel: bool = False) -> QM9Run:
        base = {
            k: v for k, v in asdict(self.config).items() if k not in ("seeds", "units", "methods")
        }
        # every target's likelihood Gaussian (an MSE each), the method as the run names it
        study = {"likelihoods": dict.fromkeys(run.patch.get("tasks", QM9_TASKS), "gaussian")}
        weighting, rest = split_weighting(run.patch, study)
        return QM9Run(**{**base, **rest}, weighting=weighting, seed=run.seed, device=self.device)

    def settings(self) -> dict[str, Any]:
        return asdict(self.config)

    def identity(self, config: QM9Run) -> dict[str, Any]:
        return config.identity()

    def job(self, config: QM9Run, run_dir: Path) -> Job:
        return Job(f"{run_dir.parent.name}/{run_dir.name}", loop_job, (QM9Loop, config, run_dir))

    def prepare(self, *, progress: bool = True) -> None:
        c = self.config
        load_arrays(c.data_dir, c.max_train, c.max_eval, tuple(c.split))


def delta_m(errors: dict[str, float], single: dict[str, float]) -> float:
    """Δm % of a run's MAEs against the single-task references'
    (:func:`~uncertainty_mtl.reporting.stats.delta_m`; every target's error is
    lower-is-better)."""
    return stats_delta_m(errors, single, dict.fromkeys(single, False))


def run_study(
    config: QM9StudyConfig,
    out: str | os.PathLike[str],
    *,
    workers: int = 1,
    executor: Executor | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Trains every run (skipping finished ones) and writes ``qm9.json``, ``qm9.md``,
    ``qm9.png`` and ``config.yaml`` into ``out``."""
    start = time.perf_counter()
    c = config
    load_arrays(c.data_dir, c.max_train, c.max_eval, tuple(c.split))  # bad data fails first
    seeds = range(config.seeds)
    with Runner(
        QM9Study(config, device), Path(out), executor or LocalExecutor(workers), progress
    ) as runner:
        runs = [
            *(single_run(t, REFERENCE_UNITS, s) for s in seeds for t in QM9_TASKS),
            *(method_run(m, u, s) for u in config.units for s in seeds for m in config.methods),
        ]
        done = runner.results(runs)
        results = {(run.name, run.seed): r for run, r in done.items()}
        units = {u: _summarise_units(config, u, results) for u in config.units}
        summary: dict[str, Any] = {
            "study": "qm9",
            "model": _MODEL_TEXT[config.model],
            "targets": {t: _UNIT[t] for t in QM9_TASKS},
            "seeds": list(seeds),
            "config": asdict(config),
            "single_task_units": REFERENCE_UNITS,
            "units": units,
            "units_effect": _units_effect(units),
            **runner.timing(),
            "wall_time_s": time.perf_counter() - start,
        }
        plot_qm9(summary, runner.write_outputs("qm9", summary, table(summary)))
    return summary


def _summarise_units(
    config: QM9StudyConfig, units: str, results: dict[tuple[str, int], dict[str, Any]]
) -> dict[str, Any]:
    seeds = range(config.seeds)
    single = {
        t: summarise([results[single_run(t).name, s]["metrics"][t] for s in seeds])
        for t in QM9_TASKS
    }
    reference = {t: float(v["mean"]) for t, v in single.items()}  # type: ignore[arg-type]
    # each seed's own references, for Δm with the references' spread in it
    references = [
        {t: results[single_run(t).name, s]["metrics"][t] for t in QM9_TASKS} for s in seeds
    ]
    rows: dict[str, Any] = {}
    per_seed_dm: dict[str, list[float]] = {}
    for method in config.methods:
        found = [results[method_run(method, units).name, s] for s in seeds]
        per_seed_dm[method] = [delta_m(r["metrics"], reference) for r in found]
        row: dict[str, Any] = {
            "mae": {t: summarise([r["metrics"][t] for r in found]) for t in QM9_TASKS},
            "delta_m": summarise(per_seed_dm[method]),
            # every seed of the row against every seed's single-task references
            "delta_m_all_pairs": summarise(
                [delta_m(r["metrics"], ref) for r in found for ref in references]
            ),
            "seconds_per_step": summarise([r["training"]["seconds_per_step"] for r in found]),
            "effective_weights": {
                t: summarise([r["effective_weights"][t] for r in found]) for t in QM9_TASKS
            },
        }
        if found[0]["log_variances"]:
            row["sigma_vs_mae"] = _sigma_vs_mae(found)
        rows[method] = row
    for method, row in rows.items():
        row["paired"] = {
            base: {
                "delta_m": paired_difference(
                    per_seed_dm[method], per_seed_dm[base], higher_is_better=False
                )
            }
            for base in ("equal", "uncertainty")
            if base in per_seed_dm and base != method
        }
    for base in ("equal", "uncertainty"):  # each baseline's comparisons: one family
        family = [r["paired"][base]["delta_m"] for r in rows.values() if base in r["paired"]]
        holm_family(family, higher_is_better=False)
    equal = rows.get("equal", {}).get("seconds_per_step", {}).get("mean")
    for row in rows.values():
        row["step_cost_vs_equal"] = row["seconds_per_step"]["mean"] / equal if equal else None
    return {"single_task_mae": single, "rows": rows}


def _units_effect(units: dict[str, Any]) -> dict[str, Any]:
    """Per row trained under both scalings: the per-seed paired Δm difference raw −
    standardised (positive: raw units cost the row accuracy)."""
    if set(units) != {"standardised", "raw"}:
        return {}
    raw, std = units["raw"]["rows"], units["standardised"]["rows"]
    effect = {
        method: paired_difference(
            raw[method]["delta_m"]["values"],
            std[method]["delta_m"]["values"],
            higher_is_better=False,
        )
        for method in raw
        if method in std
    }
    holm_family(list(effect.values()), higher_is_better=False)
    return effect


def _sigma_vs_mae(found: list[dict[str, Any]]) -> dict[str, Any]:
    """Per target: the learned σ in the target's unit (σ_t = exp(s_t/2)·scale_t), the MAE it
    predicts (σ·√(2/π)) and the test MAE, as the mean over seeds; and the Spearman correlation
    over the targets between the predicted and the measured MAE."""
    from scipy.stats import spearmanr

    per_target = {}
    for t in QM9_TASKS:
        sigma = [math.exp(r["log_variances"][t] / 2) * r["scale"][t] for r in found]
        mae = [r["metrics"][t] for r in found]
        predicted = sum(sigma) / len(sigma) * math.sqrt(2 / math.pi)
        per_target[t] = {
            "sigma": sum(sigma) / len(sigma),
            "predicted_mae": predicted,
            "mae": sum(mae) / len(mae),
        }
    rho = spearmanr(
        [v["predicted_mae"] for v in per_target.values()], [v["mae"] for v in per_target.values()]
    )
    return {"targets": per_target, "spearman": float(rho.statistic)}


def table(summary: dict[str, Any]) -> str:
    """``qm9.md``: per target scaling, each row's MAE per target and its Δm."""
    lines = [
        "# QM9: 11 targets, each in its own unit",
        "",
        f"Test MAE in each target's unit, mean ± std over {len(summary['seeds'])} seed(s); Δm % "
        "against the single-task references (lower is better), which train on standardised "
        f"targets under both scalings. Model: {summary['model']}.",
        "",
    ]
    headers = ["row", *(f"{t} [{u}]" for t, u in summary["targets"].items()), "Δm % ↓", "vs equal"]
    for units, part in summary["units"].items():
        cells = [
            [
                "single task",
                *(format_mean_std(part["single_task_mae"][t], 4) for t in QM9_TASKS),
                "0",
                "–",
            ]
        ]
        for method, row in part["rows"].items():
            vs = row["paired"].get("equal", {}).get("delta_m")
            cells.append(
                [
                    method,
                    *(format_mean_std(row["mae"][t], 4) for t in QM9_TASKS),
                    format_mean_std(row["delta_m"], 1),
                    "–" if vs is None else f"{vs['mean']:+.1f} ({adjusted_verdict(vs)})",
                ]
            )
        lines += [f"## Targets {units}", "", markdown_table(headers, cells), ""]
    if summary.get("units_effect"):
        cells = [
            [m, f"{d['mean']:+.1f}", format_interval(d["ci95"]), adjusted_verdict(d)]
            for m, d in summary["units_effect"].items()
        ]
        lines += [
            "## What raw units cost each row",
            "",
            "Paired Δm difference raw − standardised over the seeds (positive: worse in raw "
            "units); both against the same single-task references.",
            "",
            markdown_table(["row", "Δm raw − std", "95% CI", "raw units are"], cells),
        ]
    return "\n".join(lines)

"""QM9 as a many-task regression benchmark: 11 targets in 11 units (``umtl reproduce qm9``).

``config`` (the study's settings and one run's), ``training`` (one run through the engine's
step), ``study`` (the runs, Δm, paired intervals, learned σ against the errors) and
``figures`` (``qm9.png``).
"""

from uncertainty_mtl.experiments.qm9.config import (
    MODELS,
    PRESETS,
    QM9_TASKS,
    REFERENCE_UNITS,
    UNITS,
    QM9Run,
    QM9StudyConfig,
    method_run,
    single_run,
    smoke_config,
)
from uncertainty_mtl.experiments.qm9.figures import plot_qm9
from uncertainty_mtl.experiments.qm9.study import QM9Study, delta_m, run_study
from uncertainty_mtl.experiments.qm9.training import load_arrays, mean_absolute_errors, train_run

__all__ = [
    "MODELS",
    "PRESETS",
    "QM9_TASKS",
    "REFERENCE_UNITS",
    "UNITS",
    "QM9Run",
    "QM9Study",
    "QM9StudyConfig",
    "delta_m",
    "load_arrays",
    "mean_absolute_errors",
    "method_run",
    "plot_qm9",
    "run_study",
    "single_run",
    "smoke_config",
    "train_run",
]

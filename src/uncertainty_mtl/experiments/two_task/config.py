"""The two-task study's settings: the study's config and presets, one run's resolved config,
and the runs of its rows."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from uncertainty_mtl.config import WEIGHTING_KINDS, WeightingConfig
from uncertainty_mtl.engine.builders import weighting_from
from uncertainty_mtl.errors import ConfigError
from uncertainty_mtl.experiments.runner import Run
from uncertainty_mtl.tasks.registry import TASKS as TASK_SPECS
from uncertainty_mtl.weighting import FixedWeighting, UncertaintyWeighting, Weighting

__all__ = [
    "LIKELIHOODS",
    "METHOD_KINDS",
    "PRESETS",
    "REFERENCE",
    "REFERENCE_APPROX_OPTIMAL",
    "TASKS",
    "StudyConfig",
    "TwoTaskRun",
    "config_dict",
    "fixed_run",
    "learned_run",
    "method_run",
    "smoke_config",
]

TASKS = ("classification", "reconstruction")
LIKELIHOODS = {t: TASK_SPECS[t].likelihood for t in TASKS}
#: The weighting kinds a ``method`` run may name (fixed weights and the learned uncertainty
#: weighting are the study's own rows).
METHOD_KINDS = tuple(k for k in WEIGHTING_KINDS if k not in ("fixed", "uncertainty"))

#: Key (2019), Table 1: Fashion-MNIST, test split. The report's "learned" row used the Gaussian
#: term for its L1 loss (its eq. 32), i.e. our paper-convention row.
REFERENCE: dict[str, dict[str, float]] = {
    "classification_only": {"accuracy": 89.7},
    "reconstruction_only": {"reconstruction_l1": 0.0873},
    "unweighted": {"accuracy": 89.3, "reconstruction_l1": 0.0847},
    "approx_optimal": {"accuracy": 90.0, "reconstruction_l1": 0.0785},
    "learned_paper": {"accuracy": 90.2, "reconstruction_l1": 0.0749},
}
REFERENCE_APPROX_OPTIMAL = {"classification": 0.4, "reconstruction": 0.6}


@dataclass(frozen=True)
class StudyConfig:
    """Everything that decides the study's numbers (the resolved copy is saved as config.yaml).

    Attributes:
        dataset: ``"digits"`` (scikit-learn's, no download) or ``"fashion-mnist"`` (IDX files).
        data_dir: directory of the Fashion-MNIST IDX files (``None``: where Debian's and
            Ubuntu's ``dataset-fashion-mnist`` installs them, when it is installed; the CLI
            writes that directory here).
        seeds: seeds 0..seeds-1; each seed fixes initialisation and batch order of every row.
        epochs: passes over the training split.
        batch_size: images per step.
        lr: Adam learning rate of the network and of the log-variances.
        weighting_lr: Adam learning rate of the log-variances, if different from ``lr``.
        init_log_var: initial ``s`` of both tasks for the learned rows.
        grid: classification weights ``w`` of the fixed-weight sweep (reconstruction ``1 - w``);
            0, 0.5 and 1 are always added (single tasks and the unweighted row).
        eval_every: steps between evaluations of val and test (for the curves).
        log_every: steps between records in each run's metrics.jsonl.
        max_train: use only the first images of the training split (smoke runs).
        max_eval: use only the first images of val and test (smoke runs).
    """

    dataset: str = "digits"
    data_dir: str | None = None
    seeds: int = 3
    epochs: int = 100
    batch_size: int = 64
    lr: float = 3e-3
    weighting_lr: float | None = None
    init_log_var: float = 0.0
    grid: tuple[float, ...] = tuple(round(0.1 * i, 2) for i in range(11))
    eval_every: int = 90
    log_every: int = 10
    max_train: int | None = None
    max_eval: int | None = None

    def __post_init__(self) -> None:
        if self.dataset not in ("digits", "fashion-mnist"):
            raise ConfigError(f"dataset must be 'digits' or 'fashion-mnist', got {self.dataset!r}")
        for name in ("seeds", "epochs", "batch_size", "eval_every", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not all(0.0 <= w <= 1.0 for w in self.grid):
            raise ConfigError(f"grid weights must lie in [0, 1], got {list(self.grid)}")
        if not self.lr > 0 or (self.weighting_lr is not None and not self.weighting_lr > 0):
            raise ConfigError("learning rates must be > 0")

    @property
    def fixed_weights(self) -> tuple[float, ...]:
        return tuple(sorted({round(w, 6) for w in (*self.grid, 0.0, 0.5, 1.0)}))


PRESETS: dict[str, StudyConfig] = {
    # 1,149 training images of 8×8: 18 steps an epoch, 1,800 steps a run. lr 3e-3 was chosen
    # over 1e-3 on the validation split with the single-task models (see the README).
    "digits": StudyConfig(),
    # The report's optimiser (Adam, 1e-4) on 50,000 training images: 782 steps an epoch.
    "fashion-mnist": StudyConfig(
        dataset="fashion-mnist", epochs=30, lr=1e-4, eval_every=1000, log_every=50
    ),
}


def smoke_config(config: StudyConfig) -> StudyConfig:
    """A few-second version of ``config`` for tests: tiny splits, two epochs, a 3-point grid."""
    return replace(
        config,
        epochs=2,
        batch_size=16,
        grid=(0.0, 0.5, 1.0),
        eval_every=3,
        log_every=2,
        max_train=64,
        max_eval=32,
    )


@dataclass(frozen=True)
class TwoTaskRun:
    """One run's resolved config: the study's settings, the weighting and the seed.

    Attributes:
        weights: fixed weights ``{task: w}`` (a task of weight 0 is not trained), or
        convention: ``"likelihood"`` or ``"paper"`` for learned weights, or
        method: another ``weighting.kind`` of the methods benchmark (``equal``, ``dwa``, a
            gradient aggregator, ...) with its default parameters.
        seed: initialisation and batch order.
        device: where it trains (not part of what the run is).
    """

    dataset: str
    data_dir: str | None
    epochs: int
    batch_size: int
    lr: float
    weighting_lr: float | None
    init_log_var: float
    eval_every: int
    log_every: int
    max_train: int | None
    max_eval: int | None
    weights: dict[str, float] | None = None
    convention: str | None = None
    method: str | None = None
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        given = [x is not None for x in (self.weights, self.convention, self.method)]
        if sum(given) != 1:
            raise ValueError(
                "a two-task run has one of: fixed weights, a learned convention, a method"
            )
        if self.convention not in (None, "likelihood", "paper"):
            raise ValueError(f"convention must be 'likelihood' or 'paper', got {self.convention}")
        if self.method is not None and self.method not in METHOD_KINDS:
            raise ValueError(f"method must be one of {list(METHOD_KINDS)}, got {self.method!r}")

    @property
    def tasks(self) -> tuple[str, ...]:
        weights = self.weights
        return TASKS if weights is None else tuple(t for t in TASKS if weights[t] > 0)

    def make_weighting(self) -> Weighting:
        if self.method is not None:
            return weighting_from(
                WeightingConfig(kind=self.method),
                TASKS,
                seed=self.seed,
                lr=self.weighting_lr or self.lr,
            )
        if self.weights is not None:
            return FixedWeighting(self.weights)
        assert self.convention is not None
        return UncertaintyWeighting(
            LIKELIHOODS, init_log_var=self.init_log_var, convention=self.convention
        )


def fixed_run(w: float, seed: int = 0) -> Run:
    """The grid point with classification weight ``w`` (reconstruction ``1 - w``)."""
    weights = {"classification": w, "reconstruction": 1.0 - w}
    return Run(f"fixed-{w:.2f}", {"weights": weights}, seed)


def learned_run(convention: str, seed: int = 0) -> Run:
    return Run(f"learned-{convention}", {"convention": convention}, seed)


def method_run(method: str, seed: int = 0) -> Run:
    """A run of the methods benchmark: ``method`` (a ``weighting.kind``) on both tasks."""
    return Run(f"method-{method}", {"method": method}, seed)


def config_dict(config: StudyConfig) -> dict[str, Any]:
    d = asdict(config)
    d["grid"] = list(config.grid)
    return d

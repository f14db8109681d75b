"""The QM9 study's settings: the study's config and presets, and one run's resolved config."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from uncertainty_mtl.config import WEIGHTING_KINDS
from uncertainty_mtl.data.qm9 import LITERATURE_TARGETS
from uncertainty_mtl.errors import ConfigError
from uncertainty_mtl.experiments.runner import Run
from uncertainty_mtl.weighting import UncertaintyWeighting, Weighting
from uncertainty_mtl.weighting.registry import BuildArgs, build_method

__all__ = [
    "MODELS",
    "PRESETS",
    "QM9_TASKS",
    "REFERENCE_UNITS",
    "UNITS",
    "QM9Run",
    "QM9StudyConfig",
    "method_run",
    "single_run",
    "smoke_config",
]

#: The 11 targets of the MTL literature (Nash-MTL's: no gap, atomisation energies, Cv).
QM9_TASKS = LITERATURE_TARGETS
#: ``standardised``: each target centred and divided by its training standard deviation (the
#: usual preprocessing); ``raw``: centred only, in its own unit (the paper's motivation).
UNITS = ("standardised", "raw")
#: ``mlp``: :class:`~uncertainty_mtl.models.DescriptorMLP` on the Coulomb-matrix eigenvalues
#: (minutes on a CPU); ``schnet``: PyG's SchNet on the atoms (a GPU's model).
MODELS = ("mlp", "schnet")


@dataclass(frozen=True)
class QM9StudyConfig:
    """Everything that decides the study's numbers.

    Attributes:
        data_dir: the CSV files' directory (``None``: the installed ``qm9pack``'s).
        seeds: seeds 0..seeds-1 (initialisation and batch order; the split is fixed).
        units: the target scalings the study trains under (:data:`UNITS`).
        methods: ``weighting.kind`` of each multi-task row (``uncertainty`` with the
            likelihood convention: a Gaussian term on each MSE, which the paper convention
            shares; ``uncertainty-auto``: the same, each ``s`` started at its optimum).
            Every row keeps its method's default options.
        epochs, batch_size, lr: Adam's training.
        hidden: the shared MLP's widths (``model=mlp``).
        model: one of :data:`MODELS`.
        schnet: SchNet's hidden channels (and filters), interaction blocks and cutoff in Å
            (``model=schnet``; PyG's defaults).
        max_train, max_eval: only the first molecules of the splits (smoke runs).
        split: train and val sizes of the seeded split (the rest is test).
    """

    data_dir: str | None = None
    seeds: int = 5
    units: tuple[str, ...] = UNITS
    methods: tuple[str, ...] = (
        "equal",
        "si",
        "uncertainty",
        "uncertainty-auto",
        "famo",
        "imtl-g",
    )
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    hidden: tuple[int, ...] = (256, 256, 256)
    model: str = "mlp"
    schnet: tuple[float, float, float] = (128, 6, 10.0)
    max_train: int | None = None
    max_eval: int | None = None
    split: tuple[int, int] = (110_000, 10_000)

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ConfigError(f"model: {self.model!r}; expected one of {list(MODELS)}")
        if len(self.schnet) != 3 or min(self.schnet) <= 0:
            raise ConfigError(
                f"schnet: {list(self.schnet)}; expected [hidden, interactions, cutoff] > 0"
            )
        for name in ("seeds", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        bad = [u for u in self.units if u not in UNITS]
        if bad or not self.units:
            raise ConfigError(f"units: {bad or 'none'}; expected some of {list(UNITS)}")
        known = (*WEIGHTING_KINDS, "uncertainty-auto")
        unknown = [m for m in self.methods if m not in known or m == "fixed"]
        if unknown:
            raise ConfigError(f"methods: unknown {unknown}; expected kinds of {list(known)}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")


PRESETS: dict[str, QM9StudyConfig] = {
    # Adam at 1e-3, batch 128 (Nash-MTL's protocol trains 300 epochs at batch 120 with a
    # plateau schedule). 30 epochs are 25,800 steps: about 75 s for a loss weighting here
    # (2.9 ms a step on one thread), 45 s for a single task, 5.7 min for IMTL-G (13 ms).
    # Nash-MTL (58 ms a step at T = 11, bench/bench_qm9.py) would take 25 min a run: left out.
    "cpu": QM9StudyConfig(),
}


def smoke_config(config: QM9StudyConfig) -> QM9StudyConfig:
    """A seconds-long version for tests: a few hundred molecules, two epochs, a small MLP."""
    return replace(
        config,
        seeds=2,
        epochs=2,
        batch_size=32,
        hidden=(32,),
        schnet=(16, 1, 5.0),
        max_train=256,
        max_eval=64,
    )


@dataclass(frozen=True)
class QM9Run:
    """One run: the study's training settings, the targets it trains and how they are weighed.

    Attributes:
        tasks: the targets trained (one for a single-task reference, all 11 otherwise).
        method: ``weighting.kind`` (``equal`` for a single task), or ``uncertainty-auto``.
        units: ``standardised`` or ``raw``.
    """

    data_dir: str | None
    epochs: int
    batch_size: int
    lr: float
    hidden: tuple[int, ...]
    max_train: int | None
    max_eval: int | None
    split: tuple[int, int] = (110_000, 10_000)
    model: str = "mlp"
    schnet: tuple[float, float, float] = (128, 6, 10.0)
    tasks: tuple[str, ...] = QM9_TASKS
    method: str = "equal"
    units: str = "standardised"
    seed: int = 0
    device: str = "cpu"

    def make_weighting(self) -> Weighting:
        if self.method in ("uncertainty", "uncertainty-auto"):
            init: Any = "auto" if self.method == "uncertainty-auto" else 0.0
            return UncertaintyWeighting(
                dict.fromkeys(self.tasks, "gaussian"), init_log_var=init, check_finite=False
            )
        # the method's own options at their defaults (build_method fills them in)
        args = BuildArgs(self.tasks, seed=self.seed, lr=self.lr, check_finite=False)
        return build_method(self.method, args)

    def identity(self) -> dict[str, Any]:
        settings = asdict(self)
        for volatile in ("seed", "device", "data_dir"):
            settings.pop(volatile)
        # the MLP's runs keep the identity they had before SchNet came
        for unused in ("model", "schnet") if self.model == "mlp" else ("hidden",):
            settings.pop(unused)
        return settings


#: The single-task references train on standardised targets only: one reference per target
#: for both scalings, so that a row's Δm under raw units and under standardised units are
#: against the same errors, and their difference is the cost of the units alone.
REFERENCE_UNITS = "standardised"


def single_run(task: str, units: str = REFERENCE_UNITS, seed: int = 0) -> Run:
    """The single-task reference of ``task``."""
    return Run(f"single-{task}-{units}", {"tasks": (task,), "units": units}, seed)


def method_run(method: str, units: str, seed: int = 0) -> Run:
    """All 11 targets weighed by ``method``."""
    return Run(f"{method}-{units}", {"method": method, "units": units}, seed)

"""The QM9 study's settings: the study's config and presets, and one run's resolved config."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from uncertainty_mtl.config import WEIGHTING_KINDS, WeightingConfig
from uncertainty_mtl.data.qm9 import LITERATURE_TARGETS
from uncertainty_mtl.engine.builders import weighting_from
from uncertainty_mtl.errors import ConfigError
from uncertainty_mtl.experiments.runner import Run
from uncertainty_mtl.weighting import Weighting

__all__ = [
    "AUTO",
    "MODELS",
    "PRESETS",
    "QM9_TASKS",
    "REFERENCE_UNITS",
    "UNITS",
    "QM9Run",
    "QM9StudyConfig",
    "method_run",
    "row_weighting",
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
#: A row named for more than its kind: the uncertainty weighting with each ``s`` started at
#: its optimum for the first loss (``weighting.init_log_var: auto``).
AUTO = "uncertainty-auto"


@dataclass(frozen=True)
class QM9StudyConfig:
    """Everything that decides the study's numbers.

    Attributes:
        data_dir: the CSV files' directory (``None``: the installed ``qm9pack``'s).
        seeds: seeds 0..seeds-1 (initialisation and batch order; the split is fixed).
        units: the target scalings the study trains under (:data:`UNITS`).
        methods: ``weighting.kind`` of each multi-task row (``uncertainty`` with the
            likelihood convention: a Gaussian term on each MSE, which the paper convention
            shares; ``uncertainty-auto``: the same with ``weighting.init_log_var: auto``, each
            ``s`` started at its optimum). Every row keeps its method's default options.
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
        known = (*WEIGHTING_KINDS, AUTO)
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


def row_weighting(row: str) -> dict[str, Any]:
    """The ``weighting`` section of a multi-task row: its kind with the registry's default
    options, or for :data:`AUTO` the uncertainty weighting started at its optimum."""
    if row == AUTO:
        return {"kind": "uncertainty", "init_log_var": "auto"}
    return {"kind": row}


@dataclass(frozen=True)
class QM9Run:
    """One run: the study's training settings, the targets it trains and how they are weighed.

    Attributes:
        tasks: the targets trained (one for a single-task reference, all 11 otherwise).
        weighting: the method as every study names it (``weighting.kind`` and its options;
            ``equal`` for a single task), each target's likelihood Gaussian.
        units: ``standardised`` or ``raw``.
    """

    data_dir: str | None
    epochs: int
    batch_size: int
    lr: float
    hidden: tuple[int, ...]
    max_train: int | None
    max_eval: int | None
    weighting: WeightingConfig
    split: tuple[int, int] = (110_000, 10_000)
    model: str = "mlp"
    schnet: tuple[float, float, float] = (128, 6, 10.0)
    tasks: tuple[str, ...] = QM9_TASKS
    units: str = "standardised"
    seed: int = 0
    device: str = "cpu"

    def make_weighting(self) -> Weighting:
        lr = self.weighting.rate(self.lr)
        return weighting_from(self.weighting, self.tasks, seed=self.seed, lr=lr, check_finite=False)

    @property
    def row(self) -> str:
        """The row's name (``method`` in the results): the kind, or :data:`AUTO`."""
        w = self.weighting
        return AUTO if w.kind == "uncertainty" and w.init_log_var == "auto" else w.kind

    def identity(self) -> dict[str, Any]:
        """What the run is (its directory's hash): its settings less what says how it executes,
        the weighting named by its row as it always was (``method``)."""
        settings = asdict(self)
        for volatile in ("seed", "device", "data_dir", "weighting"):
            settings.pop(volatile)
        settings["method"] = self.row
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
    patch = {"tasks": (task,), "units": units, "weighting.kind": "equal"}
    return Run(f"single-{task}-{units}", patch, seed)


def method_run(method: str, units: str, seed: int = 0) -> Run:
    """All 11 targets weighed by the row ``method`` (:func:`row_weighting`)."""
    weighting = {f"weighting.{k}": v for k, v in row_weighting(method).items()}
    return Run(f"{method}-{units}", {**weighting, "units": units}, seed)

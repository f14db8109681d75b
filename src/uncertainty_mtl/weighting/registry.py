"""Every weighting method by its name (``weighting.kind``), in one list.

The config's choices and range checks, the builder, the methods benchmark's rows and the docs'
table of methods are all read from :data:`METHODS`: adding a method is one :class:`Method` here
(and, if it has hyper-parameters of its own, their section in ``config.WeightingConfig``, which a
test keeps in step with :attr:`Method.options`), plus its tests.

A method's weighting is built from a :class:`BuildArgs`; the classes are imported only when one
is built, and a method that needs an optional package says which extra provides it
(:attr:`Method.extra`), checked before it is built.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Final, Literal

if TYPE_CHECKING:
    from uncertainty_mtl.weighting.base import Weighting

__all__ = [
    "AGGREGATOR",
    "FIXED",
    "LOSS_WEIGHTING",
    "METHODS",
    "BuildArgs",
    "Method",
    "Option",
    "UnknownMethodError",
    "benchmarked",
    "build_method",
    "markdown_table",
    "method",
    "option_values",
]

Family = Literal["loss weighting", "gradient aggregator", "fixed weights"]
LOSS_WEIGHTING: Final = "loss weighting"
AGGREGATOR: Final = "gradient aggregator"
FIXED: Final = "fixed weights"


class UnknownMethodError(ValueError):
    """A ``weighting.kind`` that is not in :data:`METHODS`."""


@dataclass(frozen=True)
class Option:
    """A method's own hyper-parameter, ``weighting.<method>.<key>``: a finite number above
    ``bound`` (or equal to it, with ``inclusive``)."""

    key: str
    default: float
    bound: float
    inclusive: bool
    help: str


@dataclass(frozen=True)
class BuildArgs:
    """What building a method's weighting may use.

    Attributes:
        tasks: the trained tasks, in order.
        seed: seeds random weightings (RLW's draws).
        lr: the step of weights that a method updates itself (GradNorm's).
        check_finite: the weighting checks each call's losses (the training loop checks the
            total itself and turns this off).
        options: the method's own :class:`Option` values, by key.
        weights: ``fixed``: task -> weight.
        likelihoods: ``uncertainty``: task -> likelihood.
        event_dims: ``uncertainty``: task -> dimensions of one observation.
        init_log_var: ``uncertainty``: the initial log-variance (all tasks, or per task).
        convention: ``uncertainty``: ``"likelihood"`` or ``"paper"``.
        regulariser: ``uncertainty``: ``"log"`` or ``"positive"``.
    """

    tasks: Sequence[str]
    seed: int = 0
    lr: float = 0.0
    check_finite: bool = True
    options: Mapping[str, float] = field(default_factory=dict)
    weights: Mapping[str, float] = field(default_factory=dict)
    likelihoods: Mapping[str, str] = field(default_factory=dict)
    event_dims: Mapping[str, int] = field(default_factory=dict)
    init_log_var: float | Mapping[str, float] | str = 0.0
    convention: str = "likelihood"
    regulariser: str = "log"


@dataclass(frozen=True)
class Method:
    """One weighting method.

    Attributes:
        name: its ``weighting.kind``.
        family: :data:`LOSS_WEIGHTING` (``{task: loss} -> total``), :data:`AGGREGATOR`
            (combines the per-task gradients of the shared parameters) or :data:`FIXED`.
        reference: where it comes from, for the docs' table.
        build: makes its weighting.
        options: its own hyper-parameters (``weighting.<name>.<key>``).
        keys: the shared ``weighting.*`` keys it reads besides ``kind`` (the docs' table).
        hooks: what the training step must do for it beyond ``total.backward()``:
            ``"on_epoch"`` (epoch statistics), ``"task_gradients"`` (each task's gradient of
            the last shared layer), ``"features"`` (each task's gradient of the shared
            features, through torchjd).
        extra: the ``uncertainty-mtl[...]`` extra it needs, if any.
        package: the module that extra provides (checked before building).
        benchmarked: a row of the city's single-rate methods table, whose committed results
            predate the newer methods (``fixed`` is every table's approximately optimal row,
            chosen by a search); the two-task tables have every method.
    """

    name: str
    family: Family
    reference: str
    build: Callable[[BuildArgs], Weighting]
    options: tuple[Option, ...] = ()
    keys: tuple[str, ...] = ()
    hooks: tuple[str, ...] = ()
    extra: str | None = None
    package: str | None = None
    benchmarked: bool = True

    @property
    def section(self) -> str:
        """The attribute of ``config.WeightingConfig`` that holds :attr:`options`."""
        return self.name.replace("-", "_")


def _uncertainty(a: BuildArgs) -> Weighting:
    from uncertainty_mtl.weighting.uncertainty import UncertaintyWeighting

    return UncertaintyWeighting(
        {t: a.likelihoods[t] for t in a.tasks},
        init_log_var=a.init_log_var,
        event_dims={t: a.event_dims.get(t, 1) for t in a.tasks},
        convention=a.convention,
        regulariser=a.regulariser,
        check_finite=a.check_finite,
    )


def _fixed(a: BuildArgs) -> Weighting:
    from uncertainty_mtl.weighting.fixed import FixedWeighting

    return FixedWeighting({t: a.weights[t] for t in a.tasks}, check_finite=a.check_finite)


def _equal(a: BuildArgs) -> Weighting:
    from uncertainty_mtl.weighting.fixed import FixedWeighting

    return FixedWeighting(dict.fromkeys(a.tasks, 1.0), check_finite=a.check_finite)


def _gls(a: BuildArgs) -> Weighting:
    from uncertainty_mtl.weighting.methods import GeometricWeighting

    return GeometricWeighting(a.tasks, check_finite=a.check_finite)


def _rlw(a: BuildArgs) -> Weighting:
    from uncertainty_mtl.weighting.methods import RandomWeighting

    return RandomWeighting(a.tasks, seed=a.seed, check_finite=a.check_finite)


def _imtl_l(a: BuildArgs) -> Weighting:
    from uncertainty_mtl.weighting.methods import IMTLLossWeighting

    return IMTLLossWeighting(a.tasks, check_finite=a.check_finite)


def _dwa(a: BuildArgs) -> Weighting:
    from uncertainty_mtl.weighting.methods import DynamicWeightAverage

    return DynamicWeightAverage(
        a.tasks, temperature=a.options["temperature"], check_finite=a.check_finite
    )


def _gradnorm(a: BuildArgs) -> Weighting:
    from uncertainty_mtl.weighting.methods import GradNorm

    return GradNorm(a.tasks, alpha=a.options["alpha"], lr=a.lr, check_finite=a.check_finite)


def _si(a: BuildArgs) -> Weighting:
    from uncertainty_mtl.weighting.scale_invariant import ScaleInvariantWeighting

    return ScaleInvariantWeighting(a.tasks, check_finite=a.check_finite)


def _uw_so(a: BuildArgs) -> Weighting:
    from uncertainty_mtl.weighting.scale_invariant import AnalyticalUncertaintyWeighting

    return AnalyticalUncertaintyWeighting(
        a.tasks, temperature=a.options["temperature"], check_finite=a.check_finite
    )


def _famo(a: BuildArgs) -> Weighting:
    from uncertainty_mtl.weighting.scale_invariant import FAMO

    return FAMO(
        a.tasks,
        weight_lr=a.options["weight_lr"],
        gamma=a.options["gamma"],
        check_finite=a.check_finite,
    )


def _aggregator(name: str) -> Callable[[BuildArgs], Weighting]:
    def build(a: BuildArgs) -> Weighting:
        from uncertainty_mtl.weighting.aggregators import GradientAggregation

        return GradientAggregation(a.tasks, name, options=a.options, check_finite=a.check_finite)

    return build


def _torchjd(
    name: str, reference: str, options: tuple[Option, ...] = (), *, benchmarked: bool = True
) -> Method:
    return Method(
        name,
        AGGREGATOR,
        reference,
        _aggregator(name),
        options=options,
        hooks=("features",),
        extra="methods",
        package="torchjd",
        benchmarked=benchmarked,
    )


_METHODS = (
    Method(
        "uncertainty",
        LOSS_WEIGHTING,
        "Kendall, Gal & Cipolla, CVPR 2018 (this project)",
        _uncertainty,
        keys=("init_log_var", "convention", "regulariser", "likelihoods", "lr"),
    ),
    Method(
        "fixed",
        FIXED,
        "hand-chosen weights (the paper's grid search)",
        _fixed,
        keys=("weights",),
        benchmarked=False,
    ),
    Method("equal", LOSS_WEIGHTING, "the plain sum", _equal),
    Method("gls", LOSS_WEIGHTING, "GLS, Chennupati et al., CVPRW 2019", _gls),
    Method("rlw", LOSS_WEIGHTING, "RLW, Lin et al., TMLR 2022", _rlw),
    Method("imtl-l", LOSS_WEIGHTING, "IMTL-L, Liu et al., ICLR 2021", _imtl_l, keys=("lr",)),
    Method(
        "dwa",
        LOSS_WEIGHTING,
        "DWA, Liu, Johns & Davison, CVPR 2019",
        _dwa,
        options=(Option("temperature", 2.0, 0.0, False, "τ of softmax(r / τ)"),),
        hooks=("on_epoch",),
    ),
    Method(
        "gradnorm",
        LOSS_WEIGHTING,
        "GradNorm, Chen et al., ICML 2018",
        _gradnorm,
        options=(Option("alpha", 1.5, 0.0, True, "α, the pull towards equal training rates"),),
        keys=("lr",),
        hooks=("task_gradients",),
    ),
    _torchjd("mgda", "MGDA, Sener & Koltun, NeurIPS 2018"),
    _torchjd("pcgrad", "PCGrad, Yu et al., NeurIPS 2020"),
    _torchjd(
        "cagrad",
        "CAGrad, Liu et al., NeurIPS 2021",
        (Option("c", 0.4, 0.0, True, "the radius of the ball around the mean gradient"),),
    ),
    _torchjd("nash-mtl", "Nash-MTL, Navon et al., ICML 2022"),
    _torchjd("imtl-g", "IMTL-G, Liu et al., ICLR 2021"),
    _torchjd("aligned-mtl", "Aligned-MTL, Senushkin et al., CVPR 2023"),
    _torchjd("upgrad", "UPGrad, Quinton & Rey, 2024"),
    # Added with the tuned protocol of the benchmark: usable everywhere, rows of the two-task
    # tables, and of the city's single-rate table once it is regenerated (benchmarked=False).
    Method(
        "si",
        LOSS_WEIGHTING,
        "sum of log-losses, Navon et al., ICML 2022's baseline",
        _si,
        benchmarked=False,
    ),
    Method(
        "uw-so",
        LOSS_WEIGHTING,
        "UW-SO, analytical uncertainty weighting, Kirchdorfer et al., 2024",
        _uw_so,
        options=(Option("temperature", 1.0, 0.0, False, "τ of T·softmax((1/L)/τ)"),),
        benchmarked=False,
    ),
    Method(
        "famo",
        LOSS_WEIGHTING,
        "FAMO, Liu et al., NeurIPS 2023",
        _famo,
        options=(
            Option("weight_lr", 0.025, 0.0, True, "the Adam step of the task logits"),
            Option("gamma", 0.01, 0.0, True, "the task logits' weight decay"),
        ),
        benchmarked=False,
    ),
    _torchjd(
        "fairgrad",
        "FairGrad, Ban & Ji, ICML 2024",
        (Option("alpha", 1.0, 0.0, False, "α of the α-fair utility"),),
        benchmarked=False,
    ),
    _torchjd("dualproj", "DualProj, Quinton & Rey, 2024", benchmarked=False),
    _torchjd(
        "gradvac",
        "GradVac, Wang et al., ICLR 2021",
        (Option("beta", 0.5, 0.0, False, "the rate of the targets' moving average"),),
        benchmarked=False,
    ),
    _torchjd("config", "ConFIG, Liu et al., ICLR 2025", benchmarked=False),
    _torchjd(
        "db-mtl",
        "DB-MTL, Lin et al., 2023 (our aggregator on torchjd's Jacobian)",
        (
            Option("beta", 0.9, 0.0, True, "the moving average of the log-loss gradients"),
            Option("beta_sigma", 0.0, 0.0, True, "its decay: β / step^σ"),
        ),
        benchmarked=False,
    ),
)

#: ``weighting.kind`` -> :class:`Method`, in the order the docs and the error messages list them.
METHODS: dict[str, Method] = {m.name: m for m in _METHODS}


def method(name: str) -> Method:
    """The method called ``name``.

    Raises:
        UnknownMethodError: no method has that name (the message lists them).
    """
    found = METHODS.get(name)
    if found is None:
        raise UnknownMethodError(f"weighting.kind: {name!r} is not one of {list(METHODS)}")
    return found


def build_method(name: str, args: BuildArgs) -> Weighting:
    """The weighting of method ``name``.

    Raises:
        UnknownMethodError: an unknown name.
        ValueError: an option the method does not have (a left-out option takes its default).
        ModuleNotFoundError: the method's optional package is not installed (its ``name`` is
            the package's, so the CLI names the extra that provides it).
    """
    m = method(name)
    if m.package is not None and importlib.util.find_spec(m.package) is None:
        from uncertainty_mtl._install import install_command

        raise ModuleNotFoundError(
            f"weighting.kind {name!r} needs {m.package}: {install_command(str(m.extra))}",
            name=m.package,
        )
    given = dict(args.options)
    unknown = sorted(set(given) - {o.key for o in m.options})
    if unknown:
        raise ValueError(
            f"weighting.kind {name!r}: unknown option(s) {unknown}; its options are "
            f"{[o.key for o in m.options]}"
        )
    # A left-out option takes its default, written here only (Option.default).
    return m.build(replace(args, options=option_values(name, given)))


def option_values(name: str, given: Mapping[str, float] | None = None) -> dict[str, float]:
    """Method ``name``'s own options: ``given`` over the registry's defaults."""
    return {o.key: float((given or {}).get(o.key, o.default)) for o in method(name).options}


def benchmarked(family: str, *, every: bool = False) -> tuple[str, ...]:
    """The methods of ``family`` that are rows of the methods benchmark, ``equal`` first: with
    ``every``, every method of the family (the two-task tables); otherwise the rows of the city's
    single-rate table."""
    names = [m.name for m in _METHODS if m.family == family and (m.benchmarked or every)]
    return tuple(sorted(names, key=lambda n: n != "equal"))


def markdown_table() -> str:
    """The docs' table of methods: name, family, reference, keys, hooks, extra."""
    rows = [
        "| `weighting.kind` | family | reference | keys it reads | the step also calls | needs |",
        "|---|---|---|---|---|---|",
    ]
    for m in _METHODS:
        keys = ", ".join(
            [f"`weighting.{m.section}.{o.key}` ({o.default:g}: {o.help})" for o in m.options]
            + [f"`weighting.{k}`" for k in m.keys]
        )
        extra = f"`[{m.extra}]`" if m.extra else ""
        rows.append(
            f"| `{m.name}` | {m.family} | {m.reference} | {keys} | {', '.join(m.hooks)} | {extra} |"
        )
    return "\n".join(rows) + "\n"

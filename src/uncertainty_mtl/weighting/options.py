"""The config sections of the methods' own hyper-parameters, ``weighting.<method>.<key>``.

Each default is the registry's (:attr:`~uncertainty_mtl.weighting.registry.Method.options`),
and a test keeps the fields and the registry's keys in step.
"""

from __future__ import annotations

from dataclasses import dataclass

from uncertainty_mtl.weighting.registry import METHODS

__all__ = [
    "CagradConfig",
    "DbMtlConfig",
    "DwaConfig",
    "FairGradConfig",
    "FamoConfig",
    "GradNormConfig",
    "GradVacConfig",
    "UwSoConfig",
]


def _option(method: str, key: str) -> float:
    """The default of a method's own key, as the registry gives it."""
    return next(o.default for o in METHODS[method].options if o.key == key)


@dataclass
class DwaConfig:
    """``weighting.kind: dwa``."""

    temperature: float = _option("dwa", "temperature")  # τ of softmax(r / τ)


@dataclass
class GradNormConfig:
    """``weighting.kind: gradnorm`` (its weights' own step uses ``weighting.lr``)."""

    alpha: float = _option("gradnorm", "alpha")  # α, the pull towards equal training rates


@dataclass
class CagradConfig:
    """``weighting.kind: cagrad``."""

    c: float = _option("cagrad", "c")  # the radius of CAGrad's ball around the mean gradient


@dataclass
class UwSoConfig:
    """``weighting.kind: uw-so``."""

    temperature: float = _option("uw-so", "temperature")  # τ of softmax((1/L)/τ)


@dataclass
class FamoConfig:
    """``weighting.kind: famo``."""

    weight_lr: float = _option("famo", "weight_lr")  # Adam step of the task logits
    gamma: float = _option("famo", "gamma")  # their weight decay


@dataclass
class FairGradConfig:
    """``weighting.kind: fairgrad``."""

    alpha: float = _option("fairgrad", "alpha")  # α of the α-fair utility


@dataclass
class GradVacConfig:
    """``weighting.kind: gradvac``."""

    beta: float = _option("gradvac", "beta")  # the moving average's rate of the targets


@dataclass
class DbMtlConfig:
    """``weighting.kind: db-mtl``."""

    beta: float = _option("db-mtl", "beta")  # the moving average of the gradients
    beta_sigma: float = _option("db-mtl", "beta_sigma")  # its decay, β / step^σ

"""Loss weightings: ``weighting({task: loss}) -> total``. Imports nothing from models or data."""

from uncertainty_mtl.weighting.base import NonFiniteLossError, Weighting
from uncertainty_mtl.weighting.fixed import FixedWeighting
from uncertainty_mtl.weighting.methods import (
    DynamicWeightAverage,
    GeometricWeighting,
    GradNorm,
    IMTLLossWeighting,
    RandomWeighting,
)
from uncertainty_mtl.weighting.optim import parameter_groups
from uncertainty_mtl.weighting.scale_invariant import (
    FAMO,
    AnalyticalUncertaintyWeighting,
    ScaleInvariantWeighting,
)
from uncertainty_mtl.weighting.step import weighting_backward, weighting_step
from uncertainty_mtl.weighting.uncertainty import (
    CONVENTIONS,
    LIKELIHOODS,
    REGULARISERS,
    UncertaintyWeighting,
)

__all__ = [
    "CONVENTIONS",
    "FAMO",
    "LIKELIHOODS",
    "REGULARISERS",
    "AnalyticalUncertaintyWeighting",
    "DynamicWeightAverage",
    "FixedWeighting",
    "GeometricWeighting",
    "GradNorm",
    "IMTLLossWeighting",
    "NonFiniteLossError",
    "RandomWeighting",
    "ScaleInvariantWeighting",
    "UncertaintyWeighting",
    "Weighting",
    "parameter_groups",
    "weighting_backward",
    "weighting_step",
]

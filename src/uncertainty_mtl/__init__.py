"""uncertainty-mtl: multi-task learning using uncertainty to weigh losses (Kendall et al. 2018)."""

from uncertainty_mtl.weighting import (
    FixedWeighting,
    UncertaintyWeighting,
    Weighting,
    parameter_groups,
)

__version__ = "0.1.0"

__all__ = ["FixedWeighting", "UncertaintyWeighting", "Weighting", "__version__", "parameter_groups"]

"""uncertainty-mtl: multi-task learning using uncertainty to weigh losses (Kendall et al. 2018).

The loss's classes are imported on first use (``from uncertainty_mtl import
UncertaintyWeighting`` works as always), so that ``umtl --help`` and other commands that do not
train start without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from uncertainty_mtl.weighting import (
        FixedWeighting,
        UncertaintyWeighting,
        Weighting,
        parameter_groups,
        weighting_backward,
        weighting_step,
    )

__version__ = "0.1.0"

__all__ = [
    "FixedWeighting",
    "UncertaintyWeighting",
    "Weighting",
    "__version__",
    "parameter_groups",
    "weighting_backward",
    "weighting_step",
]

#: public name -> the module that defines it
_LAZY = {
    "FixedWeighting": "uncertainty_mtl.weighting",
    "UncertaintyWeighting": "uncertainty_mtl.weighting",
    "Weighting": "uncertainty_mtl.weighting",
    "parameter_groups": "uncertainty_mtl.weighting",
    "weighting_backward": "uncertainty_mtl.weighting",
    "weighting_step": "uncertainty_mtl.weighting",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # once
        return value
    raise AttributeError(f"module 'uncertainty_mtl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})

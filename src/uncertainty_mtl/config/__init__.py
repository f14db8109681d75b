"""Training configuration: YAML files validated into dataclasses.

A config file may start from another with ``base: <file or shipped name>`` and override any key.
``--set section.key=value`` overrides after loading (values are read as YAML). An unknown key or
a value of the wrong type is a :class:`ConfigError` that lists what is allowed, raised before any
work is done. The resolved configuration is what a run writes to ``config.yaml``.

Shipped configs (``umtl train --config NAME``): ``smoke``, ``cpu/...``,
``paper/tiny-cityscapes/...``, ``paper/cityscapes/...``; see ``configs/`` in the package.
"""

from uncertainty_mtl.config.files import (
    SECTIONS,
    apply_overrides,
    apply_patch,
    build_config,
    config_differences,
    config_to_dict,
    load_config,
    parse_overrides,
    read_config,
    resolve_config_path,
    shipped_configs,
    split_weighting,
    weighting_config,
    with_absolute_paths,
)
from uncertainty_mtl.config.sections import (
    OPTIMIZERS,
    WEIGHTING_KINDS,
    CagradConfig,
    DataConfig,
    DbMtlConfig,
    DwaConfig,
    EvalConfig,
    FairGradConfig,
    FamoConfig,
    GradNormConfig,
    GradVacConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    UwSoConfig,
    WeightingConfig,
)
from uncertainty_mtl.errors import ConfigError

__all__ = [
    "OPTIMIZERS",
    "SECTIONS",
    "WEIGHTING_KINDS",
    "CagradConfig",
    "ConfigError",
    "DataConfig",
    "DbMtlConfig",
    "DwaConfig",
    "EvalConfig",
    "FairGradConfig",
    "FamoConfig",
    "GradNormConfig",
    "GradVacConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "UwSoConfig",
    "WeightingConfig",
    "apply_overrides",
    "apply_patch",
    "build_config",
    "config_differences",
    "config_to_dict",
    "load_config",
    "parse_overrides",
    "read_config",
    "resolve_config_path",
    "shipped_configs",
    "split_weighting",
    "weighting_config",
    "with_absolute_paths",
]

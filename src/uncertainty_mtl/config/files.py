"""Configuration files: YAML read safely, ``base:`` chains merged, ``--set`` overrides and typed
patches applied, values coerced to the sections' types and validated."""

from __future__ import annotations

import copy
import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from uncertainty_mtl.config.sections import TrainConfig, WeightingConfig
from uncertainty_mtl.errors import ConfigError

__all__ = [
    "SECTIONS",
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


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def with_absolute_paths(config: TrainConfig) -> TrainConfig:
    """``config`` with ``data.root`` and ``data.cache_dir`` absolute (relative ones are taken
    from the current directory), as a run directory stores them: the run is found again from
    anywhere (``umtl evaluate``, ``umtl predict``)."""
    data = config.data
    cache = os.path.abspath(data.cache_dir) if data.cache_dir else data.cache_dir
    absolute = dataclasses.replace(data, root=os.path.abspath(data.root), cache_dir=cache)
    return dataclasses.replace(config, data=absolute)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """``value`` checked against the type ``hint`` (YAML gives ints for floats, strings for
    numbers in exponent notation)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{where}: must not be null")
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)  # type: ignore[arg-type]
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        key_type, item = typing.get_args(hint)
        return {
            _coerce(k, key_type, where): _coerce(v, item, f"{where}.{k}") for k, v in value.items()
        }
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {hint}")


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(f"{where or 'config'}: unknown key(s) {unknown}; allowed: {names}")
    values = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**values)


def split_weighting(
    patch: Mapping[str, Any], defaults: Mapping[str, Any]
) -> tuple[WeightingConfig, dict[str, Any]]:
    """A study run's patch split into its ``weighting`` section (its ``weighting.<key>`` entries
    over the study's ``defaults`` for that section, checked as :func:`weighting_config` does) and
    the rest of the patch."""
    own = {k: v for k, v in patch.items() if k.startswith("weighting.")}
    section = apply_patch({"weighting": dict(defaults)}, own)["weighting"]
    return weighting_config(section), {k: v for k, v in patch.items() if k not in own}


def weighting_config(data: Mapping[str, Any]) -> WeightingConfig:
    """A ``weighting`` section (a mapping, its sections nested) as every study names a method:
    types checked, an unknown key refused in one line naming it."""
    config: WeightingConfig = _build(WeightingConfig, dict(data), "weighting")
    return config


_CONFIG_PACKAGE = "uncertainty_mtl"


def shipped_configs() -> list[str]:
    """Names of the configs shipped with the package (``cpu/three-task``, ...)."""
    root = resources.files(_CONFIG_PACKAGE) / "configs"
    names: list[str] = []

    def walk(node: Any, prefix: str) -> None:
        for child in node.iterdir():
            if child.is_dir():
                walk(child, f"{prefix}{child.name}/")
            elif child.name.endswith(".yaml") and not child.name.startswith("_"):
                names.append(prefix + child.name[: -len(".yaml")])

    walk(root, "")
    return sorted(names)


def resolve_config_path(name: str | os.PathLike[str], relative_to: Path | None = None) -> Path:
    """A config file's path: an existing file, else a shipped config of that name."""
    candidates = [Path(name), Path(f"{name}.yaml")]
    if relative_to is not None:
        candidates[:0] = [relative_to / name, relative_to / f"{name}.yaml"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    shipped = (
        resources.files(_CONFIG_PACKAGE) / "configs" / f"{str(name).removesuffix('.yaml')}.yaml"
    )
    if shipped.is_file():
        return Path(str(shipped))
    stem = str(name).removesuffix(".yaml")
    near = [c for c in shipped_configs() if c.rsplit("/", 1)[-1] == stem]
    hint = f" (did you mean {' or '.join(map(repr, near))}?)" if near else ""
    raise ConfigError(
        f"config {str(name)!r}: no such file, and no shipped config of that name{hint}; "
        f"shipped: {shipped_configs()}"
    )


#: The top-level keys whose values are sections of keys. Every other mapping in a config
#: (``weighting.weights``, ``data.synth_split_sizes``, ...) is one value, replaced whole.
SECTIONS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name != "tasks")


def _merge(base: dict[str, Any], top: dict[str, Any], *, depth: int = 0) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if depth == 0 and key in SECTIONS and isinstance(value, dict):
            out[key] = _merge(out.get(key) or {}, value, depth=1)
        else:
            out[key] = value
    return out


def config_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The keys whose values differ between two resolved configs, as ``key: a -> b``."""
    diffs = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if key in SECTIONS and isinstance(x, dict) and isinstance(y, dict):
            diffs += [
                f"{key}.{k}: {x.get(k)!r} -> {y.get(k)!r}"
                for k in sorted(set(x) | set(y))
                if x.get(k) != y.get(k)
            ]
        elif x != y:
            diffs.append(f"{key}: {x!r} -> {y!r}")
    return diffs


def _root_is_data(layer: dict[str, Any]) -> dict[str, Any]:
    """A layer (a file's sections, or a patch of dotted keys) that names ``data.root`` without
    ``data.synthetic`` means data to read: the synthetic city a base config generates is never
    generated into a root named after it."""
    section = layer.get("data")
    if isinstance(section, dict) and "root" in section and "synthetic" not in section:
        section["synthetic"] = False
    if "data.root" in layer and "data.synthetic" not in layer:
        layer["data.synthetic"] = False
    return layer


def _read(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'base' chain loops back to itself")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({_one_line(err)})") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a UTF-8 text file ({err.reason})") from err
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config ({err.strerror})") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    base = data.pop("base", None)
    _root_is_data(data)
    if base is None:
        return data
    parent = _read(resolve_config_path(base, path.parent), (*seen, path.resolve()))
    return _merge(parent, data)


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``section.key=value`` strings (values parsed as YAML) as a patch ``{dotted key: value}``;
    ``data.root`` given without ``data.synthetic`` reads that root as data (never generated
    into)."""
    patch: dict[str, Any] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. optim.lr=0.01")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(
                f"--set {item!r}: value is not valid YAML ({_one_line(err)})"
            ) from err
        patch.pop(key, None)  # a repeated key applies where it was given last
        patch[key] = value
    return _root_is_data(patch)


def apply_patch(data: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the config mapping ``data`` with ``patch`` (``{dotted key: value}``) applied,
    in order; neither ``data`` nor ``patch`` is changed or shared with the result."""
    data = copy.deepcopy(data)
    for key, value in patch.items():
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {part} is not a section")
        node[parts[-1]] = copy.deepcopy(value)
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Applies ``section.key=value`` strings (values parsed as YAML) to a config mapping."""
    return apply_patch(data, parse_overrides(overrides))


def read_config(name: str | os.PathLike[str]) -> dict[str, Any]:
    """A config file (or a shipped one by name) as a mapping, its ``base`` chain merged in."""
    return _read(resolve_config_path(name))


def build_config(data: Mapping[str, Any]) -> TrainConfig:
    """A config mapping validated into a :class:`TrainConfig`."""
    config: TrainConfig = _build(TrainConfig, dict(data), "")
    config.validate()
    return config


def load_config(
    name: str | os.PathLike[str] | None = None,
    overrides: list[str] | None = None,
    *,
    data: dict[str, Any] | None = None,
) -> TrainConfig:
    """Reads a config file (or a shipped one by name, or a mapping), applies overrides and
    validates everything.

    Raises:
        ConfigError: unknown key, wrong type, invalid value, missing file.
    """
    raw = read_config(name) if name is not None else dict(data or {})
    return build_config(apply_overrides(raw, overrides or []))

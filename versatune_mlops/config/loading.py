"""Building a config: defaults < preset (``projects/<name>.yaml``) < config file < ``--set`` overrides,
with unknown keys refused and a suggestion for the closest known one."""

from __future__ import annotations

import dataclasses
import difflib
import numbers
import types
import typing
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

from ..errors import ConfigError
from .schema import RunConfig, projects_dir
from .validation import validate


def available_presets() -> list[str]:
    return sorted(p.stem for p in projects_dir().glob("*.yaml"))


def load_config(
    preset: Optional[str] = None,
    config_file: Optional[str | Path] = None,
    overrides: Optional[Mapping[str, Any]] = None,
) -> RunConfig:
    """Build and validate a config: defaults < preset < config file < overrides.

    The preset is the one passed here (``--preset``) or the one a config file names with
    ``preset: NAME``; both given and different is an error, since one of them would be ignored.
    """
    file_tree: dict[str, Any] = {}
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"Config file {str(path)!r} does not exist. Check the --config path.")
        file_tree = _read_yaml(path)
        named = file_tree.pop("preset", None)
        if named is not None:
            if not isinstance(named, str) or not named:
                raise ConfigError(f"{path}: 'preset: {named!r}' must name a preset "
                                  f"({', '.join(available_presets())}).")
            if preset is not None and preset != named:
                raise ConfigError(f"{path} says 'preset: {named}' but --preset {preset} was given. Pass one of them: "
                                  f"drop --preset to build on {named!r}, or remove the 'preset:' line.")
            preset = named
    if "preset" in (overrides or {}):
        raise ConfigError("--set preset=... cannot change the base preset after it is loaded; pass --preset NAME "
                          "(or 'preset: NAME' in the --config file) instead.")
    tree: dict[str, Any] = {}
    if preset is not None:
        path = projects_dir() / f"{preset}.yaml"
        if not path.is_file():
            raise ConfigError(
                f"Unknown preset {preset!r}. Available presets: {', '.join(available_presets())}. "
                f"Pass one of them with --preset, or a YAML file with --config."
            )
        preset_tree = _read_yaml(path)
        preset_tree.pop("preset", None)
        tree = _deep_merge(preset_tree, {"preset": preset})
    tree = _deep_merge(tree, file_tree)
    for dotted, value in (overrides or {}).items():
        set_dotted(tree, dotted, value)
    config = from_dict(tree)
    validate(config)
    return config


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}. Fix the file's syntax.") from exc
    if not isinstance(tree, dict):
        raise ConfigError(f"{path} must hold a mapping of sections (data, model, train, ...).")
    return tree


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"Override {dotted!r}: {part!r} is a value, not a section.")
    node[parts[-1]] = value


def from_dict(tree: Mapping[str, Any]) -> RunConfig:
    """Turn a nested mapping into a RunConfig, rejecting unknown keys with a suggestion."""
    return _build(RunConfig, tree, "")


def _build(cls: type, tree: Mapping[str, Any], where: str):
    if not isinstance(tree, Mapping):
        raise ConfigError(f"{where.rstrip('.') or 'config'} must be a mapping of keys, got {tree!r}.")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    # The schema uses `from __future__ import annotations`: field.type is a string, so resolve the hints.
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in tree.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"Unknown config key {where + key!r}.{hint} Known keys here: {', '.join(fields)}."
            )
        kwargs[key] = _coerce(value, hints[key], where + key)
    return cls(**kwargs)


# Strings people write for "no value" and for booleans, in YAML, on a command line or as MLproject -P.
_NULLS = ("null", "none", "~")
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """``value`` converted to the declared type ``hint`` of config key ``key``, or a ConfigError.

    Values come as YAML parsed them (PyYAML reads ``2e-5`` as a string: YAML 1.1 floats need a dot),
    as ``--set`` text, or as MLproject passes -P values; every one ends up as the field's type here,
    so validation and the code downstream compare numbers with numbers.
    """
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key + ".")
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):  # Optional[X]: the schema's only union
        inner = next(arg for arg in args if arg is not type(None))
        if value is None or (isinstance(value, str) and value.strip().lower() in _NULLS):
            return None
        # An empty value means "unset" for a number or a list; for a string it may be meant.
        if isinstance(value, str) and not value.strip() and inner is not str:
            return None
        return _coerce(value, inner, key)
    if origin is list:
        if isinstance(value, str):  # --set data.domains=law,code
            value = [item.strip() for item in value.split(",") if item.strip()]
        if not isinstance(value, (list, tuple)):
            raise _type_error(key, value, f"a list of {_type_name(args[0])}", "e.g. [a, b] or a,b")
        return [_coerce(item, args[0], f"{key}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _type_error(key, value, "a mapping", "e.g. {law: 0.5, code: 0.5}")
        return {_coerce(k, args[0], f"{key} key"): _coerce(v, args[1], f"{key}[{k!r}]") for k, v in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise _type_error(key, value, "a boolean", "use true or false")
    if hint is int:
        number = _number(value)
        if number is None or not float(number).is_integer():
            raise _type_error(key, value, "an integer", "e.g. 40")
        return int(number)
    if hint is float:
        number = _number(value)
        if number is None:
            raise _type_error(key, value, "a number", "e.g. 2e-5 or 0.0001")
        return float(number)
    if hint is str:
        # An int is what YAML makes of a name like 2024; a float or a bool would not round-trip.
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise _type_error(key, value, "a string", "quote it")
        return value
    return value  # Any: taken as given


def _number(value: Any) -> Optional[float | int]:
    """An int or float from a number or its text ('2e-5', '40', '40.0'); None if it is neither."""
    if isinstance(value, bool):  # True is an int to Python, not to a user
        return None
    if isinstance(value, numbers.Integral):  # numpy's integers too (Ray Tune, Optuna samples)
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            return float(text)
        except ValueError:
            return None
    return None


def _type_name(hint: Any) -> str:
    return {int: "integers", float: "numbers", str: "strings", bool: "booleans"}.get(hint, str(hint))


def _type_error(key: str, value: Any, expected: str, fix: str) -> ConfigError:
    return ConfigError(f"{key}={value!r} must be {expected} ({fix}); got {type(value).__name__}.")

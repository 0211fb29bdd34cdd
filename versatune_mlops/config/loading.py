"""Building a config: defaults < preset (``projects/<name>.yaml``) < config file < ``--set`` overrides,
with unknown keys refused and a suggestion for the closest known one."""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

from ..errors import ConfigError
from .schema import (DataConfig, DistributedConfig, MethodConfig, ModelConfig, ProbeConfig, RunConfig,
                     TinyModelConfig, TrainConfig, TuneConfig, projects_dir)
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
        raise ConfigError(f"{where or 'config'} must be a mapping, got {tree!r}.")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in tree.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"Unknown config key {where + key!r}.{hint} Known keys here: {', '.join(fields)}."
            )
        sub = _DATACLASS_FIELDS.get((cls, key))
        kwargs[key] = _build(sub, value, f"{where}{key}.") if sub else value
    return cls(**kwargs)


_DATACLASS_FIELDS = {
    (RunConfig, "data"): DataConfig,
    (RunConfig, "model"): ModelConfig,
    (RunConfig, "probe"): ProbeConfig,
    (RunConfig, "method"): MethodConfig,
    (RunConfig, "train"): TrainConfig,
    (RunConfig, "distributed"): DistributedConfig,
    (RunConfig, "tune"): TuneConfig,
    (ModelConfig, "tiny"): TinyModelConfig,
}



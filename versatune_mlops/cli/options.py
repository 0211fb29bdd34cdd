"""Option helpers shared by the commands: the config options, tracking options, and turning them
into a validated config."""

from __future__ import annotations

import argparse
from typing import Any, Optional

import yaml

from ..config import RunConfig, available_presets, load_config
from ..errors import VersaTuneError

# Command-line flags that are shorthands for config keys.
FLAG_KEYS = {
    "seed": ["train.seed", "probe.seed"], "method": ["method.method"], "mode": ["method.mode"],
    "target": ["method.target"], "max_steps": ["train.max_steps"], "num_samples": ["probe.num_samples"],
    "num_trials": ["tune.num_samples"],
    "num_workers": ["distributed.num_workers"], "ray_address": ["distributed.address"],
    "storage_path": ["distributed.storage_path"], "max_failures": ["distributed.max_failures"],
    "use_gpu": ["distributed.use_gpu"], "searcher": ["tune.searcher"], "objective": ["tune.objective"],
}


def optional_int(text: str) -> Optional[int]:
    """An integer option that MLproject may pass as "" (unset) or "40.0"."""
    if text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer")
    return int(value)


def add_config_options(parser: argparse.ArgumentParser, preset_default: Optional[str] = None,
                       set_help: str = "override a config value, e.g. --set train.learning_rate=2e-5 (repeatable)") -> None:
    """--preset, --config and --set: the config precedence chain (defaults < preset < file < --set)."""
    parser.add_argument("--preset", default=preset_default,
                        help=f"experiment preset in projects/ ({', '.join(available_presets())})")
    parser.add_argument("--config", help="YAML config file (applied after the preset; may name its own base "
                                         "with 'preset: NAME')")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=set_help)


def add_tracking_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-tracking", dest="tracking", action="store_false",
                        help="do not log to MLflow (plain local run)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite:///$PWD/mlflow.db)")
    parser.add_argument("--experiment", help="MLflow experiment name (default: the current one)")
    parser.add_argument("--run-name", help="MLflow run name")
    add_verbose(parser)


def add_verbose(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """--set KEY=VALUE items (values parsed as YAML) plus the shorthand flags that were given."""
    result: dict[str, Any] = {}
    for item in getattr(args, "set", []):
        if "=" not in item:
            raise VersaTuneError(f"--set {item!r} must look like KEY=VALUE, e.g. --set train.max_steps=40.")
        key, value = item.split("=", 1)
        try:
            result[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:  # e.g. an unclosed '[': the config's types then say what was expected
            result[key.strip()] = value
    for attribute, keys in FLAG_KEYS.items():
        value = getattr(args, attribute, None)
        if value is not None and value != "":  # MLproject passes "" for "not set"
            result.update({key: value for key in keys})
    return result


def config_from_args(args: argparse.Namespace, extra: Optional[dict[str, Any]] = None) -> RunConfig:
    """The validated config of a command: its --preset/--config/--set and flags, then ``extra``."""
    return load_config(args.preset or None, args.config or None, {**overrides(args), **(extra or {})})


def csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]

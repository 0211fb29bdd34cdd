"""Typed configuration: the schema (schema.py), how a config is built from presets, files and
overrides (loading.py), and the one place that validates it (validation.py).

A run is described by :class:`RunConfig`: a preset (``projects/<name>.yaml``) or a YAML file, then
dotted overrides (``train.max_steps=40``), then :func:`validate` checks every value once.
"""

from .loading import available_presets, from_dict, load_config, set_dotted
from .schema import (COEFFICIENT_BOUNDS, DEFAULT_DOMAINS, ESTIMATORS, EXPANSION_METHODS, EXPANSION_ONLY_METHODS,
                     METHODS, OBJECTIVES, REFERENCE_STRATEGIES, SEARCHERS, SIGNALS, TUNED, DataConfig,
                     DistributedConfig, MethodConfig, ModelConfig, ProbeConfig, RunConfig, TinyModelConfig,
                     TrainConfig, TuneConfig, flatten, objective_mode, projects_dir)
from .validation import check_domains_against_data, validate, validate_distribution

__all__ = [
    "COEFFICIENT_BOUNDS", "DEFAULT_DOMAINS", "ESTIMATORS", "EXPANSION_METHODS", "EXPANSION_ONLY_METHODS", "METHODS",
    "OBJECTIVES", "REFERENCE_STRATEGIES", "SEARCHERS", "SIGNALS", "TUNED", "DataConfig", "DistributedConfig",
    "MethodConfig", "ModelConfig", "ProbeConfig", "RunConfig", "TinyModelConfig", "TrainConfig", "TuneConfig",
    "available_presets", "check_domains_against_data", "flatten", "from_dict", "load_config", "objective_mode",
    "projects_dir", "set_dotted", "validate", "validate_distribution",
]

"""Weighting strategies: one class per mixing method, registered by name.

The registry :data:`STRATEGIES` is the single list of methods. A class says what it needs and
supports (``dynamic``, ``needs_prior``, ``needs_sizes``, ``supports_expansion``, ``expansion_only``),
and config, the loop and the benchmark derive their method lists from those attributes (see
:func:`method_names`). Adding a method is one decorated class in this package. The maths lives in
:mod:`.weights`; a strategy only picks which update to apply and keeps its own state for resume.
"""

from .base import (DEFAULT_TARGET_INITIAL_SHARE, DEFAULT_TARGET_MAX_SHARE, MODES, POTENTIALS, STRATEGIES,
                   DomainSignals, StepReport, WeightingStrategy, build_strategy,
                   check_method_mode, method_names, register_strategy, strategy_class)

# Import order is registration order, and registration order is the order of every method list (CLI
# choices, benchmark rows): the static baselines, the online baselines, the expansion baselines, VersaTune last.
from .static import InverseProbe, SizeProportional, Uniform, VersaTuneConstant  # noqa: E402
from .online import Aioli, DoReMi, OnlineDataMixing  # noqa: E402
from .expansion import TargetOnly, TargetUniform  # noqa: E402
from .versatune import VersaTune  # noqa: E402

__all__ = ["DEFAULT_TARGET_INITIAL_SHARE", "DEFAULT_TARGET_MAX_SHARE", "MODES", "POTENTIALS", "STRATEGIES",
           "DomainSignals", "StepReport", "WeightingStrategy", "build_strategy",
           "check_method_mode", "method_names", "register_strategy", "strategy_class", "Uniform", "SizeProportional",
           "InverseProbe", "VersaTuneConstant", "DoReMi", "OnlineDataMixing", "Aioli", "TargetOnly", "TargetUniform",
           "VersaTune"]

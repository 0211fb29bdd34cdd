"""Errors the user can fix. Every message names the problem and how to fix it.

The CLI turns these into a one-paragraph message and a non-zero exit; anything else is a bug
and keeps its traceback.
"""


class VersaTuneError(Exception):
    """Base class for errors caused by the user's input, not by a bug."""


class ConfigError(VersaTuneError, ValueError):
    """A configuration value, preset, method or coefficient is invalid."""


class DataError(VersaTuneError, ValueError):
    """The training data is missing, malformed, or does not match the configured domains."""


class ModelError(VersaTuneError, ValueError):
    """The model path, id or options cannot be used."""


class TrainingDivergedError(VersaTuneError, RuntimeError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""

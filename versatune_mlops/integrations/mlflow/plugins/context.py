"""MLflow run-context provider: tags every run started with ``mlflow.start_run()`` while the package is
installed with ``versatune.version`` and, inside a VersaTune command, ``versatune.method|mode|preset|domains``.

MLflow imports this module whenever it resolves run tags, so it imports nothing heavy. The tag names
are the ones :mod:`versatune_mlops.tracking` writes on its own runs, with the same values, so a run
that gets both never sees a conflict.
"""

from __future__ import annotations

from mlflow.tracking.context.abstract_context import RunContextProvider

from .... import __version__
from .. import run_context
from ..run_context import TAG_PREFIX



class VersaTuneRunContextProvider(RunContextProvider):
    def in_context(self) -> bool:
        return True  # the package is installed: every run gets at least its version

    def tags(self) -> dict[str, str]:
        tags = {f"{TAG_PREFIX}version": __version__}
        tags.update({f"{TAG_PREFIX}{field}": value for field, value in run_context.current().items()})
        return tags

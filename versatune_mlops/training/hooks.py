"""Hooks the training loop calls, so tracking (MLflow), progress and tests plug in without editing it.

Every method is a no-op here; subclasses override what they need. The loop calls them in this
order: ``on_start`` once, then per step ``on_step_end``, ``on_log`` every ``log_every`` steps,
``on_eval`` and ``on_reweight`` at each re-weighting point, ``on_checkpoint`` after a checkpoint is
fully written, and ``on_end`` once with the summary.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence


class TrainingHooks:
    def on_start(self, config, domains: Sequence[str], initial_weights: Mapping[str, float], run_info: Mapping[str, Any]) -> None:
        """Before the first step; ``run_info`` holds the resolved prior, reference losses, sizes, and
        the probe's output (``probe_result``) when this run measured its prior."""

    def on_step_end(self, step: int, loss: float, model) -> None:
        """After each optimizer step."""

    def on_log(self, step: int, metrics: Mapping[str, float]) -> None:
        """Training metrics: ``train_loss``, ``learning_rate``, ``tokens_per_second``, ``share/<domain>``."""

    def on_eval(self, step: int, metrics: Mapping[str, float]) -> None:
        """Per-domain evaluation: ``eval_loss/<domain>``, aggregates, ``accuracy/<domain>`` at start/end."""

    def on_reweight(self, step: int, record: Mapping[str, Any]) -> None:
        """A re-weighting point: ``record`` has ``weights``, ``potential``, ``forgetting`` (domain -> value)."""

    def on_checkpoint(self, step: int, path: str) -> None:
        """A checkpoint folder was completely written."""

    def on_end(self, summary: Mapping[str, Any]) -> None:
        """Training finished; ``summary`` is what ``summary.json`` holds."""


class HookList(TrainingHooks):
    """Calls several hooks in order."""

    def __init__(self, hooks: Sequence[TrainingHooks] = ()):
        self.hooks = list(hooks)

    def _call(self, name: str, *args) -> None:
        for hook in self.hooks:
            getattr(hook, name)(*args)

    def on_start(self, *args):
        self._call("on_start", *args)

    def on_step_end(self, *args):
        self._call("on_step_end", *args)

    def on_log(self, *args):
        self._call("on_log", *args)

    def on_eval(self, *args):
        self._call("on_eval", *args)

    def on_reweight(self, *args):
        self._call("on_reweight", *args)

    def on_checkpoint(self, *args):
        self._call("on_checkpoint", *args)

    def on_end(self, *args):
        self._call("on_end", *args)

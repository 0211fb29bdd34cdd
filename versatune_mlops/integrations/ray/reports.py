"""What a training run reports to Ray: its checkpoints and evaluations to Ray Train (from each
worker), or its evaluations to Tune (from a trial that trains in its own process).

Every evaluation report carries the step; all but the final one also carry ASHA's time attribute.
"""

from __future__ import annotations

from ...training.checkpointing import PREFIX
from ...training.hooks import TrainingHooks

# ASHA's time attribute: the training step of an evaluation before the last one. The final evaluation
# does not carry it, so ASHA never acts on it: a STOP there (its step reaches max_t, or a rung falls on
# the last step) would end the trial before it logs its summary and model, and a trial that ran every
# step would count as stopped early.
ASHA_TIME_ATTR = "asha_step"


def asha_time(step: int, max_steps: int) -> dict[str, int]:
    """What a trial's report adds for ASHA at ``step`` (nothing at the final evaluation)."""
    return {ASHA_TIME_ATTR: step} if step < max_steps else {}


class RayCheckpointReporter(TrainingHooks):
    """Hands each checkpoint to Ray Train (every worker must call report the same number of times)."""

    def on_checkpoint(self, step, path):
        import ray.train

        checkpoint = ray.train.Checkpoint.from_directory(path) if path else None
        ray.train.report({"step": step}, checkpoint=checkpoint, checkpoint_dir_name=f"{PREFIX}{step:06d}")


class EvaluationReporter(TrainingHooks):
    """Sends each evaluation, with its step and ASHA's time attribute, through :meth:`send`."""

    max_steps = 0

    def on_start(self, config, domains, initial_weights, run_info):
        self.max_steps = config.train.max_steps

    def on_eval(self, step, metrics):
        self.send({**metrics, "step": step, **asha_time(step, self.max_steps)})

    def send(self, report: dict) -> None:
        raise NotImplementedError


class RayMetricsReporter(EvaluationReporter):
    """Reports each evaluation to Ray Train (inside a Tune trial it reaches Tune through TuneReportCallback)."""

    def send(self, report):
        import ray.train

        ray.train.report(report)


class TuneReporter(EvaluationReporter):
    """In-process trials: report each evaluation to Tune."""

    def send(self, report):
        from ray import tune

        tune.report(report)

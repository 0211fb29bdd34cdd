"""A sweep's record: one JSON line per trial as it ends, so an interrupted sweep can be resumed.

A sweep writes ``sweep_record.jsonl`` in its output folder: a header line that says what the trials
train (everything in the config that a trial does not choose itself), then one line per trial (and
the baseline run) as Ray reports it finished, stopped or failed. ``versatune tune --resume-from
RECORD`` reads it back: the finished trials count towards ``tune.num_samples`` and are told to
optuna's TPE as evaluated points, a finished baseline is reused, and only the rest run. The file is
small and plain, so a sweep can be continued on another machine or in a later session from a copy
of it (Ray's own experiment folder, which ``Tuner.restore`` needs, holds pickles and every trial's
outputs).

No Ray and no MLflow at import (the Ray callback that writes the record imports them when built):
the CLI reads and checks a record before Ray starts.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from ...config import TUNED, RunConfig
from ...errors import ConfigError
from .search_space import searched_space

log = logging.getLogger(__name__)

RECORD_NAME = "sweep_record.jsonl"
RECORD_VERSION = 1

# Config keys a trial sets for itself (its coefficients and chosen shares) or that do not change what
# it learns (where it writes, how often it logs): they may differ between a sweep and its resumption.
_PER_TRIAL = {f"method.{name}" for name in (*TUNED, "interval", "max_domain_share", "target_initial_share")}
_NOT_LEARNED = {"train.save_model", "train.log_every", "train.checkpoint_every", "train.keep_checkpoints",
                "model.cache_dir", "model.torch_threads", "model.device"}
_SECTIONS = ("data", "model", "probe", "method", "train")


@dataclass
class TrialRecord:
    params: dict[str, Any]
    objective: Optional[float]
    run_id: Optional[str]
    status: str  # finished | stopped | error | interrupted
    error: Optional[str] = None
    steps: Optional[int] = None
    """Training steps the trial ran (its last reported step)."""
    started: Optional[float] = None
    """Unix time of its first report (whole seconds, Ray's timestamp), to order trials as they ran."""
    gain: Optional[float] = None
    """Relative gain of its objective over the baseline run's (see ``tuning.gain_over_baseline``)."""
    resumed: bool = False
    """Read back from an earlier sweep's record (``--resume-from``), not run by this sweep."""

    @property
    def kept(self) -> bool:
        """Finished with a finite objective: what a resumed sweep keeps, counts and tells its searcher."""
        return self.status == "finished" and self.objective is not None and math.isfinite(self.objective)


@dataclass
class SweepRecord:
    path: Path
    identity: dict[str, Any]
    trials: list[TrialRecord] = field(default_factory=list)
    baseline: Optional[TrialRecord] = None

    @property
    def finished(self) -> list[TrialRecord]:
        return [t for t in self.trials if t.kept]


def sweep_identity(config: RunConfig) -> dict[str, Any]:
    """What every trial of this sweep trains with, as JSON values: two sweeps with the same identity
    can share trials."""
    flat = config.flat()
    keys = sorted(k for k in flat if k.split(".")[0] in _SECTIONS and k not in _PER_TRIAL | _NOT_LEARNED)
    return json.loads(json.dumps({**{k: flat[k] for k in keys}, "tune.objective": config.tune.objective}))


def start_record(path: Path, config: RunConfig, resumed: Optional[SweepRecord] = None) -> None:
    """Write the header (and the trials carried over from ``resumed``), replacing any file there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [{"kind": "sweep", "version": RECORD_VERSION, "identity": sweep_identity(config)}]
    if resumed is not None:
        if resumed.baseline is not None and resumed.baseline.kept:
            lines.append(_line("baseline", resumed.baseline))
        lines += [_line("trial", t) for t in resumed.finished]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def append_trial(path: Path, role: str, trial: TrialRecord) -> None:
    """One more line; a line is written whole, so an interruption loses at most the trial running."""
    with path.open("a") as f:
        f.write(json.dumps(_line(role, trial)) + "\n")
        f.flush()


def _line(role: str, trial: TrialRecord) -> dict[str, Any]:
    fields = asdict(trial)
    fields.pop("resumed")
    fields.pop("gain")  # recomputed against whichever baseline the resumed sweep has
    return {"kind": role, **fields}


def record_callback(path: Path, role: str, names: tuple[str, ...], config: RunConfig, *, experiment_id: str,
                    parent_run_id: str):
    """A Ray Tune callback (in the driver) that appends each trial to the sweep's record as it ends,
    and remembers which trials ended (a trial Ray returns without ending was interrupted)."""
    from mlflow.tracking import MlflowClient
    from ray import tune

    objective, max_steps = config.tune.objective, config.train.max_steps

    class Recorder(tune.Callback):
        def __init__(self):
            self.ended: set[str] = set()

        def _append(self, trial, status: str) -> None:
            self.ended.add(trial.trial_id)
            metrics = trial.last_result or {}
            steps = metrics.get("step")
            if status == "finished" and steps is not None and steps < max_steps:
                status = "stopped"  # ended by the scheduler before its last step
            runs = MlflowClient().search_runs([experiment_id], filter_string=(
                f"tags.mlflow.parentRunId = '{parent_run_id}' and tags.versatune.trial_id = '{trial.trial_id}'"))
            run = runs[0] if runs else None
            error = (run.data.tags.get("versatune.error") if run else None) or "see the trial's Ray error file"
            append_trial(path, role, TrialRecord(
                params={k: v for k, v in (trial.config or {}).items() if k in names},
                objective=metrics.get(objective), run_id=run.info.run_id if run else None, status=status,
                error=error[:2000] if status == "error" else None, steps=int(steps) if steps is not None else None))

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._append(trial, "finished")

        def on_trial_error(self, iteration, trials, trial, **info):
            self._append(trial, "error")

    return Recorder()


def read_record(path: str | Path) -> SweepRecord:
    """A record written by :func:`start_record` and :func:`append_trial` (a folder: its record file)."""
    path = Path(path)
    if path.is_dir():
        path = path / RECORD_NAME
    if not path.is_file():
        raise ConfigError(f"No sweep record at {path}. Pass the {RECORD_NAME} that an earlier `versatune tune` "
                          f"wrote in its output folder (--output-dir/<parent run id>/{RECORD_NAME}).")
    lines = path.read_text().splitlines()
    try:
        header = json.loads(lines[0]) if lines else {}
    except json.JSONDecodeError:
        header = {}
    if header.get("kind") != "sweep" or header.get("version") != RECORD_VERSION:
        raise ConfigError(f"{path} is not a version-{RECORD_VERSION} sweep record (its first line must be the "
                          f"sweep's header). Pass the {RECORD_NAME} that `versatune tune` wrote.")
    record = SweepRecord(path=path, identity=header["identity"])
    for number, text in enumerate(lines[1:], start=2):
        try:
            line = json.loads(text)
            kind = line.pop("kind")
            trial = TrialRecord(**line, resumed=True)
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            if number == len(lines):  # a last line cut short when the sweep was killed mid-write
                log.warning("%s: ignoring its last line, which is incomplete (%s)", path, exc)
                break
            raise ConfigError(f"{path}, line {number}, is not a trial record ({exc}). Remove the line or "
                              f"pass an unedited {RECORD_NAME}.") from exc
        if kind == "baseline":
            record.baseline = trial
        else:
            record.trials.append(trial)
    return record


def check_resumable(record: SweepRecord, config: RunConfig) -> None:
    """Refuse to resume ``record`` with a sweep whose trials would train differently, whose search
    space does not hold the recorded points, or that has no trials left to run."""
    if config.tune.searcher == "grid":
        raise ConfigError("--resume-from needs tune.searcher optuna or random: a grid sweep has no budget to "
                          "share with earlier trials. Rerun the grid, or sweep with --searcher optuna.")
    mine = sweep_identity(config)
    differ = [k for k in sorted(set(mine) | set(record.identity)) if mine.get(k) != record.identity.get(k)]
    if differ:
        shown = "; ".join(f"{k}: recorded {record.identity.get(k)!r}, now {mine.get(k)!r}" for k in differ[:6])
        raise ConfigError(f"{record.path} records a sweep whose trials trained differently ({shown}). Resume "
                          f"with the same preset, --set overrides and prior as the recorded sweep, or start "
                          f"a new sweep without --resume-from.")
    for trial in record.finished:
        for name, space in searched_space(config).items():
            value = trial.params.get(name)
            inside = (value in space) if isinstance(space, list) else (
                value is not None and space[0] <= float(value) <= space[1])
            if not inside:
                raise ConfigError(f"{record.path}: a recorded trial has {name}={value!r}, outside this sweep's "
                                  f"tune.{name}={list(space)}. Widen tune.{name} to hold the recorded trials.")
    left = config.tune.num_samples - len(record.finished)
    if left <= 0:
        raise ConfigError(f"{record.path} already holds {len(record.finished)} finished trials and "
                          f"tune.num_samples is {config.tune.num_samples}: nothing is left to run. Raise "
                          f"--num-trials above {len(record.finished)} to run more.")


def told_points(record: SweepRecord, config: RunConfig) -> tuple[list[dict], list[float]]:
    """The finished trials as (points, objectives) for optuna's warm start: only the searched
    parameters (optuna refuses points with others)."""
    searched, trials = searched_space(config), record.finished
    return [{name: t.params[name] for name in searched} for t in trials], [float(t.objective) for t in trials]

"""A sweep's record: one JSON line per trial as it ends, so an interrupted sweep can be resumed.

A sweep writes ``sweep_record.jsonl`` in its output folder: a header line that says what the trials
train (everything in the config that a trial does not choose itself), then one line per trial (and
the baseline run) as Ray reports it finished, stopped or failed. ``versatune tune --resume-from
RECORD`` reads it back: the finished and the early-stopped trials count towards ``tune.num_samples``
and are told to optuna's TPE as evaluated points (a stopped trial with the score it was stopped at,
as Ray tells optuna within one sweep), a finished baseline is reused, and only the rest run; failed
and interrupted trials are drawn again. The file is
small and plain, so a sweep can be continued on another machine or in a later session from a copy
of it (Ray's own experiment folder, which ``Tuner.restore`` needs, holds pickles and every trial's
outputs).

The record's callback is also the one place that says how each trial ended (:func:`trial_status`)
and ends the MLflow runs of trials Ray stopped or abandoned. No Ray and no MLflow at import (the
callback imports them when built): the CLI reads and checks a record before Ray starts.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from ...config import TUNED, RunConfig, from_dict
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
        """Finished with a finite objective: a candidate for the best trial and a reusable baseline."""
        return self.status == "finished" and self._scored

    @property
    def counted(self) -> bool:
        """Finished or stopped early, with a finite objective: part of the sweep's trial budget, which a
        resumed sweep carries over and tells its searcher (a stopped trial with the score it was
        stopped at). Failed and interrupted trials are not: a resumed sweep draws them again."""
        return self.status in ("finished", "stopped") and self._scored

    @property
    def _scored(self) -> bool:
        return self.objective is not None and math.isfinite(self.objective)


def trial_status(*, errored: bool, ended: bool, run_status: Optional[str]) -> str:
    """How a trial ended. ``errored``: Ray reported an error; ``ended``: Ray ended it (a trial it
    returns without ending was interrupted by Ctrl-C); ``run_status``: its MLflow run's status (None:
    it never opened one). A trial Ray ended without error whose run did not finish was stopped by
    the scheduler: Ray ends the trial's process (SIGTERM), which leaves the run RUNNING, or KILLED
    when the signal lands in the trial. ASHA never stops a trial at its final evaluation
    (:data:`.reports.ASHA_TIME_ATTR`), so a trial that trained every step has finished its run."""
    if errored:
        return "error"
    if not ended:
        return "interrupted"
    return "finished" if run_status in (None, "FINISHED") else "stopped"


@dataclass
class SweepRecord:
    path: Path
    identity: dict[str, Any]
    trials: list[TrialRecord] = field(default_factory=list)
    baseline: Optional[TrialRecord] = None
    parent_run_id: Optional[str] = None
    """The sweep run that wrote it (absent in records written before it was kept)."""

    @property
    def counted(self) -> list[TrialRecord]:
        """The trials a resumed sweep carries over (see :attr:`TrialRecord.counted`)."""
        return [t for t in self.trials if t.counted]


def sweep_identity(config: RunConfig) -> dict[str, Any]:
    """What every trial of this sweep trains with, as JSON values: two sweeps with the same identity
    can share trials."""
    flat = config.flat()
    keys = sorted(k for k in flat if k.split(".")[0] in _SECTIONS and k not in _PER_TRIAL | _NOT_LEARNED)
    return json.loads(json.dumps({**{k: flat[k] for k in keys}, "tune.objective": config.tune.objective}))


def start_record(path: Path, config: RunConfig, resumed: Optional[SweepRecord] = None, *,
                 parent_run_id: Optional[str] = None) -> None:
    """Write the header (and the trials carried over from ``resumed``), replacing any file there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [{"kind": "sweep", "version": RECORD_VERSION, "identity": sweep_identity(config),
              "parent_run_id": parent_run_id}]
    if resumed is not None:
        if resumed.baseline is not None and resumed.baseline.kept:
            lines.append(_line("baseline", resumed.baseline))
        lines += [_line("trial", t) for t in resumed.counted]
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
    """A Ray Tune callback (in the driver) that turns each trial into a :class:`TrialRecord` as it
    ends and appends it to the sweep's record. After ``Tuner.fit`` returns, its ``trial_records()``
    are every trial that started, in the order they started (the ones Ray did not end, by Ctrl-C, as
    interrupted), and the runs of stopped and interrupted trials are ended KILLED."""
    from mlflow.tracking import MlflowClient
    from ray import tune

    objective, client = config.tune.objective, MlflowClient()
    stopped_by = "asha" if config.tune.asha else "scheduler"

    def _end_run(record: TrialRecord) -> None:
        """End the run of a trial Ray stopped (tagged as such) or abandoned KILLED. Called once the
        sweep has returned: a stopped trial's process may still be ending when Ray reports the trial
        complete; its own exit handler ends the run KILLED too (``tuning._told_to_stop_check``)."""
        run = client.get_run(record.run_id)
        if record.status == "stopped":
            client.set_tag(record.run_id, "versatune.stopped_early", stopped_by)
            if run.info.status != "KILLED":
                client.set_terminated(record.run_id, status="KILLED")
        elif run.info.status == "RUNNING":
            client.set_tag(record.run_id, "versatune.error", "interrupted (Ctrl-C on the sweep)")
            client.set_terminated(record.run_id, status="KILLED")

    class Recorder(tune.Callback):
        def __init__(self):
            self.started: dict[str, Any] = {}  # trial id -> Ray's Trial, in the order they started
            self.first_report: dict[str, float] = {}
            self.records: dict[str, TrialRecord] = {}

        def on_trial_start(self, iteration, trials, trial, **info):
            self.started.setdefault(trial.trial_id, trial)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.first_report.setdefault(trial.trial_id, float(result.get("timestamp") or 0) or None)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._end(trial, errored=False)

        def on_trial_error(self, iteration, trials, trial, **info):
            self._end(trial, errored=True)

        def _run(self, trial):
            runs = client.search_runs([experiment_id], filter_string=(
                f"tags.mlflow.parentRunId = '{parent_run_id}' and tags.versatune.trial_id = '{trial.trial_id}'"))
            return runs[0] if runs else None

        def _trial_record(self, trial, *, errored: bool, ended: bool) -> TrialRecord:
            run = self._run(trial)
            status = trial_status(errored=errored, ended=ended, run_status=run.info.status if run else None)
            error = None
            if status == "error":
                # The child run's tag holds the trial's own exception; Ray's error file wraps it in a
                # remote traceback.
                tagged = run.data.tags.get("versatune.error") if run is not None else None
                error = (tagged or _last_line(trial.get_error()) or "see the trial's Ray error file")[:2000]
            metrics = trial.last_result or {}
            steps = metrics.get("step")
            return TrialRecord(
                params={k: v for k, v in (trial.config or {}).items() if k in names},
                objective=metrics.get(objective), run_id=run.info.run_id if run else None, status=status,
                error=error, steps=int(steps) if steps is not None else None,
                started=self.first_report.get(trial.trial_id))

        def _end(self, trial, *, errored: bool) -> None:
            self.started.setdefault(trial.trial_id, trial)
            record = self.records[trial.trial_id] = self._trial_record(trial, errored=errored, ended=True)
            append_trial(path, role, record)

        def trial_records(self) -> list[TrialRecord]:
            records = [self.records.get(trial_id) or self._trial_record(trial, errored=False, ended=False)
                       for trial_id, trial in self.started.items()]
            for record in records:
                if record.run_id is not None and record.status in ("stopped", "interrupted"):
                    _end_run(record)
            return records

    return Recorder()


def _last_line(text: Optional[str]) -> Optional[str]:
    lines = [line for line in str(text or "").splitlines() if line.strip()]
    return lines[-1].strip() if lines else None


def close_abandoned_runs(record: SweepRecord) -> list[str]:
    """End KILLED the runs a killed sweep left RUNNING (its own run and its trials' runs), so that
    resuming it leaves no run RUNNING in the tracking store. A sweep ended by SIGKILL (a session's
    end, the out-of-memory killer) cannot end its runs itself; Ctrl-C can and does. The ids ended."""
    if not record.parent_run_id:
        return []
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    try:
        parent = client.get_run(record.parent_run_id)
    except mlflow.exceptions.MlflowException:
        return []  # recorded in another tracking store: nothing of it here to end
    runs = [parent] + client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{record.parent_run_id}'")
    ended = []
    for run in runs:
        if run.info.status == "RUNNING":
            client.set_tag(run.info.run_id, "versatune.error", "abandoned: its sweep was killed; resumed from "
                                                               f"{record.path}")
            client.set_terminated(run.info.run_id, status="KILLED")
            ended.append(run.info.run_id)
    if ended:
        log.warning("Ended KILLED %d run(s) the killed sweep %s left RUNNING: %s", len(ended),
                    record.parent_run_id, ", ".join(ended))
    return ended


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
    record = SweepRecord(path=path, identity=header["identity"], parent_run_id=header.get("parent_run_id"))
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
    # A setting added since the record was written is compared at its default, which keeps the earlier
    # behaviour (new settings default to what the code did before them).
    recorded = sweep_identity(from_dict({})) | record.identity
    differ = [k for k in sorted(set(mine) | set(recorded)) if mine.get(k) != recorded.get(k)]
    if differ:
        shown = "; ".join(f"{k}: recorded {recorded.get(k)!r}, now {mine.get(k)!r}" for k in differ[:6])
        raise ConfigError(f"{record.path} records a sweep whose trials trained differently ({shown}). Resume "
                          f"with the same preset, --set overrides and prior as the recorded sweep, or start "
                          f"a new sweep without --resume-from.")
    for trial in record.counted:
        for name, space in searched_space(config).items():
            value = trial.params.get(name)
            inside = (value in space) if isinstance(space, list) else (
                value is not None and space[0] <= float(value) <= space[1])
            if not inside:
                raise ConfigError(f"{record.path}: a recorded trial has {name}={value!r}, outside this sweep's "
                                  f"tune.{name}={list(space)}. Widen tune.{name} to hold the recorded trials.")
    counted = len(record.counted)
    if config.tune.num_samples - counted <= 0:
        raise ConfigError(f"{record.path} already holds {counted} finished or early-stopped trials and "
                          f"tune.num_samples is {config.tune.num_samples}: nothing is left to run. Raise "
                          f"--num-trials above {counted} to run more.")


def told_points(record: SweepRecord, config: RunConfig) -> tuple[list[dict], list[float]]:
    """The counted trials as (points, objectives) for optuna's warm start: only the searched
    parameters (optuna refuses points with others)."""
    searched, trials = searched_space(config), record.counted
    return [{name: t.params[name] for name in searched} for t in trials], [float(t.objective) for t in trials]

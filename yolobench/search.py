"""The Optuna study behind a sweep, driven with ask/tell: GridSampler over the axes (grid mode) or a
multi-objective sampler (Pareto mode), kept in storage so a sweep resumes after a crash and several
workers share it. What a trial came to is an `Outcome`, written by `close_trial` alone.

A finished trial counts for the data it was measured on: each trial records the data's fingerprint
(data/validate.py) and the study the fingerprint of the data the sweep runs on now (`note_sweep`); a trial of
other data is stale, neither done nor a result, so its variant is measured again (its key is unchanged: keys
are pinned). Trials from before fingerprints were recorded count as they did.

Every use of Optuna's private API sits in the section marked "Optuna internals" at the end, so an
Optuna upgrade edits one place."""

from __future__ import annotations

import os
import random
import socket
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from yolobench.errors import SweepStopped
from yolobench.pareto import objective_values
from yolobench.urls import redact
from yolobench.space import Space, Variant
from yolobench.spec import FloatRange, SearchSpec

# A worker on another host that stops beating for GRACE_S (the default of --heartbeat-grace) is taken for dead;
# its variant is redone. A worker beats every HEARTBEAT_S, or four times per grace when the grace is shorter.
HEARTBEAT_S = 20
GRACE_S = 120
# A RUNNING trial without a worker was asked for by a process killed before it said who it was (the
# worker attribute is set right after ask()); older than this, no live worker owns it.
UNOWNED_GRACE_S = 60.0


class Outcome(str, Enum):
    """What a trial came to; stored as the trial's `outcome` attribute (its value)."""

    MEASURED = "measured"  # timed and scored now; its MLflow run is FINISHED
    REUSED = "reused"  # a proposal of a point already measured (or failed): answered from the store
    FAILED = "failed"  # the variant could not be built or run; a FAILED run says why
    BUG = "bug"  # yolobench's own error: the sweep stopped with a traceback
    EXCLUDED = "excluded"  # a proposal the sweep file's `exclude:` leaves out
    TAKEN = "taken"  # another worker took the same point at the same moment
    INTERRUPTED = "interrupted"  # stopped (Ctrl-C, SIGTERM, a kill, a sweep-stopping error): to be redone

    def __str__(self) -> str:
        return self.value


# Outcomes that count against a Pareto budget: the trial asked for a variant's result.
EVALUATIONS = (Outcome.MEASURED, Outcome.REUSED, Outcome.FAILED)


class TrialAttr:
    """Names of the trials' user attributes (stored: renaming one orphans every study on disk)."""

    KEY = "variant_key"
    OUTCOME = "outcome"
    WORKER = "worker"  # host:pid of the process that ran the trial
    LABEL = "label"
    METRICS = "metrics"
    RUN_ID = "mlflow_run_id"
    REUSED_FROM = "reused_from"
    FAILURE = "failure"
    TAKES_OVER = "takes_over_run"  # on a trial queued for a dead worker's variant: the MLflow run it left RUNNING
    DATA = "data_fingerprint"  # the data the trial was measured on (data/validate.py)


PARENT_RUN_ATTR = "mlflow_parent_run_id"  # a study user attribute: the sweep's MLflow parent run
DATA_ATTR = "data_fingerprint"  # a study user attribute: the fingerprint of the data the sweep runs on now


class StudyMismatch(SweepStopped):
    """The stored study was made for other objectives than the sweep file now asks for."""


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def make_sampler(search: SearchSpec, space: Space) -> optuna.samplers.BaseSampler:
    """GridSampler for grid mode; in Pareto mode the multi-objective sampler the sweep file names."""
    if search.mode == "grid":
        return AskTellGridSampler(space.axes, seed=search.seed)
    if search.sampler == "nsga2":
        # A small population: budgets here are tens of trials, and the first generation is random.
        population = max(4, min(20, (search.budget.trials or 40) // 4))
        return optuna.samplers.NSGAIISampler(population_size=population, seed=search.seed)
    if search.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=search.seed, multivariate=True, n_startup_trials=5)
    if search.sampler == "gp":
        return optuna.samplers.GPSampler(seed=search.seed, n_startup_trials=5)
    return optuna.samplers.RandomSampler(seed=search.seed)


def open_study(storage: str | optuna.storages.BaseStorage, study_name: str, space: Space,
               search: SearchSpec, grace_s: float | None = None) -> optuna.Study:
    """Create or load the sweep's study; a study stored with other objectives is refused. A worker whose
    heartbeat stops for `grace_s` (default GRACE_S) is taken for dead."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if isinstance(storage, str):  # a database that is not there fails now, in one message, not in a traceback
        from yolobench.services import check_database, connect_timeout

        check_database(storage, "the Optuna database", connect_timeout())
    directions = [objective.resolved_direction for objective in search.objectives]
    study = _create_or_load(storage, study_name, make_sampler(search, space), directions, grace_s or GRACE_S)
    stored = [d.name.lower() for d in study.directions]
    if stored != directions:
        where = redact(storage) if isinstance(storage, str) else type(storage).__name__
        raise StudyMismatch(
            f"study {study_name!r} in {where} optimises {stored}, but the sweep file asks for "
            f"{directions} ({[o.metric for o in search.objectives]}); rename the sweep or use another --storage"
        )
    return study


def heartbeat_interval_for(grace_s: float) -> float:
    """How often a worker beats: four beats a grace, so one late beat does not make a live worker look dead."""
    return min(HEARTBEAT_S, grace_s / 4)


def _create_or_load(storage: str | optuna.storages.BaseStorage, study_name: str,
                    sampler: optuna.samplers.BaseSampler, directions: list[str], grace_s: float = GRACE_S,
                    attempts: int = 5) -> optuna.Study:
    """Workers started together on an empty database race to create its tables and the study; the
    loser's statement fails on what the winner just made. Trying again then simply loads it."""
    from sqlalchemy.exc import SQLAlchemyError

    for attempt in range(attempts):
        try:
            if isinstance(storage, str):
                with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    storage = optuna.storages.RDBStorage(
                        storage,
                        engine_kwargs={"connect_args": {"timeout": 60}} if storage.startswith("sqlite") else {},
                        heartbeat_interval=heartbeat_interval_for(grace_s),
                        grace_period=grace_s,
                        heartbeat_stale_trial_callback=_mark_stale_interrupted,
                    )
            return optuna.create_study(study_name=study_name, storage=storage, sampler=sampler,
                                       directions=directions, load_if_exists=True)
        except (SQLAlchemyError, optuna.exceptions.DuplicatedStudyError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")


def note_sweep(study: optuna.Study, parent_run_id: str, data_fingerprint: str | None) -> None:
    """Record what the sweep runs under now: its MLflow parent run and its data. When the data changed, what was
    re-timed on the old data no longer holds either."""
    study.set_user_attr(PARENT_RUN_ATTR, parent_run_id)
    if data_fingerprint is None or study.user_attrs.get(DATA_ATTR) == data_fingerprint:
        return
    if DATA_ATTR in study.user_attrs:
        for key in retimed(study):
            record_retimed(study, key, {})
    study.set_user_attr(DATA_ATTR, data_fingerprint)


def suggest_variant(trial: optuna.Trial, space: Space) -> Variant:
    params = {}
    for name, values in space.axes.items():
        if isinstance(values, FloatRange):
            params[name] = trial.suggest_float(name, values.low, values.high, step=values.step)
        else:
            params[name] = trial.suggest_categorical(name, values)
    return space.variant_from_params(params)


# --- what the study holds ----------------------------------------------------------------------
@dataclass(frozen=True)
class StudyState:
    """What the study already holds, by variant key."""

    done: dict[str, FrozenTrial]  # measured or failed for good, on the data as it is now: not to be run again
    interrupted: list[FrozenTrial]  # RUNNING trials whose worker is gone
    running_elsewhere: frozenset[str]  # keys another live worker is measuring now


def _process_alive(worker: str) -> bool:
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname():
        return True  # another host's worker: its heartbeat decides (fail_stale_trials)
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return True


def _abandoned(trial: FrozenTrial, now: datetime) -> bool:
    """A RUNNING trial no live worker owns (see UNOWNED_GRACE_S for one without a worker)."""
    worker = trial.user_attrs.get(TrialAttr.WORKER)
    if worker is None:
        started = trial.datetime_start
        return started is None or now - started >= timedelta(seconds=UNOWNED_GRACE_S)
    return not _process_alive(worker)


def study_state(study: optuna.Study, retry_failed: bool = False) -> StudyState:
    with warnings.catch_warnings():  # "experimental" since Optuna 2.9, and what heartbeats are for
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # dead workers on other hosts
    return ledger(study).state(retry_failed)


def study_state_when_free(study: optuna.Study, retry_failed: bool, keys: Iterable[str],
                          say: Callable[[str], None] = print) -> StudyState:
    """The study's state once this worker has one of `keys` to take, or none is left: while every key left is
    being measured by another worker, wait, so that a dead worker's variant is taken over when its heartbeat
    expires (a live one's finishes, and then nothing is left). A storage without heartbeats never waits."""
    keys, waiting, poll_s = list(keys), None, _heartbeat_interval(study)
    while True:
        state = study_state(study, retry_failed)
        left = [k for k in keys if k not in state.done]
        if poll_s is None or not left or any(k not in state.running_elsewhere for k in left):
            return state
        if waiting != len(left):
            waiting = len(left)
            say(f"waiting: the {waiting} variant(s) left are being measured by other workers; a worker whose "
                "heartbeat stops is taken for dead after its grace (--heartbeat-grace) and its variant taken over")
        time.sleep(poll_s)


def owned_keys(study: optuna.Study, retry_failed: bool) -> set[str]:
    """Keys the study has a result for, or another live worker is measuring, as of now."""
    state = ledger(study).state(retry_failed)
    return set(state.done) | state.running_elsewhere


def taken_over(trial: optuna.Trial) -> str | None:
    """The MLflow run a dead worker left RUNNING for the variant this trial takes over (see TrialAttr.TAKES_OVER)."""
    return trial.user_attrs.get(TrialAttr.TAKES_OVER)


def measured_trials(study: optuna.Study) -> list[FrozenTrial]:
    """One measured trial per variant key (the first on the data as it is now), with its run id and metrics."""
    return sorted(ledger(study).measured.values(), key=lambda trial: trial.number)


# Latency re-timed after a variant's first pass (drift re-measure, front confirmation) is kept in the study
# beside its trial, whose attributes cannot change once it is told: one study attribute per variant key.
RETIMED_PREFIX = "retimed:"


@dataclass(frozen=True)
class Result:
    key: str
    run_id: str
    params: dict[str, Any]
    metrics: dict[str, float]  # the first pass's metrics, with what was re-timed since over them
    retimed: bool


def retimed(study: optuna.Study) -> dict[str, dict[str, float]]:
    return _retimed_in(study.user_attrs)


def _retimed_in(study_attrs: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    return {name[len(RETIMED_PREFIX):]: value for name, value in study_attrs.items()
            if name.startswith(RETIMED_PREFIX) and value}  # {}: cleared when the data changed


def record_retimed(study: optuna.Study, key: str, metrics: Mapping[str, float]) -> None:
    study.set_user_attr(RETIMED_PREFIX + key, dict(metrics))


def results(study: optuna.Study) -> list[Result]:
    """Every measured variant once, its latest figures first."""
    return ledger(study).results()


def measured(study: optuna.Study) -> Mapping[str, Result]:
    """The measured variants by key, as a read-only mapping looked up key by key (nothing is listed to find one)."""
    return _MeasuredView(ledger(study))


def results_since(study: optuna.Study, mark: ResultsMark | None) -> tuple[list[Result], ResultsMark, bool]:
    """The results measured since `mark` (None: every one), the mark to pass next time, and whether the list is
    every result rather than the new ones: it is when a result already given changed since (re-timed, data)."""
    return ledger(study).results_since(mark)


def metrics_of(study: optuna.Study, key: str, first_pass: bool = False) -> dict[str, float] | None:
    """The metrics the study recorded for a measured variant key (e.g. the baseline's), or None."""
    return ledger(study).metrics_of(key, first_pass)


def evaluations(study: optuna.Study, key_of: Any) -> int:
    """Trials that asked for a variant's result under the sweep file as it is now: what a budget counts.
    `key_of(params)` gives the key the file gives those params now (None for an axis it no longer has);
    trials of an earlier version of the file (other keys) or of other data do not count. Counted once per trial
    for as long as the same `key_of` (==: a bound method, not a new lambda) is passed."""
    return ledger(study).evaluations(key_of)


@dataclass(frozen=True)
class ResultsMark:
    version: int
    count: int


class StudyLedger:
    """What a study holds, read incrementally: every reader above goes through its study's ledger (`ledger`), so
    a sweep step's cost stays flat however many trials the study holds. A finished trial never changes (Optuna
    refuses to update one), so each is taken in once, when it is first seen finished; a read looks at the
    trials not taken in yet (running, waiting, new) and at the study's attributes (the data, what was re-timed).
    The answers are those of a full scan in trial order: a fresh ledger's first read is that scan.

    `version` moves when what was taken in changes other than by new results: the data changed (everything
    is read again), a variant was re-timed, or an earlier measured trial of a key turned up."""

    def __init__(self) -> None:
        self.version = 0
        self._restart(None)

    def _restart(self, data: str | None) -> None:
        self.data, self.version = data, self.version + 1
        self.taken: set[int] = set()  # numbers of the finished trials taken in
        self.prefix = 0  # the trials before this position are all taken in
        self.measured: dict[str, FrozenTrial] = {}  # per key, its first measured trial (with run id and metrics)
        self.order: list[str] = []  # the keys of `measured` in the order they came
        self.done_ok: dict[str, FrozenTrial] = {}  # per key, its first measured or reused trial
        self.done_any: dict[str, FrozenTrial] = {}  # per key, its first measured, reused or failed trial
        self.asked: list[FrozenTrial] = []  # trials that asked for a variant's result (what a budget counts)
        self.counted: tuple[Any, int, int] | None = None  # (key_of, trials of `asked` counted, count)
        self.overrides: dict[str, dict[str, float]] = {}  # what was re-timed, by key
        self.unfinished: list[FrozenTrial] = []  # as of the last read

    def read(self, study: optuna.Study) -> StudyLedger:
        attrs = study.user_attrs
        if attrs.get(DATA_ATTR) != self.data:
            self._restart(attrs.get(DATA_ATTR))
        if (overrides := _retimed_in(attrs)) != self.overrides:
            self.overrides, self.version = overrides, self.version + 1
        trials = study.get_trials(deepcopy=False)  # sorted by number; Optuna's cache reads only unfinished ones again
        self.unfinished = []
        for trial in trials[self.prefix:]:
            if trial.number in self.taken:
                continue
            if trial.state.is_finished():
                self._take(trial)
            else:
                self.unfinished.append(trial)
        while self.prefix < len(trials) and trials[self.prefix].number in self.taken:
            self.prefix += 1
        return self

    def _take(self, trial: FrozenTrial) -> None:
        self.taken.add(trial.number)
        attrs = trial.user_attrs
        key, outcome = attrs.get(TrialAttr.KEY), attrs.get(TrialAttr.OUTCOME)
        if self.data is not None and attrs.get(TrialAttr.DATA, self.data) != self.data:
            return  # measured on other data: stale
        if outcome in EVALUATIONS:
            self.asked.append(trial)
        if key is None:
            return
        if trial.state == TrialState.COMPLETE and outcome in (Outcome.MEASURED, Outcome.REUSED):
            _keep_first(self.done_ok, key, trial)
            _keep_first(self.done_any, key, trial)
        elif trial.state == TrialState.FAIL and outcome == Outcome.FAILED:
            _keep_first(self.done_any, key, trial)
        if trial.state == TrialState.COMPLETE and outcome == Outcome.MEASURED and TrialAttr.METRICS in attrs \
                and TrialAttr.RUN_ID in attrs:
            if key not in self.measured:
                self.order.append(key)
            elif trial.number < self.measured[key].number:
                self.version += 1  # an earlier trial of a key already given (another worker's, told late)
            _keep_first(self.measured, key, trial)

    def state(self, retry_failed: bool) -> StudyState:
        interrupted: list[FrozenTrial] = []
        running: set[str] = set()
        now, me = datetime.now(), worker_id()
        for trial in self.unfinished:
            if trial.state != TrialState.RUNNING:
                continue
            key = trial.user_attrs.get(TrialAttr.KEY)
            if _abandoned(trial, now):
                interrupted.append(trial)
            elif key is not None and trial.user_attrs.get(TrialAttr.WORKER) != me:
                running.add(key)
        done = dict(self.done_ok if retry_failed else self.done_any)
        return StudyState(done=done, interrupted=interrupted, running_elsewhere=frozenset(running))

    def result(self, key: str) -> Result | None:
        trial = self.measured.get(key)
        if trial is None:
            return None
        attrs, override = trial.user_attrs, self.overrides.get(key)
        metrics = {**attrs[TrialAttr.METRICS], **(override or {})}
        return Result(key, attrs[TrialAttr.RUN_ID], dict(trial.params), metrics, override is not None)

    def results(self) -> list[Result]:
        first_measured = sorted(self.measured.values(), key=lambda trial: trial.number)
        return [self.result(trial.user_attrs[TrialAttr.KEY]) for trial in first_measured]

    def results_since(self, mark: ResultsMark | None) -> tuple[list[Result], ResultsMark, bool]:
        everything = mark is None or mark.version != self.version
        keys = self.order if everything else self.order[mark.count:]
        return [self.result(key) for key in keys], ResultsMark(self.version, len(self.order)), everything

    def metrics_of(self, key: str, first_pass: bool = False) -> dict[str, float] | None:
        trial = self.measured.get(key)
        if trial is None:
            return None
        first = trial.user_attrs[TrialAttr.METRICS]
        return dict(first) if first_pass else {**first, **self.overrides.get(key, {})}

    def evaluations(self, key_of: Any) -> int:
        same = self.counted is not None and self.counted[0] == key_of
        _, start, count = self.counted if same else (key_of, 0, 0)
        for trial in self.asked[start:]:
            count += key_of(trial.params) == trial.user_attrs.get(TrialAttr.KEY)
        self.counted = (key_of, len(self.asked), count)
        return count


class _MeasuredView(Mapping[str, Result]):
    def __init__(self, of: StudyLedger) -> None:
        self._ledger = of

    def __getitem__(self, key: str) -> Result:
        result = self._ledger.result(key)
        if result is None:
            raise KeyError(key)
        return result

    def __iter__(self) -> Iterator[str]:
        return iter(self._ledger.order)

    def __len__(self) -> int:
        return len(self._ledger.order)


def _keep_first(by_key: dict[str, FrozenTrial], key: str, trial: FrozenTrial) -> None:
    if key not in by_key or trial.number < by_key[key].number:
        by_key[key] = trial


# One ledger per Study object of this process, gone with it.
_LEDGERS: weakref.WeakKeyDictionary[optuna.Study, StudyLedger] = weakref.WeakKeyDictionary()


def ledger(study: optuna.Study) -> StudyLedger:
    """The study's ledger, brought up to date with what the study holds now."""
    found = _LEDGERS.get(study)
    if found is None:
        found = _LEDGERS[study] = StudyLedger()
    return found.read(study)


# --- closing a trial: the one place that writes outcomes -----------------------------------------
_STATES = {
    Outcome.MEASURED: TrialState.COMPLETE, Outcome.FAILED: TrialState.FAIL, Outcome.BUG: TrialState.FAIL,
    Outcome.INTERRUPTED: TrialState.FAIL, Outcome.EXCLUDED: TrialState.PRUNED, Outcome.TAKEN: TrialState.PRUNED,
}


def close_trial(study: optuna.Study, trial: optuna.Trial, outcome: Outcome, *,
                values: Sequence[float] | None = None, metrics: Mapping[str, float] | None = None,
                run_id: str | None = None, failure: str | None = None, reused_from: int | None = None,
                objectives: Sequence[Any] = ()) -> None:
    """Record what the trial came to and tell the study (its values: given, or the `objectives` of its
    metrics). A reused trial completes with the earlier trial's values, or fails like it when it had none."""
    if values is None and metrics is not None and objectives:
        values = objective_values(dict(metrics), objectives)
    attrs: dict[str, Any] = {TrialAttr.OUTCOME: str(outcome), TrialAttr.METRICS: dict(metrics) if metrics else None,
                             TrialAttr.RUN_ID: run_id, TrialAttr.FAILURE: failure[:2000] if failure else None,
                             TrialAttr.REUSED_FROM: reused_from}
    for name, value in attrs.items():
        if value is not None:
            trial.set_user_attr(name, value)
    state = _STATES.get(outcome, TrialState.COMPLETE if values is not None else TrialState.FAIL)
    if state == TrialState.COMPLETE:
        study.tell(trial, list(values or []))
    else:
        study.tell(trial, state=state)


def close_abandoned(study: optuna.Study, trials: Iterable[FrozenTrial]) -> None:
    """Close trials left RUNNING by a dead worker as FAIL with outcome `interrupted`."""
    for trial in trials:
        _close_frozen(study, trial, Outcome.INTERRUPTED)


def enqueue_baseline(study: optuna.Study, baseline: Variant, grid: bool) -> None:
    """Queue the baseline first (every run's speed-up and the front's scale need it). In grid mode it is
    marked as its grid point, so GridSampler does not propose it a second time."""
    study.enqueue_trial(baseline.as_dict())
    if grid:
        _mark_queued_grid_points(study)


def enqueue_unreachable(study: optuna.Study, remaining: dict[str, Variant]) -> int:
    """Queue the remaining variants GridSampler will not offer again: it counts any finished trial
    (interrupted, or failed when failures are retried) as a visited grid point."""
    trials = study.get_trials(deepcopy=False)
    visited = {t.user_attrs.get(TrialAttr.KEY) for t in trials if t.state.is_finished()}
    queued = _queued_params(trials)
    count = 0
    for key, variant in remaining.items():
        params = variant.as_dict()
        if key in visited and params not in queued:
            study.enqueue_trial(params)
            count += 1
    return count


def ask(study: optuna.Study) -> optuna.Trial:
    """The next trial, marked with the data it is measured on. yolobench beats the heartbeat itself (heartbeat()
    below), which Optuna warns about outside Study.optimize on every ask."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed", category=UserWarning)
        trial = study.ask()
    data = study.user_attrs.get(DATA_ATTR)
    if data is not None:
        trial.set_user_attr(TrialAttr.DATA, data)
    return trial


@contextmanager
def heartbeat(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    """Beat for the trial while it is measured, so other workers can tell a live one from a dead one."""
    stop, interval = threading.Event(), _heartbeat_interval(study) or HEARTBEAT_S

    def beat() -> None:
        while not stop.wait(interval):
            _record_heartbeat(study, trial)

    _record_heartbeat(study, trial)
    thread = threading.Thread(target=beat, name="yolobench-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


# --- Optuna internals ------------------------------------------------------------------------------
# Everything below reaches past Optuna's public API (study._storage, trial._trial_id, the "fixed_params"
# and "grid_id" system attributes, optuna._hypervolume). Checked against Optuna 5.0.


class AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler for ask/tell. Its after_trial calls Study.stop() once the grid is covered, which Optuna
    only allows inside study.optimize: the runner decides when a sweep is done instead. Its before_trial
    gives the first N trials grid ids 0..N-1 by trial number, which proposes a queued point (the baseline)
    a second time: here every new trial picks among the points no trial has taken yet."""

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if "grid_id" in trial.system_attrs or "fixed_params" in trial.system_attrs:
            return
        target = self._get_unvisited_grid_ids(study) or list(range(len(self._all_grids)))
        study._storage.set_trial_system_attr(trial._trial_id, "search_space", self._search_space)
        study._storage.set_trial_system_attr(trial._trial_id, "grid_id", int(self._rng.rng.choice(target)))

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        return None

    def _get_unvisited_grid_ids(self, study: optuna.Study) -> list[int]:
        """Optuna's, with each finished trial read once: Optuna compares every trial's stored search space with
        the grid's (value by value) on every ask, a cost that grows with the study; a finished trial's point
        never changes. The answer is Optuna's, in the same order."""
        visits = self.__dict__.setdefault("_yolobench_visits", {})
        seen = visits.setdefault((id(study._storage), study._study_id), _GridVisits())
        trials = study._storage.get_all_trials(study._study_id, deepcopy=False)
        running: set[int] = set()
        for trial in trials[seen.prefix:]:
            if trial.number in seen.taken:
                continue
            attrs = trial.system_attrs
            on_grid = "grid_id" in attrs and self._same_search_space(attrs["search_space"])
            if trial.state.is_finished():
                seen.taken.add(trial.number)
                if on_grid:
                    seen.visited.add(attrs["grid_id"])
            elif on_grid and trial.state == TrialState.RUNNING:
                running.add(attrs["grid_id"])
        while seen.prefix < len(trials) and trials[seen.prefix].number in seen.taken:
            seen.prefix += 1
        unvisited = set(range(self._n_min_trials)) - seen.visited - running
        return list(unvisited or set(range(self._n_min_trials)) - seen.visited)


@dataclass
class _GridVisits:
    """The grid points of a study's finished trials, as far as AskTellGridSampler has read them."""

    taken: set[int] = field(default_factory=set)  # numbers of the finished trials read
    visited: set[int] = field(default_factory=set)
    prefix: int = 0  # the trials before this position are all read


def _heartbeat_interval(study: optuna.Study) -> float | None:
    """Seconds between a worker's heartbeats in this study's storage; None where it keeps none (in memory)."""
    storage = study._storage
    beats = isinstance(storage, optuna.storages._heartbeat.BaseHeartbeat)
    interval = storage.get_heartbeat_interval() if beats else None
    return float(interval) if interval else None


def _record_heartbeat(study: optuna.Study, trial: optuna.Trial) -> None:
    storage = study._storage
    if isinstance(storage, optuna.storages._heartbeat.BaseHeartbeat):  # in-memory storage has none
        storage.record_heartbeat(trial._trial_id)


def _close_frozen(study: optuna.Study, trial: FrozenTrial, outcome: Outcome) -> None:
    """Close a trial this process holds no Trial object for (another, dead process asked for it)."""
    study._storage.set_trial_user_attr(trial._trial_id, TrialAttr.OUTCOME, str(outcome))
    study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)


def _mark_stale_interrupted(study: optuna.Study, trial: FrozenTrial) -> None:
    """Optuna's callback for a trial whose heartbeat expired, in the one worker that failed it. A finished trial
    takes no attribute (Optuna raises UpdateFinishedTrialError), so it stays FAIL without an outcome, which
    counts as not done; its point is queued again, since GridSampler counts a failed trial's point as visited,
    with the run the dead worker left, for the worker that measures it to remove."""
    if trial.params:
        left = trial.user_attrs.get(TrialAttr.RUN_ID)
        study.enqueue_trial(trial.params, user_attrs={TrialAttr.TAKES_OVER: left} if left else None)


def _queued_params(trials: Iterable[FrozenTrial]) -> list[dict[str, Any]]:
    return [t.system_attrs.get("fixed_params") for t in trials if t.state == TrialState.WAITING]


def _mark_queued_grid_points(study: optuna.Study) -> None:
    """Give queued trials the grid id of their point: GridSampler then counts that point as taken."""
    sampler = study.sampler
    if not isinstance(sampler, optuna.samplers.GridSampler):
        return
    names = sampler._param_names
    for trial in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        params = trial.system_attrs.get("fixed_params") or {}
        if "grid_id" in trial.system_attrs or set(params) != set(names):
            continue
        point = tuple(params[name] for name in names)
        if point in sampler._all_grids:
            study._storage.set_trial_system_attr(trial._trial_id, "search_space", sampler._search_space)
            study._storage.set_trial_system_attr(trial._trial_id, "grid_id", sampler._all_grids.index(point))


def exact_hypervolume(front: np.ndarray, reference: Sequence[float]) -> float:
    from optuna._hypervolume import compute_hypervolume  # exact WFG for 3 objectives

    return float(compute_hypervolume(front, np.asarray(reference, dtype=float)))

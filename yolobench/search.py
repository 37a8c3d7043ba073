"""The Optuna study behind a sweep: GridSampler over the axes, kept in storage so a sweep resumes
after a crash and several workers can share it. Driven with ask/tell by the runner."""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from yolobench.space import Space, Variant
from yolobench.spec import FloatRange, Objective, SearchSpec

# Trial user attributes.
KEY_ATTR = "variant_key"
OUTCOME_ATTR = "outcome"  # measured | failed | reused | excluded | interrupted
WORKER_ATTR = "worker"  # host:pid of the process that ran the trial
# A worker on another host that stops beating for GRACE_S is taken for dead; its variant is redone.
HEARTBEAT_S = 20
GRACE_S = 120


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler for ask/tell: its after_trial calls Study.stop() once the grid is covered, which
    Optuna only allows inside study.optimize. The runner decides when a sweep is done instead."""

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Any) -> None:
        return None


def _mark_interrupted(study: optuna.Study, trial: FrozenTrial) -> None:
    study._storage.set_trial_user_attr(trial._trial_id, OUTCOME_ATTR, "interrupted")


@contextmanager
def heartbeat(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    """Beat for the trial while it is measured, so other workers can tell a live one from a dead one."""
    storage = study._storage
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            storage.record_heartbeat(trial._trial_id)

    storage.record_heartbeat(trial._trial_id)
    thread = threading.Thread(target=beat, name="yolobench-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


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


def open_study(storage_url: str, study_name: str, space: Space, search: SearchSpec) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    directions = [objective.resolved_direction for objective in search.objectives]
    study = _create_or_load(storage_url, study_name, make_sampler(search, space), directions)
    stored = [d.name.lower() for d in study.directions]
    if stored != directions:
        raise StudyMismatch(
            f"study {study_name!r} in {storage_url} optimises {stored}, but the sweep file asks for "
            f"{directions} ({[o.metric for o in search.objectives]}); rename the sweep or use another --storage"
        )
    return study


def _create_or_load(storage_url: str, study_name: str, sampler: optuna.samplers.BaseSampler,
                    directions: list[str], attempts: int = 5) -> optuna.Study:
    """Workers started together on an empty database race to create its tables and the study; the
    loser's statement fails on what the winner just made. Trying again then simply loads it."""
    from sqlalchemy.exc import SQLAlchemyError

    for attempt in range(attempts):
        try:
            storage = optuna.storages.RDBStorage(
                storage_url,
                engine_kwargs={"connect_args": {"timeout": 60}} if storage_url.startswith("sqlite") else {},
                heartbeat_interval=HEARTBEAT_S,
                grace_period=GRACE_S,
                heartbeat_stale_trial_callback=_mark_interrupted,
            )
            return optuna.create_study(study_name=study_name, storage=storage, sampler=sampler,
                                       directions=directions, load_if_exists=True)
        except (SQLAlchemyError, optuna.exceptions.DuplicatedStudyError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")


class StudyMismatch(RuntimeError):
    """The stored study was made for other objectives than the sweep file now asks for."""


def suggest_variant(trial: optuna.Trial, space: Space) -> Variant:
    params = {}
    for name, values in space.axes.items():
        if isinstance(values, FloatRange):
            params[name] = trial.suggest_float(name, values.low, values.high, step=values.step)
        else:
            params[name] = trial.suggest_categorical(name, values)
    return space.variant_from_params(params)


@dataclass(frozen=True)
class StudyState:
    """What the study already holds, by variant key."""

    done: dict[str, FrozenTrial]  # measured or failed for good: not to be run again
    interrupted: list[FrozenTrial]  # RUNNING trials whose worker on this host is gone


def _process_alive(worker: str) -> bool:
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname():
        return True  # another host's worker: assume alive
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return True


def study_state(study: optuna.Study, retry_failed: bool = False) -> StudyState:
    optuna.storages.fail_stale_trials(study)  # dead workers on other hosts
    done: dict[str, FrozenTrial] = {}
    interrupted: list[FrozenTrial] = []
    for trial in study.get_trials(deepcopy=False):
        key = trial.user_attrs.get(KEY_ATTR)
        outcome = trial.user_attrs.get(OUTCOME_ATTR)
        if key is None:
            continue
        if trial.state == TrialState.COMPLETE and outcome in ("measured", "reused"):
            done.setdefault(key, trial)
        elif trial.state == TrialState.FAIL and outcome == "failed" and not retry_failed:
            done.setdefault(key, trial)
        elif trial.state == TrialState.RUNNING and not _process_alive(trial.user_attrs.get(WORKER_ATTR, "")):
            interrupted.append(trial)
    return StudyState(done=done, interrupted=interrupted)


def close_interrupted(study: optuna.Study, trials: Iterable[FrozenTrial]) -> None:
    """Close trials left RUNNING by a dead worker as FAIL with outcome `interrupted`."""
    for trial in trials:
        study._storage.set_trial_user_attr(trial._trial_id, OUTCOME_ATTR, "interrupted")
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)


def enqueue_unreachable(study: optuna.Study, remaining: dict[str, Variant]) -> int:
    """Queue the remaining variants GridSampler will not offer again: it counts any finished trial
    (interrupted, or failed when failures are retried) as a visited grid point."""
    trials = study.get_trials(deepcopy=False)
    visited = {t.user_attrs.get(KEY_ATTR) for t in trials if t.state.is_finished()}
    queued = [t.system_attrs.get("fixed_params") for t in trials if t.state == TrialState.WAITING]
    count = 0
    for key, variant in remaining.items():
        params = variant.as_dict()
        if key in visited and params not in queued:
            study.enqueue_trial(params)
            count += 1
    return count


def objective_values(metrics: dict[str, Any], objectives: Sequence[Objective]) -> list[float]:
    return [float(metrics[objective.metric]) for objective in objectives]


# --- the front and its hypervolume -------------------------------------------------------------
# Losses are normalised so sweeps compare: a minimised metric as a ratio to the baseline's value
# (reference 2: twice the baseline's latency or size counts for nothing), mAP as 1 - mAP (reference 1).
REFERENCE_RATIO = 2.0


def losses(metrics: dict[str, float], objectives: Sequence[Objective], baseline: dict[str, float]) -> list[float]:
    values = []
    for objective in objectives:
        value = float(metrics[objective.metric])
        if objective.resolved_direction == "maximize":
            values.append(1.0 - value if objective.metric.startswith("map") else -value)
        else:
            values.append(value / float(baseline[objective.metric]))
    return values


def reference_point(objectives: Sequence[Objective]) -> list[float]:
    return [1.0 if o.resolved_direction == "maximize" else REFERENCE_RATIO for o in objectives]


def non_dominated(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the points no other point dominates (all coordinates minimised)."""
    front = []
    for i, point in enumerate(points):
        dominated = any(
            all(o <= p for o, p in zip(other, point)) and any(o < p for o, p in zip(other, point))
            for j, other in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return front


def hypervolume(points: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """Volume dominated by the points and bounded by the reference point (all minimised)."""
    inside = np.array([p for p in points if all(v < r for v, r in zip(p, reference))], dtype=float)
    if len(inside) == 0:
        return 0.0
    front = inside[non_dominated(inside.tolist())]
    if front.shape[1] == 2:
        front = front[np.argsort(front[:, 0])]
        volume, previous_y = 0.0, reference[1]
        for x, y in front:
            if y < previous_y:
                volume += (reference[0] - x) * (previous_y - y)
                previous_y = y
        return float(volume)
    from optuna._hypervolume import compute_hypervolume  # exact WFG for 3 objectives

    return float(compute_hypervolume(front, np.asarray(reference, dtype=float)))

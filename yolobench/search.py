"""The Optuna study behind a sweep: GridSampler over the axes, kept in storage so a sweep resumes
after a crash and several workers can share it. Driven with ask/tell by the runner."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from yolobench.space import Space, Variant

OBJECTIVES = ("latency_ms_p50", "map50_95")
DIRECTIONS = ("minimize", "maximize")

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


def open_study(storage_url: str, study_name: str, space: Space, seed: int) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(
        storage_url,
        engine_kwargs={"connect_args": {"timeout": 60}} if storage_url.startswith("sqlite") else {},
        heartbeat_interval=HEARTBEAT_S,
        grace_period=GRACE_S,
        failed_trial_callback=_mark_interrupted,
    )
    sampler = AskTellGridSampler(space.axes, seed=seed)
    return optuna.create_study(
        study_name=study_name,
        storage=storage,
        sampler=sampler,
        directions=list(DIRECTIONS),
        load_if_exists=True,
    )


def suggest_variant(trial: optuna.Trial, space: Space) -> Variant:
    params = {name: trial.suggest_categorical(name, values) for name, values in space.axes.items()}
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


def objective_values(metrics: dict[str, Any]) -> list[float]:
    return [float(metrics[name]) for name in OBJECTIVES]

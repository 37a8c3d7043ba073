"""What keeps a long sweep's steps flat: the study read incrementally (search.StudyLedger), the grid sampler reading
each finished trial once, the front grown one result at a time (pareto.GrowingFront, report.update_front). Each
must give what a full scan gives, at every point of a study that grows, changes data and is re-timed."""

from __future__ import annotations

import random
import socket
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from yolobench import pareto, report, search
from yolobench.keys import KeyOfParams
from yolobench.search import DATA_ATTR, RETIMED_PREFIX, Outcome, TrialAttr
from yolobench.spec import Objective

OBJECTIVES = [Objective(metric="latency_ms_p50"), Objective(metric="map50_95")]
LIVE_ELSEWHERE = "another-host:1"  # a worker on another host: its heartbeat decides, so it counts as alive
DEAD_HERE = f"{socket.gethostname()}:999999999"  # no such process on this host: its trial is abandoned


# --- the oracle: the full scans search.py did before the ledger -------------------------------------------
def full_state(study: optuna.Study, retry_failed: bool) -> tuple[dict[str, int], list[int], set[str]]:
    now = study.user_attrs.get(DATA_ATTR)
    current = lambda t: now is None or t.user_attrs.get(TrialAttr.DATA, now) == now  # noqa: E731
    done: dict[str, int] = {}
    interrupted, running = [], set()
    for trial in study.get_trials(deepcopy=False):
        key, outcome = trial.user_attrs.get(TrialAttr.KEY), trial.user_attrs.get(TrialAttr.OUTCOME)
        if trial.state == TrialState.RUNNING:
            worker = trial.user_attrs.get(TrialAttr.WORKER)
            if worker == DEAD_HERE:
                interrupted.append(trial.number)
            elif key is not None and worker != search.worker_id():
                running.add(key)
        elif key is None or not current(trial):
            continue
        elif trial.state == TrialState.COMPLETE and outcome in (Outcome.MEASURED, Outcome.REUSED):
            done.setdefault(key, trial.number)
        elif trial.state == TrialState.FAIL and outcome == Outcome.FAILED and not retry_failed:
            done.setdefault(key, trial.number)
    return done, interrupted, running


def full_results(study: optuna.Study) -> list[tuple[str, str, dict[str, float], bool]]:
    now = study.user_attrs.get(DATA_ATTR)
    overrides = {k[len(RETIMED_PREFIX):]: v for k, v in study.user_attrs.items() if k.startswith(RETIMED_PREFIX) and v}
    seen: dict[str, Any] = {}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        attrs = trial.user_attrs
        if attrs.get(TrialAttr.OUTCOME) == Outcome.MEASURED and TrialAttr.METRICS in attrs and TrialAttr.RUN_ID in attrs \
                and (now is None or attrs.get(TrialAttr.DATA, now) == now):
            seen.setdefault(attrs[TrialAttr.KEY], trial)
    return [(t.user_attrs[TrialAttr.KEY], t.user_attrs[TrialAttr.RUN_ID],
             {**t.user_attrs[TrialAttr.METRICS], **overrides.get(t.user_attrs[TrialAttr.KEY], {})},
             t.user_attrs[TrialAttr.KEY] in overrides) for t in seen.values()]


def full_evaluations(study: optuna.Study, key_of: Any) -> int:
    now = study.user_attrs.get(DATA_ATTR)
    return sum(key_of(t.params) == t.user_attrs.get(TrialAttr.KEY) for t in study.get_trials(deepcopy=False)
               if t.user_attrs.get(TrialAttr.OUTCOME) in search.EVALUATIONS
               and (now is None or t.user_attrs.get(TrialAttr.DATA, now) == now))


def key_of(params: dict[str, Any]) -> str:
    return f"k{params['x']}"


def assert_ledger_matches_a_full_scan(study: optuna.Study) -> None:
    for retry_failed in (False, True):
        state = search.study_state(study, retry_failed)
        done, interrupted, running = full_state(study, retry_failed)
        assert {k: t.number for k, t in state.done.items()} == done
        assert [t.number for t in state.interrupted] == interrupted
        assert state.running_elsewhere == running
    assert [(r.key, r.run_id, r.metrics, r.retimed) for r in search.results(study)] == full_results(study)
    for key, run_id, metrics, _ in full_results(study):
        assert search.metrics_of(study, key) == metrics
        assert search.measured(study)[key].run_id == run_id
    assert search.metrics_of(study, "nowhere") is None and "nowhere" not in search.measured(study)
    assert search.evaluations(study, key_of) == full_evaluations(study, key_of)
    # A ledger made now, reading everything at once, says the same as the one that followed the study.
    fresh = search.StudyLedger().read(study)
    assert fresh.results() == search.results(study) and fresh.state(False).done == search.study_state(study).done


class Trials:
    """Trials of a two-objective study in memory, made the way the sweep loop makes them."""

    def __init__(self, data: str | None = None) -> None:
        self.study = optuna.create_study(directions=["minimize", "maximize"], storage=optuna.storages.InMemoryStorage())
        self.distribution = optuna.distributions.IntDistribution(0, 100)
        self.data = data  # the data fingerprint each new trial records (and the study, for the first)
        if data is not None:
            self.study.set_user_attr(DATA_ATTR, data)

    def finished(self, x: int, outcome: Outcome, p50: float = 1.0, map_: float = 0.5, data: str | None = None,
                 **attrs: Any) -> None:
        values = [p50, map_] if outcome in (Outcome.MEASURED, Outcome.REUSED) else None
        user_attrs = {TrialAttr.KEY: f"k{x}", TrialAttr.OUTCOME: str(outcome), **attrs}
        if outcome == Outcome.MEASURED:
            user_attrs.update({TrialAttr.RUN_ID: f"run{len(self.study.trials)}",
                               TrialAttr.METRICS: {"latency_ms_p50": p50, "map50_95": map_}})
        if data or self.data:
            user_attrs[TrialAttr.DATA] = data or self.data
        state = TrialState.COMPLETE if values else (TrialState.PRUNED if outcome == Outcome.TAKEN else TrialState.FAIL)
        self.study.add_trial(optuna.trial.create_trial(
            params={"x": x}, distributions={"x": self.distribution}, values=values, state=state, user_attrs=user_attrs))

    def running(self, x: int, worker: str | None) -> optuna.Trial:
        trial = self.study.ask({"x": optuna.distributions.IntDistribution(x, x)})
        trial.set_user_attr(TrialAttr.KEY, f"k{x}")
        if self.data is not None:  # as search.ask marks it
            trial.set_user_attr(TrialAttr.DATA, self.data)
        if worker is not None:
            trial.set_user_attr(TrialAttr.WORKER, worker)
        return trial


def test_the_ledger_answers_what_a_full_scan_answers_as_the_study_grows_and_changes() -> None:
    trials = Trials(data="old-data")
    study = trials.study
    assert_ledger_matches_a_full_scan(study)  # empty
    early = trials.running(3, worker=None)  # asked first, told late: an earlier trial of k3 than the one below
    for x in range(6):
        trials.finished(x, Outcome.MEASURED, p50=1.0 + x / 10, map_=0.5 - x / 20)
    trials.finished(6, Outcome.FAILED)
    trials.finished(7, Outcome.EXCLUDED)
    trials.finished(2, Outcome.REUSED)
    trials.running(8, LIVE_ELSEWHERE)
    trials.running(9, DEAD_HERE)
    assert_ledger_matches_a_full_scan(study)

    trials.finished(6, Outcome.MEASURED, p50=3.0)  # retried after failing
    version = search.ledger(study).version
    study.set_user_attr(RETIMED_PREFIX + "k1", {"latency_ms_p50": 0.5})  # re-timed by the drift reference
    assert_ledger_matches_a_full_scan(study)
    assert search.ledger(study).version > version  # what was taken in changed: a front follows from scratch

    early.set_user_attr(TrialAttr.OUTCOME, str(Outcome.MEASURED))
    early.set_user_attr(TrialAttr.RUN_ID, "early-run")
    early.set_user_attr(TrialAttr.METRICS, {"latency_ms_p50": 9.0, "map50_95": 0.1})
    study.tell(early, [9.0, 0.1])
    assert_ledger_matches_a_full_scan(study)
    assert search.metrics_of(study, "k3") == {"latency_ms_p50": 9.0, "map50_95": 0.1}  # the first trial of k3

    study.set_user_attr(DATA_ATTR, "new-data")  # the data changed: every trial so far is stale
    assert_ledger_matches_a_full_scan(study)
    assert search.results(study) == [] and search.study_state(study).done == {}
    trials.finished(4, Outcome.MEASURED, data="new-data")
    trials.finished(5, Outcome.MEASURED, data="old-data")
    assert_ledger_matches_a_full_scan(study)
    assert [r.key for r in search.results(study)] == ["k4"]


def test_each_finished_trial_is_taken_in_once_however_often_the_study_is_read(monkeypatch) -> None:
    taken: list[int] = []
    take = search.StudyLedger._take
    monkeypatch.setattr(search.StudyLedger, "_take", lambda self, trial: (taken.append(trial.number), take(self, trial)))
    trials = Trials()
    live = trials.running(99, LIVE_ELSEWHERE)
    for x in range(40):
        trials.finished(x, Outcome.MEASURED, p50=1.0 + x)
        search.study_state(trials.study)
        search.metrics_of(trials.study, "k0")
        search.evaluations(trials.study, key_of)
    assert sorted(taken) == list(range(1, 41))  # trial 0 is still running
    assert search.ledger(trials.study).prefix == 0 and search.study_state(trials.study).running_elsewhere == {"k99"}
    trials.study.tell(live, state=TrialState.PRUNED)
    search.study_state(trials.study)
    assert sorted(taken) == list(range(41)) and search.ledger(trials.study).prefix == 41


def test_evaluations_are_counted_once_per_trial_for_one_sweep_file(monkeypatch) -> None:
    from yolobench.space import Space
    from yolobench.spec import parse_spec
    from tests.fakes import fake_sweep_file, register_fake_runtime

    register_fake_runtime()
    spec = parse_spec(fake_sweep_file())
    space = Space.from_spec(spec)
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr("yolobench.keys.key_of_params", lambda s, sp, params: (calls.append(params), None)[1])
    trials = Trials()
    for x in range(5):
        trials.finished(x, Outcome.MEASURED)
    assert search.evaluations(trials.study, KeyOfParams(spec, space)) == 0 and len(calls) == 5
    trials.finished(5, Outcome.FAILED)
    assert search.evaluations(trials.study, KeyOfParams(spec, space)) == 0 and len(calls) == 6  # the new trial only
    assert search.evaluations(trials.study, key_of) == 6  # another key function counts from the start
    assert len(calls) == 6


# --- the front, grown one point at a time ----------------------------------------------------------------
@pytest.mark.parametrize("dimensions", [2, 3])
def test_a_growing_front_is_the_non_dominated_set_at_every_size(dimensions: int) -> None:
    rng = random.Random(dimensions)
    for _ in range(30):
        points = [[rng.choice([0.5, 1.0, round(rng.random(), 1)]) for _ in range(dimensions)] for _ in range(25)]
        front = pareto.GrowingFront()
        for size, point in enumerate(points, 1):
            joined, left = front.add(str(size - 1), point)
            expected = {str(i) for i in pareto.non_dominated(points[:size])}
            assert set(front.members) == expected
            assert joined == (str(size - 1) in expected) and not set(left) & expected


class RecordingTracker:
    def __init__(self) -> None:
        self.tags: dict[str, str] = {}
        self.passed = 0  # runs handed to tag_front
        self.logged: list[dict[str, float]] = []

    def tag_front(self, on_front: dict[str, bool], known: dict[str, str]) -> None:
        self.passed += len(on_front)
        for run, front in on_front.items():
            known[run] = self.tags[run] = str(front).lower()

    def log(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        self.logged.append(metrics)


def test_the_front_tags_and_hypervolume_follow_each_new_result_as_a_full_recompute_would() -> None:
    trials = Trials()
    study, tracker, tags = trials.study, RecordingTracker(), report.FrontTags()
    rng = random.Random(0)
    baseline = {"latency_ms_p50": 2.0, "map50_95": 0.5}
    for x in range(60):
        trials.finished(x, Outcome.MEASURED, p50=round(rng.uniform(0.5, 4.0), 1), map_=round(rng.uniform(0.1, 0.9), 1))
        if x == 40:  # a front member re-timed far slower: it leaves, and what it hid comes back
            member = next(run for run, value in tracker.tags.items() if value == "true")
            key = next(r.key for r in search.results(study) if r.run_id == member)
            study.set_user_attr(RETIMED_PREFIX + key, {"latency_ms_p50": 50.0})
        passed, front_before = tracker.passed, sum(value == "true" for value in tracker.tags.values())
        report.update_front(study, tracker, "parent", OBJECTIVES, baseline, tags, step=x)
        results = search.results(study)
        points = [pareto.losses(r.metrics, OBJECTIVES, baseline) for r in results]
        front = set(pareto.non_dominated(points))
        assert tracker.tags == {r.run_id: str(i in front).lower() for i, r in enumerate(results)}
        assert tracker.logged[-1] == {"hypervolume": pareto.hypervolume(points, pareto.reference_point(OBJECTIVES)),
                                      "front_size": len(front), "variants_measured": len(results)}
        if x != 40:  # the new run and those it pushed off are looked at, not every run
            assert tracker.passed - passed <= 1 + front_before


# --- the grid sampler -------------------------------------------------------------------------------------
def test_the_grid_sampler_finds_the_points_left_as_optunas_own_scan_does() -> None:
    space = {"x": list(range(12)), "y": ["a", "b"]}
    sampler = search.AskTellGridSampler(space, seed=0)
    study = optuna.create_study(sampler=sampler, directions=["minimize"])
    study.enqueue_trial({"x": 0, "y": "a"})
    held = []
    for number in range(30):
        trial = study.ask()
        trial.suggest_categorical("x", space["x"])
        trial.suggest_categorical("y", space["y"])
        if number % 5 == 4:
            held.append(trial)  # left running for a while
        else:
            study.tell(trial, state=TrialState.FAIL if number % 3 else TrialState.COMPLETE,
                       values=None if number % 3 else [1.0])
        if number % 7 == 6 and held:
            study.tell(held.pop(0), [2.0])
        ours = sampler._get_unvisited_grid_ids(study)
        assert ours == optuna.samplers.GridSampler._get_unvisited_grid_ids(sampler, study)

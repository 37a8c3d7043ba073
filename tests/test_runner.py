"""The sweep loop, exit by exit, in milliseconds: a fake runtime and builder, real MLflow (SQLite), real
Optuna (in memory unless a test needs a second process's view), real cache and data set."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import mlflow
import optuna
import pytest

from tests.fakes import FakeBuilder, FakeRuntime, fake_sweep_file, raise_, register_fake_runtime, send_sigterm
from yolobench import search, tracking
from yolobench.errors import ModelMismatch, SweepStopped, VariantFailed
from yolobench.keys import variant_key
from yolobench.runner import Sweep, SweepSettings
from yolobench.search import Outcome, TrialAttr
from yolobench.space import Space
from yolobench.spec import parse_spec


@pytest.fixture(autouse=True)
def fake_runtime():
    register_fake_runtime()
    FakeRuntime.reset()
    yield FakeRuntime
    FakeRuntime.reset()


class Harness:
    """One sweep's stores under a temporary home, and sweeps of it with the fakes injected."""

    def __init__(self, home: Path, sweep_file: dict, storage: str | None = None) -> None:
        self.home = home
        self.spec = parse_spec(sweep_file)
        self.settings = SweepSettings(home=home, storage=storage)
        self.study = None if storage else search.open_study(
            optuna.storages.InMemoryStorage(), self.spec.name, Space.from_spec(self.spec), self.spec.search)
        self.builder: FakeBuilder | None = None

    def sweep(self, retry_failed: bool = False, **builder_failures: BaseException) -> Sweep:
        settings = SweepSettings(home=self.home, storage=self.settings.storage, retry_failed=retry_failed)
        sweep = Sweep(self.spec, settings, runtime=FakeRuntime(), study=self.study, builder=None)
        self.builder = FakeBuilder(self.spec, sweep.cache, failures=dict(builder_failures))
        sweep.builder = self.builder
        return sweep

    def run(self, **kwargs):
        return self.sweep(**kwargs).run()

    @property
    def client(self) -> mlflow.MlflowClient:
        return mlflow.MlflowClient(tracking.default_tracking_uri(self.home))

    def runs(self, children: bool = True):
        experiment = self.client.get_experiment_by_name(self.spec.name)
        runs = self.client.search_runs([experiment.experiment_id], max_results=1000)
        return [r for r in runs if (tracking.PARENT_TAG in r.data.tags) == children]

    def outcomes(self, study=None) -> list[str]:
        study = study or self.study or optuna.load_study(study_name=self.spec.name, storage=self.settings.resolved_storage)
        return [t.user_attrs.get(TrialAttr.OUTCOME) for t in study.trials]


@pytest.fixture(autouse=True)
def _fresh_mlflow_db(fresh_home: Path) -> None:
    """Every test here starts from an empty MLflow store under tmp_path/home."""


@pytest.fixture()
def harness(tmp_path: Path) -> Harness:
    return Harness(tmp_path / "home", fake_sweep_file())


def test_every_variant_measured_once_with_one_finished_run_each(harness: Harness) -> None:
    summary = harness.run()
    assert (summary.measured, summary.failed, summary.reused, summary.total) == (4, 0, 0, 4)
    assert summary.succeeded
    runs = harness.runs()
    assert sorted(r.data.tags[tracking.LABEL_TAG] for r in runs) == [
        "n-fp16-64-knob1", "n-fp16-64-knob2", "n-fp32-64-knob1", "n-fp32-64-knob2"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert harness.outcomes() == ["measured"] * 4
    assert FakeRuntime.opened[0]["knob"] == 1 and FakeRuntime.opened[0]["precision"] == "fp32"  # baseline first
    assert all(session.closed == 1 for session in FakeRuntime.sessions)
    [parent] = harness.runs(children=False)
    assert parent.info.status == "FINISHED" and parent.data.metrics["front_size"] >= 1
    for run in runs:  # what the fake runtime says about a run reaches it
        assert run.data.params["fake_fact"] == "yes" and run.data.tags["yolobench.fake"] == "true"
        assert run.data.metrics["fake_knob_metric"] == float(run.data.params["knob"])


def test_a_fresh_grid_measures_the_baseline_once_and_answers_nothing_from_the_store(harness: Harness) -> None:
    summary = harness.run()
    assert summary.reused == 0 and len(harness.study.trials) == 4


def test_a_rerun_measures_nothing_and_logs_nothing(harness: Harness, capsys) -> None:
    harness.run()
    before = {r.info.run_id for r in harness.runs()}
    summary = harness.run()
    assert summary.measured == 0 and summary.already_done == 4
    assert {r.info.run_id for r in harness.runs()} == before
    assert harness.builder.built == []
    assert "nothing left to do" in capsys.readouterr().out


def test_a_proposal_of_a_measured_point_is_answered_from_the_store(harness: Harness) -> None:
    baseline = Space.from_spec(harness.spec).baseline.as_dict()
    harness.study.enqueue_trial(baseline)  # proposed once more, after the runner's own baseline trial
    summary = harness.run()
    assert summary.measured == 4 and summary.reused == 1
    reused = [t for t in harness.study.trials if t.user_attrs[TrialAttr.OUTCOME] == Outcome.REUSED]
    assert len(reused) == 1 and reused[0].state == optuna.trial.TrialState.COMPLETE
    assert reused[0].values == harness.study.trials[reused[0].user_attrs[TrialAttr.REUSED_FROM]].values
    assert len(harness.runs()) == 4


@pytest.mark.parametrize("error", [VariantFailed("compiler said no"), ModelMismatch("input is not 1x3xHxW"),
                                   RuntimeError("a third-party runtime error")])
def test_a_failing_variant_is_recorded_and_the_sweep_goes_on(harness: Harness, error: Exception) -> None:
    FakeRuntime.on({"knob": 2, "precision": "fp16"}, raise_(error))
    summary = harness.run()
    assert (summary.measured, summary.failed) == (3, 1) and not summary.succeeded
    failed = [r for r in harness.runs() if r.info.status == "FAILED"]
    assert [r.data.tags[tracking.LABEL_TAG] if tracking.LABEL_TAG in r.data.tags else r.info.run_name
            for r in failed] == ["n-fp16-64-knob2"]
    assert str(error) in failed[0].data.tags[tracking.ERROR_TAG]
    assert failed[0].data.params["model"] == "trained:yolo11n.yaml@1ep"  # a FAILED run says what it was
    assert harness.outcomes().count("failed") == 1
    [parent] = harness.runs(children=False)
    assert parent.info.status == "FAILED"  # not every variant measured: the sweep did not succeed


def test_failed_variants_are_not_retried_unless_asked_and_then_leave_one_run(harness: Harness, capsys) -> None:
    FakeRuntime.on({"knob": 2, "precision": "fp16"}, raise_(VariantFailed("flaky device")))
    harness.run()
    FakeRuntime.reset()
    again = harness.run()
    assert again.measured == 0 and again.failed_before == 1 and not again.succeeded
    assert "1 failed (--retry-failed" in capsys.readouterr().out
    retried = harness.run(retry_failed=True)
    assert retried.measured == 1 and retried.succeeded
    runs = harness.runs()
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}  # the old FAILED run is gone


def test_a_bug_stops_the_sweep_with_its_traceback_and_is_recorded(harness: Harness) -> None:
    FakeRuntime.on({"knob": 2}, raise_(KeyError("a key yolobench forgot")))
    with pytest.raises(KeyError):
        harness.run()
    assert "bug" in harness.outcomes()
    failed = [r for r in harness.runs() if r.info.status == "FAILED"]
    assert len(failed) == 1 and "KeyError" in failed[0].data.tags[tracking.ERROR_TAG]
    [parent] = harness.runs(children=False)
    assert parent.info.status == "FAILED"


def test_an_excluded_proposal_is_closed_without_a_run(tmp_path: Path) -> None:
    harness = Harness(tmp_path / "home", fake_sweep_file(exclude=[{"precision": "fp16", "knob": 2}]))
    harness.study.enqueue_trial({"scale": "n", "precision": "fp16", "imgsz": 64, "knob": 2})
    summary = harness.run()
    assert summary.total == 3 and summary.measured == 3
    assert harness.outcomes().count("excluded") == 1
    assert "n-fp16-64-knob2" not in {r.info.run_name for r in harness.runs()}


def test_an_exclude_that_leaves_nothing_stops_before_any_store_is_opened(tmp_path: Path) -> None:
    harness = Harness(tmp_path / "home", fake_sweep_file(exclude=[{"scale": "n"}]))
    with pytest.raises(SweepStopped, match="exclude"):
        harness.run()
    assert harness.client.search_experiments(filter_string="name = 'fake'") == []


def test_a_point_another_live_worker_runs_is_left_to_it(harness: Harness) -> None:
    spec, study = harness.spec, harness.study
    taken = Space.from_spec(spec).variant_from_params({"scale": "n", "precision": "fp16", "imgsz": 64, "knob": 2})
    other = study.ask()  # another worker on this host (pid 1 is alive), measuring that point
    other.set_user_attr(TrialAttr.WORKER, f"{socket.gethostname()}:1")
    other.set_user_attr(TrialAttr.KEY, variant_key(spec, taken))
    study.enqueue_trial(taken.as_dict())  # ... and the sampler proposes it here too
    summary = harness.run()
    assert summary.measured == 3
    assert harness.outcomes().count("taken") == 1
    assert taken.label not in {r.info.run_name for r in harness.runs()}


def test_a_point_another_worker_closed_since_the_loop_looked_is_not_measured_again(harness: Harness, monkeypatch) -> None:
    """The race two workers started together hit: the other worker finishes the point between this one's look
    at the study and its claim of the same point, so it is neither running elsewhere nor in the state looked at."""
    spec, study = harness.spec, harness.study
    taken = Space.from_spec(spec).variant_from_params({"scale": "n", "precision": "fp16", "imgsz": 64, "knob": 2})
    asks, original_ask = [], search.ask

    def ask_after_the_other_worker_closed_it(asked_study):
        asks.append(1)
        if len(asks) == 2:  # the loop has looked at the study for this step
            study.enqueue_trial(taken.as_dict())
            other = original_ask(asked_study)
            other.set_user_attr(TrialAttr.WORKER, "agent-elsewhere:4242")
            other.set_user_attr(TrialAttr.KEY, variant_key(spec, taken))
            search.close_trial(asked_study, other, Outcome.FAILED, failure="the other worker's own failure")
            study.enqueue_trial(taken.as_dict())  # ... and the sampler proposes it here too
        return original_ask(asked_study)

    monkeypatch.setattr(search, "ask", ask_after_the_other_worker_closed_it)
    summary = harness.run()
    assert summary.measured == 3
    assert taken.label not in {r.info.run_name for r in harness.runs()}
    assert harness.outcomes().count("measured") == 3


def test_a_run_another_worker_started_after_this_one_looked_is_not_tidied_away(harness: Harness, monkeypatch) -> None:
    """Start-up tidies the runs a killed sweep left unfinished; a live worker's, started after this one read the
    study (two workers started together), is not one of them: the study is read again after the runs are listed."""
    spec, study = harness.spec, harness.study
    taken = Space.from_spec(spec).variant_from_params({"scale": "n", "precision": "fp16", "imgsz": 64, "knob": 2})
    started, original_close = [], search.close_abandoned

    def other_worker_starts_meanwhile(asked_study, trials) -> None:  # between this sweep's look and its tidying
        original_close(asked_study, trials)
        other = study.ask()
        other.set_user_attr(TrialAttr.WORKER, f"{socket.gethostname()}:1")  # pid 1 lives
        other.set_user_attr(TrialAttr.KEY, variant_key(spec, taken))
        [parent] = harness.runs(children=False)
        started.append(harness.client.create_run(parent.info.experiment_id, run_name=taken.label, tags={
            tracking.PARENT_TAG: parent.info.run_id, tracking.VARIANT_KEY_TAG: variant_key(spec, taken)}).info.run_id)

    monkeypatch.setattr(search, "close_abandoned", other_worker_starts_meanwhile)
    summary = harness.run()
    assert summary.measured == 3
    assert harness.client.get_run(started[0]).info.lifecycle_stage == "active"


@pytest.mark.parametrize("stop", [KeyboardInterrupt(), SweepStopped("weights vanished")])
def test_a_stopped_sweep_discards_the_variant_in_flight_and_a_rerun_redoes_it(harness: Harness, stop) -> None:
    FakeRuntime.on({"knob": 2, "precision": "fp32"}, raise_(stop))
    with pytest.raises(type(stop)):
        harness.run()
    assert "interrupted" in harness.outcomes()
    assert all(r.info.status == "FINISHED" for r in harness.runs())  # the variant in flight left no run
    [parent] = harness.runs(children=False)
    assert parent.info.status == ("KILLED" if isinstance(stop, KeyboardInterrupt) else "FAILED")
    FakeRuntime.reset()
    summary = harness.run()
    assert summary.measured >= 1 and len(harness.runs()) == 4 and {r.info.status for r in harness.runs()} == {"FINISHED"}


def test_sigterm_cleans_up_like_ctrl_c(harness: Harness) -> None:
    FakeRuntime.on({"knob": 2, "precision": "fp32"}, send_sigterm)
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        harness.run()
    assert "interrupted" in harness.outcomes()
    assert [r.info.status for r in harness.runs(children=False)] == ["KILLED"]
    assert {r.info.status for r in harness.runs()} == {"FINISHED"}


def test_a_kill_between_logging_and_telling_is_told_from_mlflow_not_remeasured(tmp_path: Path, monkeypatch) -> None:
    harness = Harness(tmp_path / "home", fake_sweep_file(), storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    monkeypatch.setattr(search, "worker_id", lambda: f"{socket.gethostname()}:999999999")  # a worker that dies
    real_close = search.close_trial

    def killed_before_telling(study, trial, outcome, **details):
        if outcome == Outcome.MEASURED and len(FakeRuntime.opened) == 2:
            raise SystemExit("killed")  # as a kill -9 would leave it: the run FINISHED, the trial RUNNING
        real_close(study, trial, outcome, **details)

    monkeypatch.setattr("yolobench.runner.close_trial", killed_before_telling)
    with pytest.raises(SystemExit):
        harness.run()
    monkeypatch.undo()
    register_fake_runtime()
    opened_before = len(FakeRuntime.opened)
    summary = harness.run()
    assert summary.measured == 2 and summary.reused == 1  # the untold one is taken from its run
    assert len(FakeRuntime.opened) - opened_before == 2
    runs = harness.runs()
    assert len(runs) == 4 and len({r.data.tags[tracking.VARIANT_KEY_TAG] for r in runs}) == 4


def test_a_trial_killed_between_ask_and_its_first_attribute_is_closed_by_the_next_run(tmp_path: Path, monkeypatch) -> None:
    harness = Harness(tmp_path / "home", fake_sweep_file(), storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    study = search.open_study(harness.settings.resolved_storage, harness.spec.name, Space.from_spec(harness.spec),
                              harness.spec.search)
    study.ask()  # then the process died: no attribute at all
    monkeypatch.setattr(search, "UNOWNED_GRACE_S", 0.0)
    harness.run()
    study = optuna.load_study(study_name="fake", storage=harness.settings.resolved_storage)
    assert [t.state for t in study.trials if t.state == optuna.trial.TrialState.RUNNING] == []
    assert study.trials[0].user_attrs[TrialAttr.OUTCOME] == "interrupted"


def test_a_pareto_budget_counts_evaluations_of_this_sweep_file(tmp_path: Path) -> None:
    pareto = {"mode": "pareto", "sampler": "random", "budget": {"trials": 3}}
    harness = Harness(tmp_path / "home", fake_sweep_file(search=pareto, axes={
        "scale": ["n"], "precision": ["fp32", "fp16"], "imgsz": [64], "knob": [1, 2, 3]}))
    harness.run()
    evaluations = [o for o in harness.outcomes() if o in ("measured", "reused", "failed")]
    assert len(evaluations) == 3
    again = harness.run()
    assert again.measured == 0  # the budget is spent


def test_the_front_is_tagged_and_its_hypervolume_logged(harness: Harness) -> None:
    harness.run()
    runs = harness.runs()
    tags = {r.data.tags.get(tracking.PARETO_TAG) for r in runs}
    assert tags <= {"true", "false"} and "true" in tags
    [parent] = harness.runs(children=False)
    history = harness.client.get_metric_history(parent.info.run_id, "hypervolume")
    assert len(history) == 4 and all(0.0 <= m.value <= 2.0 for m in history)
    assert parent.data.metrics["variants_measured"] == 4


def test_the_builder_s_sweep_stopping_error_stops_the_sweep(harness: Harness) -> None:
    with pytest.raises(SweepStopped):
        harness.run(**{"n-fp16-64-knob1": SweepStopped("weights vanished")})
    assert "interrupted" in harness.outcomes()


def test_a_variant_s_run_carries_the_names_tests_pin(harness: Harness) -> None:
    harness.run()
    run = next(r for r in harness.runs() if r.data.tags[tracking.LABEL_TAG] == "n-fp32-64-knob1")
    assert run.data.metrics["speedup_vs_baseline"] == pytest.approx(1.0)
    assert {tracking.VARIANT_KEY_TAG, tracking.SWEEP_TAG, tracking.ARTIFACT_KEY_TAG, tracking.BUILD_KEY_TAG,
            tracking.UNSTABLE_TAG, tracking.EXPORT_FUSIONS_TAG} <= set(run.data.tags)
    artifacts = {a.path for a in harness.client.list_artifacts(run.info.run_id, "compiled")}
    assert {"compiled/model.onnx", "compiled/manifest.json"} <= artifacts
    assert os.path.basename(run.data.tags[tracking.SWEEP_TAG]) == "fake"
    # This machine has no power sensor: no energy metric, and a tag saying why.
    assert "no RAPL" in run.data.tags["yolobench.energy_unavailable"] and "power_w_mean" not in run.data.metrics

"""Agents of one device class sharing one study, in seconds: a worker "on another host" (a host name that is
not this one, so only its heartbeat tells whether it lives) holds a variant while a real sweep runs. A live
worker's variant is left to it and waited for; a dead one's is taken over once its heartbeat is older than the
grace; the run it left RUNNING goes, so each variant keeps one run. SQLite storage: heartbeats need a database."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import mlflow
import optuna
import pytest

from tests.fakes import FakeBuilder, FakeRuntime, fake_sweep_file, register_fake_runtime
from yolobench import search, tracking
from yolobench.cli import build_parser
from yolobench.keys import variant_key
from yolobench.runner import Sweep, SweepSettings
from yolobench.search import Outcome, TrialAttr
from yolobench.space import Space
from yolobench.spec import parse_spec

GRACE_S = 1.0
HELD = {"scale": "n", "precision": "fp16", "imgsz": 64, "knob": 2}  # the variant the other worker holds


@pytest.fixture(autouse=True)
def fake_runtime(fresh_home: Path):
    register_fake_runtime()
    FakeRuntime.reset()
    yield FakeRuntime
    FakeRuntime.reset()


class Output(io.StringIO):
    """The sweep's progress stream; `waiting` is set once the sweep says it waits for other workers."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = threading.Event()

    def write(self, text: str) -> int:
        if "waiting:" in text:
            self.waiting.set()
        return super().write(text)


class OtherHostWorker:
    """A worker on host `agent-elsewhere` measuring HELD: it beats until the sweep waits for it, then either
    dies (stops beating) or records the variant as failed for good, which counts as done."""

    def __init__(self, storage: str, spec, then: str, output: Output) -> None:
        self.study = search.open_study(storage, spec.name, Space.from_spec(spec), spec.search, GRACE_S)
        self.study.enqueue_trial(HELD)
        self.trial = self.study.ask()
        variant = search.suggest_variant(self.trial, Space.from_spec(spec))
        self.trial.set_user_attr(TrialAttr.WORKER, "agent-elsewhere:4242")
        self.trial.set_user_attr(TrialAttr.KEY, variant_key(spec, variant))
        self.then, self.output = then, output
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        deadline = time.monotonic() + 60  # a bound, should the sweep never wait
        while not self.output.waiting.is_set() and time.monotonic() < deadline:
            search._record_heartbeat(self.study, self.trial)
            time.sleep(GRACE_S / 5)
        if self.then == "fail":
            search.close_trial(self.study, self.trial, Outcome.FAILED, failure="the other worker's own failure")
        # "die": no more beats; the trial stays RUNNING until a worker finds its heartbeat stale


def sweep_with_other_worker(home: Path, then: str) -> tuple[Sweep, OtherHostWorker, Output]:
    spec = parse_spec(fake_sweep_file())
    storage = f"sqlite:///{home / 'optuna.db'}"
    output = Output()
    other = OtherHostWorker(storage, spec, then, output)
    sweep = Sweep(spec, SweepSettings(home=home, storage=storage, heartbeat_grace_s=GRACE_S), runtime=FakeRuntime(),
                  stream=output)
    sweep.builder = FakeBuilder(spec, sweep.cache)
    other.thread.start()
    return sweep, other, output


def child_runs(home: Path) -> list:
    client = mlflow.MlflowClient(tracking.default_tracking_uri(home))
    experiment = client.get_experiment_by_name("fake")
    return [r for r in client.search_runs([experiment.experiment_id]) if tracking.PARENT_TAG in r.data.tags]


def test_a_dead_workers_variant_is_taken_over_after_its_grace_and_measured_once(fresh_home: Path) -> None:
    sweep, other, output = sweep_with_other_worker(fresh_home, "die")
    summary = sweep.run()
    other.thread.join()
    assert output.waiting.is_set(), output.getvalue()  # it stayed for the variant instead of leaving it behind
    assert summary.measured == 4 and summary.failed == 0
    assert HELD["knob"] in [axes["knob"] for axes in FakeRuntime.opened if axes["precision"] == "fp16"]
    first = optuna.load_study(study_name="fake", storage=f"sqlite:///{fresh_home / 'optuna.db'}").trials[0]
    assert first.state == optuna.trial.TrialState.FAIL and TrialAttr.OUTCOME not in first.user_attrs
    runs = child_runs(fresh_home)
    assert len(runs) == 4 and len({r.data.tags[tracking.VARIANT_KEY_TAG] for r in runs}) == 4
    assert {r.info.status for r in runs} == {"FINISHED"}


def test_a_live_workers_variant_is_waited_for_and_never_measured_twice(fresh_home: Path) -> None:
    sweep, other, output = sweep_with_other_worker(fresh_home, "fail")
    summary = sweep.run()
    other.thread.join()
    assert output.waiting.is_set(), output.getvalue()
    assert summary.measured == 3  # the fourth is the other worker's: failed there, done for the study
    assert not any(axes["precision"] == "fp16" and axes["knob"] == 2 for axes in FakeRuntime.opened)
    assert "n-fp16-64-knob2" not in {r.info.run_name for r in child_runs(fresh_home)}


def test_a_restarted_agent_takes_over_at_once_what_its_dead_self_left(fresh_home: Path) -> None:
    """A restart long after the kill: the stale trial is failed, its point queued again and measured."""
    spec = parse_spec(fake_sweep_file())
    storage = f"sqlite:///{fresh_home / 'optuna.db'}"
    other = OtherHostWorker(storage, spec, "die", Output())
    search._record_heartbeat(other.study, other.trial)
    time.sleep(GRACE_S * 1.5)
    sweep = Sweep(spec, SweepSettings(home=fresh_home, storage=storage, heartbeat_grace_s=GRACE_S),
                  runtime=FakeRuntime(), stream=io.StringIO())
    sweep.builder = FakeBuilder(spec, sweep.cache)
    assert sweep.run().measured == 4
    assert len(child_runs(fresh_home)) == 4


def test_the_grace_comes_from_the_flag_or_the_environment(monkeypatch) -> None:
    assert build_parser().parse_args(["sweep", "quickstart"]).heartbeat_grace is None
    assert build_parser().parse_args(["sweep", "quickstart", "--heartbeat-grace", "45"]).heartbeat_grace == 45.0
    monkeypatch.setenv("YOLOBENCH_HEARTBEAT_GRACE_S", "30")
    assert build_parser().parse_args(["sweep", "quickstart"]).heartbeat_grace == 30.0
    with pytest.raises(SystemExit):
        build_parser().parse_args(["sweep", "quickstart", "--heartbeat-grace", "0"])


def test_a_study_per_device_class(tmp_path: Path) -> None:
    """--study names the study (and, without --experiment, the experiment): two classes on one storage never
    share a variant."""
    from yolobench.cli import _settings

    spec = parse_spec(fake_sweep_file())
    args = build_parser().parse_args(["sweep", "quickstart", "--study", "fake-i9"])
    settings = _settings(args).for_spec(spec)
    assert (settings.study, settings.experiment) == ("fake-i9", "fake-i9")
    assert SweepSettings().for_spec(spec).study == "fake"  # default: the sweep's name
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    space = Space.from_spec(spec)
    i9, ryzen = (search.open_study(storage, name, space, spec.search) for name in ("fake-i9", "fake-ryzen"))
    i9.ask()
    assert len(i9.trials) == 1 and ryzen.trials == []

"""A ranking that holds when the grid is measured again: foreign load is seen and refused, the timed phase
ends when its windows agree, the p50 has a confidence interval, the baseline is re-timed to catch drift,
the front is confirmed interleaved (and resumes after a kill), accuracy is evaluated once per numerics."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import onnxruntime
import optuna
import pytest

from tests.fakes import FakeBuilder, FakeRuntime, fake_sweep_file, raise_, register_fake_runtime, tiny_ort_sweep
from yolobench import search, tracking
from yolobench.data.dataset import open_dataset
from yolobench.measure.accuracy import evaluate
from yolobench.measure.contention import ForeignLoad
from yolobench.measure.windows import WindowSettings, measure_windows, median_confidence_interval
from yolobench.runner import Sweep, SweepSettings
from yolobench.space import Space
from yolobench.spec import parse_spec

FRAME = [np.zeros((32, 32, 3), np.uint8)]


class FakeClock:
    """A clock that only the fake inference moves: window arithmetic without timing noise."""

    def __init__(self, latencies_ms):
        self.now, self.latencies, self.calls = 0.0, latencies_ms, 0

    def __call__(self) -> float:
        return self.now

    def infer(self, tensor):
        self.now += self.latencies(self.calls) / 1000.0
        self.calls += 1
        return np.zeros((1, 8, 21), np.float32)


def windows(latencies_ms, **settings):
    clock = FakeClock(latencies_ms)
    quiet = ForeignLoad(system_busy_s=lambda: 0.0, own_cpu_s=lambda: 0.0, clock=clock, gpu_processes=lambda: 0)
    options = {"warmup_runs": 1, "warmup_seconds": 0.0, "min_runs": 30, "min_seconds": 0.0, "max_seconds": 5.0,
               "min_window_runs": 10,
               **settings}
    return measure_windows(clock.infer, FRAME, 32, WindowSettings(**options), clock=clock, foreign=quiet,
                           sleep=lambda s: None)


def test_a_steady_session_ends_after_three_agreeing_windows() -> None:
    timed = windows(lambda i: 5.0)
    assert timed.converged and len(timed.windows) == 3 and timed.spread == pytest.approx(0.0, abs=1e-9)
    assert timed.result.inference_ms.size == 30 and np.median(timed.result.inference_ms) == pytest.approx(5.0)


def test_the_phase_goes_on_until_the_last_three_windows_agree_and_reports_those() -> None:
    timed = windows(lambda i: 20.0 if i < 25 else 10.0)  # a first stretch twice as slow (a neighbour, a turbo)
    assert timed.converged and len(timed.windows) > 3
    assert np.median(timed.result.inference_ms) == pytest.approx(10.0)  # the settled windows, not the early ones


def test_windows_that_never_agree_stop_at_the_cap_and_flag_the_run_unstable() -> None:
    timed = windows(lambda i: 5.0 * (1 + (i // 10) % 2), max_seconds=1.0)  # alternates every window: never agrees
    assert not timed.converged and timed.unstable and timed.spread > 0.05
    assert sum(w.seconds for w in timed.windows) >= 1.0


def test_foreign_load_arithmetic_is_other_processes_busy_time_over_wall_time() -> None:
    readings = iter([(10.0, 2.0, 0.0), (12.5, 3.0, 2.0)])  # system busy s, own cpu s, clock s
    values = {}

    def next_reading() -> None:
        values["busy"], values["own"], values["clock"] = next(readings)

    next_reading()
    load = ForeignLoad(system_busy_s=lambda: values["busy"], own_cpu_s=lambda: values["own"],
                       clock=lambda: values["clock"], gpu_processes=lambda: 0)
    load.start()
    next_reading()
    assert load.stop().cpu_percent == pytest.approx(100.0 * (2.5 - 1.0) / 2.0)  # 75% of one core


def test_a_real_busy_neighbour_is_seen_and_its_windows_refused() -> None:
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        load = ForeignLoad()
        load.start()
        sum(i * i for i in range(200000))  # our own work must not count
        import time

        time.sleep(0.5)
        assert load.stop().cpu_percent > 50.0
        timed = measure_windows(lambda t: np.zeros((1, 8, 21), np.float32), FRAME, 32,
                                WindowSettings(warmup_runs=1, warmup_seconds=0.0, min_runs=9, min_seconds=0.3,
                                               max_seconds=3.0, contended_retries=2, backoff_s=0.01))
    finally:
        busy.kill()
        busy.wait()
    assert sum(not w.kept for w in timed.windows) >= 2 and timed.contended
    assert timed.metrics()["foreign_cpu_percent_mean"] > 25.0


def test_the_p50_interval_is_distribution_free_and_narrows_with_samples() -> None:
    rng = np.random.default_rng(0)
    small, large = rng.exponential(10, 30), rng.exponential(10, 3000)
    low, high = median_confidence_interval(small)
    assert low <= np.median(small) <= high
    wide, narrow = high - low, np.subtract(*median_confidence_interval(large)[::-1])
    assert narrow < wide
    covered = sum(lo <= 10 * np.log(2) <= hi for lo, hi in (median_confidence_interval(rng.exponential(10, 200))
                                                           for _ in range(300)))
    assert 0.90 <= covered / 300 <= 0.99  # a 95% interval covers the true median about 95% of the time


@pytest.fixture()
def fake_home(fresh_home: Path):
    register_fake_runtime()
    FakeRuntime.reset()
    yield fresh_home
    FakeRuntime.reset()


def fake_sweep(home: Path, study=None, **measure):
    base = fake_sweep_file()
    spec = parse_spec({**base, "measure": {**base["measure"], **measure}})
    study = study or search.open_study(optuna.storages.InMemoryStorage(), spec.name, Space.from_spec(spec),
                                       spec.search)
    sweep = Sweep(spec, SweepSettings(home=home), study=study)
    sweep.builder = FakeBuilder(spec, sweep.cache)
    return sweep, study


def child_runs(home: Path):
    client = mlflow.MlflowClient(tracking.default_tracking_uri(home))
    experiment = client.get_experiment_by_name("fake")
    return client, [r for r in client.search_runs([experiment.experiment_id]) if tracking.PARENT_TAG in r.data.tags]


def a_neighbour_from_open(start: int, stop: int) -> None:
    """The fake machine is 3x slower from the start-th session opened until the stop-th."""
    opens = []

    def machine() -> None:
        opens.append(1)
        FakeRuntime.slowdown = {start: 3.0, stop: 1.0}.get(len(opens), FakeRuntime.slowdown)

    FakeRuntime.on({}, machine)


def test_a_variant_timed_while_the_reference_drifted_is_retimed_once_it_settles(fake_home: Path) -> None:
    FakeRuntime.delay_ms = 4.0
    a_neighbour_from_open(2, 4)
    sweep, _ = fake_sweep(fake_home, min_runs=6, reference_every=1, drift_tolerance=0.3, stability=0.5)
    assert sweep.run().measured == 4
    client, runs = child_runs(fake_home)
    retimed = [r for r in runs if r.data.tags.get(tracking.RETIMED_TAG) == "true"]
    assert len(retimed) == 1
    first, now = retimed[0].data.metrics["latency_ms_p50_first"], retimed[0].data.metrics["latency_ms_p50"]
    assert first / now > 2.0  # timed at 3x, re-timed at 1x
    parent = next(r for r in client.search_runs([runs[0].info.experiment_id]) if tracking.PARENT_TAG not in r.data.tags)
    drift = [m.value for m in client.get_metric_history(parent.info.run_id, "reference_drift")]
    assert max(drift) > 2.0 and min(drift) < 1.3


def test_the_front_is_confirmed_interleaved_and_a_kill_during_it_resumes_without_duplicates(fake_home: Path) -> None:
    FakeRuntime.delay_ms = 1.0
    storage = optuna.storages.RDBStorage(f"sqlite:///{fake_home.parent / 'optuna.db'}")
    sweep, study = fake_sweep(fake_home, study=None, confirm=True)
    study = search.open_study(storage, "fake", sweep.space, sweep.spec.search)
    sweep.study = study
    FakeRuntime.on({}, lambda: len(FakeRuntime.opened) == 5 and raise_(KeyboardInterrupt())())  # 1st confirm open
    with pytest.raises(KeyboardInterrupt):
        sweep.run()
    _, runs = child_runs(fake_home)
    assert len(runs) == 4 and not any(tracking.CONFIRMED_TAG in r.data.tags for r in runs)
    FakeRuntime.behaviours = []
    again, _ = fake_sweep(fake_home, study=study, confirm=True)
    summary = again.run()
    assert summary.measured == 0  # nothing measured twice: only confirmed
    _, runs = child_runs(fake_home)
    confirmed = [r for r in runs if r.data.tags.get(tracking.CONFIRMED_TAG) == "true"]
    assert len(runs) == 4 and len(confirmed) >= 2  # the baseline and the front, in the same runs
    assert all("latency_ms_p50_first" in r.data.metrics for r in confirmed)
    assert any(r.data.tags.get(tracking.PARETO_TAG) == "true" for r in confirmed)
    opened_before = len(FakeRuntime.opened)
    fake_sweep(fake_home, study=study, confirm=True)[0].run()
    assert len(FakeRuntime.opened) == opened_before  # confirmed once: a third run re-times nothing


def test_accuracy_is_evaluated_once_per_numerics_and_equals_an_independent_evaluation(fresh_home: Path) -> None:
    from tests.test_run_names import TINY_ORT_SWEEP

    sweep_file = {**TINY_ORT_SWEEP, "axes": {"scale": ["n"], "precision": ["fp32"], "imgsz": [32],
                                             "ort_level": ["disable", "all"], "threads": [1, 2]},
                  "baseline": {"scale": "n", "precision": "fp32", "imgsz": 32, "ort_level": "disable", "threads": 1}}
    home = fresh_home
    sweep = tiny_ort_sweep(home, sweep_file)
    dataset = open_dataset(sweep.spec.data, home)
    assert sweep.run().measured == 4
    client = mlflow.MlflowClient(tracking.default_tracking_uri(home))
    runs = [r for r in client.search_runs([client.get_experiment_by_name("names").experiment_id])
            if tracking.PARENT_TAG in r.data.tags]
    reused = [r for r in runs if tracking.ACCURACY_REUSED_TAG in r.data.tags]
    assert len(reused) == 3  # one model, four knob settings with the same arithmetic: one evaluation
    model = sweep.cache.lookup("export", runs[0].data.tags[tracking.ARTIFACT_KEY_TAG]).path
    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    independent = evaluate(lambda t: session.run(None, {name: t})[0], dataset.val_images, dataset.names, 32)
    for run in reused:
        assert abs(run.data.metrics["map50_95"] - independent.map50_95) <= 1e-4
        assert run.data.metrics["accuracy_probe_max_difference"] <= 1e-4
    shutil.rmtree(home / "probes")


def test_a_rounds_pace_is_divided_out_so_a_machine_that_slows_for_one_round_leaves_the_ratios_alone() -> None:
    from yolobench.confirm import paced

    rng = np.random.default_rng(0)
    speeds = [1.0, 1.0, 2.5, 1.0, 0.8, 1.0]  # the host is 2.5x slower in round 3, faster in round 5
    rounds = [{"a": 10.0 * s * rng.normal(1, 0.01, 3), "b": 20.0 * s * rng.normal(1, 0.01, 3),
               "c": 5.0 * s * rng.normal(1, 0.01, 3)} for s in speeds]
    samples = paced(rounds)
    assert {k: v.size for k, v in samples.items()} == {"a": 18, "b": 18, "c": 18}
    for label, true in {"a": 10.0, "b": 20.0, "c": 5.0}.items():
        assert samples[label].max() / samples[label].min() < 1.1  # the slow round no longer stands out
        assert abs(np.median(samples[label]) / true - 1) < 0.03
    unpaced = np.concatenate([r["a"] for r in rounds])
    assert unpaced.max() / unpaced.min() > 2.5


def test_a_confirmation_left_with_only_the_baseline_to_record_times_it_alone(fake_home: Path) -> None:
    from yolobench.confirm import interleaved_samples

    FakeRuntime.delay_ms = 1.0
    sweep, _ = fake_sweep(fake_home, confirm=True)
    sweep.run()
    baseline = sweep.space.baseline
    samples = interleaved_samples(sweep.retimer, [], baseline, rounds=3, memory_mb=2048).samples
    assert list(samples) == [baseline.label] and samples[baseline.label].size == 3 * 3
    assert 0.5 < float(np.median(samples[baseline.label])) < 50


def test_the_confirmation_stands_at_the_first_passes_level_not_at_that_of_its_own_minute(fake_home: Path) -> None:
    FakeRuntime.delay_ms = 4.0
    FakeRuntime.on({}, lambda: len(FakeRuntime.opened) == 5 and setattr(FakeRuntime, "slowdown", 2.0))  # confirming
    sweep, _ = fake_sweep(fake_home, confirm=True, min_runs=6, stability=0.5)
    assert sweep.run().measured == 4
    _, runs = child_runs(fake_home)
    assert all(r.data.tags.get(tracking.CONFIRMED_TAG) == "true" for r in runs) and len(runs) == 4
    for run in runs:
        metrics = run.data.metrics
        assert 0.4 < metrics["confirm_level"] < 0.6  # the machine was twice as slow while confirming
        assert 0.8 < metrics["latency_ms_p50"] / metrics["latency_ms_p50_first"] < 1.25


def test_the_sweep_level_is_the_first_passes_median_or_where_the_baselines_confirmation_stands(fake_home: Path) -> None:
    from yolobench.confirm import CONFIRMED_ATTR, sweep_level

    FakeRuntime.delay_ms = 1.0
    sweep, study = fake_sweep(fake_home, confirm=False)
    sweep.run()
    results, key = search.results(study), sweep.baseline_key
    halved = {r.key: search.metrics_of(study, r.key)["latency_ms_p50"] / 2 for r in results}
    halved[results[-1].key] /= 10  # one variant far off moves the median of four little
    assert sweep_level(study, results, halved, key) == pytest.approx(2.0)
    search.record_retimed(study, key, {"latency_ms_p50": 3 * halved[key], CONFIRMED_ATTR: 1.0})
    assert sweep_level(study, results, halved, key) == pytest.approx(3.0)  # a later group joins the earlier one


def test_bursts_near_the_front_are_longer_by_the_factor(fake_home: Path) -> None:
    from yolobench.confirm import interleaved_samples

    sweep, study = fake_sweep(fake_home, confirm=False)
    sweep.run()
    baseline = sweep.space.baseline
    other = next(sweep.space.variant_from_params(r.params) for r in search.results(study)
                 if r.key != sweep.baseline_key)
    samples = interleaved_samples(sweep.retimer, [other], baseline, rounds=4, memory_mb=2048,
                                  longer={other.label}, factor=3).samples
    assert {label: s.size for label, s in samples.items()} == {other.label: 4 * 9, baseline.label: 4 * 3}


def test_a_grid_confirmed_whole_leaves_the_variants_timed_while_it_drifted_to_the_confirmation(fake_home: Path) -> None:
    FakeRuntime.delay_ms = 4.0
    a_neighbour_from_open(2, 4)
    sweep, _ = fake_sweep(fake_home, min_runs=6, reference_every=1, drift_tolerance=0.3, stability=0.5, confirm=True)
    assert sweep.run().measured == 4
    _, runs = child_runs(fake_home)
    assert not [r for r in runs if r.data.tags.get(tracking.RETIMED_TAG) == "true"]  # not re-timed one by one
    assert all(r.data.tags.get(tracking.CONFIRMED_TAG) == "true" for r in runs)
    for run in runs:
        assert run.data.metrics["latency_ms_p50"] < 4.0 * 1.8  # what it reports was timed at 1x


def test_a_grid_confirmed_only_near_its_front_gives_no_burst_a_longer_one(fake_home: Path, monkeypatch) -> None:
    from yolobench import confirm

    FakeRuntime.delay_ms = 1.0
    asked, original = [], confirm.interleaved_samples
    monkeypatch.setattr(confirm, "interleaved_samples", lambda *args, **kwargs: asked.append(args[5]) or original(
        *args, **kwargs))
    sweep, _ = fake_sweep(fake_home, confirm=True, confirm_all_up_to=2)  # 4 variants: the front's neighbourhood
    sweep.run()
    _, runs = child_runs(fake_home)
    assert any(r.data.tags.get(tracking.CONFIRMED_TAG) == "true" for r in runs)
    assert asked == [set()]  # every variant confirmed is near the front: a factor would only lengthen them all


def swept_levels_and_threads(home: Path, **measure) -> tuple[Sweep, dict]:
    """A real ORT sweep of the tiny model over the three ORT levels and 1 or 2 threads (`basic` finds nothing
    to do in it: disable's graph again); returns the sweep and its child runs by name."""
    from tests.test_run_names import TINY_ORT_SWEEP

    sweep_file = {**TINY_ORT_SWEEP, "axes": {"scale": ["n"], "precision": ["fp32"], "imgsz": [32],
                                             "ort_level": ["disable", "basic", "all"], "threads": [1, 2]},
                  "baseline": {"scale": "n", "precision": "fp32", "imgsz": 32, "ort_level": "disable", "threads": 1},
                  "measure": {**TINY_ORT_SWEEP["measure"], **measure}}
    sweep = tiny_ort_sweep(home, sweep_file)
    assert sweep.run().measured == 6
    client = mlflow.MlflowClient(tracking.default_tracking_uri(home))
    return sweep, {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("names").experiment_id])
                   if tracking.PARENT_TAG in r.data.tags}


def test_variants_whose_sessions_ran_the_same_graph_are_confirmed_as_one_figure(fresh_home: Path,
                                                                                 monkeypatch) -> None:
    from yolobench.retime import Retimer

    burst, original = [], Retimer.burst  # only the confirmation times in bursts
    monkeypatch.setattr(Retimer, "burst", lambda self, session, variant, runs: burst.append(variant.label) or original(
        self, session, variant, runs))

    _, runs = swept_levels_and_threads(fresh_home)
    graph = {name: run.data.tags[tracking.EXECUTED_GRAPH_TAG] for name, run in runs.items()}
    p50 = {name: run.data.metrics["latency_ms_p50"] for name, run in runs.items()}
    assert all(run.data.tags[tracking.CONFIRMED_TAG] == "true" for run in runs.values())
    for threads in (1, 2):
        disable, basic, every = (f"n-fp32-32-{level}-threads{threads}" for level in ("disable", "basic", "all"))
        # Nothing in this graph for ORT's basic level to fold: the same computation, timed as one.
        assert graph[disable] == graph[basic] != graph[every]
        assert p50[disable] == p50[basic]
        assert runs[disable].data.tags[tracking.SAME_GRAPH_TAG] == basic
        assert runs[basic].data.tags[tracking.SAME_GRAPH_TAG] == disable
        assert tracking.SAME_GRAPH_TAG not in runs[every].data.tags
        assert f"same graph for {basic}" in runs[disable].data.tags[tracking.NOTE_TAG]
        assert (disable in burst) != (basic in burst)  # one of the two timed, for both
    assert graph["n-fp32-32-disable-threads1"] != graph["n-fp32-32-disable-threads2"]  # another thread count runs otherwise


def test_a_variant_whose_session_runs_a_graph_timed_before_takes_that_first_pass(fresh_home: Path,
                                                                                  monkeypatch) -> None:
    from yolobench.measure import harness

    timed, original = [], harness.time_session  # the first pass's timed phase, once per variant timed
    monkeypatch.setattr(harness, "time_session", lambda session, *args: timed.append(session.executed_graph()) or
                        original(session, *args))
    sweep, runs = swept_levels_and_threads(fresh_home, confirm=False)
    graphs = {name: run.data.tags[tracking.EXECUTED_GRAPH_TAG] for name, run in runs.items()}
    assert sorted(timed) == sorted(set(graphs.values())) and len(timed) == 4  # 6 variants, 4 graphs: each timed once
    for threads in (1, 2):
        pair = [runs[f"n-fp32-32-{level}-threads{threads}"] for level in ("disable", "basic")]
        [twin] = [run for run in pair if tracking.LATENCY_REUSED_TAG in run.data.tags]
        [source] = [run for run in pair if run is not twin]
        assert twin.data.tags[tracking.LATENCY_REUSED_TAG] == source.info.run_id
        for metric in ("latency_ms_p50", "latency_ms_p50_ci_low", "latency_ms_p99", "timed_runs", "latency_windows"):
            assert twin.data.metrics[metric] == source.data.metrics[metric]
        assert "whose session ran the same graph" in twin.data.tags[tracking.NOTE_TAG]
        assert tracking.LATENCY_REUSED_TAG not in runs[f"n-fp32-32-all-threads{threads}"].data.tags
    graph = graphs["n-fp32-32-disable-threads2"]
    assert sweep._timed_twin(graph) is not None
    sweep.drift.suspect.append(sweep._timed_twin(graph).key)  # timed while the reference had drifted: to re-time
    assert sweep._timed_twin(graph) is None


def test_a_twin_left_unconfirmed_by_a_kill_between_its_twins_records_takes_their_figure(fresh_home: Path,
                                                                                         monkeypatch) -> None:
    from tests.test_run_names import TINY_ORT_SWEEP
    from yolobench import confirm

    sweep_file = {**TINY_ORT_SWEEP, "axes": {"scale": ["n"], "precision": ["fp32"], "imgsz": [32],
                                             "ort_level": ["disable", "basic"], "threads": [1, 2]},
                  "baseline": {"scale": "n", "precision": "fp32", "imgsz": 32, "ort_level": "disable", "threads": 1}}
    pair = {"n-fp32-32-disable-threads2", "n-fp32-32-basic-threads2"}  # twins, neither the reference's twin
    storage = optuna.storages.RDBStorage(f"sqlite:///{fresh_home / 'optuna.db'}")
    sweep = tiny_ort_sweep(fresh_home, sweep_file, storage)
    recorded, original = [], confirm.record

    def killed_after_one_twin(study, tracker, result, *args, **kwargs):
        label = sweep.space.variant_from_params(result.params).label
        if label in pair and pair & set(recorded):
            raise KeyboardInterrupt
        recorded.append(label)
        return original(study, tracker, result, *args, **kwargs)

    monkeypatch.setattr(confirm, "record", killed_after_one_twin)
    with pytest.raises(KeyboardInterrupt):
        sweep.run()
    [first] = pair & set(recorded)
    monkeypatch.setattr(confirm, "record", original)
    [second] = pair - {first}
    retimed, interleave = [], confirm.interleaved_samples
    monkeypatch.setattr(confirm, "interleaved_samples", lambda retimer, variants, reference, *args: retimed.append(
        {v.label for v in [*variants, reference]}) or interleave(retimer, variants, reference, *args))
    rerun = tiny_ort_sweep(fresh_home, sweep_file, storage)
    assert rerun.run().measured == 0
    assert retimed == [{second, "n-fp32-32-disable-threads1"}]  # only what was left, with the reference
    client = mlflow.MlflowClient(tracking.default_tracking_uri(fresh_home))
    runs = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("names").experiment_id])
            if tracking.PARENT_TAG in r.data.tags}
    assert runs[second].data.tags[tracking.CONFIRMED_TAG] == "true"
    for metric in ("latency_ms_p50", "latency_ms_p50_ci_low", "latency_ms_p50_ci_high", "latency_ms_p99"):
        assert runs[second].data.metrics[metric] == runs[first].data.metrics[metric]
    assert runs[second].data.tags[tracking.SAME_GRAPH_TAG] == first
    assert runs[first].data.tags[tracking.SAME_GRAPH_TAG] == second

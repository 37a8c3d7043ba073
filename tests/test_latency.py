"""Latency measurement: the stop rules and profiles on a fake clock (the windows a sweep times in are
tested in tests/test_ranking.py), CPU pinning, the statistics against numpy, the metric names, and one real run
timing a tiny ONNX Runtime model."""

from __future__ import annotations

import os

import numpy as np
import pytest

from yolobench.measure.latency import (
    METRIC_NAMES,
    CpuAffinityError,
    LatencyResult,
    LatencySettings,
    measure_latency,
    phase_done,
    pinned_to_cpus,
)

EXPECTED_NAMES = {
    "latency_ms_p50", "latency_ms_p90", "latency_ms_p95", "latency_ms_p99", "latency_ms_mean",
    "latency_ms_std", "latency_ms_min", "latency_ms_max", "latency_cv",
    "e2e_ms_p50", "e2e_ms_p90", "e2e_ms_p95", "e2e_ms_p99", "e2e_ms_mean",
    "fps", "preprocess_ms", "postprocess_ms", "timed_runs", "timed_seconds",
}  # fmt: skip


class FakeClock:
    """A clock that only moves when the fake model runs."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def fake_model(clock: FakeClock, seconds: float, classes: int = 2):
    output = np.zeros((1, 4 + classes, 16), np.float32)

    def infer(tensor: np.ndarray) -> np.ndarray:
        clock.now += seconds
        return output

    return infer


IMAGES = [np.zeros((48, 64, 3), np.uint8), np.full((64, 32, 3), 200, np.uint8)]


@pytest.mark.parametrize(
    ("runs", "elapsed", "done"),
    [(49, 5.0, False), (50, 1.99, False), (50, 2.0, True), (500, 3.0, True), (100000, 0.1, True), (0, 0.0, False)],
)
def test_phase_needs_both_count_and_time_or_the_cap(runs: int, elapsed: float, done: bool) -> None:
    assert phase_done(runs, elapsed, min_runs=50, min_seconds=2.0, max_runs=100000) is done


def test_time_decides_when_runs_are_fast() -> None:
    clock = FakeClock()
    settings = LatencySettings(warmup_runs=3, warmup_seconds=0.1, min_runs=5, min_seconds=0.2)
    result = measure_latency(fake_model(clock, 0.010), IMAGES, 32, settings, clock=clock)
    assert result.warmup_runs == 10  # 0.1 s of 10 ms runs outlasts 3 runs
    assert result.inference_ms.size == 20  # 0.2 s of 10 ms runs outlasts 5 runs
    np.testing.assert_allclose(result.inference_ms, 10.0)
    np.testing.assert_allclose(result.preprocess_ms, 0.0)  # the fake clock stands still outside the model
    assert result.timed_seconds == pytest.approx(0.2)


def test_count_decides_when_runs_are_slow() -> None:
    clock = FakeClock()
    settings = LatencySettings(warmup_runs=4, warmup_seconds=0.01, min_runs=7, min_seconds=0.05)
    result = measure_latency(fake_model(clock, 0.100), IMAGES, 32, settings, clock=clock)
    assert result.warmup_runs == 4
    assert result.inference_ms.size == 7
    assert result.metrics()["timed_seconds"] == pytest.approx(0.7)


def test_max_runs_caps_the_timed_phase() -> None:
    clock = FakeClock()
    settings = LatencySettings(warmup_runs=0, warmup_seconds=0.0, min_runs=3, min_seconds=60.0, max_runs=11)
    result = measure_latency(fake_model(clock, 0.001), IMAGES, 32, settings, clock=clock)
    assert result.warmup_runs == 0
    assert result.inference_ms.size == 11


def test_images_are_cycled_and_each_iteration_runs_the_whole_pipeline() -> None:
    clock = FakeClock()
    seen: list[tuple[int, ...]] = []
    output = np.zeros((1, 6, 4), np.float32)
    output[0, :, 0] = [10, 10, 4, 4, 0.9, 0.0]

    def infer(tensor: np.ndarray) -> np.ndarray:
        seen.append(tensor.shape)
        clock.now += 0.01
        return output

    settings = LatencySettings(warmup_runs=1, warmup_seconds=0.0, min_runs=5, min_seconds=0.0)
    result = measure_latency(infer, IMAGES, 32, settings, clock=clock)
    assert len(seen) == 6 and set(seen) == {(1, 3, 32, 32)}
    assert result.metrics()["timed_runs"] == 5.0


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError):
        LatencySettings(min_runs=0)
    with pytest.raises(ValueError):
        LatencySettings(min_runs=10, max_runs=5)
    with pytest.raises(ValueError):
        LatencySettings(warmup_seconds=-1.0)
    with pytest.raises(ValueError):
        measure_latency(lambda t: t, [], 32, LatencySettings())


def test_statistics_match_numpy_on_known_arrays() -> None:
    rng = np.random.default_rng(0)
    inference = rng.gamma(4.0, 2.0, 997)
    pre, post = rng.uniform(0.5, 1.0, 997), rng.uniform(0.1, 0.3, 997)
    metrics = LatencyResult(pre, inference, post, timed_seconds=12.5).metrics()
    assert set(metrics) == EXPECTED_NAMES == set(METRIC_NAMES)
    e2e = pre + inference + post
    for q in (50, 90, 95, 99):
        assert metrics[f"latency_ms_p{q}"] == pytest.approx(np.percentile(inference, q))
        assert metrics[f"e2e_ms_p{q}"] == pytest.approx(np.percentile(e2e, q))
    assert metrics["latency_ms_mean"] == pytest.approx(inference.mean())
    assert metrics["latency_ms_std"] == pytest.approx(inference.std())
    assert metrics["latency_ms_min"] == inference.min() and metrics["latency_ms_max"] == inference.max()
    assert metrics["latency_cv"] == pytest.approx(inference.std() / inference.mean())
    assert metrics["e2e_ms_mean"] == pytest.approx(e2e.mean())
    assert metrics["fps"] == pytest.approx(1000.0 / e2e.mean())
    assert metrics["preprocess_ms"] == pytest.approx(pre.mean())
    assert metrics["postprocess_ms"] == pytest.approx(post.mean())
    assert metrics["timed_runs"] == 997.0 and metrics["timed_seconds"] == 12.5
    assert all(isinstance(v, float) for v in metrics.values())


def test_percentiles_of_a_simple_series() -> None:
    inference = np.arange(1.0, 101.0)  # 1..100 ms
    zeros = np.zeros(100)
    metrics = LatencyResult(zeros, inference, zeros, timed_seconds=5.05).metrics()
    assert metrics["latency_ms_p50"] == pytest.approx(50.5)
    assert metrics["latency_ms_p90"] == pytest.approx(90.1)
    assert metrics["latency_ms_p99"] == pytest.approx(99.01)
    assert metrics["fps"] == pytest.approx(1000.0 / 50.5)


def test_high_cv_is_flagged() -> None:
    zeros = np.zeros(4)
    assert not LatencyResult(zeros, np.array([10.0, 10.1, 9.9, 10.0]), zeros, 1.0).high_cv()
    assert LatencyResult(zeros, np.array([5.0, 15.0, 5.0, 15.0]), zeros, 1.0).high_cv()


def test_times_a_real_onnxruntime_model() -> None:
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    size, classes = 64, 3
    weight = np.random.default_rng(0).normal(0, 0.5, (4 + classes, 3, 1, 1)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("AveragePool", ["images"], ["pooled"], kernel_shape=[8, 8], strides=[8, 8]),
            helper.make_node("Conv", ["pooled", "w"], ["features"]),
            helper.make_node("Sigmoid", ["features"], ["squashed"]),
            helper.make_node("Reshape", ["squashed", "shape"], ["output0"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 4 + classes, 64])],
        initializer=[
            helper.make_tensor("w", TensorProto.FLOAT, weight.shape, weight.flatten().tolist()),
            helper.make_tensor("shape", TensorProto.INT64, [3], [1, 4 + classes, 64]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])

    def infer(tensor: np.ndarray) -> np.ndarray:
        return session.run(None, {"images": tensor})[0]

    images = [np.random.default_rng(i).integers(0, 255, (48 + 8 * i, 80, 3), dtype=np.uint8) for i in range(3)]
    settings = LatencySettings(warmup_runs=2, warmup_seconds=0.01, min_runs=20, min_seconds=0.1)
    metrics = measure_latency(infer, images, size, settings).metrics()
    assert metrics["timed_runs"] >= 20 and metrics["timed_seconds"] >= 0.1
    assert 0 < metrics["latency_ms_min"] <= metrics["latency_ms_p50"] <= metrics["latency_ms_p99"]
    assert metrics["latency_ms_p99"] <= metrics["latency_ms_max"]
    assert metrics["preprocess_ms"] > 0 and metrics["postprocess_ms"] > 0
    assert metrics["e2e_ms_mean"] == pytest.approx(
        metrics["preprocess_ms"] + metrics["latency_ms_mean"] + metrics["postprocess_ms"]
    )
    # the per-iteration parts cannot add up to more than the wall time of the phase
    assert metrics["e2e_ms_mean"] * metrics["timed_runs"] <= metrics["timed_seconds"] * 1000 + 1e-6


# --- profiles ------------------------------------------------------------------------------------

def settings_of(measure) -> LatencySettings:
    return LatencySettings(warmup_runs=measure.warmup_runs, warmup_seconds=measure.warmup_seconds,
                           min_runs=measure.min_runs, min_seconds=measure.min_seconds)


def test_profiles_give_the_documented_defaults_and_explicit_fields_win() -> None:
    from yolobench.spec import MeasureSpec

    quick = MeasureSpec()
    assert (quick.profile, quick.warmup_runs, quick.warmup_seconds, quick.min_runs, quick.min_seconds) == (
        "quick", 10, 1.0, 50, 2.0)
    rigorous = MeasureSpec.model_validate({"profile": "rigorous"})
    assert rigorous.min_runs >= 662 and rigorous.min_seconds >= 60  # enough runs for a p99, MLPerf-like duration
    assert rigorous.warmup_runs > quick.warmup_runs and rigorous.warmup_seconds > quick.warmup_seconds
    mixed = MeasureSpec.model_validate({"profile": "rigorous", "min_seconds": 5, "warmup_runs": 3})
    assert (mixed.min_runs, mixed.min_seconds, mixed.warmup_runs) == (rigorous.min_runs, 5.0, 3)
    assert MeasureSpec.model_validate({"min_runs": 7}).min_seconds == quick.min_seconds
    assert MeasureSpec().cv_threshold == pytest.approx(0.10)


def test_bad_measure_and_affinity_settings_are_refused_by_name() -> None:
    from tests.conftest import TINY_SWEEP
    from yolobench.spec import SpecError, parse_spec

    with pytest.raises(SpecError, match=r"measure\.profile = 'thorough'.*'quick' or 'rigorous'"):
        parse_spec({**TINY_SWEEP, "measure": {"profile": "thorough"}})
    with pytest.raises(SpecError, match=r"measure\.cv_threshold"):
        parse_spec({**TINY_SWEEP, "measure": {"cv_threshold": 0}})
    for affinity, message in (([], "at least 1"), ([0, 0], "repeat"), ([-1], ">= 0")):
        with pytest.raises(SpecError, match=rf"runtime\.cpu_affinity.*{message}"):
            parse_spec({**TINY_SWEEP, "runtime": {**TINY_SWEEP["runtime"], "cpu_affinity": affinity}})
    spec = parse_spec({**TINY_SWEEP, "runtime": {**TINY_SWEEP["runtime"], "cpu_affinity": [0]}})
    assert spec.runtime.cpu_affinity == [0]


def test_rigorous_profile_stops_on_count_for_slow_runs_and_on_time_for_fast_ones() -> None:
    from yolobench.spec import MeasureSpec

    settings = settings_of(MeasureSpec.model_validate({"profile": "rigorous"}))
    clock = FakeClock()
    slow = measure_latency(fake_model(clock, 0.125), IMAGES, 32, settings, clock=clock)  # binary-exact durations
    assert slow.warmup_runs == 50  # 50 runs outlast 5 s
    assert slow.inference_ms.size == settings.min_runs == 1024  # 1024 runs take 128 s > 60 s: the count decides
    clock = FakeClock()
    fast = measure_latency(fake_model(clock, 0.03125), IMAGES, 32, settings, clock=clock)
    assert fast.warmup_runs == 160  # 5 s of 31.25 ms runs
    assert fast.inference_ms.size == 1920  # 60 s of 31.25 ms runs > 1024: the time decides
    assert fast.timed_seconds == pytest.approx(60.0)


# --- the CV check and its re-measure ----------------------------------------------------------

needs_affinity = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux-only")


@needs_affinity
def test_pinning_covers_every_thread_and_is_undone() -> None:
    import threading

    before = os.sched_getaffinity(0)
    target = min(before)
    ready, release = threading.Event(), threading.Event()
    seen: dict[str, set[int]] = {}

    def worker() -> None:  # stands in for a runtime's thread pool, started before pinning
        ready.set()
        release.wait(10)
        seen["worker"] = os.sched_getaffinity(0)

    thread = threading.Thread(target=worker)
    thread.start()
    ready.wait(10)
    try:
        with pinned_to_cpus([target]) as used:
            assert used == [target] and os.sched_getaffinity(0) == {target}
            release.set()
            thread.join(10)
            assert seen["worker"] == {target}
    finally:
        release.set()
        thread.join(10)
    assert os.sched_getaffinity(0) == before


@needs_affinity
def test_impossible_pinning_fails_clearly_and_changes_nothing() -> None:
    before = os.sched_getaffinity(0)
    with pytest.raises(CpuAffinityError, match=r"cpu_affinity \[100000\]"):
        with pinned_to_cpus([100000]):
            pass
    assert os.sched_getaffinity(0) == before
    with pinned_to_cpus(None) as used:
        assert used == sorted(before)

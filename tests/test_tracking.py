"""The one door to MLflow: what a variant's run is made of (a pure function, no MLflow), and the Tracker's
race handling and filters against a real MLflow store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.fakes import FAKE_INFO, fake_sweep_file, register_fake_runtime
from yolobench import tracking
from yolobench.build import Built
from yolobench.cache import ArtifactCache, BuildOutput
from yolobench.measure.accuracy import AccuracyResult
from yolobench.measure.harness import Measurement, Timing
from yolobench.measure.latency import LatencyResult
from yolobench.measure.windows import Window, WindowedLatency, WindowSettings
from yolobench.runtimes import RunFacts
from yolobench.runtimes.catalog import TENSORRT
from yolobench.space import Space
from yolobench.spec import parse_spec


def measurement(p50_ms: float, map50_95: float, unstable: bool = False) -> Measurement:
    inference = np.full(21, p50_ms) if not unstable else np.array([p50_ms, 10 * p50_ms] * 10 + [p50_ms])
    result = LatencyResult(preprocess_ms=np.full(inference.size, 0.5), inference_ms=inference,
                           postprocess_ms=np.full(inference.size, 0.25), timed_seconds=1.0, warmup_runs=2)
    windows = tuple(Window(inference[i::3], inference[i::3], inference[i::3], 0.3, 3.0, i * 7) for i in range(3))
    latency = WindowedLatency(result, windows, WindowSettings(), converged=not unstable, contended=False,
                              kept_spans=((2, 7), (9, 7), (16, 7)), spread=0.0)
    accuracy = AccuracyResult(map50=0.9, map50_95=map50_95, precision=0.8, recall=0.7, num_images=3, num_detections=9)
    return Measurement(Timing(latency, phases={}, cpus_used=[0, 1], energy={}, tags={}), accuracy,
                       runtime_metrics={"device_ms": 1.5}, session_info={"providers": "fake", "threads": 2})


@pytest.fixture()
def built(tmp_path: Path) -> Built:
    cache = ArtifactCache(tmp_path / "cache")

    def write(work_dir: Path) -> BuildOutput:
        (work_dir / "model.onnx").write_bytes(b"x" * 2**20)
        return BuildOutput("model.onnx", {"params": 42, "gflops": 1.5,
                                          "applied_by_default": [{"name": "batchnorm_folded_into_conv"}]})

    model = cache.get_or_build("export", {"imgsz": 64}, None, {}, write)
    return Built(model, cache.lineage(model), "trained:yolo11n.yaml@1ep", "built")


def test_a_variant_record_holds_its_params_metrics_tags_and_files(built: Built) -> None:
    register_fake_runtime()
    spec = parse_spec(fake_sweep_file())
    variant = Space.from_spec(spec).variant_from_params({"scale": "n", "precision": "fp16", "imgsz": 64, "knob": 2})
    record = tracking.variant_record(spec, FAKE_INFO, variant, built, None, measurement(5.0, 0.4),
                                     RunFacts(params={"fact": 1}, tags={"t": "v"}),
                                     baseline={"latency_ms_p50": 10.0, "map50_95": 0.5},
                                     files=[(built.model.path, "compiled")])
    assert record.params["knob"] == 2 and record.params["model"] == "trained:yolo11n.yaml@1ep"
    assert record.params["cpu_affinity"] == "0,1" and record.params["threads"] == 2 and record.params["fact"] == 1
    assert record.metrics["latency_ms_p50"] == 5.0 and record.metrics["speedup_vs_baseline"] == pytest.approx(2.0)
    assert record.metrics["map50_95_delta_vs_baseline"] == pytest.approx(-0.1)
    assert record.metrics["model_size_mb"] == pytest.approx(1.0) and record.metrics["params"] == 42.0
    assert record.metrics["device_ms"] == 1.5
    assert record.tags[tracking.UNSTABLE_TAG] == "false" and record.tags["t"] == "v"
    assert record.tags[tracking.CONTENDED_TAG] == "false" and record.metrics["foreign_cpu_percent_mean"] == 3.0
    assert record.metrics["latency_ms_p50_ci_low"] <= 5.0 <= record.metrics["latency_ms_p50_ci_high"]
    assert record.tags[tracking.EXPORT_FUSIONS_TAG] == "batchnorm_folded_into_conv"
    assert tracking.RUNTIME_FUSION_TAG not in record.tags  # the fake runtime fuses nothing by force
    assert record.files == [(built.model.path, "compiled")]


def test_a_record_without_a_measured_baseline_has_no_relative_metrics_and_the_baseline_is_its_own(built) -> None:
    register_fake_runtime()
    spec = parse_spec(fake_sweep_file())
    variant = Space.from_spec(spec).baseline
    alone = tracking.variant_record(spec, FAKE_INFO, variant, built, None, measurement(5.0, 0.4), RunFacts(), None)
    assert "speedup_vs_baseline" not in alone.metrics
    itself = tracking.variant_record(spec, FAKE_INFO, variant, built, None, measurement(5.0, 0.4), RunFacts(), None,
                                     is_baseline=True)
    assert itself.metrics["speedup_vs_baseline"] == 1.0 and itself.metrics["map50_95_delta_vs_baseline"] == 0.0


def test_build_time_sums_each_stage_s_recorded_figure_and_a_mandatory_fusion_is_tagged(built: Built) -> None:
    register_fake_runtime()
    spec = parse_spec(fake_sweep_file())
    compiled = built.model  # stands for an engine: its manifest has its own build_s
    record = tracking.variant_record(spec, TENSORRT, Space.from_spec(spec).baseline, built, compiled,
                                     measurement(5.0, 0.4, unstable=True), RunFacts(), None)
    stage_seconds = float(built.model.manifest["build_s"])
    assert record.metrics["build_s"] == pytest.approx(2 * stage_seconds)
    assert record.tags[tracking.RUNTIME_FUSION_TAG] == TENSORRT.mandatory_fusion
    assert record.tags[tracking.UNSTABLE_TAG] == "true" and record.tags[tracking.HIGH_CV_TAG] == "true"
    lineage = record.json_files[0][0]["lineage"]
    assert lineage[0] is compiled.manifest  # the compiled artifact heads the run's lineage


def test_filters_quote_values_and_join_clauses() -> None:
    assert tracking.tag_filter({"a.b": "x'y"}, finished_only=True) == (
        "tags.`a.b` = 'x\\'y' and attributes.status = 'FINISHED'")


def test_workers_that_start_together_settle_on_the_earliest_parent(tmp_path: Path) -> None:
    first, second = (tracking.Tracker(tracking.default_tracking_uri(tmp_path)) for _ in range(2))
    experiment_id = first.experiment_id("tiny")
    created = first.settle_parent(experiment_id, "tiny", "study-a", None, params={"p": 1}, tags={})
    # The second worker read "no parent yet" from the study too: it makes its own, then both settle on the
    # earliest (by start time, then run id: two runs can start in the same millisecond).
    settled = second.settle_parent(experiment_id, "tiny", "study-a", None, params={"p": 1}, tags={})
    assert first.settle_parent(experiment_id, "tiny", "study-a", created, params={}, tags={}) == settled
    runs = first.find_runs([experiment_id], tags={tracking.PARENT_OF_TAG: "study-a"})
    assert [r.info.run_id for r in runs] == [settled]  # the other worker's run was deleted
    mine = settled
    other = first.settle_parent(experiment_id, "tiny", "study-b", None, params={}, tags={})
    assert other != mine  # another study's sweep has its own parent


def test_per_call_times_go_to_an_artifact_and_the_metrics_stay_summaries(built: Built) -> None:
    register_fake_runtime()
    spec = parse_spec(fake_sweep_file())
    variant = Space.from_spec(spec).baseline
    record = tracking.variant_record(spec, FAKE_INFO, variant, built, None, measurement(5.0, 0.4), RunFacts(), None,
                                     is_baseline=True)
    [samples] = [payload for payload, name, folder in record.json_files if (folder, name) == ("latency", "samples.json")]
    assert [len(w["inference_ms"]) for w in samples["windows"]] == [7, 7, 7]
    assert samples["windows"][1]["inference_ms"][0] == 5.0 and samples["kept_spans"][0] == [2, 7]
    assert len(record.metrics) < 60 and not any(isinstance(v, (list, tuple)) for v in record.metrics.values())

"""Can a sweep's numbers be trusted? One real sweep of a model trained enough to detect things, then:
its mAP re-scored from the logged COCO json by pycocotools, its mAP against Ultralytics' own validator
on the same ONNX, how its latency was measured (pinning, resources, the CV check), and a forced re-measure."""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import pytest

from yolobench import tracking
from yolobench.runner import Sweep, SweepSettings
from yolobench.spec import parse_spec

pytestmark = pytest.mark.slow

IMGSZ = 96
ALLOWED = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
PINNED = ALLOWED[:1] if ALLOWED else None
CROSS_SWEEP = {
    "name": "crosscheck",
    "target": "tests",
    "runtime": {"name": "onnxruntime", "provider": "cpu", "threads": 1, "cpu_affinity": PINNED},
    # ~2 minutes of training on 2 CPU cores: mAP50-95 about 0.25, far enough from 0 for agreement to mean something
    "model": {"train": {"cfg": "yolo11{scale}.yaml", "epochs": 30, "imgsz": IMGSZ, "batch": 16, "seed": 0}},
    "data": {"synthetic": {"train_images": 128, "val_images": 16, "image_size": 128, "seed": 0}},
    "axes": {"scale": ["n"], "precision": ["fp32"], "imgsz": [IMGSZ], "ort_level": ["all"]},
    "baseline": {"scale": "n", "precision": "fp32", "imgsz": IMGSZ, "ort_level": "all"},
    "measure": {"warmup_runs": 2, "warmup_seconds": 0.0, "min_runs": 20, "min_seconds": 0.2},
}


def only_child_run(home: Path, experiment: str):
    client = mlflow.MlflowClient(tracking.default_tracking_uri(home))
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    (run,) = [r for r in client.search_runs([experiment_id]) if tracking.PARENT_TAG in r.data.tags]
    return client, run


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("crosscheck-home")
    spec = parse_spec(CROSS_SWEEP)
    sweep = Sweep(spec, SweepSettings(home=home))
    summary = sweep.run()
    assert summary.measured == 1 and summary.failed == 0, summary.failures
    client, run = only_child_run(home, "crosscheck")
    return home, sweep, client, run


def test_logged_predictions_rescore_to_the_logged_map(measured, tmp_path: Path) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    _, sweep, client, run = measured
    folder = Path(client.download_artifacts(run.info.run_id, "accuracy", str(tmp_path)))
    ground_truth = json.loads((folder / "ground_truth.json").read_text())
    predictions = json.loads((folder / "predictions.json").read_text())
    assert len(ground_truth["images"]) == len(sweep.data.val_images) == 16
    assert predictions and {p["image_id"] for p in predictions} <= {i["id"] for i in ground_truth["images"]}

    gt = COCO(str(folder / "ground_truth.json"))
    evaluator = COCOeval(gt, gt.loadRes(str(folder / "predictions.json")), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    logged = run.data.metrics
    assert logged["map50_95"] > 0.1  # a model that detects: agreement on a zero would prove nothing
    assert evaluator.stats[0] == pytest.approx(logged["map50_95"], abs=1e-6)
    assert evaluator.stats[1] == pytest.approx(logged["map50"], abs=1e-6)


def test_map_agrees_with_ultralytics_val_on_the_same_onnx(measured) -> None:
    from benchmarks.accuracy_crosscheck import TOLERANCE, cross_check
    from yolobench.stages.ultralytics_env import prepare_ultralytics

    home, sweep, _, run = measured
    prepare_ultralytics(home / "ultralytics")
    onnx = sweep.cache.lookup("export", run.data.tags[tracking.ARTIFACT_KEY_TAG])
    assert onnx is not None
    check = cross_check(sweep.cache, onnx, sweep.dataset.yaml_path, IMGSZ, multi_label=sweep.spec.measure.multi_label)
    print(f"yolobench mAP50-95 {check.yolobench_map50_95:.4f}, Ultralytics val {check.ultralytics_map50_95:.4f}")
    assert check.ultralytics_map50_95 > 0.1
    assert abs(check.delta) <= TOLERANCE
    # and the cross-check scored what the sweep logged
    assert check.yolobench_map50_95 == pytest.approx(run.data.metrics["map50_95"], abs=2e-3)


def test_run_records_how_its_latency_was_measured(measured) -> None:
    _, sweep, _, run = measured
    metrics, params, tags = run.data.metrics, run.data.params, run.data.tags
    threshold = sweep.spec.measure.cv_threshold
    assert params["threads"] == "1"
    if PINNED is not None:
        assert params["cpu_affinity"] == ",".join(map(str, PINNED))
    assert tags[tracking.HIGH_CV_TAG] == str(metrics["latency_cv"] > threshold).lower()
    # Windows: at least three timed; the kept ones are the last three (agreeing, unless the run is unstable).
    assert metrics["latency_windows"] >= 3 and 1 <= metrics["latency_attempt_kept"] <= metrics["latency_windows"] - 2
    assert tags[tracking.UNSTABLE_TAG] == str(metrics["latency_window_spread"] > 0.05).lower()
    assert metrics["latency_ms_p50_ci_low"] <= metrics["latency_ms_p50"] <= metrics["latency_ms_p50_ci_high"]
    assert metrics["foreign_cpu_percent_mean"] >= 0
    assert metrics["timed_runs"] >= 20
    assert metrics["resource_samples"] >= 1 and metrics["rss_mb_max"] > 50
    assert 0 < metrics["sys_mem_percent_max"] <= 100 and metrics["cpu_percent_mean"] >= 0
    for name in ("latency_ms_p50", "latency_ms_p90", "latency_ms_p95", "latency_ms_p99", "latency_ms_mean",
                 "latency_ms_std", "latency_ms_min", "latency_ms_max", "latency_cv", "e2e_ms_p50"):
        assert name in metrics
    if ALLOWED is not None:  # pinned only while timing
        assert sorted(os.sched_getaffinity(0)) == ALLOWED


def test_windows_that_cannot_agree_are_tagged_unstable_and_a_high_cv_flagged(measured) -> None:
    home, _, _, first = measured
    # No real timing has three window p50s within 1e-9 of each other, nor a CV below 1e-9.
    spec = parse_spec({**CROSS_SWEEP, "name": "crosscheck-strict", "measure": {
        **CROSS_SWEEP["measure"], "cv_threshold": 1e-9, "stability": 1e-9, "max_seconds": 1.0, "confirm": False}})
    summary = Sweep(spec, SweepSettings(home=home)).run()
    assert summary.measured == 1
    _, run = only_child_run(home, "crosscheck-strict")
    assert run.data.metrics["latency_windows"] >= 3
    assert run.data.tags[tracking.UNSTABLE_TAG] == "true" and run.data.tags[tracking.HIGH_CV_TAG] == "true"
    assert run.data.metrics["map50_95"] == pytest.approx(first.data.metrics["map50_95"], abs=1e-9)  # same model

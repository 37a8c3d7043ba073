"""The names a variant's MLflow run carries are what users compare runs by (and filter, and chart), so
they are pinned: a fast sweep of a tiny real ONNX model on ONNX Runtime must log every param, metric and
tag name the release before the redesign logged on its quickstart's child runs (tests/pinned/run_names.json)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow

from tests.fakes import tiny_ort_sweep
from yolobench import tracking

PINNED = json.loads((Path(__file__).parent / "pinned" / "run_names.json").read_text())

TINY_ORT_SWEEP = {
    "name": "names", "target": "tests",
    "runtime": {"name": "onnxruntime", "provider": "cpu", "threads": 1},
    "model": {"train": {"epochs": 1, "imgsz": 64}},
    "data": {"synthetic": {"train_images": 4, "val_images": 3, "image_size": 64, "seed": 0}},
    "axes": {"scale": ["n"], "precision": ["fp32", "int8"], "imgsz": [32], "ort_level": ["disable", "all"]},
    "baseline": {"scale": "n", "precision": "fp32", "imgsz": 32, "ort_level": "disable"},
    "measure": {"warmup_runs": 1, "warmup_seconds": 0.0, "min_runs": 3, "min_seconds": 0.0, "foreign_limit": 1e9},
    "int8": {"calibration_images": 2},
}


def test_a_variant_run_logs_every_name_the_previous_release_logged(fresh_home: Path) -> None:
    home = fresh_home
    assert tiny_ort_sweep(home, TINY_ORT_SWEEP).run().measured == 4

    client = mlflow.MlflowClient(tracking.default_tracking_uri(home))
    experiment = client.get_experiment_by_name("names")
    runs = [r for r in client.search_runs([experiment.experiment_id]) if tracking.PARENT_TAG in r.data.tags]
    params = set().union(*(r.data.params for r in runs))
    metrics = set().union(*(r.data.metrics for r in runs))
    tags = set().union(*(r.data.tags for r in runs))
    assert set(PINNED["params"]) <= params, set(PINNED["params"]) - params
    assert set(PINNED["metrics"]) <= metrics, set(PINNED["metrics"]) - metrics
    # A tiny model trained by nobody has no training run to link to; every other tag is there.
    assert set(PINNED["tags"]) - {tracking.TRAINING_RUN_TAG} <= tags, set(PINNED["tags"]) - tags
    int8 = [r for r in runs if r.data.params["precision"] == "int8"]
    assert all(r.data.tags[tracking.INT8_UNFUSED_TAG] in ("true", "false") for r in int8)
    levels = {r.data.params["ort_level"]: r.data.tags[tracking.INT8_UNFUSED_TAG] for r in int8}
    assert levels == {"disable": "true", "all": "false"}  # read from the graph ORT optimised

"""Shared fixtures: a tiny synthetic data set and a tiny model trained on it, made once per session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

TINY_SWEEP = {
    "name": "tiny",
    "target": "tests",
    "runtime": {"name": "onnxruntime", "provider": "cpu", "threads": 1},
    "model": {"train": {"cfg": "yolo11{scale}.yaml", "epochs": 1, "imgsz": 64, "batch": 8, "seed": 0}},
    "data": {"synthetic": {"train_images": 16, "val_images": 8, "image_size": 128, "seed": 0}},
    "axes": {"scale": ["n"], "precision": ["fp32", "fp16", "int8"], "imgsz": [64, 96], "ort_level": ["disable", "all"]},
    "baseline": {"scale": "n", "precision": "fp32", "imgsz": 96, "ort_level": "disable"},
    "measure": {"warmup_runs": 1, "warmup_seconds": 0.0, "min_runs": 3, "min_seconds": 0.0},
    "int8": {"calibration_images": 4},
}


@pytest.fixture(autouse=True, scope="session")
def _isolate_ultralytics(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Tests never touch the user's Ultralytics settings or an MLflow server from the environment.
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ["YOLOBENCH_TEST"] = "1"


# The tiny sweep for an OAK: FP16 (made by the blob compiler) from an opset-12 export.
OAK_TINY_SWEEP = {
    **TINY_SWEEP,
    "runtime": {"name": "depthai"},
    "export": {"opset": 12},
    "axes": {"scale": ["n"], "precision": ["fp16"], "imgsz": [96], "shaves": [6], "on_device_decode": [False, True]},
    "baseline": {"scale": "n", "precision": "fp16", "imgsz": 96, "shaves": 6, "on_device_decode": False},
}


def variant_builder(sweep_file: dict, home: Path) -> tuple[Any, Any, Any]:
    """(spec, Sweep, LocalBuilder on the sweep's cache) for a sweep given as a dict, stored under `home`."""
    from yolobench.build import LocalBuilder
    from yolobench.data.dataset import open_dataset
    from yolobench.runner import Sweep, SweepSettings
    from yolobench.spec import parse_spec
    from yolobench.stages.ultralytics_env import prepare_ultralytics

    spec = parse_spec(sweep_file)
    prepare_ultralytics(home / "ultralytics")
    sweep = Sweep(spec, SweepSettings(home=home))
    dataset = open_dataset(spec.data, home)
    return spec, sweep, LocalBuilder(spec, sweep.cache, dataset.yaml_path, dataset)


@pytest.fixture(scope="session")
def trained_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder holding the tiny sweep's trained model (trained once per test session)."""
    _, sweep, builder = variant_builder(TINY_SWEEP, tmp_path_factory.mktemp("trained-home"))
    builder.build(sweep.space.baseline)
    return sweep.cache.root


@pytest.fixture()
def seeded_home(tmp_path: Path, trained_cache: Path) -> Path:
    """A fresh store whose cache already holds the trained model (but no exports)."""
    home = tmp_path / "home"
    shutil.copytree(trained_cache / "train", home / "cache" / "train")
    return home


@pytest.fixture(scope="session")
def empty_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh MLflow database made once: creating its schema takes seconds, copying it none."""
    from yolobench import tracking

    home = tmp_path_factory.mktemp("mlflow-template")
    tracking.Tracker(tracking.default_tracking_uri(home)).experiment_ids()
    return home / "mlflow.db"


@pytest.fixture()
def fresh_home(tmp_path: Path, empty_mlflow_db: Path) -> Path:
    """tmp_path/home holding an empty MLflow store (the real schema, made once per test session)."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    shutil.copyfile(empty_mlflow_db, home / "mlflow.db")
    return home

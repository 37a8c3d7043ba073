"""End-to-end sweeps on a tiny model: real MLflow and Optuna SQLite stores, real ONNX Runtime."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import optuna
import pytest

from tests.conftest import TINY_SWEEP, variant_builder
from yolobench import tracking
from yolobench.runner import Sweep, SweepSettings
from yolobench.space import Space
from yolobench.spec import parse_spec

pytestmark = pytest.mark.slow

EXPECTED_PARAMS = {"scale", "precision", "imgsz", "ort_level", "runtime", "provider", "threads", "model"}
EXPECTED_METRICS = {
    "latency_ms_p50", "latency_ms_p90", "latency_ms_p95", "latency_ms_p99", "latency_ms_mean", "latency_ms_std",
    "latency_cv", "e2e_ms_p50", "e2e_ms_p90", "fps", "preprocess_ms", "postprocess_ms", "map50", "map50_95",
    "precision", "recall", "model_size_mb", "params", "gflops", "build_s", "speedup_vs_baseline",
    "map50_95_delta_vs_baseline",
}


def client(home: Path) -> mlflow.MlflowClient:
    # An explicit client: mlflow.set_tracking_uri would also set MLFLOW_TRACKING_URI for subprocesses.
    return mlflow.MlflowClient(tracking.default_tracking_uri(home))


def all_runs(home: Path, experiment: str = "tiny"):
    experiment_id = client(home).get_experiment_by_name(experiment).experiment_id
    return client(home).search_runs([experiment_id], max_results=1000)


def child_runs(home: Path, experiment: str = "tiny"):
    return [run for run in all_runs(home, experiment) if "mlflow.parentRunId" in run.data.tags]


def test_end_to_end_one_run_per_variant_and_builds_counted(seeded_home: Path) -> None:
    spec = parse_spec(TINY_SWEEP)
    sweep = Sweep(spec, SweepSettings(home=seeded_home))
    summary = sweep.run()
    total = Space.from_spec(spec).count()
    assert summary.measured == total == 12 and summary.failed == 0

    # Fusion is a runtime option: one export and one precision build per (precision, imgsz).
    assert sweep.cache.builds["train"] == 0
    assert sweep.cache.builds["export"] == 2
    assert sweep.cache.builds["fp16"] == 2 and sweep.cache.builds["int8"] == 2

    runs = child_runs(seeded_home)
    assert len(runs) == total
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert len({r.data.tags[tracking.VARIANT_KEY_TAG] for r in runs}) == total
    for run in runs:
        assert EXPECTED_PARAMS <= set(run.data.params), run.data.params
        assert EXPECTED_METRICS <= set(run.data.metrics), set(EXPECTED_METRICS) - set(run.data.metrics)
        assert run.data.metrics["latency_ms_p50"] > 0 and 0 <= run.data.metrics["map50_95"] <= 1
        assert "host.cpu" in run.data.tags
        artifacts = {a.path for a in client(seeded_home).list_artifacts(run.info.run_id, "compiled")}
        assert any(p.endswith(".onnx") for p in artifacts) and "compiled/manifest.json" in artifacts
    baseline = [r for r in runs if r.data.params["precision"] == "fp32" and r.data.params["imgsz"] == "96"
                and r.data.params["ort_level"] == "disable"]
    assert baseline[0].data.metrics["speedup_vs_baseline"] == pytest.approx(1.0)
    assert baseline[0].data.metrics["map50_95_delta_vs_baseline"] == pytest.approx(0.0)
    parents = [r for r in all_runs(seeded_home) if tracking.SWEEP_TAG in r.data.tags and
               "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"


def test_report_prints_every_variant_and_marks_the_front(seeded_home: Path, tmp_path: Path, capsys) -> None:
    import yaml

    from yolobench.cli import main
    from yolobench.pareto import non_dominated

    spec = {**TINY_SWEEP, "axes": {**TINY_SWEEP["axes"], "imgsz": [96]}}
    spec_path = tmp_path / "tiny.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    assert main(["sweep", str(spec_path), "--home", str(seeded_home)]) == 0
    capsys.readouterr()
    assert main(["report", str(spec_path), "--home", str(seeded_home)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines[1:] if line.split()[1:2] and line.split()[1].startswith("n-")]  # rank, variant
    assert len(rows) == 6
    runs = child_runs(seeded_home)
    points = [(r.data.metrics["latency_ms_p50"], -r.data.metrics["map50_95"]) for r in runs]
    assert sum(line.rstrip().endswith("*") for line in rows) == len(non_dominated(points)) >= 1


def test_rerun_resumes_without_duplicates(seeded_home: Path) -> None:
    spec = parse_spec({**TINY_SWEEP, "axes": {**TINY_SWEEP["axes"], "precision": ["fp32"], "imgsz": [96]}})
    first = Sweep(spec, SweepSettings(home=seeded_home))
    assert first.run().measured == 2
    before = {r.info.run_id for r in all_runs(seeded_home)}

    again = Sweep(spec, SweepSettings(home=seeded_home))
    summary = again.run()
    assert summary.measured == 0 and summary.already_done == 2
    assert {r.info.run_id for r in all_runs(seeded_home)} == before
    assert sum(again.cache.builds.values()) == 0


def test_failing_variant_does_not_stop_the_sweep(seeded_home: Path) -> None:
    from yolobench.space import Variant

    spec, _, builder = variant_builder({**TINY_SWEEP, "axes": {**TINY_SWEEP["axes"], "precision": ["fp32", "fp16"],
                                                               "imgsz": [64], "ort_level": ["all"]},
                                        "baseline": {"scale": "n", "precision": "fp32", "imgsz": 64,
                                                     "ort_level": "all"}}, seeded_home)  # fmt: skip
    # Make the fp16 model unreadable: a variant whose artifact ONNX Runtime cannot load.
    fp16 = builder.build(Variant.of(["scale", "precision", "imgsz", "ort_level"],
                                    {"scale": "n", "precision": "fp16", "imgsz": 64, "ort_level": "all"})).model
    fp16.path.write_bytes(b"not an onnx model")

    summary = Sweep(spec, SweepSettings(home=seeded_home)).run()
    assert summary.measured == 1 and summary.failed == 1
    runs = {r.data.params["precision"]: r for r in child_runs(seeded_home)}
    assert runs["fp32"].info.status == "FINISHED"
    assert runs["fp16"].info.status == "FAILED"
    error = runs["fp16"].data.tags[tracking.ERROR_TAG]
    assert "InvalidProtobuf" in error or "protobuf" in error.lower(), error  # ONNX Runtime's own reason
    # A failed variant is recorded, not retried on the next run.
    assert Sweep(spec, SweepSettings(home=seeded_home)).run().failed == 0
    assert len(child_runs(seeded_home)) == 2


def test_killed_sweep_resumes_losing_and_duplicating_nothing(seeded_home: Path, tmp_path: Path) -> None:
    import yaml

    spec_path = tmp_path / "tiny.yaml"
    spec_path.write_text(yaml.safe_dump(TINY_SWEEP))
    total = Space.from_spec(parse_spec(TINY_SWEEP)).count()
    command = [sys.executable, "-m", "yolobench.cli", "sweep", str(spec_path), "--home", str(seeded_home)]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                               start_new_session=True)
    finished_lines = 0
    for line in process.stdout:
        if "mAP50-95" in line:
            finished_lines += 1
        if finished_lines == 3:
            os.killpg(process.pid, signal.SIGKILL)  # no chance to clean up
            break
    process.wait(timeout=60)
    assert finished_lines == 3

    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    runs = child_runs(seeded_home)
    keys = [r.data.tags[tracking.VARIANT_KEY_TAG] for r in runs]
    assert len(keys) == len(set(keys)) == total
    assert {r.info.status for r in runs} == {"FINISHED"}
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{seeded_home / 'optuna.db'}")
    measured = [t for t in study.trials if t.user_attrs.get("outcome") == "measured"]
    assert len({t.user_attrs["variant_key"] for t in measured}) == total
    # At most the one variant in flight when killed was measured twice (once lost, once redone).
    assert len(measured) <= total + 1


@pytest.mark.parametrize("storage", ["sqlite", "postgresql"])
def test_two_workers_share_one_sweep_without_measuring_twice(seeded_home: Path, tmp_path: Path, storage: str) -> None:
    import yaml

    from tests.postgres import postgres_server

    spec_path = tmp_path / "tiny.yaml"
    spec_path.write_text(yaml.safe_dump(TINY_SWEEP))
    total = Space.from_spec(parse_spec(TINY_SWEEP)).count()
    command = [sys.executable, "-m", "yolobench.cli", "sweep", str(spec_path), "--home", str(seeded_home)]
    with contextlib.ExitStack() as stack:
        if storage == "postgresql":
            url = stack.enter_context(postgres_server())
            if url is None:
                pytest.skip("no PostgreSQL server installed here (apt-get install postgresql)")
            command += ["--storage", url]
        run_two_workers(command, seeded_home, total)


def run_two_workers(command: list[str], seeded_home: Path, total: int) -> None:
    """Two `yolobench sweep` processes on one study: every variant measured once, by one of them."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    # Build the models first, so both workers race on measuring (the part that must not be doubled).
    spec, _, builder = variant_builder(TINY_SWEEP, seeded_home)
    for variant in Space.from_spec(spec).variants():
        builder.build(variant)

    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
               for _ in range(2)]
    outputs = [worker.communicate(timeout=600)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    measured_by = [output.count("mAP50-95") for output in outputs]
    assert sum(measured_by) == total and min(measured_by) >= 1, measured_by  # both worked, neither doubled

    runs = child_runs(seeded_home)
    keys = [r.data.tags[tracking.VARIANT_KEY_TAG] for r in runs]
    assert len(keys) == len(set(keys)) == total
    assert {r.info.status for r in runs} == {"FINISHED"}
    parents = [r for r in all_runs(seeded_home) if tracking.PARENT_TAG not in r.data.tags
               and r.data.tags.get("yolobench.training") != "true"]
    assert len(parents) == 1  # both workers settled on one parent run
    assert {r.data.tags[tracking.PARENT_TAG] for r in runs} == {parents[0].info.run_id}


def test_missing_weights_stop_the_sweep_fast_with_what_to_do(tmp_path: Path, capsys) -> None:
    import time

    import yaml

    from yolobench.cli import main

    spec = {**TINY_SWEEP, "model": {"weights": str(tmp_path / "nowhere" / "yolo11{scale}.pt")}}
    spec_path = tmp_path / "tiny.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    home = tmp_path / "home"
    started = time.monotonic()
    assert main(["sweep", str(spec_path), "--home", str(home)]) == 1
    assert time.monotonic() - started < 60
    message = capsys.readouterr().err
    assert "nowhere/yolo11n.pt" in message and "model.train" in message
    # Found before the sweep starts: no parent run, no study, no variant recorded as failed.
    assert client(home).get_experiment_by_name("tiny") is None
    assert not (home / "optuna.db").exists()


@pytest.mark.parametrize("broken", ["missing yaml", "missing val folder"])
def test_a_data_set_that_cannot_be_had_stops_the_sweep_with_a_message(tmp_path: Path, capsys, broken: str) -> None:
    import yaml

    from yolobench.cli import main

    data_yaml = tmp_path / "missing.yaml"
    if broken == "missing val folder":
        data_yaml = tmp_path / "data.yaml"
        data_yaml.write_text(yaml.safe_dump({"path": str(tmp_path), "train": "images/train", "val": "images/val",
                                             "names": ["a"]}))
    spec = {**TINY_SWEEP, "data": {"yaml": str(data_yaml)}}
    spec_path = tmp_path / "tiny.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    home = tmp_path / "home"
    assert main(["sweep", str(spec_path), "--home", str(home)]) == 1
    err = capsys.readouterr().err
    assert str(data_yaml.name) in err and "Traceback" not in err
    assert client(home).get_experiment_by_name("tiny") is None  # no empty FAILED parent run is left
    assert not (home / "optuna.db").exists()

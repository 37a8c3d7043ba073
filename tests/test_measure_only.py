"""A measuring host without the build extra: `sweep --measure-only` in a process where importing
torch or Ultralytics fails, on models an earlier (building) sweep made, taken from a copied cache
folder or from that sweep's MLflow store; a variant whose model is missing fails and says why."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import pytest
import yaml

from tests.conftest import TINY_SWEEP
from yolobench import prebuilt, tracking
from yolobench.runner import Sweep, SweepSettings
from yolobench.spec import parse_spec

pytestmark = pytest.mark.slow

BLOCKED = ("torch", "torchvision", "ultralytics", "onnxslim")
# Runs the CLI with an import hook that refuses the build extra's packages, as if they were not installed.
LAUNCHER = textwrap.dedent(f"""
    import sys

    BLOCKED = {BLOCKED!r}

    class BuildExtraAbsent:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: no build extra here)", name=name)
            return None

    sys.meta_path.insert(0, BuildExtraAbsent())
    from yolobench.cli import main

    code = main(sys.argv[1:])
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    if leaked:
        print("LEAKED", leaked)
        code = 99
    sys.exit(code)
""")

BUILT = {**TINY_SWEEP, "axes": {"scale": ["n"], "precision": ["fp32", "fp16"], "imgsz": [64],
                                "ort_level": ["disable"]},
         "baseline": {"scale": "n", "precision": "fp32", "imgsz": 64, "ort_level": "disable"}}


def measure_only(spec: dict, tmp_path: Path, *options: str) -> subprocess.CompletedProcess:
    spec_path = tmp_path / f"{spec['name']}.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-c", LAUNCHER, "sweep", str(spec_path), "--measure-only", *options],
                          capture_output=True, text=True, env=env, timeout=600, cwd=Path(__file__).parent.parent)


def child_runs(tracking_uri: str, experiment: str) -> list:
    client = mlflow.MlflowClient(tracking_uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    return [r for r in client.search_runs([experiment_id], max_results=1000) if tracking.PARENT_TAG in r.data.tags]


@pytest.fixture()
def built_home(seeded_home: Path) -> Path:
    """A build sweep's store: two variants built, measured and logged (model/ included)."""
    summary = Sweep(parse_spec(BUILT), SweepSettings(home=seeded_home)).run()
    assert summary.measured == 2
    return seeded_home


def test_the_blocker_really_blocks(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-c", LAUNCHER.replace("from yolobench.cli import main", "import torch")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "blocked: no build extra here" in result.stderr


def test_measure_only_from_a_copied_cache_folder(built_home: Path, tmp_path: Path) -> None:
    copied = tmp_path / "copied-cache"
    shutil.copytree(built_home / "cache", copied)
    shutil.rmtree(copied / "train")  # the measuring host gets no weights, only what the runtime needs
    host = tmp_path / "oak-host"
    spec = {**BUILT, "name": "tiny-host"}
    result = measure_only(spec, tmp_path, "--home", str(host), "--cache-dir", str(copied))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "measured now 2" in result.stdout and "failed 0" in result.stdout, result.stdout
    runs = child_runs(tracking.default_tracking_uri(host), "tiny-host")
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        assert run.data.params["model_source"].startswith("cache:")
        assert run.data.metrics["map50_95"] >= 0 and run.data.metrics["latency_ms_p50"] > 0
        assert run.data.params["model"].startswith("trained:yolo11n.yaml")
        assert run.data.metrics["params"] > 0  # from the export manifest, though the weights were not copied
    # The same models as the build sweep measured: the artifact keys match.
    built = {r.data.params["precision"]: r.data.tags[tracking.ARTIFACT_KEY_TAG]
             for r in child_runs(tracking.default_tracking_uri(built_home), "tiny")}
    assert {r.data.params["precision"]: r.data.tags[tracking.ARTIFACT_KEY_TAG] for r in runs} == built


def test_measure_only_from_the_mlflow_store_and_missing_variants_fail_with_the_reason(
        built_home: Path, tmp_path: Path) -> None:
    host = tmp_path / "pi-host"
    build_store = tracking.default_tracking_uri(built_home)
    # imgsz 96 was never built: those two variants must fail, naming what is missing and where it looked.
    spec = {**BUILT, "axes": {**BUILT["axes"], "imgsz": [64, 96]}}
    result = measure_only(spec, tmp_path, "--home", str(host), "--tracking-uri", build_store,
                          "--experiment", "tiny-pi")
    assert result.returncode == 1, result.stdout + result.stderr  # not every variant measured: the job failed
    assert "measured now 2" in result.stdout and "failed 2" in result.stdout, result.stdout
    assert "2 variant(s) failed" in result.stdout and "--measure-only" in result.stdout and "--retry-failed" in result.stdout
    runs = child_runs(build_store, "tiny-pi")
    by_status = {(r.data.params["precision"], r.data.params["imgsz"]): r for r in runs}
    assert {k: r.info.status for k, r in by_status.items()} == {
        ("fp32", "64"): "FINISHED", ("fp16", "64"): "FINISHED", ("fp32", "96"): "FAILED", ("fp16", "96"): "FAILED"}
    assert by_status[("fp16", "64")].data.params["model_source"].startswith("mlflow:run ")
    reason = by_status[("fp16", "96")].data.tags[tracking.ERROR_TAG]
    assert "ArtifactMissing" in reason and str(host / "cache" / prebuilt.INDEX_DIR) in reason
    assert build_store in reason and "fp16" in reason
    # What came from MLflow is now in the host's cache: a second host run finds it locally.
    assert len(list((host / "cache" / prebuilt.INDEX_DIR).glob("*.json"))) == 2


def test_measure_only_with_nothing_built_stops_before_starting(tmp_path: Path) -> None:
    result = measure_only({**BUILT, "name": "nothing"}, tmp_path, "--home", str(tmp_path / "empty"))
    assert result.returncode == 1
    assert "none of the 2 variants to measure has a built model" in result.stderr, result.stderr

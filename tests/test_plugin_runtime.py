"""A runtime from another package, installed the way a plug-in is (a distribution with an entry point in the
`yolobench.runtimes` group), with an axis and an option of its own: a sweep file that names it plans,
validates, sweeps and logs, and nothing in yolobench knows about it beforehand."""

from __future__ import annotations

from pathlib import Path

import mlflow
import optuna
import pytest
import yaml

from tests.fakes import TinyOnnxBuilder
from yolobench import search, tracking
from yolobench.data.dataset import open_dataset
from yolobench.runner import Sweep, SweepSettings
from yolobench.runtimes import ENTRY_POINT_GROUP, registry, runtime_info
from yolobench.space import Space
from yolobench.spec import SpecError, load_spec

TOY_MODULE = '''
"""A toy runtime: ONNX Runtime on the CPU, with a `toy_speed` axis and a `toy_depth` option."""
from yolobench.runtimes import Availability, AxisInfo, RunFacts, Runtime, RuntimeInfo, SessionBase
from yolobench.runtimes.options import RuntimeOptions


class ToyOptions(RuntimeOptions):
    name: str = "toy"
    toy_depth: int = 1


class ToySession(SessionBase):
    def __init__(self, path, speed, depth):
        import onnxruntime
        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.speed, self.depth = speed, depth

    def infer(self, tensor):
        return self.session.run(None, {self.session.get_inputs()[0].name: tensor})[0]

    def info(self):
        return {"providers": "toy", "threads": 1, "speed": self.speed}


class ToyRuntime(Runtime):
    info = RuntimeInfo(
        name="toy",
        axes=(AxisInfo("toy_speed", default="slow", values=("slow", "fast"), label="speed-{value}"),),
        options_model="toy_yolobench_runtime:ToyOptions",
        implementation="toy_yolobench_runtime:ToyRuntime",
    )

    def availability(self):
        return Availability(True, "a toy runs anywhere")

    def open(self, model, compiled, axes, options, decode, work_dir):
        return ToySession(model.path, axes["toy_speed"], options.toy_depth)

    def facts(self, session, model, compiled, axes):
        return RunFacts(params={"toy_depth": session.depth}, tags={"toy.ran": "yes"})
'''

ENTRY_POINTS = f"[{ENTRY_POINT_GROUP}]\ntoy = toy_yolobench_runtime:ToyRuntime\n"


@pytest.fixture()
def toy_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    site = tmp_path / "site"
    dist_info = site / "toy_yolobench_runtime-0.1.dist-info"
    dist_info.mkdir(parents=True)
    (site / "toy_yolobench_runtime.py").write_text(TOY_MODULE)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-yolobench-runtime\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(site))
    registry.load_plugins(force=True)
    yield
    registry.infos.pop("toy", None)
    registry.implementations.pop("toy", None)


def toy_sweep_file(tmp_path: Path, **changes) -> Path:
    sweep = {
        "name": "toy", "target": "a toy device",
        "runtime": {"name": "toy", "toy_depth": 2},
        "model": {"train": {"epochs": 1, "imgsz": 64}},
        "data": {"synthetic": {"train_images": 2, "val_images": 3, "image_size": 64, "seed": 0}},
        "axes": {"scale": ["n"], "precision": ["fp32", "fp16"], "imgsz": [32], "toy_speed": ["fast", "slow"]},
        "baseline": {"scale": "n", "precision": "fp32", "imgsz": 32, "toy_speed": "slow"},
        "measure": {"warmup_runs": 0, "warmup_seconds": 0.0, "min_runs": 2, "min_seconds": 0.0, "foreign_limit": 1e9},
        **changes,
    }
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def test_the_entry_point_registers_the_toy_runtime_with_its_description(toy_installed) -> None:
    assert "toy" in registry.names()
    info = runtime_info("toy")
    assert info.axis_names == ("toy_speed",) and info.axis("toy_speed").default == "slow"


def test_a_sweep_file_naming_the_toy_plans(toy_installed, tmp_path: Path, capsys) -> None:
    from yolobench.cli import main

    assert main(["plan", str(toy_sweep_file(tmp_path)), "--list"]) == 0
    out = capsys.readouterr().out
    assert "variants: 4" in out and "toy_speed: fast, slow" in out
    assert "n-fp16-32-speed-fast" in out  # the label format the toy declared


def test_the_toy_s_axis_and_options_are_validated_by_its_own_description(toy_installed, tmp_path: Path) -> None:
    bad_axis = toy_sweep_file(tmp_path, axes={"scale": ["n"], "precision": ["fp32"], "imgsz": [32],
                                              "toy_speed": ["warp"]})
    with pytest.raises(SpecError, match=r"axes\.toy_speed.*warp.*slow, fast"):
        load_spec(bad_axis)
    bad_option = toy_sweep_file(tmp_path, runtime={"name": "toy", "toy_colour": "red"})
    with pytest.raises(SpecError, match=r"runtime\.toy_colour"):
        load_spec(bad_option)
    assert load_spec(toy_sweep_file(tmp_path)).runtime.toy_depth == 2


def test_the_toy_sweeps_and_logs(toy_installed, tmp_path: Path, fresh_home: Path) -> None:
    spec = load_spec(toy_sweep_file(tmp_path))
    home = fresh_home
    study = search.open_study(optuna.storages.InMemoryStorage(), spec.name, Space.from_spec(spec), spec.search)
    sweep = Sweep(spec, SweepSettings(home=home), study=study)
    sweep.builder = TinyOnnxBuilder(spec, sweep.cache, dataset=open_dataset(spec.data, home))
    summary = sweep.run()
    assert summary.measured == 4 and summary.failed == 0

    client = mlflow.MlflowClient(tracking.default_tracking_uri(home))
    experiment = client.get_experiment_by_name("toy")
    runs = [r for r in client.search_runs([experiment.experiment_id]) if tracking.PARENT_TAG in r.data.tags]
    assert sorted(r.data.params["toy_speed"] for r in runs) == ["fast", "fast", "slow", "slow"]
    assert {r.data.params["runtime"] for r in runs} == {"toy"}
    assert {r.data.tags["toy.ran"] for r in runs} == {"yes"}
    assert {r.data.params["toy_depth"] for r in runs} == {"2"}  # the toy's own option, as the sweep file set it
    assert all(r.data.metrics["latency_ms_p50"] > 0 for r in runs)
    assert {r.info.run_name for r in runs} >= {"n-fp32-32-speed-fast", "n-fp16-32-speed-slow"}

"""The MLflow UI explains a sweep by itself: read back through MlflowClient after a small real sweep (a tiny real
ONNX model on ONNX Runtime, real MLflow and cache): the experiment's kind, each run's description against its
own figures, the val split as the runs' data set, each variant's logged model, which registers and runs in
ONNX Runtime exactly as the cached artifact does, `yolobench promote`, and the training run's name and span."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import onnxruntime as ort
import optuna
import pytest
import yaml
from mlflow.entities import LoggedModelStatus

from tests.fakes import TinyOnnxBuilder
from tests.test_run_names import TINY_ORT_SWEEP
from yolobench import cli, describe, search, tracking
from yolobench.build import Built, Training
from yolobench.cache import BuildOutput
from yolobench.data.dataset import open_dataset
from yolobench.measure.harness import EvalData
from yolobench.runner import Sweep, SweepSettings
from yolobench.space import Space
from yolobench.spec import parse_spec

# The grid whose run names are pinned, under its own experiment name.
UI_SWEEP = {**TINY_ORT_SWEEP, "name": "ui"}
TRAIN_SECONDS = 180.0


@dataclasses.dataclass
class TrainedTinyBuilder(TinyOnnxBuilder):
    """The tiny model, as if trained: its weights come with a training record, as a LocalBuilder's do. The
    description holds the sweep file's `{scale}` template; the manifest the file that was trained."""

    def build(self, variant: Any) -> Built:
        def write(work_dir: Path) -> BuildOutput:
            (work_dir / "best.pt").write_bytes(b"weights")
            return BuildOutput("best.pt", {"model_cfg": "yolo11n.yaml", "epochs": 3, "epochs_completed": 3,
                                           "imgsz": 64, "train_s": TRAIN_SECONDS, "data_yaml": "/data/shapes.yaml",
                                           "metrics": {"mAP50-95": 0.5}})

        weights = self.cache.get_or_build("train", {"tiny": 1}, None, {}, write)
        training = Training(weights, {"cfg": "yolo11{scale}.yaml", "epochs": 3})
        return dataclasses.replace(super().build(variant), trainings=(training,))


@dataclasses.dataclass(frozen=True)
class Swept:
    home: Path
    client: mlflow.MlflowClient
    experiment: Any
    parent: Any
    children: list[Any]
    data: EvalData
    cache_root: Path


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory, empty_mlflow_db: Path) -> Swept:
    home = tmp_path_factory.mktemp("ui") / "home"
    home.mkdir()
    shutil.copyfile(empty_mlflow_db, home / "mlflow.db")
    spec = parse_spec(UI_SWEEP)
    study = search.open_study(optuna.storages.InMemoryStorage(), spec.name, Space.from_spec(spec), spec.search)
    sweep = Sweep(spec, SweepSettings(home=home), study=study)
    dataset = open_dataset(spec.data, home)
    sweep.builder = TrainedTinyBuilder(spec, sweep.cache, dataset=dataset)
    summary = sweep.run()
    assert summary.measured == 4
    client = mlflow.MlflowClient(tracking.default_tracking_uri(home))
    experiment = client.get_experiment_by_name("ui")
    runs = client.search_runs([experiment.experiment_id])
    children = [client.get_run(r.info.run_id) for r in runs if tracking.PARENT_TAG in r.data.tags]
    parent = client.get_run(summary.parent_run_id)
    return Swept(home, client, experiment, parent, children, EvalData.from_dataset(dataset), sweep.cache.root)


def test_the_experiment_opens_in_mlflows_model_training_view(swept: Swept, tmp_path: Path) -> None:
    assert swept.experiment.tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    # An experiment made before yolobench set the kind gets it when a sweep reuses it.
    tracker = tracking.Tracker(tracking.default_tracking_uri(tmp_path))
    client = mlflow.MlflowClient(tracker.tracking_uri)
    old = client.create_experiment("older")
    assert "mlflow.experimentKind" not in client.get_experiment(old).tags
    assert tracker.experiment_id("older") == old
    assert client.get_experiment(old).tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"


def _speedup_in(note: str) -> float:
    return float(re.search(r"\| speed-up \| \*\*([0-9.]+)×\*\*", note).group(1))


def test_each_variant_s_description_says_what_it_is_and_agrees_with_its_figures(swept: Swept) -> None:
    assert len(swept.children) == 4
    for run in swept.children:
        note, metrics, tags = run.data.tags[tracking.NOTE_TAG], run.data.metrics, run.data.tags
        label = tags[tracking.LABEL_TAG]
        assert note.startswith(f"**{label}**: YOLO11n, {run.data.params['precision']} weights, 32×32 input, "
                               f"ONNX Runtime graph optimisation `{run.data.params['ort_level']}`.")
        # The final figures: the confirmed speed-up, the front as tagged when the sweep ended.
        assert tags[tracking.CONFIRMED_TAG] == "true" and "latency confirmed at the end of the sweep" in note
        assert _speedup_in(note) == round(metrics["speedup_vs_baseline"], 2)
        assert f"| latency p50 | {metrics['latency_ms_p50']:.2f} ms |" in note
        assert f"({metrics['map50_95_delta_vs_baseline']:+.3f})" in note
        front = re.search(r"\*\*On the Pareto front\*\* \([^)]*\): (\S+)", note).group(1)
        assert front == {"true": "**yes**", "false": "no"}[tags[tracking.PARETO_TAG]]
        assert "export: none tiny model" in note  # what the tiny builder's manifest says the export applied
        assert f"ONNX Runtime at level `{run.data.params['ort_level']}` fuses: " in note
        assert ("This is the sweep's **baseline**" in note) == (label == "n-fp32-32-disable")
    int8_disable = next(r for r in swept.children if r.data.tags[tracking.LABEL_TAG] == "n-int8-32-disable")
    assert "int8 without integer kernels" in int8_disable.data.tags[tracking.NOTE_TAG]


def test_the_parent_s_description_holds_the_front_table_fastest_first(swept: Swept) -> None:
    note = swept.parent.data.tags[tracking.NOTE_TAG]
    assert note.startswith("**Sweep `ui`** on tests (onnxruntime): 4 variants of scale × precision × imgsz × ort_level")
    rows = [line for line in note.splitlines() if line.startswith("| [")]
    front = sorted((r for r in swept.children if r.data.tags[tracking.PARETO_TAG] == "true"),
                   key=lambda r: r.data.metrics["latency_ms_p50"])
    assert front and len(rows) == len(front)
    for row, run in zip(rows, front):
        link = f"[{run.data.tags[tracking.LABEL_TAG]}](#/experiments/{swept.experiment.experiment_id}/runs/{run.info.run_id})"
        assert row.startswith(f"| {link} | {run.data.metrics['latency_ms_p50']:.4g} | {run.data.metrics['map50_95']:.4g} |")
    assert f"of {len(swept.children)} variants" in note


def test_the_val_split_is_each_run_s_data_set_input(swept: Swept) -> None:
    expected = describe.val_split(swept.data, "synthetic")
    for run in [*swept.children, swept.parent]:
        (given,) = run.inputs.dataset_inputs
        assert given.dataset.name == "synthetic-val" and given.dataset.digest == expected.digest
        assert given.dataset.source_type == "local" and expected.source in given.dataset.source
        assert [(t.key, t.value) for t in given.tags] == [("mlflow.data.context", "validation")]
        assert '"images": 3' in given.dataset.profile
    assert Path(expected.source.removeprefix("file://")) == swept.data.val_images[0].parent


def test_the_split_s_digest_follows_its_content_not_its_place(swept: Swept, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(swept.data.val_images[0].parents[2], copy)
    moved = [copy / p.relative_to(swept.data.val_images[0].parents[2]) for p in swept.data.val_images]
    data = dataclasses.replace(swept.data, val_images=tuple(moved))
    assert describe.val_split(data, "synthetic").digest == describe.val_split(swept.data, "synthetic").digest
    label = next(p for p in copy.rglob("*.txt") if p.parent.name == "val" and p.read_text().strip())
    label.write_text(label.read_text().replace("0 ", "1 ", 1))
    assert describe.val_split(data, "synthetic").digest != describe.val_split(swept.data, "synthetic").digest


def _cached_model(swept: Swept, run: Any) -> Path:
    key = run.data.tags[tracking.ARTIFACT_KEY_TAG]
    (manifest,) = swept.cache_root.glob(f"*/{key}/manifest.json")
    return manifest.parent / yaml.safe_load(manifest.read_text())["filename"]


def test_each_variant_has_a_logged_model_of_its_run(swept: Swept) -> None:
    for run in swept.children:
        model_id = run.data.tags[tracking.MODEL_ID_TAG]
        model = swept.client.get_logged_model(model_id)
        assert model.source_run_id == run.info.run_id and model.status == LoggedModelStatus.READY
        assert model.name == run.data.tags[tracking.LABEL_TAG] and model.tags["yolobench.flavour"] == "onnx"
        assert [o.model_id for o in run.outputs.model_outputs] == [model_id]
        assert model.params["precision"] == run.data.params["precision"]
        files = {f.path for f in swept.client.list_logged_model_artifacts(model_id)}
        assert {"MLmodel", "model.onnx"} <= files
        # The model's page shows the run's final (confirmed) figures, once, on the val split.
        (p50,) = [m for m in model.metrics if m.key == "latency_ms_p50"]
        assert p50.value == run.data.metrics["latency_ms_p50"] and p50.dataset_name == "synthetic-val"


def test_a_logged_model_loads_with_the_session_options_it_was_timed_with(swept: Swept,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking.default_tracking_uri(swept.home))
    run = next(r for r in swept.children if r.data.tags[tracking.LABEL_TAG] == "n-int8-32-all")
    uri = f"models:/{run.data.tags[tracking.MODEL_ID_TAG]}"
    conf = mlflow.models.get_model_info(uri).flavors["onnx"]
    assert conf["onnx_session_options"] == {"graph_optimization_level": 99, "intra_op_num_threads": 1}
    options = mlflow.pyfunc.load_model(uri).get_raw_model().get_session_options()
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert options.intra_op_num_threads == 1


def test_explaining_the_sweep_again_writes_nothing_twice(swept: Swept) -> None:
    spec = parse_spec(UI_SWEEP)
    tracker = tracking.Tracker(tracking.default_tracking_uri(swept.home))
    describe.explain_sweep(tracker, swept.experiment.experiment_id, swept.parent.info.run_id, spec, swept.data)
    for run in swept.children:
        again = swept.client.get_run(run.info.run_id)
        assert again.data.tags[tracking.NOTE_TAG] == run.data.tags[tracking.NOTE_TAG]
        model = swept.client.get_logged_model(run.data.tags[tracking.MODEL_ID_TAG])
        assert len([m for m in model.metrics if m.key == "latency_ms_p50"]) == 1
        assert len(swept.client.get_metric_history(run.info.run_id, "map50")) == 2  # logged, then linked: no third


def test_a_front_run_s_model_registers_and_runs_as_the_cached_artifact(swept: Swept, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    uri = tracking.default_tracking_uri(swept.home)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    run = next(r for r in swept.children if r.data.tags[tracking.PARETO_TAG] == "true")
    version = mlflow.register_model(f"runs:/{run.info.run_id}/{run.data.tags[tracking.LABEL_TAG]}", "ui-front")
    stored = swept.client.get_model_version("ui-front", version.version)
    assert stored.run_id == run.info.run_id and stored.source == f"models:/{run.data.tags[tracking.MODEL_ID_TAG]}"
    local = Path(mlflow.artifacts.download_artifacts(f"models:/ui-front/{version.version}", dst_path=str(tmp_path),
                                                     tracking_uri=uri))
    image = np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)

    def outputs(path: Path) -> np.ndarray:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: image})[0]

    registered, cached = outputs(local / "model.onnx"), outputs(_cached_model(swept, run))
    assert registered.shape == (1, 8, 1024) and registered.std() > 0
    np.testing.assert_array_equal(registered, cached)


def test_promote_registers_a_variant_by_label_with_its_figures(swept: Swept, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    sweep_file = tmp_path / "ui.yaml"
    sweep_file.write_text(yaml.safe_dump(UI_SWEEP))
    run = next(r for r in swept.children if r.data.tags[tracking.LABEL_TAG] == "n-int8-32-all")
    home = ["--home", str(swept.home)]
    assert cli.main(["promote", str(sweep_file), "n-int8-32-all", "--name", "ui-prod", *home]) == 0
    assert "registered 'ui-prod' version 1 from run " + run.info.run_id in capsys.readouterr().out
    version = swept.client.get_model_version("ui-prod", "1")
    model = swept.client.get_logged_model(run.data.tags[tracking.MODEL_ID_TAG])
    assert version.run_id == run.info.run_id and version.source == model.artifact_location
    assert float(version.tags["yolobench.speedup_vs_baseline"]) == pytest.approx(
        run.data.metrics["speedup_vs_baseline"], rel=1e-5)
    assert float(version.tags["yolobench.map50_95"]) == pytest.approx(run.data.metrics["map50_95"], rel=1e-5)
    assert version.tags[tracking.PARETO_TAG] == run.data.tags[tracking.PARETO_TAG]
    assert version.description == run.data.tags[tracking.NOTE_TAG]
    # By run id, no sweep needed; a second promotion is the next version.
    assert cli.main(["promote", run.info.run_id, "--name", "ui-prod", *home]) == 0
    assert "version 2" in capsys.readouterr().out
    assert cli.main(["promote", str(sweep_file), "n-fp64-32-all", "--name", "ui-prod", *home]) == 1
    error = capsys.readouterr().err
    assert "no finished variant labelled 'n-fp64-32-all'" in error and "n-int8-32-all" in error


def test_the_training_run_is_named_by_its_file_and_spans_the_training(swept: Swept) -> None:
    (training,) = swept.client.search_runs([swept.experiment.experiment_id],
                                           filter_string=f"tags.`{tracking.TRAINING_TAG}` = 'true'")
    assert training.info.run_name == "train yolo11n.yaml"  # not the sweep file's yolo11{scale}.yaml
    assert training.info.end_time - training.info.start_time == pytest.approx(TRAIN_SECONDS * 1000, abs=1)
    assert "Trained `yolo11n.yaml` from scratch for 3 epochs" in training.data.tags[tracking.NOTE_TAG]
    assert all(r.data.tags[tracking.TRAINING_RUN_TAG] == training.info.run_id for r in swept.children)


def test_the_ui_link_opens_the_variants_flat_fastest_first_in_the_model_training_view(swept: Swept) -> None:
    tracker = tracking.Tracker(tracking.default_tracking_uri(swept.home))
    assert tracker.sweep_experiments() == [(swept.experiment.experiment_id, "ui")]
    url = tracking.variants_url("http://127.0.0.1:5055/", swept.experiment.experiment_id)
    assert url.startswith(f"http://127.0.0.1:5055/#/experiments/{swept.experiment.experiment_id}/runs?")
    assert "workflowType=machine_learning" in url and "orderByKey=metrics.%60latency_ms_p50%60" in url
    # The filter in the link is one MLflow accepts, and it selects the variants, not the parent or training run.
    search = re.search(r"searchFilter=([^&]+)", url).group(1)
    from urllib.parse import unquote

    found = swept.client.search_runs([swept.experiment.experiment_id], filter_string=unquote(search))
    assert sorted(r.info.run_id for r in found) == sorted(r.info.run_id for r in swept.children)


def test_a_slower_variant_says_so_and_a_label_becomes_a_valid_model_name() -> None:
    assert describe.speedup_words({"speedup_vs_baseline": 0.8}) == "**0.80×** (slower than the baseline)"
    assert describe.speedup_words({}) == "not known yet (the baseline is not measured)"
    assert tracking._logged_model_name("n-w0.25-fp16") == "n-w0_25-fp16"

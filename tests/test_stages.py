"""Build stages: each is cached and built once, Ultralytics stays inside the sweep, and the artifacts are what
their manifests say (no BatchNorm left, fp16 weights, QDQ int8, all runnable in ONNX Runtime)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from yolobench.cache import Artifact, ArtifactCache
from yolobench.data.dataset import load_dataset
from yolobench.data.synthetic import make_synthetic_dataset
from yolobench.stages import weights as weights_stage
from yolobench.stages.export import ExportOptions
from yolobench.stages.quantize import Int8Recipe
from yolobench.stages.train import dataset_fingerprint
from yolobench.stages.weights import WeightsUnavailable, resolve_weights

# Names Ultralytics or its MLflow callback would create in the working directory if left alone.
CWD_LITTER = ("runs", "mlruns", "mlflow.db", "datasets", "weights")
GLOBAL_SETTINGS = Path.home() / ".config" / "Ultralytics" / "settings.json"


def _state(path: Path) -> tuple[bool, float | None]:
    return path.exists(), path.stat().st_mtime if path.exists() else None


@dataclass
class Built:
    cache: ArtifactCache
    data_yaml: Path
    trained: Artifact
    exported: Artifact
    fp16: Artifact
    int8: Artifact
    tracking_db: Path
    cwd_litter_before: dict[str, bool]
    global_settings_before: tuple[bool, float | None]
    fingerprint_before: str
    network_attempts: list[str]
    builds_by_fixture: dict[str, int]


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """A 16/8-image synthetic set, yolo11n trained 1 epoch at 64 px, exported, fp16 and int8: about 20 s."""
    from yolobench.stages.export import export_onnx
    from yolobench.stages.quantize import convert_fp16, quantize_int8
    from yolobench.stages.train import train_model

    root = tmp_path_factory.mktemp("stages")
    data_yaml = make_synthetic_dataset(root / "data", train_images=16, val_images=8, image_size=128, seed=0)
    cache = ArtifactCache(root / "cache")
    tracking_db = root / "tracking" / "mlflow.db"
    cwd_litter_before = {name: (Path.cwd() / name).exists() for name in CWD_LITTER}
    global_settings_before = _state(GLOBAL_SETTINGS)
    fingerprint_before = dataset_fingerprint(data_yaml)
    network_attempts: list[str] = []

    def no_network(*args: object, **kwargs: object) -> None:
        network_attempts.append(repr(args[:2]))
        raise OSError("network use during a build stage")

    with pytest.MonkeyPatch.context() as patch:
        # Where Ultralytics' MLflow callback would log, if it ran.
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tracking_db}")
        # Ultralytics' MLflow callback skips pytest runs unless the test's name contains "test_mlflow"; claim that
        # name so the only thing keeping it quiet is what yolobench sets.
        patch.setenv("PYTEST_CURRENT_TEST", "tests/test_stages.py::test_mlflow_not_used_by_ultralytics (call)")
        # Font downloads, the PyPI update check, telemetry, the online probe: all would show up here.
        patch.setattr(socket, "getaddrinfo", no_network)
        patch.setattr(socket.socket, "connect", no_network)
        trained = train_model(cache, "yolo11n.yaml", data_yaml, epochs=1, imgsz=64, batch=16, seed=0)
        exported = export_onnx(cache, trained, 64)
        fp16 = convert_fp16(cache, exported)
        calibration = load_dataset(data_yaml).train_images
        int8 = quantize_int8(cache, exported, calibration, Int8Recipe(calibration_images=8))
    return Built(cache, data_yaml, trained, exported, fp16, int8, tracking_db, cwd_litter_before,
                 global_settings_before, fingerprint_before, network_attempts, dict(cache.builds))  # fmt: skip


def _run(path: Path, imgsz: int) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32)
    return session.run(None, {session.get_inputs()[0].name: feed})[0]


# --- fast: no training, no export -------------------------------------------------------------------------------


def test_stage_modules_import_without_torch_or_ultralytics() -> None:
    code = (
        "import sys, yolobench.stages.weights, yolobench.stages.train, yolobench.stages.export, "
        "yolobench.stages.quantize, yolobench.stages.ultralytics_env, yolobench.stages.onnx_graph, "
        "yolobench.stages.model_yaml, yolobench.versions; "
        "heavy = [m for m in ('torch', 'ultralytics', 'onnx', 'onnxruntime') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_missing_official_weights_fail_fast_with_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no yolo11n.pt here
    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setattr(weights_stage, "DOWNLOAD_HOST", ("download-host.invalid", 443))  # never resolves (RFC 6761)
    cache = ArtifactCache(tmp_path / "cache")
    started = time.perf_counter()
    assert not weights_stage.hub_reachable()
    with pytest.raises(WeightsUnavailable) as raised:
        resolve_weights(cache, "yolo11n.pt")
    assert time.perf_counter() - started < 10
    message = str(raised.value)
    assert str(tmp_path / "yolo11n.pt") in message
    assert "model.weights" in message and "model.train" in message
    assert not cache.builds


def test_missing_local_weights_path_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailable, match="model.weights"):
        resolve_weights(ArtifactCache(tmp_path / "cache"), str(tmp_path / "nowhere" / "mine.pt"))


def test_local_weights_are_cached_by_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = ArtifactCache(tmp_path / "cache")
    first = tmp_path / "a" / "mine.pt"
    first.parent.mkdir()
    first.write_bytes(b"not really a checkpoint, but the stage only copies bytes")
    artifact = resolve_weights(cache, str(first))
    assert artifact.path.read_bytes() == first.read_bytes()
    assert artifact.manifest["sha256"] and artifact.manifest["official_name"] is None
    same_bytes_elsewhere = tmp_path / "b.pt"
    shutil.copyfile(first, same_bytes_elsewhere)
    assert resolve_weights(cache, str(same_bytes_elsewhere)).key == artifact.key
    assert cache.builds["weights"] == 1
    # An official name found in the cwd is remembered by name: later runs need no file and no network.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "yolo11n.pt").write_bytes(b"pretend official weights")
    official = resolve_weights(cache, "yolo11n.pt")
    (tmp_path / "yolo11n.pt").unlink()
    assert resolve_weights(cache, "yolo11n.pt").key == official.key
    assert cache.builds["weights"] == 2


def test_dataset_fingerprint_follows_content_not_location(tmp_path: Path) -> None:
    data_yaml = make_synthetic_dataset(tmp_path / "one", train_images=4, val_images=2, image_size=64, seed=1)
    fingerprint = dataset_fingerprint(data_yaml)
    moved = tmp_path / "two"
    shutil.copytree(data_yaml.parent, moved)
    (moved / "data.yaml").write_text((moved / "data.yaml").read_text().replace(str(data_yaml.parent), str(moved)))
    assert dataset_fingerprint(moved / "data.yaml") == fingerprint
    (moved / "labels" / "train.cache").write_bytes(b"Ultralytics label cache")
    assert dataset_fingerprint(moved / "data.yaml") == fingerprint
    label = next(p for p in sorted((moved / "labels" / "train").glob("*.txt")) if p.read_text())
    lines = label.read_text().splitlines()
    fields = lines[0].split()
    fields[1] = f"{(float(fields[1]) + 0.01) % 1:.6f}"  # move one box; the file keeps its size
    label.write_text("\n".join([" ".join(fields), *lines[1:]]) + "\n")
    assert dataset_fingerprint(moved / "data.yaml") != fingerprint


def _handmade_dataset(root: Path) -> Path:
    """A data set written byte for byte (no image encoder involved), so its fingerprint can be pinned."""
    for folder in ("images/train", "images/val", "labels/train"):
        (root / folder).mkdir(parents=True)
    (root / "data.yaml").write_text(
        f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n  0: circle\n  1: square\n"
    )
    (root / "images/train/a.jpg").write_bytes(b"\xff\xd8" + b"a" * 98)
    (root / "images/train/b.png").write_bytes(b"b" * 7)
    (root / "images/val/c.jpg").write_bytes(b"c" * 30)
    (root / "labels/train/a.txt").write_text("0 0.5 0.5 0.2 0.2\n1 0.25 0.75 0.1 0.3\n")
    (root / "labels/train/b.txt").write_text("")
    return root / "data.yaml"


def test_training_keys_are_those_stored_caches_were_built_under(tmp_path: Path) -> None:
    """Values written by the release before the redesign: a changed fingerprint or training config would retrain
    every stored model (and orphan its exports)."""
    from yolobench.cache import cache_key
    from yolobench.stages.train import train_model

    data_yaml = _handmade_dataset(tmp_path / "data")
    assert dataset_fingerprint(data_yaml) == "888b56ece0a241fafe781e76263672659c7838aed4c69a98dbcb082b0239ef60"

    class KeyOnlyCache:  # computes the key train_model asks for, with pinned tool versions, and builds nothing
        root = tmp_path / "cache"

        def get_or_build(self, stage: str, config: dict, parent: Artifact | None, versions: dict, build: object) -> str:
            assert set(versions) == {"torch", "ultralytics"}
            return cache_key(stage, config, parent.key if parent else None, {"torch": "2.0", "ultralytics": "8.4.0"})

    key_only = KeyOnlyCache()
    key = train_model(key_only, "yolo11n.yaml", data_yaml, epochs=3, imgsz=64, batch=8, seed=2, extra={"lr0": 0.01})
    assert key == "8f4e94b72c0721297393"
    # A model yaml on disk counts by its content, and initial weights by their key.
    (tmp_path / "student.yaml").write_text("nc: 2\n")
    parent = Artifact("0123456789abcdef0123", "train", tmp_path / "best.pt", {})
    key = train_model(key_only, str(tmp_path / "student.yaml"), data_yaml, epochs=3, imgsz=64, batch=8, seed=2,
                      init_weights=parent, extra={"lr0": 0.01})  # fmt: skip
    assert key == "22a8c640d41c763c260f"


def test_onnx_graph_helpers_and_where_they_are_imported_from(tmp_path: Path) -> None:
    import onnx

    from tests.tiny_onnx import INPUT_SHAPE, write_conv_model
    from yolobench.stages import export, onnx_graph, quantize

    # Other modules import these from the stages that used to define them.
    assert export.op_counts is onnx_graph.op_counts and export.tensor_shape is onnx_graph.tensor_shape
    assert quantize.detection_head_nodes is onnx_graph.detection_head_nodes
    assert quantize.constant_subgraph_nodes is onnx_graph.constant_subgraph_nodes
    model = onnx.load(str(write_conv_model(tmp_path / "tiny.onnx", yolo_layout=True)))
    assert onnx_graph.op_counts(model) == {"Conv": 3, "Relu": 1, "Reshape": 1, "Sigmoid": 1}
    assert onnx_graph.tensor_shape(model.graph.input[0]) == list(INPUT_SHAPE)
    assert onnx_graph.tensor_shape(model.graph.output[0]) == [1, 8, 1024]
    assert onnx_graph.detection_head_nodes(model) == ["to_anchors", "scores"]
    assert onnx_graph.constant_subgraph_nodes(model) == []
    assert [onnx_graph.element_count(t.dims) for t in model.graph.initializer] == [8 * 3 * 3 * 3, 8 * 8, 8 * 9, 3]
    assert onnx_graph.io_casts(model) == {"inputs": [], "outputs": []}


def test_int8_recipe_defaults_and_forbids_unknown_fields() -> None:
    recipe = Int8Recipe()
    assert (recipe.activation_type, recipe.weight_type, recipe.per_channel) == ("u8", "s8", True)
    assert recipe.op_types[0] == "Conv" and recipe.keep_head_float
    assert recipe.calibration_method == "minmax" and recipe.calibration_images == 32
    with pytest.raises(ValidationError):
        Int8Recipe(calibration_method="kl")
    with pytest.raises(ValidationError):
        Int8Recipe(symmetric=True)


# --- slow: trains and exports a real (tiny) model ---------------------------------------------------------------


@pytest.mark.slow
def test_each_stage_is_built_once(built: Built) -> None:
    from yolobench.stages.export import export_onnx
    from yolobench.stages.quantize import convert_fp16, quantize_int8
    from yolobench.stages.train import train_model

    assert built.builds_by_fixture == {"train": 1, "export": 1, "fp16": 1, "int8": 1}
    builds_before = dict(built.cache.builds)  # other tests may have built more since
    again = [
        train_model(built.cache, "yolo11n.yaml", built.data_yaml, epochs=1, imgsz=64, batch=16, seed=0),
        export_onnx(built.cache, built.trained, 64),
        convert_fp16(built.cache, built.exported),
        quantize_int8(built.cache, built.exported, load_dataset(built.data_yaml).train_images,
                      Int8Recipe(calibration_images=8)),
    ]  # fmt: skip
    assert [a.key for a in again] == [built.trained.key, built.exported.key, built.fp16.key, built.int8.key]
    assert dict(built.cache.builds) == builds_before
    # A different recipe is a different artifact.
    other = quantize_int8(built.cache, built.exported, load_dataset(built.data_yaml).train_images,
                          Int8Recipe(calibration_images=4, per_channel=False))  # fmt: skip
    assert other.key != built.int8.key and built.cache.builds["int8"] == builds_before["int8"] + 1


@pytest.mark.slow
def test_training_manifest_and_no_litter(built: Built) -> None:
    manifest = built.trained.manifest
    assert built.trained.path.name == "best.pt" and built.trained.path.is_file()
    assert {"mAP50-95", "mAP50", "precision", "recall"} <= manifest["metrics"].keys()
    assert manifest["epochs_completed"] == 1 and manifest["train_s"] > 0
    assert manifest["config"]["data"] == built.fingerprint_before == dataset_fingerprint(built.data_yaml)
    assert not (built.trained.directory / "run").exists()  # Ultralytics' run dir is not kept
    for name, existed in built.cwd_litter_before.items():
        assert (Path.cwd() / name).exists() == existed, f"training left {name}/ in the working directory"
    assert _state(GLOBAL_SETTINGS) == built.global_settings_before, "the user's Ultralytics settings were touched"


@pytest.mark.slow
def test_build_stages_use_no_network(built: Built) -> None:
    assert built.network_attempts == []
    assert (Path(os.environ["YOLO_CONFIG_DIR"]) / "Ultralytics" / "Arial.ttf").is_file()  # why no font download


@pytest.mark.slow
def test_mlflow_not_used_by_ultralytics(built: Built) -> None:
    import ultralytics.utils as ultralytics_utils

    assert not built.tracking_db.exists(), "Ultralytics' MLflow callback created a tracking store"
    assert "mlflow" not in built.trained.manifest["integration_callbacks_dropped"]  # the settings kept it off
    settings = ultralytics_utils.SETTINGS
    assert settings["mlflow"] is False and settings["sync"] is False
    # The first prepared home of the process (this cache's, or a sweep's if one ran earlier) holds the settings.
    settings_file = Path(ultralytics_utils.SETTINGS_FILE)
    assert settings_file == Path(os.environ["YOLO_CONFIG_DIR"]) / "Ultralytics" / "settings.json" != GLOBAL_SETTINGS
    assert ultralytics_utils.AUTOINSTALL is False and ultralytics_utils.ONLINE is False


@pytest.mark.slow
def test_settings_flipped_at_runtime_are_reset_before_training(built: Built, monkeypatch: pytest.MonkeyPatch) -> None:
    import ultralytics.utils as ultralytics_utils

    from yolobench.stages.train import train_model

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{built.tracking_db}")
    monkeypatch.setenv("PYTEST_CURRENT_TEST", "tests/test_stages.py::test_mlflow_guard (call)")
    ultralytics_utils.SETTINGS.update(mlflow=True)
    try:
        train_model(built.cache, "yolo11n.yaml", built.data_yaml, epochs=1, imgsz=64, batch=16, seed=1)
        assert ultralytics_utils.SETTINGS["mlflow"] is False
    finally:
        ultralytics_utils.SETTINGS.update(mlflow=False)
    assert not built.tracking_db.exists()


@pytest.mark.slow
def test_guard_detaches_logger_callbacks(built: Built) -> None:
    from types import SimpleNamespace

    from ultralytics.utils.callbacks import mlflow as mlflow_callbacks

    from yolobench.stages.ultralytics_env import drop_integration_callbacks

    def ours(trainer: object) -> None: ...

    callbacks = {event: [ours, function] for event, function in mlflow_callbacks.callbacks.items()}
    assert callbacks, "mlflow is installed, so Ultralytics defines its callbacks"
    assert drop_integration_callbacks(SimpleNamespace(callbacks=callbacks)) == ["mlflow"]
    assert all(functions == [ours] for functions in callbacks.values())


@pytest.mark.slow
def test_training_from_initial_weights_reports_progress(built: Built) -> None:
    from yolobench.stages.train import train_model

    messages: list[str] = []
    tuned = train_model(built.cache, "yolo11n.yaml", built.data_yaml, epochs=1, imgsz=64, batch=16,
                        init_weights=built.trained, extra={"lr0": 0.002}, progress=messages.append)  # fmt: skip
    assert tuned.key != built.trained.key
    assert tuned.manifest["parent"] == tuned.manifest["init_weights"] == built.trained.key
    assert tuned.manifest["config"]["train_args"]["lr0"] == 0.002
    assert any(m.startswith("train epoch 1/1") for m in messages) and messages[-1].startswith("trained in")
    with pytest.raises(ValueError, match="epochs"):
        train_model(built.cache, "yolo11n.yaml", built.data_yaml, epochs=1, imgsz=64, extra={"epochs": 3})


@pytest.mark.slow
def test_export_manifest_lists_verified_defaults(built: Built) -> None:
    import onnx

    manifest = built.exported.manifest
    model = onnx.load(str(built.exported.path))
    assert not [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    assert manifest["op_counts"].get("BatchNormalization", 0) == 0
    applied = {entry["name"]: entry for entry in manifest["applied_by_default"]}
    assert set(applied) == {"batchnorm_folded_into_conv", "constant_folding", "onnxslim_simplification"}
    assert manifest["not_applied"] == [] and manifest["export_options"] == ExportOptions().model_dump()
    assert applied["batchnorm_folded_into_conv"]["evidence"]["batchnorm_modules_in_weights"] > 0
    assert applied["constant_folding"]["evidence"]["do_constant_folding"] is True
    slim = applied["onnxslim_simplification"]["evidence"]
    assert slim["nodes_after"] == len(model.graph.node) and slim["nodes_after"] <= slim["nodes_before"]
    assert manifest["params"] > 1_000_000 and manifest["gflops"] > 0
    assert manifest["num_classes"] == 4 and manifest["names"]["0"] == "circle"
    assert manifest["imgsz"] == 64 and manifest["input_name"] == model.graph.input[0].name
    assert manifest["output_shape"][:2] == [1, 4 + 4]
    assert list(_run(built.exported.path, 64).shape) == manifest["output_shape"]
    assert not list(built.exported.directory.glob("*.pt"))  # the exporter's input copy is not kept


@pytest.mark.slow
def test_fp16_has_half_weights_float_io_and_runs(built: Built) -> None:
    import onnx

    model = onnx.load(str(built.fp16.path))
    initializers = {t.name: t for t in model.graph.initializer}
    conv_weights = [initializers[n.input[1]] for n in model.graph.node if n.op_type == "Conv"]
    assert conv_weights and all(w.data_type == onnx.TensorProto.FLOAT16 for w in conv_weights)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    casts = built.fp16.manifest["io_casts_inserted"]
    assert casts["inputs"] and casts["outputs"]
    half, full = _run(built.fp16.path, 64), _run(built.exported.path, 64)
    assert half.shape == full.shape and half.dtype == np.float32 and np.isfinite(half).all()


@pytest.mark.slow
def test_int8_is_qdq_and_runs(built: Built) -> None:
    import onnx

    ops = {n.op_type for n in onnx.load(str(built.int8.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    manifest = built.int8.manifest
    assert manifest["recipe"] == Int8Recipe(calibration_images=8).model_dump()
    assert len(manifest["calibration_images"]) == 8
    out = _run(built.int8.path, 64)
    assert list(out.shape) == built.exported.manifest["output_shape"] and np.isfinite(out).all()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("options", "applied", "not_applied"),
    [
        (ExportOptions(fold_bn=False, constant_folding=False, simplify=False), set(),
         {"batchnorm_folded_into_conv", "constant_folding", "onnxslim_simplification"}),
        (ExportOptions(fold_bn=False), {"constant_folding", "onnxslim_simplification"}, {"batchnorm_folded_into_conv"}),
        (ExportOptions(simplify=False), {"batchnorm_folded_into_conv", "constant_folding"}, {"onnxslim_simplification"}),
    ],
)  # fmt: skip
def test_export_options_switch_off_what_they_say(
    built: Built, options: ExportOptions, applied: set[str], not_applied: set[str]
) -> None:
    import onnx

    from yolobench.stages.export import export_onnx

    exported = export_onnx(built.cache, built.trained, 64, options)
    assert exported.key != built.exported.key
    manifest = exported.manifest
    assert {e["name"] for e in manifest["applied_by_default"]} == applied
    assert {e["name"] for e in manifest["not_applied"]} == not_applied
    batchnorms = sum(n.op_type == "BatchNormalization" for n in onnx.load(str(exported.path)).graph.node)
    weights_batchnorms = built.exported.manifest["batchnorm_modules_in_weights"]
    assert batchnorms == (0 if options.fold_bn else weights_batchnorms) and weights_batchnorms > 0
    assert manifest["op_counts"].get("BatchNormalization", 0) == batchnorms
    if not options.simplify:
        assert manifest["node_count"] > built.exported.manifest["node_count"]  # onnxslim's work is visible
    # Same function, unoptimised: outputs agree with the default export.
    np.testing.assert_allclose(_run(exported.path, 64), _run(built.exported.path, 64), rtol=1e-3, atol=1e-3)


@pytest.mark.slow
def test_no_fusion_baseline_at_ort_disable_really_runs_batchnorm(built: Built, tmp_path: Path) -> None:
    """With fold_bn off, only the runtime can fold BatchNorm: level disable keeps it, basic folds it."""
    import onnx
    import onnxruntime as ort

    from yolobench.stages.export import export_onnx
    from yolobench.stages.onnx_graph import op_counts

    exported = export_onnx(built.cache, built.trained, 64,
                           ExportOptions(fold_bn=False, constant_folding=False, simplify=False))  # fmt: skip
    counts = {}
    for level, value in (("disable", ort.GraphOptimizationLevel.ORT_DISABLE_ALL),
                         ("basic", ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)):  # fmt: skip
        options = ort.SessionOptions()
        options.graph_optimization_level = value
        options.optimized_model_filepath = str(tmp_path / f"{level}.onnx")
        ort.InferenceSession(str(exported.path), options, providers=["CPUExecutionProvider"])
        counts[level] = op_counts(onnx.load(str(tmp_path / f"{level}.onnx")))
    assert counts["disable"]["BatchNormalization"] == built.exported.manifest["batchnorm_modules_in_weights"]
    assert counts["basic"].get("BatchNormalization", 0) == 0


@pytest.mark.slow
def test_int8_keeps_the_real_head_in_float(built: Built) -> None:
    import onnx

    manifest = built.int8.manifest
    head = manifest["head_nodes_kept_float"]
    model = onnx.load(str(built.int8.path))
    nodes = {node.name: node for node in model.graph.node}
    assert head and set(head) <= set(nodes) and set(head) <= set(manifest["nodes_excluded"])
    head_ops = {nodes[name].op_type for name in head}
    assert {"Softmax", "Sigmoid", "Concat", "Reshape"} <= head_ops  # DFL, class scores, output
    assert any(model.graph.output[0].name in nodes[name].output for name in head)
    quantized = {node.input[0] for node in model.graph.node if node.op_type == "QuantizeLinear"}
    assert not [name for name in head if set(nodes[name].output) & quantized]
    dequantized = {output for node in model.graph.node if node.op_type == "DequantizeLinear" for output in node.output}
    body_convs = [node for node in model.graph.node if node.op_type == "Conv" and node.name not in head]
    assert body_convs and all(node.input[0] in dequantized for node in body_convs)  # the rest is int8

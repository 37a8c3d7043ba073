"""Fusion honesty on real ONNX Runtime: which levels turn QDQ into integer kernels (and the int8_unfused tag that
OnnxRuntime.facts derives from the optimised graph), the int8 recipe's validation, the detection head kept in float,
and the Casts an fp16 model costs on the CPU. A tiny YOLO-shaped graph keeps these fast; tests/test_stages.py does the
real model."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from yolobench.cache import Artifact, ArtifactCache, BuildOutput
from yolobench.runtimes import DecodeSettings, RunFacts, get_runtime
from yolobench.runtimes.ort_fusion import ORT_LEVEL_FUSIONS, graph_op_counts, ort_fusion_facts
from yolobench.stages.quantize import QUANTIZABLE_OP_TYPES, Int8Recipe, detection_head_nodes
from yolobench.tracking import INT8_UNFUSED_TAG, ORT_FUSIONS_TAG, RUNTIME_FUSION_TAG

IMGSZ = 32
CHANNELS = 8
CLASSES = 2
HEAD_OPS = {"Reshape", "Concat", "Split", "Mul", "Sigmoid"}  # what follows the flatten in the tiny head


def _tiny_yolo() -> object:
    """images (1,3,32,32) -> Conv+SiLU -> two strided levels, each Conv -> Reshape to (1, 4+C, H*W) -> Concat ->
    Split into boxes (scaled by a constant, like the stride multiply) and class logits (Sigmoid) -> Concat."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits = [], []

    def weight(name: str, shape: tuple[int, ...]) -> str:
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name))
        return name

    def conv_silu(name: str, source: str, cin: int, cout: int, stride: int) -> str:
        nodes.append(helper.make_node("Conv", [source, weight(f"{name}.w", (cout, cin, 3, 3)),
                                               weight(f"{name}.b", (cout,))], [f"{name}.conv"], name=f"{name}/Conv",
                                      kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[stride, stride]))  # fmt: skip
        nodes.append(helper.make_node("Sigmoid", [f"{name}.conv"], [f"{name}.sig"], name=f"{name}/Sigmoid"))
        nodes.append(helper.make_node("Mul", [f"{name}.conv", f"{name}.sig"], [f"{name}.out"], name=f"{name}/Mul"))
        return f"{name}.out"

    stem = conv_silu("stem", "images", 3, CHANNELS, 1)
    level_a = conv_silu("p1", stem, CHANNELS, CHANNELS, 2)  # 16x16
    level_b = conv_silu("p2", level_a, CHANNELS, CHANNELS, 2)  # 8x8
    flat = []
    for name, source, size in (("h1", level_a, 16), ("h2", level_b, 8)):
        nodes.append(helper.make_node("Conv", [source, weight(f"{name}.w", (4 + CLASSES, CHANNELS, 1, 1)),
                                               weight(f"{name}.b", (4 + CLASSES,))], [f"{name}.logits"],
                                      name=f"{name}/Conv", kernel_shape=[1, 1]))  # fmt: skip
        inits.append(numpy_helper.from_array(np.array([1, 4 + CLASSES, -1], np.int64), f"{name}.shape"))
        nodes.append(helper.make_node("Reshape", [f"{name}.logits", f"{name}.shape"], [f"{name}.flat"],
                                      name=f"head/{name}/Reshape"))  # fmt: skip
        flat.append(f"{name}.flat")
    inits.append(numpy_helper.from_array(np.array([4, CLASSES], np.int64), "split"))
    inits.append(numpy_helper.from_array(np.array([8.0], np.float32), "stride"))
    nodes += [
        helper.make_node("Concat", flat, ["all"], name="head/Concat", axis=2),
        helper.make_node("Split", ["all", "split"], ["box", "cls"], name="head/Split", axis=1),
        helper.make_node("Mul", ["box", "stride"], ["box_px"], name="head/Mul"),
        helper.make_node("Sigmoid", ["cls"], ["cls_p"], name="head/Sigmoid"),
        helper.make_node("Concat", ["box_px", "cls_p"], ["output0"], name="head/Concat_out", axis=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny_yolo",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, IMGSZ, IMGSZ])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 4 + CLASSES, 320])],
        inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[ArtifactCache, Artifact, list[Path]]:
    """The tiny model as an 'export' artifact in a fresh cache, and 4 calibration images."""
    import onnx

    root = tmp_path_factory.mktemp("fusion")
    cache = ArtifactCache(root / "cache")

    def build(work_dir: Path) -> BuildOutput:
        onnx.save(_tiny_yolo(), str(work_dir / "model.onnx"))
        return BuildOutput("model.onnx", {"imgsz": IMGSZ, "applied_by_default": []})

    exported = cache.get_or_build("export", {"tiny": 1}, None, {}, build)
    rng = np.random.default_rng(1)
    images = []
    for index in range(4):
        path = root / f"calib_{index}.jpg"
        cv2.imwrite(str(path), rng.integers(0, 255, (48, 40, 3), dtype=np.uint8))
        images.append(path)
    return cache, exported, images


def _open(model: Artifact, precision: str, level: str, work_dir: Path) -> tuple:
    """Open through yolobench's ORT runtime, as a sweep does; return (session, what its facts() say)."""
    from yolobench.runtimes.options import OnnxRuntimeOptions

    work_dir.mkdir(parents=True, exist_ok=True)
    runtime = get_runtime("onnxruntime")
    axes = {"precision": precision, "imgsz": IMGSZ, "ort_level": level}
    options = OnnxRuntimeOptions(threads=1)
    session = runtime.open(model, None, axes, options, DecodeSettings(), work_dir)
    return session, runtime.facts(session, model, None, axes)


# --- the recipe ---------------------------------------------------------------------------------------------------


def test_recipe_defaults_are_the_measured_cpu_recipe() -> None:
    recipe = Int8Recipe()
    assert (recipe.activation_type, recipe.weight_type, recipe.per_channel, recipe.reduce_range) == ("u8", "s8", True, False)
    assert recipe.op_types[0] == "Conv" and {"Sigmoid", "Mul", "Add", "Concat"} <= set(recipe.op_types)
    assert "MatMul" not in recipe.op_types and recipe.keep_head_float is True
    assert (recipe.calibration_method, recipe.calibration_images) == ("minmax", 32)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"op_types": ["Conv", "NonMaxSuppression"]}, "cannot be quantised; allowed: Add"),
        ({"op_types": []}, "at least one op type"),
        ({"op_types": ["Conv", "Conv"]}, "repeat"),
        ({"activation_type": "s8", "weight_type": "u8"}, "not supported by ONNX Runtime"),
        ({"calibration_images": 0}, "greater than or equal to 1"),
        ({"calibration_method": "kl"}, "minmax"),
        ({"keep_head": True}, "Extra inputs"),
    ],
)
def test_recipe_refuses_what_onnxruntime_cannot_do(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Int8Recipe(**fields)


def test_recipe_op_types_are_the_installed_quantiser_s() -> None:
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    assert set(QUANTIZABLE_OP_TYPES) <= set(QDQRegistry) | set(QLinearOpsRegistry)
    assert set(Int8Recipe().op_types) <= set(QUANTIZABLE_OP_TYPES)


def test_sweep_file_sections_are_the_stage_configs() -> None:
    from tests.conftest import TINY_SWEEP
    from yolobench.spec import SpecError, parse_spec
    from yolobench.stages.export import ExportOptions

    spec = parse_spec({**TINY_SWEEP, "export": {"fold_bn": False, "simplify": False},
                       "int8": {"op_types": ["Conv"], "keep_head_float": False}})  # fmt: skip
    assert isinstance(spec.int8, Int8Recipe) and spec.int8.op_types == ["Conv"] and not spec.int8.keep_head_float
    assert spec.export == ExportOptions(fold_bn=False, simplify=False)
    assert parse_spec(TINY_SWEEP).export == ExportOptions()  # Ultralytics' own behaviour unless asked
    with pytest.raises(SpecError, match=r"int8\.op_types .*cannot be quantised"):
        parse_spec({**TINY_SWEEP, "int8": {"op_types": ["Foo"]}})
    with pytest.raises(SpecError, match=r"export\.fold_batchnorm.*allowed keys: fold_bn"):
        parse_spec({**TINY_SWEEP, "export": {"fold_batchnorm": False}})


def test_export_options_change_the_variant_key() -> None:
    from tests.conftest import TINY_SWEEP
    from yolobench.keys import variant_key
    from yolobench.space import Space
    from yolobench.spec import parse_spec

    default, unfused = parse_spec(TINY_SWEEP), parse_spec({**TINY_SWEEP, "export": {"fold_bn": False}})
    baseline = Space.from_spec(default).baseline
    assert variant_key(default, baseline) != variant_key(unfused, baseline)


# --- the detection head -------------------------------------------------------------------------------------------


def test_head_nodes_are_found_by_structure() -> None:
    model = _tiny_yolo()
    head = detection_head_nodes(model)
    by_name = {node.name: node for node in model.graph.node}
    assert head[0].startswith("head/") and head[-1] == "head/Concat_out"  # graph order, up to the output
    assert {by_name[name].op_type for name in head} == HEAD_OPS
    assert set(head) == {node.name for node in model.graph.node if node.name.startswith("head/")}
    # Renaming every node changes nothing: the search follows shapes and edges only.
    for index, node in enumerate(model.graph.node):
        node.name = f"n{index}"
    assert len(detection_head_nodes(model)) == len(head)


def test_constant_arithmetic_is_never_quantised() -> None:
    """Resize scales built from Constants (an export without constant folding) must stay exact."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from yolobench.stages.quantize import constant_subgraph_nodes

    ones, twos = (numpy_helper.from_array(np.array(v, np.float32)) for v in ([1, 1], [2, 2]))
    nodes = [
        helper.make_node("Constant", [], ["ones"], name="c1", value=ones),
        helper.make_node("Constant", [], ["twos"], name="c2", value=twos),
        helper.make_node("Concat", ["ones", "twos"], ["scales"], name="scales/Concat", axis=0),
        helper.make_node("Resize", ["x", "", "scales"], ["up"], name="Resize", mode="nearest"),
        helper.make_node("Concat", ["up", "up"], ["y"], name="Concat", axis=1),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    assert constant_subgraph_nodes(model) == ["c1", "c2", "scales/Concat"]
    # Old-style IR lists initializers among the graph inputs: they are still constants.
    del model.graph.node[0]
    model.graph.input.append(helper.make_tensor_value_info("ones", TensorProto.FLOAT, [2]))
    model.graph.initializer.append(numpy_helper.from_array(np.ones(2, np.float32), "ones"))
    onnx.checker.check_model(model)
    assert constant_subgraph_nodes(model) == ["c2", "scales/Concat"]


@pytest.mark.parametrize("keep_head_float", [True, False])
def test_head_kept_in_float_in_the_quantised_graph(tiny, keep_head_float: bool) -> None:
    import onnx

    from yolobench.stages.quantize import quantize_int8

    cache, exported, images = tiny
    int8 = quantize_int8(cache, exported, images, Int8Recipe(calibration_images=4, keep_head_float=keep_head_float))
    model = onnx.load(str(int8.path))
    quantized_tensors = {node.input[0] for node in model.graph.node if node.op_type == "QuantizeLinear"}
    head_quantized = [n.name for n in model.graph.node if n.name.startswith("head/") and set(n.output) & quantized_tensors]
    body_quantized = [n.name for n in model.graph.node if n.name.endswith("/Mul") and set(n.output) & quantized_tensors]
    assert body_quantized  # SiLU is in the default op types
    if keep_head_float:
        assert head_quantized == []
        assert set(int8.manifest["head_nodes_kept_float"]) == {n.name for n in _tiny_yolo().graph.node
                                                               if n.name.startswith("head/")}  # fmt: skip
    else:
        assert head_quantized and int8.manifest["head_nodes_kept_float"] == []


# --- which ORT levels fuse QDQ, and the tag -----------------------------------------------------------------------


@pytest.mark.parametrize(("level", "unfused"), [("disable", True), ("basic", True), ("extended", False), ("all", False)])
def test_int8_unfused_tag_follows_the_optimised_graph(tiny, tmp_path: Path, level: str, unfused: bool) -> None:
    from yolobench.stages.quantize import quantize_int8

    cache, exported, images = tiny
    int8 = quantize_int8(cache, exported, images, Int8Recipe(calibration_images=4))
    session, facts = _open(int8, "int8", level, tmp_path / level)
    compiled = session.output_path
    assert compiled is not None and compiled.is_file() and compiled.is_relative_to(tmp_path / level)
    counts = graph_op_counts(compiled)
    assert (counts.get("QLinearConv", 0) == 0) == unfused  # what ORT really did at this level
    assert facts.tags[INT8_UNFUSED_TAG] == str(unfused).lower()
    assert facts.params["ort_qlinear_conv"] == counts.get("QLinearConv", 0)
    assert facts.tags[ORT_FUSIONS_TAG] == (",".join(ORT_LEVEL_FUSIONS[level]) or "none")
    assert ("qdq_to_integer_kernels" in ORT_LEVEL_FUSIONS[level]) != unfused  # the documented list agrees
    out = session.infer(np.zeros((1, 3, IMGSZ, IMGSZ), np.float32))
    assert out.shape == (1, 4 + CLASSES, 320) and np.isfinite(out).all()
    assert session.info()["session_open_s"] > 0  # session creation is the session's, not a build time


def test_fp32_runs_carry_no_int8_verdict_and_other_runtimes_say_they_always_fuse(tiny, tmp_path: Path) -> None:
    cache, exported, _ = tiny
    session, facts = _open(exported, "fp32", "all", tmp_path)
    assert INT8_UNFUSED_TAG not in facts.tags and facts.params["ort_graph_nodes"] > 0
    assert facts.params["ort_fusions"] == facts.tags[ORT_FUSIONS_TAG]
    assert RUNTIME_FUSION_TAG not in facts.tags  # ORT's fusion is the level's, not mandatory
    from yolobench.runtimes import runtime_info

    assert runtime_info("onnxruntime").mandatory_fusion is None
    assert "TensorRT" in runtime_info("tensorrt").mandatory_fusion
    assert "OpenVINO" in runtime_info("depthai").mandatory_fusion
    # A runtime with nothing of its own to say about a run says nothing (the sweep adds the mandatory fusion).
    assert get_runtime("tensorrt").facts(session, exported, None, {"precision": "int8"}) == RunFacts()
    # Without the optimised graph, the CPU verdict comes from the level; under the TensorRT EP there is none.
    assert ort_fusion_facts("basic", "int8", None).tags[INT8_UNFUSED_TAG] == "true"
    assert ort_fusion_facts("all", "int8", None).tags[INT8_UNFUSED_TAG] == "false"
    assert INT8_UNFUSED_TAG not in ort_fusion_facts("basic", "int8", None, provider="tensorrt").tags


def test_facts_take_only_the_session_the_runtime_opened(tiny) -> None:
    from yolobench.runtimes import SessionBase

    class Other(SessionBase):
        def infer(self, tensor: np.ndarray) -> np.ndarray:
            return tensor

    _, exported, _ = tiny
    with pytest.raises(TypeError, match="OrtSession"):
        get_runtime("onnxruntime").facts(Other(), exported, None, {"ort_level": "all"})


def test_fp16_manifest_counts_the_casts_it_costs(tiny) -> None:
    from yolobench.stages.quantize import convert_fp16

    cache, exported, _ = tiny
    fp16 = convert_fp16(cache, exported)
    manifest = fp16.manifest
    assert manifest["casts_inserted"] == manifest["op_counts"]["Cast"] >= 2  # float32 in and out
    assert manifest["casts_inserted_inside"] == manifest["casts_inserted"] - 2
    loaded_casts = manifest["ort_cpu_loaded_op_counts"]["Cast"]
    assert manifest["casts_inserted_by_ort_cpu"] == loaded_casts - manifest["op_counts"]["Cast"]
    assert manifest["casts_inserted_by_ort_cpu"] > 0  # x86 ORT has no fp16 Conv kernel: it casts around it
    assert manifest["ort_cpu_ops_run_in_fp32"]["Conv"] == 5  # every Conv of the tiny model


# --- in a sweep ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sweep_runs_say_what_was_fused(seeded_home: Path) -> None:
    """An int8 sweep at ORT levels disable and all: only the first is tagged int8_unfused; both record the ORT
    fusions of their level and the exporter's (none here: the sweep asks for the no-fusion export)."""
    import mlflow

    from tests.conftest import TINY_SWEEP
    from yolobench import tracking
    from yolobench.runner import Sweep, SweepSettings
    from yolobench.spec import parse_spec

    spec = parse_spec({
        **TINY_SWEEP, "name": "fusion",
        "axes": {"scale": ["n"], "precision": ["int8"], "imgsz": [64], "ort_level": ["disable", "all"]},
        "baseline": {"scale": "n", "precision": "int8", "imgsz": 64, "ort_level": "disable"},
        "export": {"fold_bn": False, "constant_folding": False, "simplify": False},
    })  # fmt: skip
    summary = Sweep(spec, SweepSettings(home=seeded_home)).run()
    assert summary.measured == 2 and summary.failed == 0
    client = mlflow.MlflowClient(tracking.default_tracking_uri(seeded_home))
    experiment = client.get_experiment_by_name("fusion").experiment_id
    runs = {r.data.params["ort_level"]: r for r in client.search_runs([experiment]) if "mlflow.parentRunId" in r.data.tags}
    assert set(runs) == {"disable", "all"}
    assert runs["disable"].data.tags[INT8_UNFUSED_TAG] == "true" and runs["all"].data.tags[INT8_UNFUSED_TAG] == "false"
    assert runs["disable"].data.tags[ORT_FUSIONS_TAG] == "none"
    assert "qdq_to_integer_kernels" in runs["all"].data.params["ort_fusions"]
    assert int(runs["all"].data.params["ort_qlinear_conv"]) > 0 == int(runs["disable"].data.params["ort_qlinear_conv"])
    assert int(runs["disable"].data.params["ort_batchnorm_nodes"]) > 0  # the no-fusion baseline runs BatchNorm
    assert all(r.data.tags[tracking.EXPORT_FUSIONS_TAG] == "none" for r in runs.values())


def test_symmetric_recipe_gives_zero_points_tensorrt_accepts(tiny) -> None:
    """The TensorRT sweep's recipe yields Q/DQ nodes with zero point 0 (the contract TensorRT checks)."""
    import onnx
    from onnx import numpy_helper

    from yolobench.stages.quantize import quantize_int8
    from yolobench.stages.tensorrt import tensorrt_qdq_problems

    with pytest.raises(ValueError, match="needs activation_type 's8'"):
        Int8Recipe(symmetric=True)
    cache, exported, images = tiny
    asymmetric = quantize_int8(cache, exported, images, Int8Recipe(calibration_images=4))
    assert tensorrt_qdq_problems(asymmetric.path)  # the CPU default would be refused by TensorRT
    recipe = Int8Recipe(activation_type="s8", weight_type="s8", symmetric=True, calibration_images=4)
    symmetric = quantize_int8(cache, exported, images, recipe)
    model = onnx.load(str(symmetric.path))
    zero_points = [numpy_helper.to_array(i) for i in model.graph.initializer if "zero_point" in i.name]
    # int8 activations and weights, int32 biases: all with zero point 0.
    assert zero_points and [v for v in zero_points if not ((v == 0).all() and v.dtype in (np.int8, np.int32))] == []
    assert tensorrt_qdq_problems(symmetric.path) == []


def test_a_measuring_host_without_the_onnx_package_still_gets_the_levels_verdict(tiny, tmp_path: Path,
                                                                                 monkeypatch) -> None:
    import importlib.util

    from yolobench.stages.quantize import quantize_int8

    cache, exported, images = tiny
    int8 = quantize_int8(cache, exported, images, Int8Recipe(calibration_images=4))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    session, facts = _open(int8, "int8", "disable", tmp_path)
    assert facts.params["ort_graph"] == "not read: the onnx package is not installed"
    assert "ort_qlinear_conv" not in facts.params and facts.tags[INT8_UNFUSED_TAG] == "true"
    assert session.infer(np.zeros((1, 3, IMGSZ, IMGSZ), np.float32)).shape == (1, 4 + CLASSES, 320)

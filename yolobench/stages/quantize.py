"""Precision stages: fp32 ONNX -> fp16 ONNX, and fp32 ONNX -> static int8 QDQ ONNX calibrated on real images.

Both keep float32 inputs and outputs, so every runtime session feeds and reads the same tensors whatever the
precision. Only onnx, onnxruntime, numpy and OpenCV: no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from yolobench.cache import Artifact, ArtifactCache, BuildFailed, BuildOutput
# detection_head_nodes and constant_subgraph_nodes stay importable from here (tests and scripts do).
from yolobench.stages.onnx_graph import (
    constant_subgraph_nodes,
    detection_head_nodes,
    io_casts,
    nodes_feeding_quantize,
    op_counts,
    ops_fed_by_casts,
    tensor_shape,
)
from yolobench.versions import versions

FP16_STAGE = "fp16"
INT8_STAGE = "int8"
PRECISION_VERSIONS = ("onnx", "onnxruntime")


# Op types ONNX Runtime's static quantiser knows how to quantise (QDQ and QOperator registries of
# onnxruntime.quantization.registry, 1.2x); a test checks the installed version still knows them all.
QUANTIZABLE_OP_TYPES = (
    "Add", "ArgMax", "AveragePool", "BatchNormalization", "Clip", "Concat", "Conv", "ConvTranspose", "CumSum",
    "EmbedLayerNormalization", "Flatten", "Gather", "GatherElements", "Gemm", "GlobalAveragePool",
    "InstanceNormalization", "LayerNormalization", "LeakyRelu", "MatMul", "MaxPool", "Mul", "Pad", "Relu", "Reshape",
    "Resize", "Sigmoid", "Slice", "Softmax", "Split", "Squeeze", "TopK", "Transpose", "Unsqueeze", "Where",
)  # fmt: skip

# Chosen by measurement (yolo11n at imgsz 640, ORT 1.32 level all, 2 threads of an AVX-512 VNNI CPU, interleaved;
# speed-up over fp32): Conv alone 1.2-1.45x, because every SiLU (Sigmoid, Mul) then runs in float between a
# DequantizeLinear and a QuantizeLinear; + Sigmoid, Mul 1.7x; + the residual Adds, C2f/SPPF Concats, MaxPool, Resize
# and Split 1.9x, the backbone and neck staying uint8 end to end (QLinearConv/QLinearSigmoid/QLinearMul...). Every
# op type (MatMul/Softmax of the C2PSA attention too) 1.8x and a little less accurate. s8 activations 0.7x.
# Per-tensor weights and reduce_range made no measurable difference to speed; per-channel kept mAP closer to fp32.
DEFAULT_INT8_OP_TYPES = ("Conv", "Sigmoid", "Mul", "Add", "Concat", "MaxPool", "Resize", "Split")


class Int8Recipe(BaseModel):
    """How to quantise: types, granularity, which ops, which nodes stay float, how to calibrate.

    The one definition of the recipe: the sweep file's `int8:` section is this model. The defaults are the recipe
    measured to pay off on x86 CPUs (u8 activations, s8 weights; s8 activations make ORT's CPU kernels ~2x slower
    than fp32 there). `keep_head_float` leaves the detection head's decode (everything after the feature maps are
    flattened: DFL, box decode, class sigmoid, the output Concat) in float, found by graph structure: one uint8
    scale cannot hold pixel coordinates and probabilities at once (quantising it scores mAP 0).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    activation_type: Literal["u8", "s8"] = "u8"
    weight_type: Literal["s8", "u8"] = "s8"
    per_channel: bool = True
    reduce_range: bool = Field(False, description="7-bit weights: for CPUs without VNNI, where 8 bits may saturate")
    op_types: list[str] = Field(default_factory=lambda: list(DEFAULT_INT8_OP_TYPES))
    keep_head_float: bool = True
    exclude_nodes: list[str] = Field(default_factory=list, description="further node names to keep in float")
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    calibration_images: int = Field(default=32, ge=1)
    symmetric: bool = Field(False, description="zero points 0 for activations and weights: what TensorRT takes")

    @field_validator("op_types")
    @classmethod
    def _known_op_types(cls, values: list[str]) -> list[str]:
        if not values:
            raise ValueError("op_types needs at least one op type, e.g. ['Conv']")
        if len(set(values)) != len(values):
            raise ValueError(f"op types repeat: {values}")
        unknown = [value for value in values if value not in QUANTIZABLE_OP_TYPES]
        if unknown:
            raise ValueError(f"op types {unknown} cannot be quantised; allowed: {', '.join(QUANTIZABLE_OP_TYPES)}")
        return values

    @model_validator(mode="after")
    def _supported_type_pair(self) -> Int8Recipe:
        if self.symmetric and self.activation_type != "s8":
            raise ValueError("symmetric quantisation (zero point 0) needs activation_type 's8'")
        if (self.activation_type, self.weight_type) == ("s8", "u8"):
            raise ValueError(
                "activation_type 's8' with weight_type 'u8' is not supported by ONNX Runtime; "
                "allowed pairs: u8/s8 (x86), u8/u8, s8/s8 (ARM, GPU)"
            )
        return self


def _check_runs(path: Path, loaded_graph: Path | None = None) -> list[int | str]:
    """Load the model in ONNX Runtime (CPU, no graph optimisation) and run a zero input; return the output shape.

    `loaded_graph`: where to save the graph as the CPU EP will run it (its kernel assignment inserts Casts
    around ops without a kernel for the model's type even with every optimisation off).
    """
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if loaded_graph is not None:
        options.optimized_model_filepath = str(loaded_graph)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    model_input = session.get_inputs()[0]
    feed = np.zeros([d if isinstance(d, int) else 1 for d in model_input.shape], np.float32)
    return list(session.run(None, {model_input.name: feed})[0].shape)


def convert_fp16(cache: ArtifactCache, onnx_artifact: Artifact) -> Artifact:
    """fp16 weights and compute, float32 inputs/outputs (Casts at the edges); ops ORT keeps in fp32 stay fp32."""
    config = {"keep_io_types": True, "op_block_list": "onnxruntime default"}

    def build(work_dir: Path) -> BuildOutput:
        import onnx
        from onnxruntime.transformers import float16

        model = onnx.load(str(onnx_artifact.path))
        casts_before = op_counts(model).get("Cast", 0)
        converted = float16.convert_float_to_float16(model, keep_io_types=True)
        output = work_dir / f"{onnx_artifact.path.stem}_fp16.onnx"
        onnx.save(converted, str(output))
        counts = op_counts(converted)
        casts_at_io = io_casts(converted)
        loaded = work_dir / "ort-cpu-loaded.onnx"
        checked_shape = _check_runs(output, loaded)
        loaded_model = onnx.load(str(loaded))
        cpu_counts = op_counts(loaded_model)
        loaded.unlink()
        return BuildOutput(
            filename=output.name,
            manifest={
                **_inherited(onnx_artifact),
                "precision": "fp16",
                "io_types": "float32 (keep_io_types=True)",
                "io_casts_inserted": casts_at_io,
                "casts_inserted": counts.get("Cast", 0) - casts_before,
                # Casts inside the graph: fp16 <-> fp32 around each op left in float (the block list), paid per run.
                "casts_inserted_inside": counts.get("Cast", 0) - casts_before - sum(map(len, casts_at_io.values())),
                # ...and the ones ONNX Runtime's CPU EP adds when it loads the model, around every op it has no fp16
                # kernel for on this host (level disable; higher levels merge some): why fp16 rarely pays on a CPU.
                "casts_inserted_by_ort_cpu": cpu_counts.get("Cast", 0) - counts.get("Cast", 0),
                "ort_cpu_loaded_op_counts": cpu_counts,
                "ort_cpu_ops_run_in_fp32": ops_fed_by_casts(loaded_model),  # per op type: computed in fp32 after all
                "op_block_list": list(float16.DEFAULT_OP_BLOCK_LIST),  # these stay fp32 with Casts around them
                "node_count": len(converted.graph.node),
                "op_counts": counts,
                "checked_output_shape": checked_shape,
            },
        )

    return cache.get_or_build(FP16_STAGE, config, onnx_artifact, versions(PRECISION_VERSIONS), build)


class _LetterboxCalibrationReader:
    """onnxruntime CalibrationDataReader: one letterboxed image per call, read from disk when asked."""

    def __init__(self, images: Sequence[Path], input_name: str, imgsz: int) -> None:
        self.images, self.input_name, self.imgsz = list(images), input_name, imgsz
        self.position = 0

    def get_next(self) -> dict[str, Any] | None:
        import cv2

        from yolobench.data.letterbox import to_input_tensor

        if self.position >= len(self.images):
            return None
        path = self.images[self.position]
        self.position += 1
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise BuildFailed(f"calibration image cannot be read: {path}")
        return {self.input_name: to_input_tensor(image, self.imgsz)[0]}

    def rewind(self) -> None:
        self.position = 0


def _calibration_identity(images: Sequence[Path]) -> list[str]:
    return [f"{Path(p).name}:{Path(p).stat().st_size}" for p in images]


def quantize_int8(
    cache: ArtifactCache, onnx_artifact: Artifact, calibration_images: Sequence[Path], recipe: Int8Recipe
) -> Artifact:
    """Static int8 in QDQ format, calibrated on the first `recipe.calibration_images` of `calibration_images`."""
    images = [Path(p) for p in calibration_images][: recipe.calibration_images]
    if not images:
        raise ValueError("quantize_int8 needs at least one calibration image")
    config = {"recipe": recipe.model_dump(), "calibration": _calibration_identity(images), "format": "QDQ",
              "preprocess": "quant_pre_process(skip_optimization=True)", "constant_subgraphs": "float"}  # fmt: skip

    def build(work_dir: Path) -> BuildOutput:
        return _quantize(onnx_artifact, images, recipe, work_dir)

    return cache.get_or_build(INT8_STAGE, config, onnx_artifact, versions(PRECISION_VERSIONS), build)


def _quantize(onnx_artifact: Artifact, images: list[Path], recipe: Int8Recipe, work_dir: Path) -> BuildOutput:
    """The int8 stage's build: prepare, pick the nodes to keep float, quantise, check the result."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source = onnx.load(str(onnx_artifact.path))
    input_name = source.graph.input[0].name
    imgsz = int(onnx_artifact.manifest.get("imgsz") or tensor_shape(source.graph.input[0])[-1])
    # Shape inference only: ORT's optimiser would fuse nodes here, which belongs to the runtime's fusion axis.
    prepared = work_dir / "preprocessed.onnx"
    quant_pre_process(str(onnx_artifact.path), str(prepared), skip_optimization=True)
    head = detection_head_nodes(onnx.load(str(prepared))) if recipe.keep_head_float else []
    if recipe.keep_head_float and not head:
        raise BuildFailed("keep_head_float: no Reshape flattening a (1, C, H, W) feature map; is this a YOLO head?")
    constant = constant_subgraph_nodes(onnx.load(str(prepared)))
    excluded = list(dict.fromkeys([*head, *constant, *recipe.exclude_nodes]))
    output = work_dir / f"{onnx_artifact.path.stem}_int8.onnx"
    _quantize_static(prepared, output, _LetterboxCalibrationReader(images, input_name, imgsz), recipe, excluded)
    prepared.unlink()
    for leftover in work_dir.glob("*.onnx.data"):  # calibration scratch some ORT versions leave behind
        leftover.unlink()
    quantized = onnx.load(str(output))
    counts = op_counts(quantized)
    if not counts.get("QuantizeLinear") or not counts.get("DequantizeLinear"):
        raise BuildFailed(f"quantize_static produced no QDQ pairs (op_types={recipe.op_types})")
    head_quantized = nodes_feeding_quantize(quantized, head)
    if head_quantized:
        raise BuildFailed(f"keep_head_float: head nodes {head_quantized[:5]} were quantised anyway")
    return BuildOutput(
        filename=output.name,
        manifest={
            **_inherited(onnx_artifact),
            "precision": "int8",
            "recipe": recipe.model_dump(),
            "head_nodes_kept_float": head,  # found by detection_head_nodes, verified unquantised
            "constant_nodes_kept_float": constant,  # never worth quantising (see constant_subgraph_nodes)
            "nodes_excluded": excluded,
            "calibration_images": [p.name for p in images],
            "calibration_imgsz": imgsz,
            "io_types": "float32 (Q/DQ inside the graph)",
            "node_count": len(quantized.graph.node),
            "op_counts": counts,
            "checked_output_shape": _check_runs(output),
        },
    )


def _quantize_static(
    prepared: Path, output: Path, reader: _LetterboxCalibrationReader, recipe: Int8Recipe, excluded: list[str]
) -> None:
    """ONNX Runtime's static quantiser, QDQ format, with the recipe's types, granularity and calibration."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    types = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    quantize_static(
        str(prepared),
        str(output),
        reader,
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(recipe.op_types),
        per_channel=recipe.per_channel,
        reduce_range=recipe.reduce_range,
        activation_type=types[recipe.activation_type],
        weight_type=types[recipe.weight_type],
        nodes_to_exclude=excluded,
        calibrate_method=methods[recipe.calibration_method],
        extra_options={"ActivationSymmetric": recipe.symmetric, "WeightSymmetric": True} if recipe.symmetric else None,
    )


# Facts of the exported model that stay true after a precision change, so each artifact's manifest stands alone.
_INHERITED_KEYS = ("params", "gflops", "num_classes", "names", "imgsz", "input_name", "input_shape", "output_name",
                   "output_shape", "opset", "applied_by_default")  # fmt: skip


def _inherited(parent: Artifact) -> dict[str, Any]:
    return {key: parent.manifest[key] for key in _INHERITED_KEYS if key in parent.manifest}

"""Precision stages: fp32 ONNX -> fp16 ONNX, and fp32 ONNX -> static int8 QDQ ONNX calibrated on real images.

Both keep float32 inputs and outputs, so every runtime session feeds and reads the same tensors whatever the
precision. Only onnx, onnxruntime, numpy and OpenCV: no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from yolobench.cache import Artifact, ArtifactCache, BuildFailed, BuildOutput
from yolobench.stages.export import op_counts, tensor_shape
from yolobench.stages.ultralytics_env import versions

FP16_STAGE = "fp16"
INT8_STAGE = "int8"
PRECISION_VERSIONS = ("onnx", "onnxruntime")


class Int8Recipe(BaseModel):
    """How to quantise: types, granularity, which ops, which nodes to leave in float, how to calibrate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    activation_type: Literal["u8", "s8"] = "u8"
    weight_type: Literal["s8", "u8"] = "s8"
    per_channel: bool = True
    op_types: list[str] = Field(default_factory=lambda: ["Conv"])
    exclude_nodes: list[str] = Field(default_factory=list)
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    calibration_images: int = Field(default=32, ge=1)


def _io_casts(model: Any) -> dict[str, list[str]]:
    """Cast nodes reading a graph input or writing a graph output: what keep_io_types inserted."""
    inputs = {value.name for value in model.graph.input}
    outputs = {value.name for value in model.graph.output}
    casts = [node for node in model.graph.node if node.op_type == "Cast"]
    return {
        "inputs": sorted(node.name for node in casts if set(node.input) & inputs),
        "outputs": sorted(node.name for node in casts if set(node.output) & outputs),
    }


def _check_runs(path: Path) -> list[int | str]:
    """Load the model in ONNX Runtime (CPU, no graph optimisation) and run a zero input; return the output shape."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
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
        return BuildOutput(
            filename=output.name,
            manifest={
                **_inherited(onnx_artifact),
                "precision": "fp16",
                "io_types": "float32 (keep_io_types=True)",
                "io_casts_inserted": _io_casts(converted),
                "casts_inserted": counts.get("Cast", 0) - casts_before,
                "op_block_list": list(float16.DEFAULT_OP_BLOCK_LIST),  # these stay fp32 with Casts around them
                "node_count": len(converted.graph.node),
                "op_counts": counts,
                "checked_output_shape": _check_runs(output),
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
              "preprocess": "quant_pre_process(skip_optimization=True)"}  # fmt: skip

    def build(work_dir: Path) -> BuildOutput:
        import onnx
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process

        source = onnx.load(str(onnx_artifact.path))
        input_name = source.graph.input[0].name
        imgsz = int(onnx_artifact.manifest.get("imgsz") or tensor_shape(source.graph.input[0])[-1])
        # Shape inference only: ORT's optimiser would fuse nodes here, which belongs to the runtime's fusion axis.
        prepared = work_dir / "preprocessed.onnx"
        quant_pre_process(str(onnx_artifact.path), str(prepared), skip_optimization=True)
        types = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}
        methods = {
            "minmax": CalibrationMethod.MinMax,
            "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile,
        }
        output = work_dir / f"{onnx_artifact.path.stem}_int8.onnx"
        quantize_static(
            str(prepared),
            str(output),
            _LetterboxCalibrationReader(images, input_name, imgsz),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(recipe.op_types),
            per_channel=recipe.per_channel,
            activation_type=types[recipe.activation_type],
            weight_type=types[recipe.weight_type],
            nodes_to_exclude=list(recipe.exclude_nodes),
            calibrate_method=methods[recipe.calibration_method],
        )
        prepared.unlink()
        for leftover in work_dir.glob("*.onnx.data"):  # calibration scratch some ORT versions leave behind
            leftover.unlink()
        quantized = onnx.load(str(output))
        counts = op_counts(quantized)
        if not counts.get("QuantizeLinear") or not counts.get("DequantizeLinear"):
            raise BuildFailed(f"quantize_static produced no QDQ pairs (op_types={recipe.op_types})")
        return BuildOutput(
            filename=output.name,
            manifest={
                **_inherited(onnx_artifact),
                "precision": "int8",
                "recipe": recipe.model_dump(),
                "calibration_images": [p.name for p in images],
                "calibration_imgsz": imgsz,
                "io_types": "float32 (Q/DQ inside the graph)",
                "node_count": len(quantized.graph.node),
                "op_counts": counts,
                "checked_output_shape": _check_runs(output),
            },
        )

    return cache.get_or_build(INT8_STAGE, config, onnx_artifact, versions(PRECISION_VERSIONS), build)


# Facts of the exported model that stay true after a precision change, so each artifact's manifest stands alone.
_INHERITED_KEYS = ("params", "gflops", "num_classes", "names", "imgsz", "input_name", "input_shape", "output_name",
                   "output_shape", "opset", "applied_by_default")  # fmt: skip


def _inherited(parent: Artifact) -> dict[str, Any]:
    return {key: parent.manifest[key] for key in _INHERITED_KEYS if key in parent.manifest}

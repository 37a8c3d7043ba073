"""Checks made before any upload or Docker run, so a model a converter cannot take fails in a second with a
message that names the field and its value, not after minutes in a remote queue: the image size against the
model's stride, a static input shape, the class count against the archive's metadata, the opset against the
converter's range. Each failure is a ModelMismatch: that variant fails, the sweep goes on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from yolobench.converters import Converter
from yolobench.errors import ModelMismatch

MAX_STRIDE = 32  # YOLO11's coarsest detection level


def _input_shape(onnx_path: Path) -> tuple[str, list[int | str]]:
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    initializers = {init.name for init in graph.initializer}
    graph_input = next(i for i in graph.input if i.name not in initializers)
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in graph_input.type.tensor_type.shape.dim]
    return graph_input.name, dims


def _opset(onnx_path: Path) -> int:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def check_imgsz(imgsz: int) -> None:
    if imgsz % MAX_STRIDE:
        raise ModelMismatch(f"imgsz = {imgsz}: not a multiple of the model's stride {MAX_STRIDE}; the RVC2 head "
                            f"needs whole grid cells (e.g. {imgsz // MAX_STRIDE * MAX_STRIDE or MAX_STRIDE})")


def check_static_input(onnx_path: Path, imgsz: int) -> tuple[str, tuple[int, ...]]:
    """The model's input name and its static shape, which must be (1, 3, imgsz, imgsz)."""
    name, dims = _input_shape(onnx_path)
    if any(not isinstance(d, int) or d <= 0 for d in dims):
        raise ModelMismatch(f"input {name!r} shape = {dims}: not static; the converters compile one fixed shape "
                            "(export with dynamic=False)")
    if dims != [1, 3, imgsz, imgsz]:
        raise ModelMismatch(f"input {name!r} shape = {dims}: the variant's imgsz is {imgsz}, so it must be "
                            f"[1, 3, {imgsz}, {imgsz}]")
    return name, tuple(dims)


def check_classes(head: dict[str, Any], class_names: list[str]) -> None:
    """The head's class-score channels against the class names the archive will declare."""
    channels = {name: shape[1] - 5 for name, shape in head["outputs"].items()}
    wrong = {name: count for name, count in channels.items() if count != len(class_names)}
    if wrong:
        raise ModelMismatch(f"model.heads[0].metadata.n_classes = {len(class_names)} (the model's class names) does "
                            f"not match the class scores of outputs {wrong}")


def check_archive_classes(declared: int | None, class_names: list[str], converter: str) -> None:
    """What the converter's own archive says, where it says anything."""
    if declared is not None and declared != len(class_names):
        raise ModelMismatch(f"the {converter} archive's model.heads[0].metadata.n_classes = {declared}, but the "
                            f"model has {len(class_names)} classes")


def check_opset(onnx_path: Path, converter: Converter) -> int:
    opset = _opset(onnx_path)
    low, high = converter.opsets
    if not low <= opset <= high:
        raise ModelMismatch(f"opset = {opset}: converter {converter.name!r} reads ONNX opsets {low}..{high} "
                            f"(set export.opset in that range)")
    return opset


def validate_for_compile(onnx_path: Path, head: dict[str, Any], imgsz: int, class_names: list[str],
                         converter: Converter) -> tuple[str, tuple[int, ...], int]:
    """Every check above on the model a converter would get; (input name, input shape, opset) when it passes."""
    check_imgsz(imgsz)
    name, shape = check_static_input(onnx_path, imgsz)
    check_classes(head, class_names)
    return name, shape, check_opset(onnx_path, converter)

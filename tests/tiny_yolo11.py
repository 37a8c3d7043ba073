"""A tiny ONNX model with the node names of an Ultralytics YOLO11 detection head (no torch): per level (strides 8,
16, 32) a stem conv, then /model.23/cv2.i/cv2.i.2/Conv (4 x 16 DFL bins) and /model.23/cv3.i/cv3.i.2/Conv (class
logits), and an `output0` of the export's (1, 4+nc, anchors) shape. Enough for the RVC2 head rewrite and every
converter to run on it in milliseconds; the slow tests use a trained model instead."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from yolobench.cache import Artifact, ArtifactCache, BuildOutput

REG_MAX = 16
STEM = 16
STRIDES = (8, 16, 32)


def _level(index: int, stride: int, num_classes: int, rng: np.random.Generator) -> tuple[list, list, str]:
    from onnx import helper, numpy_helper

    weights = {
        f"stem{index}": rng.normal(0, 0.1, (STEM, 3, stride, stride)),
        f"box{index}": rng.normal(0, 0.1, (4 * REG_MAX, STEM, 1, 1)),
        f"cls{index}": rng.normal(0, 0.1, (num_classes, STEM, 1, 1)),
        f"raw{index}": rng.normal(0, 0.1, (4 + num_classes, STEM, 1, 1)),
    }
    initializers = [numpy_helper.from_array(w.astype(np.float32), name) for name, w in weights.items()]
    initializers.append(numpy_helper.from_array(np.array([1, 4 + num_classes, -1], np.int64), f"flat{index}"))
    nodes = [
        helper.make_node("Conv", ["images", f"stem{index}"], [f"feat{index}"], name=f"/model.{10 + index}/Conv",
                         strides=[stride, stride]),
        helper.make_node("Conv", [f"feat{index}", f"box{index}"], [f"box_out{index}"],
                         name=f"/model.23/cv2.{index}/cv2.{index}.2/Conv"),
        helper.make_node("Conv", [f"feat{index}", f"cls{index}"], [f"cls_out{index}"],
                         name=f"/model.23/cv3.{index}/cv3.{index}.2/Conv"),
        helper.make_node("Conv", [f"feat{index}", f"raw{index}"], [f"raw_out{index}"], name=f"/raw{index}/Conv"),
        helper.make_node("Reshape", [f"raw_out{index}", f"flat{index}"], [f"flat_out{index}"], name=f"/flat{index}"),
    ]
    return nodes, initializers, f"flat_out{index}"


def write_tiny_yolo11(path: Path, imgsz: int = 64, num_classes: int = 4, opset: int = 12, seed: int = 0) -> Path:
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    nodes, initializers, flats = [], [], []
    for index, stride in enumerate(STRIDES):
        level_nodes, level_initializers, flat = _level(index, stride, num_classes, rng)
        nodes += level_nodes
        initializers += level_initializers
        flats.append(flat)
    anchors = sum((imgsz // s) ** 2 for s in STRIDES)
    nodes += [helper.make_node("Concat", flats, ["joined"], axis=2, name="/Concat"),
              helper.make_node("Sigmoid", ["joined"], ["output0"], name="/Sigmoid")]
    graph = helper.make_graph(nodes, "tiny_yolo11",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, imgsz, imgsz])],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 4 + num_classes, anchors])],
                              initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def tiny_yolo11_export(cache: ArtifactCache, imgsz: int = 64, num_classes: int = 4, scale: str = "n",
                       opset: int = 12) -> Artifact:
    """The tiny model as a cached fp32 export artifact, with the manifest facts the export stage records."""

    def build(work_dir: Path) -> BuildOutput:
        write_tiny_yolo11(work_dir / f"yolo11{scale}_{imgsz}.onnx", imgsz, num_classes, opset,
                          seed="nsm".index(scale) if scale in "nsm" else 0)
        return BuildOutput(f"yolo11{scale}_{imgsz}.onnx", {
            "precision": "fp32", "imgsz": imgsz, "opset": opset, "num_classes": num_classes,
            "names": {str(i): f"class{i}" for i in range(num_classes)}, "input_name": "images",
            "input_shape": [1, 3, imgsz, imgsz], "output_name": "output0",
            "output_shape": [1, 4 + num_classes, sum((imgsz // stride) ** 2 for stride in STRIDES)],
        })

    return cache.get_or_build("export", {"tiny_yolo11": scale, "imgsz": imgsz, "nc": num_classes, "opset": opset},
                              None, {}, build)

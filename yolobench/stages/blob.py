"""RVC2 (Myriad X) blob pieces every OAK converter shares: the preprocessing the blob is compiled with, the
blob header check, and the YOLO11 head rewritten into the per-level outputs DepthAI's YOLO parser reads (the
model every converter compiles, so one NN Archive serves host and on-device decoding).
"""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Any

from yolobench.cache import Artifact, ArtifactCache, BuildFailed, BuildOutput

HEAD_STAGE = "rvc2_head"
# The device gets letterboxed BGR uint8 planar frames; the blob itself divides by 255 and swaps to RGB,
# so the network sees exactly the host's float tensor (RGB, 0..1). In Model Optimizer's words:
OPTIMIZER_PARAMS = ("--mean_values=[0,0,0]", "--scale_values=[255,255,255]", "--reverse_input_channels")
COMPILE_PARAMS = ("-ip U8",)
DATA_TYPE = "FP16"  # the only precision the Myriad X VPU runs
# Output names DepthAI's YOLO parser decodes as anchor-free YOLOv6r2/v8 heads.
RVC2_OUTPUT_NAMES = ("output1_yolov6r2", "output2_yolov6r2", "output3_yolov6r2")
# blob header: magic number at byte 52, the blob's declared size at byte 56 (little-endian uint32).
_BLOB_MAGIC = 9709
_HEAD_CONV = re.compile(r"^/model\.(\d+)/(cv2|cv3)\.(\d+)/\2\.\3\.2/Conv$")


def is_blob(data: bytes) -> bool:
    """Whether `data` looks like a compiled Myriad X blob: magic number and a size it does not exceed."""
    if len(data) < 60:
        return False
    magic, declared = struct.unpack_from("<II", data, 52)
    return magic == _BLOB_MAGIC and declared <= len(data)


# --- on-device decoding: the head DepthAI's YOLO parser reads ------------------------------------------


def _find_head_convs(model: Any) -> list[tuple[str, str]]:
    """(box conv output, class conv output) per detection level, from Ultralytics' node names."""
    found: dict[int, dict[str, str]] = {}
    module = None
    for node in model.graph.node:
        match = _HEAD_CONV.match(node.name)
        if match and node.op_type == "Conv":
            module = module or match.group(1)
            if match.group(1) == module:
                found.setdefault(int(match.group(3)), {})[match.group(2)] = node.output[0]
    levels = [found[i] for i in sorted(found)]
    if not levels or any(set(level) != {"cv2", "cv3"} for level in levels):
        raise BuildFailed("not a YOLO11 detection head: no /model.N/cv2.i/.../Conv and cv3.i pairs found in the ONNX")
    return [(level["cv2"], level["cv3"]) for level in levels]


def _shape_of(model: Any, tensor: str) -> list[int]:
    for value in (*model.graph.value_info, *model.graph.output):
        if value.name == tensor:
            return [d.dim_value for d in value.type.tensor_type.shape.dim]
    raise BuildFailed(f"shape of {tensor} unknown after shape inference")


def _prune(graph: Any) -> None:
    """Drop nodes, initializers and value infos no graph output depends on."""
    producer = {name: node for node in graph.node for name in node.output}
    needed = {output.name for output in graph.output}
    stack, kept_ids = list(needed), set()
    while stack:  # by producer, not by position: the node list need not be in order
        node = producer.get(stack.pop())
        if node is not None and id(node) not in kept_ids:
            kept_ids.add(id(node))
            inputs = [name for name in node.input if name]
            needed.update(inputs)
            stack += inputs
    kept = [node for node in graph.node if id(node) in kept_ids]  # in their order: producers first
    del graph.node[:]
    graph.node.extend(kept)
    initializers = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    infos = [v for v in graph.value_info if v.name in needed]
    del graph.value_info[:]
    graph.value_info.extend(infos)


def rewrite_rvc2_head(source: Path, destination: Path) -> dict[str, Any]:
    """Replace the YOLO11 decoded output (1, 4+nc, anchors) by one output per level, (1, 4+1+nc, h, w):
    DFL box distances (left, top, right, bottom in grid cells), the best class score as confidence,
    then the class scores; named as DepthAI's YOLO parser expects. Returns what was done."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(source))
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    levels = _find_head_convs(model)
    model = onnx.shape_inference.infer_shapes(model)
    graph = model.graph
    nodes, initializers, outputs, shapes = [], [], [], []
    for index, (box_conv, class_conv) in enumerate(levels):
        prefix = f"/rvc2_head/{index}"
        _, box_channels, height, width = _shape_of(model, box_conv)
        _, num_classes, _, _ = _shape_of(model, class_conv)
        reg_max = box_channels // 4
        initializers += [
            numpy_helper.from_array(np.array([1, 4, reg_max, height * width], np.int64), f"{prefix}/dfl_shape"),
            numpy_helper.from_array(np.arange(reg_max, dtype=np.float32).reshape(reg_max, 1), f"{prefix}/dfl_bins"),
            numpy_helper.from_array(np.array([1, 4, height, width], np.int64), f"{prefix}/box_shape"),
        ]
        # DFL: a softmax over the reg_max bins of each side, then its expectation. The bins go last, so that
        # Softmax means the same before opset 13 (which flattens from `axis` on) as after; OAK exports use 12.
        nodes += [
            helper.make_node("Reshape", [box_conv, f"{prefix}/dfl_shape"], [f"{prefix}/dfl"], name=f"{prefix}/Reshape"),
            helper.make_node("Transpose", [f"{prefix}/dfl"], [f"{prefix}/dfl_t"], perm=[0, 1, 3, 2],
                             name=f"{prefix}/Transpose"),
            helper.make_node("Softmax", [f"{prefix}/dfl_t"], [f"{prefix}/dfl_p"], axis=3, name=f"{prefix}/Softmax"),
            helper.make_node("MatMul", [f"{prefix}/dfl_p", f"{prefix}/dfl_bins"], [f"{prefix}/dist"],
                             name=f"{prefix}/Expectation"),
            helper.make_node("Reshape", [f"{prefix}/dist", f"{prefix}/box_shape"], [f"{prefix}/box"],
                             name=f"{prefix}/BoxReshape"),
            helper.make_node("Sigmoid", [class_conv], [f"{prefix}/scores"], name=f"{prefix}/Sigmoid"),
        ]
        if opset >= 18:  # ReduceMax takes its axes as an input from opset 18 on
            initializers.append(numpy_helper.from_array(np.array([1], np.int64), f"{prefix}/channel_axis"))
            nodes.append(helper.make_node("ReduceMax", [f"{prefix}/scores", f"{prefix}/channel_axis"],
                                          [f"{prefix}/conf"], keepdims=1, name=f"{prefix}/ReduceMax"))
        else:
            nodes.append(helper.make_node("ReduceMax", [f"{prefix}/scores"], [f"{prefix}/conf"], axes=[1],
                                          keepdims=1, name=f"{prefix}/ReduceMax"))
        name = RVC2_OUTPUT_NAMES[index] if index < len(RVC2_OUTPUT_NAMES) else f"output{index + 1}_yolov6r2"
        nodes.append(helper.make_node("Concat", [f"{prefix}/box", f"{prefix}/conf", f"{prefix}/scores"], [name],
                                      axis=1, name=f"{prefix}/Concat"))
        shape = [1, 4 + 1 + num_classes, height, width]
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
        shapes.append(shape)
    graph.node.extend(nodes)
    graph.initializer.extend(initializers)
    del graph.output[:]
    graph.output.extend(outputs)
    _prune(graph)
    onnx.checker.check_model(model)
    onnx.save(model, str(destination))
    return {"outputs": dict(zip([o.name for o in outputs], shapes, strict=True)), "reg_max": reg_max,
            "num_classes": num_classes, "levels": len(levels)}


def rvc2_detection_head(cache: ArtifactCache, onnx_artifact: Artifact) -> Artifact:
    """The variant's ONNX with the head DepthAI's on-device YOLO decoding reads (see rewrite_rvc2_head)."""
    precision = onnx_artifact.manifest.get("precision", "fp32")
    if precision != "fp32":
        raise BuildFailed(f"the on-device head is rewritten on the fp32 export, not a {precision} model: "
                          "the blob compiler makes it FP16")

    def build(work_dir: Path) -> BuildOutput:
        output = work_dir / f"{onnx_artifact.path.stem}_rvc2head.onnx"
        try:
            done = rewrite_rvc2_head(onnx_artifact.path, output)
        except ImportError:
            raise BuildFailed("rewriting the head for on-device decoding needs the onnx package "
                              "(pip install 'yolobench[oak]')") from None
        return BuildOutput(filename=output.name, manifest={
            **{k: onnx_artifact.manifest[k] for k in ("imgsz", "names", "precision", "opset", "input_name",
                                                       "input_shape") if k in onnx_artifact.manifest},
            "head": "rvc2 YOLO parser: per level (1, 4+1+nc, h, w) = DFL distances, max class score, class scores",
            **done,
        })

    from yolobench.stages.ultralytics_env import versions

    # "dfl": the DFL formulation, in the key so that heads rewritten the older way are not reused.
    return cache.get_or_build(HEAD_STAGE, {"outputs": list(RVC2_OUTPUT_NAMES), "dfl": "bins-last-matmul"},
                              onnx_artifact, versions(("onnx",)), build)


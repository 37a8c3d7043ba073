"""A tiny real ONNX model made with onnx.helper (no torch): input (1,3,32,32) -> Conv 3x3 (3->8) -> Relu ->
Conv 1x1 (8->8, optionally 2:4 structured-sparse) -> depthwise Conv 3x3 (group 8) -> output (1,8,32,32)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

INPUT_SHAPE = (1, 3, 32, 32)
OUTPUT_SHAPE = (1, 8, 32, 32)


def two_four_sparse(weight: np.ndarray) -> np.ndarray:
    """Zero the two smallest of every 4 consecutive input channels (axis 1)."""
    sparse = weight.copy()
    channels = sparse.shape[1]
    for start in range(0, channels, 4):
        block = sparse[:, start:start + 4]
        order = np.argsort(np.abs(block), axis=1)
        np.put_along_axis(block, order[:, :2], 0.0, axis=1)
    return sparse


def write_conv_model(path: Path, *, sparse_pointwise: bool = False, seed: int = 0, yolo_layout: bool = False) -> Path:
    """`yolo_layout`: reshape the output to (1, 8, 1024), i.e. 4 box values + 4 class scores per anchor, so
    the YOLO11 decoder and the latency harness can run on it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32)
    w2 = rng.normal(0, 0.3, (8, 8, 1, 1)).astype(np.float32)
    if sparse_pointwise:
        w2 = two_four_sparse(w2)
    w3 = rng.normal(0, 0.3, (8, 1, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["images", "w1"], ["a"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["b"], name="relu1"),
        helper.make_node("Conv", ["b", "w2"], ["c"], name="conv2"),
        helper.make_node("Conv", ["c", "w3"], ["d" if yolo_layout else "output0"], name="conv3_depthwise",
                         pads=[1, 1, 1, 1], group=8),
    ]
    output_shape = list(OUTPUT_SHAPE)
    initializers = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(w3, "w3")]
    if yolo_layout:
        output_shape = [1, 8, 32 * 32]
        initializers.append(numpy_helper.from_array(np.asarray(output_shape, np.int64), "yolo_shape"))
        nodes.append(helper.make_node("Reshape", ["d", "yolo_shape"], ["e"], name="to_anchors"))
        nodes.append(helper.make_node("Sigmoid", ["e"], ["output0"], name="scores"))
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, list(INPUT_SHAPE))],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, output_shape)],
        initializers,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path

"""Read-only questions about an ONNX graph (shapes, op counts, which nodes form the detection head or
a constant subgraph), asked by the build stages and the fusion report. Each takes an onnx.ModelProto;
only the shape inference in `detection_head_nodes` imports onnx."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any


def tensor_shape(value_info: Any) -> list[int | str]:
    """Shape of an ONNX graph input/output: ints, or the symbolic name of a dynamic axis."""
    return [d.dim_param if d.dim_param else d.dim_value for d in value_info.type.tensor_type.shape.dim]


def op_counts(model: Any) -> dict[str, int]:
    """Node count per op type of an onnx.ModelProto's main graph."""
    return dict(sorted(Counter(node.op_type for node in model.graph.node).items()))


def element_count(dims: Iterable[int]) -> int:
    """Number of elements of a tensor with these dimensions (1 for a scalar)."""
    count = 1
    for dim in dims:
        count *= int(dim)
    return count


def detection_head_nodes(model: Any) -> list[str]:
    """Names of the detection head's decode nodes: every node downstream of a Reshape that flattens a feature map.

    YOLO heads end in per-level convolutions whose (1, C, H, W) outputs are reshaped to (1, C, H*W) and
    concatenated; what follows (DFL softmax and its fixed conv, the box decode arithmetic, the class sigmoid, the
    output Concat) turns logits into pixels and probabilities. Found by structure, so renamed nodes do not matter.
    """
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    values = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in values if v.type.tensor_type.HasField("shape")}
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    flattens = [
        node for node in model.graph.node
        if node.op_type in ("Reshape", "Flatten") and ranks.get(node.input[0]) == 4 and ranks.get(node.output[0]) == 3
    ]  # fmt: skip
    found: dict[str, None] = {}
    pending = list(flattens)
    while pending:
        node = pending.pop()
        if node.name in found:
            continue
        found[node.name] = None
        for output in node.output:
            pending.extend(consumers.get(output, []))
    order = {node.name: index for index, node in enumerate(model.graph.node)}
    return sorted(found, key=order.__getitem__)


def constant_subgraph_nodes(model: Any) -> list[str]:
    """Names of nodes whose outputs do not depend on any graph input: constant arithmetic the exporter did not fold.

    Quantising them only rounds constants: e.g. with constant folding off, a Resize's scales come from a Concat of
    two Constants, and a quantised Concat turns the 2.0 upsampling factor into 1.99 (a wrong feature-map size).
    """
    live = {value.name for value in model.graph.input} - {tensor.name for tensor in model.graph.initializer}
    constant: list[str] = []
    for node in model.graph.node:  # ONNX graphs are topologically sorted
        if any(name in live for name in node.input if name):
            live.update(node.output)
        else:
            constant.append(node.name)
    return constant


def nodes_feeding_quantize(model: Any, names: Sequence[str]) -> list[str]:
    """Those of `names` whose output feeds a QuantizeLinear, i.e. nodes that would run in int8 after QDQ fusion."""
    quantize_inputs = {node.input[0] for node in model.graph.node if node.op_type == "QuantizeLinear"}
    wanted = set(names)
    return [n.name for n in model.graph.node if n.name in wanted and set(n.output) & quantize_inputs]


def io_casts(model: Any) -> dict[str, list[str]]:
    """Cast nodes reading a graph input or writing a graph output: what keep_io_types inserted."""
    inputs = {value.name for value in model.graph.input}
    outputs = {value.name for value in model.graph.output}
    casts = [node for node in model.graph.node if node.op_type == "Cast"]
    return {
        "inputs": sorted(node.name for node in casts if set(node.input) & inputs),
        "outputs": sorted(node.name for node in casts if set(node.output) & outputs),
    }


def ops_fed_by_casts(model: Any) -> dict[str, int]:
    """Per op type, the nodes fed by a Cast: in a graph ORT loaded from fp16, the ones it computes in fp32."""
    cast_outputs = {output for node in model.graph.node if node.op_type == "Cast" for output in node.output}
    fed = Counter(
        node.op_type for node in model.graph.node if node.op_type != "Cast" and set(node.input) & cast_outputs
    )
    return dict(sorted(fed.items()))

"""What ONNX Runtime fused for a run: the optimisations its graph optimisation level implies, and the evidence
read from the graph ORT actually runs, so a run says whether its int8 latency is int8 speed at all.

ONNX Runtime's CPU kernels run a QDQ model's Conv/Mul/... in integer arithmetic only after its QDQ fusion
(level `extended` and above) has rewritten DequantizeLinear -> op -> QuantizeLinear into QLinear* nodes; below
that, every quantised op runs in float with the quantise/dequantise work on top, slower than fp32.

Used by OnnxRuntime.facts; what other runtimes always fuse is their RuntimeInfo.mandatory_fusion, and what the
exporter fused is read from the export manifest by the sweep (tracking), for every runtime alike.
"""

from __future__ import annotations

import importlib.util

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from yolobench.runtimes.base import RunFacts
from yolobench.tracking import INT8_UNFUSED_TAG, ORT_FUSIONS_TAG

# Cumulative, as observed on YOLO11 graphs with ONNX Runtime 1.32's CPU EP (optimised graphs compared level by
# level; tests/test_fusion.py checks the QDQ line on a real model).
_ORT_BASIC = (
    "constant_folding",
    "redundant_node_elimination",  # Identity, Dropout, Unsqueeze/Reshape chains, duplicate DequantizeLinear
    "conv_batchnorm_add_mul_folding",  # an unfolded BatchNormalization disappears at this level
)
_ORT_EXTENDED = (
    *_ORT_BASIC,
    "qdq_to_integer_kernels",  # DequantizeLinear -> Conv -> QuantizeLinear becomes QLinearConv, likewise Mul, Add...
    "silu_to_quickgelu",  # x * Sigmoid(x) -> com.microsoft QuickGelu (fp32/fp16 only)
    "matmul_transpose_scale_fusion",
    "conv_activation_fusion",
)
ORT_LEVEL_FUSIONS: dict[str, tuple[str, ...]] = {
    "disable": (),
    "basic": _ORT_BASIC,
    "extended": _ORT_EXTENDED,
    "all": (*_ORT_EXTENDED, "nchwc_layout", "nhwc_layout_for_integer_kernels"),
}

# Kernels that compute in integer arithmetic (ORT CPU, contrib domain included).
_INTEGER_KERNELS = frozenset({"ConvInteger", "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul"})


def graph_op_counts(model_or_path: Any) -> dict[str, int]:
    """Node count per op type of an ONNX graph (a path or a ModelProto), e.g. {'QLinearConv': 87, ...}."""
    import onnx

    from yolobench.stages.onnx_graph import op_counts

    return op_counts(onnx.load(str(model_or_path)) if isinstance(model_or_path, (str, Path)) else model_or_path)


def int8_execution(op_counts: Mapping[str, int]) -> dict[str, int]:
    """How an optimised graph's quantised parts run: integer kernels, and the QDQ nodes ORT left standing."""
    integer = sum(n for op, n in op_counts.items() if op.startswith("QLinear") or op in _INTEGER_KERNELS)
    return {
        "integer_kernels": integer,
        "qlinear_conv": op_counts.get("QLinearConv", 0),
        "quantize_linear": op_counts.get("QuantizeLinear", 0),
        "dequantize_linear": op_counts.get("DequantizeLinear", 0),
    }


def ort_fusion_facts(level: str, precision: str, optimised_graph: Path | None, provider: str = "cpu") -> RunFacts:
    """What ORT fused at `level`, and for an int8 model whether it runs in integer kernels.

    The int8 verdict comes from the graph ORT optimised (`optimised_graph`, its optimized_model_filepath): an int8
    model with no integer kernel in it is tagged `yolobench.int8_unfused=true`. Without that graph the level
    decides on the CPU provider; under the TensorRT EP (which cannot save one) TensorRT's own builder takes the
    Q/DQ nodes, so no verdict is given."""
    fusions = ORT_LEVEL_FUSIONS[level]
    tags = {ORT_FUSIONS_TAG: ",".join(fusions) or "none"}
    params: dict[str, Any] = {"ort_fusions": tags[ORT_FUSIONS_TAG]}
    counts = None
    if optimised_graph is not None and Path(optimised_graph).is_file():
        if importlib.util.find_spec("onnx") is not None:
            counts = graph_op_counts(optimised_graph)
        else:  # a measuring host with the core install only: the level decides, as without the graph
            params["ort_graph"] = "not read: the onnx package is not installed"
    if counts is not None:
        params["ort_graph_nodes"] = sum(counts.values())
        params["ort_batchnorm_nodes"] = counts.get("BatchNormalization", 0)
        params["ort_cast_nodes"] = counts.get("Cast", 0)  # fp16: Casts around ops without an fp16 kernel
    if precision == "int8":
        if counts is not None:
            execution = int8_execution(counts)
            params.update({f"ort_{name}": value for name, value in execution.items()})
            tags[INT8_UNFUSED_TAG] = str(execution["integer_kernels"] == 0).lower()
        elif provider == "cpu":
            tags[INT8_UNFUSED_TAG] = str("qdq_to_integer_kernels" not in fusions).lower()
    return RunFacts(params=params, tags=tags)

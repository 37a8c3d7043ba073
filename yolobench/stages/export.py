"""Export stage: weights -> static-shape fp32 ONNX (batch 1, CPU) through Ultralytics' exporter.

The manifest records what the exporter does on its own (BatchNorm folding, constant folding, onnxslim),
each verified on this export, plus the model facts (params, GFLOPs, classes) a measuring host without
torch needs to log.
"""

from __future__ import annotations

import inspect
import shutil
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from yolobench.cache import Artifact, ArtifactCache, BuildFailed, BuildOutput
from yolobench.stages.ultralytics_env import ensure_prepared, versions

STAGE = "export"
STRIDE = 32  # YOLO11's largest stride: Ultralytics rounds other sizes up, which would break the imgsz axis


def tensor_shape(value_info: Any) -> list[int | str]:
    """Shape of an ONNX graph input/output: ints, or the symbolic name of a dynamic axis."""
    return [d.dim_param if d.dim_param else d.dim_value for d in value_info.type.tensor_type.shape.dim]


def op_counts(model: Any) -> dict[str, int]:
    """Node count per op type of an onnx.ModelProto's main graph."""
    return dict(sorted(Counter(node.op_type for node in model.graph.node).items()))


@contextmanager
def _observe_exporter(record: dict[str, Any]) -> Iterator[None]:
    """Watch, without changing, the two calls the Ultralytics ONNX exporter makes: torch.onnx.export and onnxslim.slim.

    Ultralytics swallows an onnxslim failure into a warning; recording the call is how we know it ran.
    """
    import onnxslim
    import torch

    original_export, original_slim = torch.onnx.export, onnxslim.slim
    export_defaults = {
        name: parameter.default for name, parameter in inspect.signature(original_export).parameters.items()
    }

    def export(*args: Any, **kwargs: Any) -> Any:
        record["torch_onnx_export"] = {
            name: kwargs.get(name, export_defaults.get(name))
            for name in ("opset_version", "dynamo", "do_constant_folding")
        }
        return original_export(*args, **kwargs)

    def slim(model: Any, *args: Any, **kwargs: Any) -> Any:
        nodes_before = len(model.graph.node)
        try:
            slimmed = original_slim(model, *args, **kwargs)
        except Exception as error:
            record["onnxslim"] = {"error": f"{error.__class__.__name__}: {error}"}
            raise
        record["onnxslim"] = {"nodes_before": nodes_before, "nodes_after": len(slimmed.graph.node)}
        return slimmed

    torch.onnx.export, onnxslim.slim = export, slim
    try:
        yield
    finally:
        torch.onnx.export, onnxslim.slim = original_export, original_slim


def _model_facts(weights_path: Path, imgsz: int) -> dict[str, Any]:
    """Params and GFLOPs of the model as deployed (BatchNorm fused), and its BatchNorm count before fusing."""
    import torch
    from ultralytics import YOLO
    from ultralytics.utils.torch_utils import get_flops, get_num_params

    model = YOLO(str(weights_path)).model
    model.float().eval()
    batchnorms = sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    fused = model.fuse()
    names = {int(k): str(v) for k, v in fused.names.items()}
    return {
        "params": int(get_num_params(fused)),
        "gflops": round(float(get_flops(fused, imgsz)), 4),
        "num_classes": len(names),
        "names": names,
        "batchnorm_modules_in_weights": int(batchnorms),
    }


def _applied_by_default(record: dict[str, Any], facts: dict[str, Any], counts: dict[str, int], simplify: bool) -> list:
    """The optimisations the exporter applied that no axis value shows, each with its evidence."""
    applied: list[dict[str, Any]] = []
    onnx_batchnorms = counts.get("BatchNormalization", 0)
    if facts["batchnorm_modules_in_weights"] and onnx_batchnorms:
        raise BuildFailed(f"export kept {onnx_batchnorms} BatchNormalization nodes: Ultralytics' fuse() did not run")
    if facts["batchnorm_modules_in_weights"]:
        applied.append(
            {
                "name": "batchnorm_folded_into_conv",
                "by": "ultralytics Exporter: model.fuse()",
                "evidence": {
                    "batchnorm_modules_in_weights": facts["batchnorm_modules_in_weights"],
                    "BatchNormalization_nodes_in_onnx": onnx_batchnorms,
                },
            }
        )
    exported = record.get("torch_onnx_export")
    if exported is None:
        raise BuildFailed("Ultralytics did not call torch.onnx.export; cannot tell what the graph went through")
    if exported["do_constant_folding"] and exported["dynamo"] is False:
        applied.append(
            {
                "name": "constant_folding",
                "by": "torch.onnx.export (TorchScript exporter, do_constant_folding=True)",
                "evidence": exported,
            }
        )
    if simplify:
        slimmed = record.get("onnxslim")
        if slimmed is None or "error" in slimmed:
            raise BuildFailed(f"simplify=True but onnxslim did not run cleanly: {slimmed}")
        applied.append({"name": "onnxslim_simplification", "by": "onnxslim.slim", "evidence": slimmed})
    return applied


def export_onnx(
    cache: ArtifactCache, weights: Artifact, imgsz: int, *, opset: int | None = None, simplify: bool = True
) -> Artifact:
    """Export `weights` to ONNX at a square `imgsz` (static shape, batch 1, fp32, no NMS in the graph)."""
    if imgsz % STRIDE:
        raise ValueError(f"imgsz must be a multiple of {STRIDE}, got {imgsz}")
    config = {"format": "onnx", "imgsz": imgsz, "opset": opset, "simplify": simplify, "batch": 1, "dynamic": False,
              "precision": "fp32", "nms": False, "device": "cpu"}  # fmt: skip

    def build(work_dir: Path) -> BuildOutput:
        ensure_prepared(cache.root / "ultralytics-home")
        import onnx
        from ultralytics import YOLO

        local_weights = work_dir / "model.pt"  # the exporter writes next to its input
        shutil.copyfile(weights.path, local_weights)
        record: dict[str, Any] = {}
        with _observe_exporter(record):
            exported = YOLO(str(local_weights)).export(
                format="onnx", imgsz=imgsz, opset=opset, simplify=simplify, dynamic=False, batch=1, device="cpu",
                nms=False,
            )  # fmt: skip
        onnx_path = Path(exported)
        if onnx_path.parent != work_dir:
            shutil.move(onnx_path, work_dir / onnx_path.name)
            onnx_path = work_dir / onnx_path.name
        facts = _model_facts(local_weights, imgsz)
        local_weights.unlink()

        model = onnx.load(str(onnx_path))
        input_shape, output_shape = tensor_shape(model.graph.input[0]), tensor_shape(model.graph.output[0])
        if input_shape != [1, 3, imgsz, imgsz]:
            raise BuildFailed(f"exported input shape {input_shape}, expected [1, 3, {imgsz}, {imgsz}]")
        counts = op_counts(model)
        return BuildOutput(
            filename=onnx_path.name,
            manifest={
                **facts,
                "imgsz": imgsz,
                "input_name": model.graph.input[0].name,
                "input_shape": input_shape,
                "output_name": model.graph.output[0].name,
                "output_shape": output_shape,  # (1, 4 + num_classes, anchors): boxes cx,cy,w,h then class scores
                "opset": next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                "precision": "fp32",
                "applied_by_default": _applied_by_default(record, facts, counts, simplify),
                "node_count": len(model.graph.node),
                "op_counts": counts,
                "initializer_elements": sum(_elements(t.dims) for t in model.graph.initializer),
            },
        )

    return cache.get_or_build(STAGE, config, weights, versions(("torch", "ultralytics", "onnx", "onnxslim")), build)


def _elements(dims: Any) -> int:
    count = 1
    for dim in dims:
        count *= int(dim)
    return count

"""Export stage: weights -> static-shape fp32 ONNX (batch 1, CPU) through Ultralytics' exporter.

Ultralytics' exporter folds BatchNorm into Conv, the torch exporter folds constants (and, in eval mode, BatchNorm
again) and onnxslim simplifies (and folds BatchNorm a third time). `ExportOptions` can switch each of them off, so a
"no fusion" baseline really has none; the manifest records which of them were applied and which were not, each
verified on this export, plus the model facts (params, GFLOPs, classes) a measuring host without torch needs to log.
"""

from __future__ import annotations

import inspect
import shutil
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from yolobench.cache import Artifact, ArtifactCache, BuildFailed, BuildOutput
from yolobench.stages.onnx_graph import element_count, op_counts, tensor_shape  # noqa: F401  (re-exported)
from yolobench.stages.ultralytics_env import ensure_prepared
from yolobench.versions import versions

STAGE = "export"
STRIDE = 32  # YOLO11's largest stride: Ultralytics rounds other sizes up, which would break the imgsz axis
# onnxslim's fusion patterns that fold BatchNormalization into the Conv before it (onnxslim 0.1.x names).
ONNXSLIM_BATCHNORM_FUSIONS = ("FusionConvBN", "FusionConvTransposeBN")


class ExportOptions(BaseModel):
    """What the exporter may optimise on its own; the defaults are Ultralytics' own behaviour (everything on).

    `fold_bn: false` keeps every BatchNormalization node (Ultralytics' fuse() leaves them in, the torch exporter's
    eval-mode Conv+BN peephole is skipped, onnxslim's Conv+BN fusion is skipped), so that ORT level `disable` runs the
    graph as trained. `opset: null` lets Ultralytics pick the newest opset its onnx supports.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    fold_bn: bool = True
    constant_folding: bool = True
    simplify: bool = True
    opset: int | None = Field(None, ge=11, le=23)


@contextmanager
def _control_exporter(record: dict[str, Any], options: ExportOptions) -> Iterator[None]:
    """Apply `options` to the three places the Ultralytics ONNX exporter optimises, and record each call as made.

    - ultralytics.nn.tasks.fuse_conv_and_bn / fuse_deconv_and_bn (called by model.fuse(), which the exporter always
      calls): with fold_bn off they return the conv followed by its BatchNorm, so fuse() still does everything else
      it does (branch re-parameterisation, head clean-up) and the forward pass is unchanged.
    - torch.onnx.export: do_constant_folding as asked; with fold_bn off and folding on, training=PRESERVE, because
      the TorchScript exporter's eval-mode peephole (run with constant folding) folds Conv+BatchNorm.
    - onnxslim.slim: with fold_bn off, its Conv+BatchNorm fusions are skipped. Ultralytics swallows an onnxslim
      failure into a warning; recording the call is how we know it ran.
    """
    import onnxslim
    import torch
    from ultralytics.nn import tasks

    originals = (torch.onnx.export, onnxslim.slim, tasks.fuse_conv_and_bn, tasks.fuse_deconv_and_bn)
    record["batchnorm_kept_by_fuse"] = 0

    def keep_batchnorm(conv: Any, bn: Any) -> Any:
        record["batchnorm_kept_by_fuse"] += 1
        return torch.nn.Sequential(conv, bn)

    torch.onnx.export = _controlled_export(torch.onnx.export, record, options)
    onnxslim.slim = _controlled_slim(onnxslim.slim, record, options)
    if not options.fold_bn:
        tasks.fuse_conv_and_bn = tasks.fuse_deconv_and_bn = keep_batchnorm
    try:
        yield
    finally:
        torch.onnx.export, onnxslim.slim, tasks.fuse_conv_and_bn, tasks.fuse_deconv_and_bn = originals


def _controlled_export(
    original_export: Callable[..., Any], record: dict[str, Any], options: ExportOptions
) -> Callable[..., Any]:
    """torch.onnx.export with constant folding as `options` ask, recording the arguments it was called with."""
    import torch

    export_defaults = {
        name: parameter.default for name, parameter in inspect.signature(original_export).parameters.items()
    }

    def export(*args: Any, **kwargs: Any) -> Any:
        kwargs["do_constant_folding"] = options.constant_folding
        if not options.fold_bn and options.constant_folding:
            kwargs["training"] = torch.onnx.TrainingMode.PRESERVE  # the model is in eval mode: BN stays inference BN
        record["torch_onnx_export"] = {
            name: kwargs.get(name, export_defaults.get(name))
            for name in ("opset_version", "dynamo", "do_constant_folding")
        }
        record["torch_onnx_export"]["training"] = str(kwargs.get("training", export_defaults.get("training")))
        if "training" not in kwargs:
            return original_export(*args, **kwargs)
        if getattr(args[0] if args else kwargs.get("model"), "training", False):
            raise BuildFailed("the exporter left the model in training mode; PRESERVE would export training BatchNorm")
        with warnings.catch_warnings():  # torch warns about PRESERVE + folding whatever the mode; the model is in eval
            warnings.filterwarnings("ignore", message="It is recommended that constant folding be turned off")
            return original_export(*args, **kwargs)

    return export


def _controlled_slim(
    original_slim: Callable[..., Any], record: dict[str, Any], options: ExportOptions
) -> Callable[..., Any]:
    """onnxslim.slim without its Conv+BatchNorm fusions when `options.fold_bn` is off, recording what it did."""

    def slim(model: Any, *args: Any, **kwargs: Any) -> Any:
        if not options.fold_bn:
            kwargs["skip_fusion_patterns"] = [*(kwargs.get("skip_fusion_patterns") or []), *ONNXSLIM_BATCHNORM_FUSIONS]
        nodes_before = len(model.graph.node)
        try:
            slimmed = original_slim(model, *args, **kwargs)
        except Exception as error:
            record["onnxslim"] = {"error": f"{error.__class__.__name__}: {error}"}
            raise
        record["onnxslim"] = {"nodes_before": nodes_before, "nodes_after": len(slimmed.graph.node),
                              "skip_fusion_patterns": list(kwargs.get("skip_fusion_patterns") or [])}  # fmt: skip
        return slimmed

    return slim


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


def _fusion_record(
    record: dict[str, Any], facts: dict[str, Any], counts: dict[str, int], options: ExportOptions
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(applied, not applied): the exporter's own optimisations, each with its evidence from this export.

    A claim the graph contradicts (BatchNorm asked to be folded but still there, or kept but gone) fails the build.
    """
    applied: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    weights_batchnorms = facts["batchnorm_modules_in_weights"]
    onnx_batchnorms = counts.get("BatchNormalization", 0)
    batchnorm = {"batchnorm_modules_in_weights": weights_batchnorms, "BatchNormalization_nodes_in_onnx": onnx_batchnorms}
    if options.fold_bn:
        if weights_batchnorms and onnx_batchnorms:
            raise BuildFailed(f"export kept {onnx_batchnorms} BatchNormalization nodes: Ultralytics' fuse() did not run")
        if weights_batchnorms:
            applied.append({"name": "batchnorm_folded_into_conv", "by": "ultralytics Exporter: model.fuse()",
                            "evidence": batchnorm})  # fmt: skip
    elif weights_batchnorms:
        if onnx_batchnorms != record["batchnorm_kept_by_fuse"] or not onnx_batchnorms:
            raise BuildFailed(
                f"export.fold_bn=false, but the graph has {onnx_batchnorms} BatchNormalization nodes for "
                f"{record['batchnorm_kept_by_fuse']} BatchNorms fuse() left in: something else folded them"
            )
        skipped.append({"name": "batchnorm_folded_into_conv", "because": "export.fold_bn=false",
                        "evidence": {**batchnorm, "batchnorm_kept_by_fuse": record["batchnorm_kept_by_fuse"]}})  # fmt: skip
    exported = record.get("torch_onnx_export")
    if exported is None:
        raise BuildFailed("Ultralytics did not call torch.onnx.export; cannot tell what the graph went through")
    if exported["do_constant_folding"] and exported["dynamo"] is False:
        applied.append({"name": "constant_folding",
                        "by": "torch.onnx.export (TorchScript exporter, do_constant_folding=True)",
                        "evidence": exported})  # fmt: skip
    elif not exported["do_constant_folding"]:
        skipped.append({"name": "constant_folding", "because": "export.constant_folding=false", "evidence": exported})
    slimmed = record.get("onnxslim")
    if options.simplify:
        if slimmed is None or "error" in slimmed:
            raise BuildFailed(f"simplify=True but onnxslim did not run cleanly: {slimmed}")
        applied.append({"name": "onnxslim_simplification", "by": "onnxslim.slim", "evidence": slimmed})
    else:
        if slimmed is not None:
            raise BuildFailed("export.simplify=false, but Ultralytics called onnxslim")
        skipped.append({"name": "onnxslim_simplification", "because": "export.simplify=false",
                        "evidence": {"onnxslim_called": False}})  # fmt: skip
    return applied, skipped


def export_onnx(cache: ArtifactCache, weights: Artifact, imgsz: int, options: ExportOptions | None = None) -> Artifact:
    """Export `weights` to ONNX at a square `imgsz` (static shape, batch 1, fp32, no NMS in the graph)."""
    if imgsz % STRIDE:
        raise ValueError(f"imgsz must be a multiple of {STRIDE}, got {imgsz}")
    options = options or ExportOptions()
    config = {"format": "onnx", "imgsz": imgsz, **options.model_dump(), "batch": 1, "dynamic": False,
              "precision": "fp32", "nms": False, "device": "cpu"}  # fmt: skip

    def build(work_dir: Path) -> BuildOutput:
        ensure_prepared(cache.root / "ultralytics-home")
        import onnx
        from ultralytics import YOLO

        local_weights = work_dir / "model.pt"  # the exporter writes next to its input
        shutil.copyfile(weights.path, local_weights)
        record: dict[str, Any] = {}
        with _control_exporter(record, options):
            exported = YOLO(str(local_weights)).export(
                format="onnx", imgsz=imgsz, opset=options.opset, simplify=options.simplify, dynamic=False, batch=1,
                device="cpu", nms=False,
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
        applied, not_applied = _fusion_record(record, facts, counts, options)
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
                "export_options": options.model_dump(),
                "applied_by_default": applied,  # exactly what this graph went through
                "not_applied": not_applied,  # what the options switched off, with the graph's evidence
                "node_count": len(model.graph.node),
                "op_counts": counts,
                "initializer_elements": sum(element_count(t.dims) for t in model.graph.initializer),
            },
        )

    return cache.get_or_build(STAGE, config, weights, versions(("torch", "ultralytics", "onnx", "onnxslim")), build)


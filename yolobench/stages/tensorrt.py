"""TensorRT stage: the variant's ONNX artifact (fp32, fp16 or int8 Q/DQ) -> a serialized engine for this GPU.

The engine is the variant's compiled artifact. Its cache key holds the GPU name, compute capability and
TensorRT version beside the build settings, because an engine only deserialises where it was built. One
timing cache per (GPU, TensorRT version) is kept in the artifact cache and reused by every build, so the
second build of a model (another optimisation level, sparsity on) does not time every tactic again.

Precision comes from the artifact, the way each TensorRT generation wants it:
- TensorRT 10 (weak typing; JetPack 6 ships 10.3): fp16 sets BuilderFlag.FP16; int8 sets INT8 and FP16
  (layers outside Q/DQ pairs may then run in fp16, TensorRT's usual int8 recipe), and quantisation is
  explicit: the scales are the Q/DQ nodes the int8 stage wrote. No calibrator: TensorRT 10 deprecated
  implicit-quantisation calibrators and TensorRT 11 removed them.
- TensorRT 11 (strong typing only; BuilderFlag.FP16/INT8 are gone): the network is STRONGLY_TYPED and runs
  in the types the ONNX graph declares: fp16 from the fp16 stage's weights, int8 from the Q/DQ nodes.
Only `tensorrt` (and onnx, optionally, for the weight-sparsity check) is needed: no torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from yolobench.cache import Artifact, ArtifactCache, BuildFailed, BuildOutput, file_lock
from yolobench.gpu import GpuIdentity, gpu_identity

STAGE = "tensorrt"
ENGINE_FILENAME = "model.engine"
TIMING_CACHE_DIR = "tensorrt-timing-cache"
PRECISIONS = ("fp32", "fp16", "int8")
SPARSITY_NOTE = (
    "BuilderFlag.SPARSE_WEIGHTS only lets TensorRT choose sparse tensor-core kernels for weights that already "
    "have 2:4 structured sparsity (at most 2 non-zeros in every group of 4 consecutive input channels, Ampere "
    "or newer); dense weights, as trained by default, build and run as without the flag"
)
QUANTIZATION_NOTE = (
    "explicit quantisation: scales and zero points are the Q/DQ nodes of the int8 ONNX artifact; no INT8 "
    "calibrator (deprecated in TensorRT 10, removed in 11)"
)
# Facts of the ONNX model that stay true for its engine, so the engine's manifest stands alone.
_INHERITED_KEYS = ("params", "gflops", "num_classes", "names", "imgsz", "input_name", "input_shape", "output_name",
                   "output_shape", "opset")  # fmt: skip


class TensorRTUnavailable(RuntimeError):
    """The tensorrt package cannot be imported here."""


def import_tensorrt() -> Any:
    """The TensorRT Python module: `tensorrt`, or the bare `tensorrt_bindings` of the split pip wheels."""
    try:
        import tensorrt

        return tensorrt
    except (ImportError, OSError) as error:  # OSError: the package is there but its libnvinfer is not
        first = error
    try:
        import tensorrt_bindings

        return tensorrt_bindings
    except (ImportError, OSError) as second:
        absent = isinstance(second, ModuleNotFoundError) and second.name == "tensorrt_bindings"
        detail = str(first) if absent else f"{first}; tensorrt_bindings: {second}"
        raise TensorRTUnavailable(
            f"package tensorrt is not importable ({detail}); install it with pip install 'yolobench[trt]' "
            "(tensorrt-cu12 or tensorrt-cu13 to match the driver) or use the one JetPack ships"
        ) from None


@dataclass(frozen=True)
class EngineSettings:
    """What a variant asks of the builder."""

    precision: str
    builder_optimization_level: int = 3  # TensorRT's default
    sparsity: bool = False
    workspace_mb: int = 1024  # builder workspace pool limit; small GPUs (Orin Nano 4 GB) share it with the host

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not 0 <= self.builder_optimization_level <= 5:
            raise ValueError(f"builder_optimization_level must be 0..5, got {self.builder_optimization_level}")
        if self.workspace_mb < 1:
            raise ValueError(f"workspace_mb must be >= 1, got {self.workspace_mb}")


@dataclass(frozen=True)
class BuilderPlan:
    """The exact switches a build sets, by enum member name (so they can be keyed, recorded and tested)."""

    typing: str  # "weak" (TensorRT <= 10: precision flags) or "strong" (TensorRT 11: types from the graph)
    network_flags: tuple[str, ...]
    builder_flags: tuple[str, ...]


def typing_mode(trt: Any) -> str:
    """Weak typing where the installed TensorRT still has precision flags (<= 10), strong typing otherwise."""
    return "weak" if hasattr(trt.BuilderFlag, "FP16") else "strong"


def builder_plan(trt: Any, settings: EngineSettings) -> BuilderPlan:
    typing = typing_mode(trt)
    network_flags: tuple[str, ...] = ()
    builder_flags: list[str] = []
    if typing == "weak":
        # TensorRT 10 networks are always explicit-batch (the EXPLICIT_BATCH flag is deprecated and ignored),
        # and Q/DQ nodes switch the builder to explicit quantisation once INT8 is allowed.
        builder_flags += {"fp32": [], "fp16": ["FP16"], "int8": ["INT8", "FP16"]}[settings.precision]
    elif hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        network_flags = ("STRONGLY_TYPED",)  # the default in TensorRT 11; said explicitly so the record is plain
    if settings.sparsity:
        builder_flags.append("SPARSE_WEIGHTS")
    return BuilderPlan(typing, network_flags, tuple(builder_flags))


def engine_versions(trt: Any, gpu: GpuIdentity) -> dict[str, str]:
    """The cache-key versions of an engine: TensorRT's version and the GPU it runs on."""
    return {"tensorrt": str(trt.__version__), **gpu.cache_versions()}


def timing_cache_path(cache_root: Path, versions: Mapping[str, str]) -> Path:
    """One timing cache per (GPU, compute capability, TensorRT version): timings are only valid there."""
    digest = hashlib.sha256(json.dumps(dict(versions), sort_keys=True).encode()).hexdigest()[:20]
    return Path(cache_root) / TIMING_CACHE_DIR / f"{digest}.timing"


def _flag_bits(enum: Any, names: tuple[str, ...]) -> int:
    bits = 0
    for name in names:
        bits |= 1 << int(getattr(enum, name))
    return bits


def _recording_logger(trt: Any) -> Any:
    """A TensorRT logger that keeps INFO and worse messages: errors explain a failed build, and the
    builder's "(Sparsity) ..." lines say which layers could use sparse kernels."""

    class RecordingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: list[tuple[str, str]] = []

        def log(self, severity: Any, msg: str) -> None:
            name = getattr(severity, "name", str(severity))
            if name != "VERBOSE":
                self.messages.append((name, str(msg)))

    return RecordingLogger()


def _save_timing_cache(path: Path, builder_config: Any, timing_cache: Any) -> int:
    """Write the build's timing cache back, merged with what other builds saved meanwhile; atomically."""
    with file_lock(path.with_suffix(".lock")):
        current = timing_cache
        if path.is_file():
            on_disk = builder_config.create_timing_cache(path.read_bytes())
            on_disk.combine(timing_cache, False)
            current = on_disk
        data = bytes(memoryview(current.serialize()))
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_bytes(data)
        os.replace(temporary, path)
    return len(data)


def _names_after_colon(message: str) -> list[str]:
    tail = message.split(":", 1)[1] if ":" in message else ""
    return [name.strip() for name in tail.split(",") if name.strip()]


def builder_sparsity_report(messages: list[tuple[str, str]]) -> dict[str, Any]:
    """What the builder said about sparsity: eligible layers, layers given sparse kernels, the raw lines.

    A list is None when the builder printed no such line (versions differ in what they print)."""
    lines = [message for _, message in messages if "sparse" in message.lower() or "sparsity" in message.lower()]
    eligible: list[str] | None = None
    picked: list[str] | None = None
    for line in lines:
        lower = line.lower()
        if "eligible" in lower:
            eligible = (eligible or []) + _names_after_colon(line)
        elif "picked sparse" in lower or "sparse implementation" in lower:
            picked = (picked or []) + _names_after_colon(line)
    return {"builder_eligible_layers": eligible, "builder_sparse_layers": picked, "builder_messages": lines[:20]}


def is_two_four_sparse(weight: np.ndarray) -> bool:
    """Whether a conv weight (K, C, kh, kw) has at most 2 non-zeros in every 4 consecutive input channels."""
    if weight.ndim < 2:
        return False
    channels_last = np.moveaxis(weight, 1, -1)
    pad = (-channels_last.shape[-1]) % 4
    if pad:
        channels_last = np.concatenate(
            [channels_last, np.zeros((*channels_last.shape[:-1], pad), channels_last.dtype)], axis=-1
        )
    groups = channels_last.reshape(-1, 4)
    return bool(np.count_nonzero(groups, axis=1).max(initial=0) <= 2)


def onnx_weight_sparsity(model_path: Path) -> dict[str, Any]:
    """How many dense (group=1) Conv layers of an ONNX model have 2:4-sparse weights: the ones
    SPARSE_WEIGHTS could speed up. Follows DequantizeLinear/Cast to the stored weight."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        return {"checked": False, "reason": "onnx is not installed on this host"}
    model = onnx.load(str(model_path))
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    producers = {output: node for node in model.graph.node for output in node.output}

    def stored_weight(name: str) -> Any:
        for _ in range(4):
            if name in initializers:
                return initializers[name]
            node = producers.get(name)
            if node is None or node.op_type not in ("DequantizeLinear", "Cast", "Identity"):
                return None
            name = node.input[0]
        return None

    conv_layers, sparse_layers = 0, []
    for node in model.graph.node:
        if node.op_type != "Conv" or len(node.input) < 2:
            continue
        group = next((attribute.i for attribute in node.attribute if attribute.name == "group"), 1)
        weight = stored_weight(node.input[1])
        if weight is None or group != 1:
            continue
        conv_layers += 1
        if is_two_four_sparse(numpy_helper.to_array(weight)):
            sparse_layers.append(node.name)
    return {"checked": True, "dense_conv_layers": conv_layers, "two_four_sparse_layers": len(sparse_layers),
            "two_four_sparse_examples": sparse_layers[:10]}  # fmt: skip


def tensorrt_qdq_problems(model_path: Path) -> list[str]:
    """Why TensorRT would refuse a Q/DQ model: it takes signed int8 with zero point 0 (symmetric) only, while
    ONNX Runtime's default static recipe (uint8 activations, asymmetric) suits x86 CPUs. [] when fine or unknown."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        return []
    model = onnx.load(str(model_path))
    constants = {tensor.name: tensor for tensor in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].HasField("t"):
            constants[node.output[0]] = node.attribute[0].t
    unsigned, asymmetric = 0, 0
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3 or not node.input[2]:
            continue
        zero_point = constants.get(node.input[2])
        if zero_point is None:
            continue
        values = numpy_helper.to_array(zero_point)
        if values.dtype == np.uint8:
            unsigned += 1
        elif np.any(values != 0):
            asymmetric += 1
    problems = []
    if unsigned:
        problems.append(f"{unsigned} Q/DQ nodes are uint8 (TensorRT takes signed int8 only)")
    if asymmetric:
        problems.append(f"{asymmetric} Q/DQ nodes have non-zero zero points (TensorRT takes symmetric quantisation only)")
    return problems


def _io_description(network: Any) -> dict[str, list[dict[str, Any]]]:
    def describe(tensor: Any) -> dict[str, Any]:
        return {"name": tensor.name, "shape": [int(d) for d in tensor.shape], "dtype": str(tensor.dtype)}

    return {
        "network_inputs": [describe(network.get_input(i)) for i in range(network.num_inputs)],
        "network_outputs": [describe(network.get_output(i)) for i in range(network.num_outputs)],
    }


def _has_qdq(artifact: Artifact) -> bool:
    counts = artifact.manifest.get("op_counts")
    if counts is not None:
        return bool(counts.get("QuantizeLinear") or counts.get("DequantizeLinear"))
    return True  # a manifest without op counts (an artifact made elsewhere): let the builder decide


def _check_source(onnx_artifact: Artifact, settings: EngineSettings) -> None:
    declared = onnx_artifact.manifest.get("precision")
    if declared is not None and declared != settings.precision:
        raise ValueError(f"engine precision {settings.precision!r} asked of a {declared!r} ONNX artifact")
    if settings.precision == "int8" and not _has_qdq(onnx_artifact):
        raise ValueError("int8 engines are built from the int8 stage's Q/DQ model; this artifact has no Q/DQ nodes")


def engine_config(settings: EngineSettings, plan: BuilderPlan) -> dict[str, Any]:
    """The engine's cache-key config: every builder setting and switch."""
    return {
        "precision": settings.precision,
        "builder_optimization_level": settings.builder_optimization_level,
        "sparsity": settings.sparsity,
        "workspace_mb": settings.workspace_mb,
        "typing": plan.typing,
        "network_flags": list(plan.network_flags),
        "builder_flags": list(plan.builder_flags),
    }


@dataclass
class _EngineBuild:
    """One engine build: what goes in, and what the builder left behind for the manifest."""

    trt: Any
    gpu: GpuIdentity
    plan: BuilderPlan
    settings: EngineSettings
    source: Artifact
    versions: dict[str, str]
    timing_path: Path
    cache_root: Path

    def run(self, work_dir: Path) -> BuildOutput:
        """Parse, build, write the engine and the merged timing cache; return the engine and its manifest."""
        trt, settings = self.trt, self.settings
        if settings.precision == "int8" and (problems := tensorrt_qdq_problems(self.source.path)):
            raise BuildFailed(
                f"the int8 artifact cannot become a TensorRT engine: {'; '.join(problems)}. Quantise for TensorRT "
                "with `int8: {activation_type: s8, weight_type: s8, symmetric: true}` in the sweep file"
            )
        logger = _recording_logger(trt)
        builder = trt.Builder(logger)
        network = builder.create_network(_flag_bits(trt.NetworkDefinitionCreationFlag, self.plan.network_flags))
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(self.source.path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BuildFailed(f"TensorRT could not parse {self.source.path.name}: {errors[:2000]}")
        builder_config = builder.create_builder_config()
        builder_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mb * 2**20)
        builder_config.builder_optimization_level = settings.builder_optimization_level
        for name in self.plan.builder_flags:
            builder_config.set_flag(getattr(trt.BuilderFlag, name))
        loaded = self.timing_path.read_bytes() if self.timing_path.is_file() else b""
        timing_cache = builder_config.create_timing_cache(loaded)
        # ignore_mismatch=False: a cache from another GPU or TensorRT is refused rather than used blind.
        builder_config.set_timing_cache(timing_cache, False)
        started = time.perf_counter()
        serialized = builder.build_serialized_network(network, builder_config)
        engine_build_s = time.perf_counter() - started
        if serialized is None:
            errors = [message for severity, message in logger.messages if severity in ("ERROR", "INTERNAL_ERROR")]
            raise BuildFailed(f"TensorRT could not build the engine: {'; '.join(errors)[:2000] or 'no error logged'}")
        engine_path = work_dir / ENGINE_FILENAME
        engine_path.write_bytes(memoryview(serialized))
        saved = _save_timing_cache(self.timing_path, builder_config, timing_cache)
        tf32 = builder_config.get_flag(trt.BuilderFlag.TF32) if hasattr(trt.BuilderFlag, "TF32") else None
        timing = {"file": str(self.timing_path.relative_to(self.cache_root)), "loaded_bytes": len(loaded),
                  "saved_bytes": saved}  # fmt: skip
        facts = {"tf32": tf32, "timing_cache": timing, "engine_build_s": round(engine_build_s, 3),
                 "engine_bytes": engine_path.stat().st_size, **_io_description(network)}  # fmt: skip
        return BuildOutput(filename=ENGINE_FILENAME, manifest=self.manifest(logger.messages, facts))

    def manifest(self, messages: list[tuple[str, str]], facts: dict[str, Any]) -> dict[str, Any]:
        """What the engine's manifest records: the model's facts it inherits, and how the builder made it."""
        settings, source = self.settings, self.source
        sparsity: dict[str, Any] = {"requested": settings.sparsity, "note": SPARSITY_NOTE,
                                    "onnx_weights": onnx_weight_sparsity(source.path)}  # fmt: skip
        if settings.sparsity:
            sparsity.update(builder_sparsity_report(messages))
        return {
            **{key: source.manifest[key] for key in _INHERITED_KEYS if key in source.manifest},
            "precision": settings.precision,
            "tensorrt_version": self.versions["tensorrt"],
            "gpu": self.gpu.name,
            "compute_capability": self.gpu.compute_capability,
            "driver": self.gpu.driver,
            "typing": self.plan.typing,
            "network_flags": list(self.plan.network_flags),
            "builder_flags": list(self.plan.builder_flags),
            "builder_optimization_level": settings.builder_optimization_level,
            "workspace_bytes": settings.workspace_mb * 2**20,
            "quantization": QUANTIZATION_NOTE if settings.precision == "int8" else None,
            "sparsity": sparsity,
            **facts,
            "applied_by_default": [
                *source.manifest.get("applied_by_default", []),
                {"name": "tensorrt_layer_fusion_and_tactic_selection", "by": "TensorRT builder (always on)"},
            ],
            "builder_warnings": [m for s, m in messages if s == "WARNING"][:20],
        }


def build_engine(
    cache: ArtifactCache,
    onnx_artifact: Artifact,
    settings: EngineSettings,
    *,
    trt: Any | None = None,
    gpu: GpuIdentity | None = None,
) -> Artifact:
    """Build (once per GPU, TensorRT version and settings) the engine of `onnx_artifact` and cache it."""
    _check_source(onnx_artifact, settings)
    trt = trt if trt is not None else import_tensorrt()
    gpu = gpu if gpu is not None else gpu_identity()
    plan = builder_plan(trt, settings)
    versions = engine_versions(trt, gpu)
    build = _EngineBuild(trt, gpu, plan, settings, onnx_artifact, versions, timing_cache_path(cache.root, versions),
                         cache.root)  # fmt: skip
    return cache.get_or_build(STAGE, engine_config(settings, plan), onnx_artifact, versions, build.run)

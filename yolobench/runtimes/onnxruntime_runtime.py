"""ONNX Runtime: execution provider (CPU, CUDA, TensorRT) with its provider options, graph optimisation
level and threads. The model ORT optimised at that level (optimized_model_filepath) is the session's
`output_path`, which `facts` reads to say what ORT fused. Under the TensorRT EP, whose compiled nodes ORT
cannot save in a graph, `compile` builds TensorRT's engines once into a cached artifact (keyed with the GPU and
the library versions) and `open` loads them from there.

GPU providers run through IO binding: the input lives in a device buffer that each call overwrites in
place, the output is bound to a preallocated device buffer, and only the output is copied back. `infer`
must return host numpy (post-processing and mAP run on the host), so the latency harness's "inference"
figure includes both copies; each phase is also timed apart (PhaseTimings) and reported as gpu_* metrics.

Imports without pydantic: scripts/gpu_check.py runs `open_ort_session` on a bare GPU host."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import psutil

from yolobench.cache import Artifact, ArtifactCache, BuildOutput
from yolobench.errors import ModelMismatch, RuntimeUnavailable
from yolobench.keys import digest
from yolobench.runtimes import catalog
from yolobench.runtimes.base import Availability, AxisValue, Check, DecodeSettings, RunFacts, Runtime, SessionBase
from yolobench.runtimes.timing import HOST_CLOCK_SYNCHRONIZED, PhaseTimings

if TYPE_CHECKING:
    from yolobench.runtimes.options import OnnxRuntimeOptions

PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
# Where a provider keeps its tensors: IO binding to that device saves the copies ORT would make per run.
BINDING_DEVICE = {"CPUExecutionProvider": None, "CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "cuda"}
ORT_TENSORRT_CACHE_DIR = "ort-tensorrt"  # shared timing caches of the TensorRT EP, one folder per GPU and versions
ORT_TENSORRT_STAGE = "ort_tensorrt"  # the TensorRT EP's engines of one model: the compiled artifact
ENGINES_INDEX = "engines.json"
_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def graph_optimization_level(name: str) -> Any:
    import onnxruntime as ort

    return {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[name]


def io_binding_device(providers_in_use: list[str]) -> str | None:
    """The device to bind inputs/outputs on, from the provider ORT actually put first; None = plain run()."""
    return BINDING_DEVICE.get(providers_in_use[0]) if providers_in_use else None


def provider_options(provider: str, precision: str, user_options: dict[str, Any],
                     trt_cache_dir: Path | None = None, timing_cache_dir: Path | None = None) -> list[dict[str, Any]]:
    """Options for each provider of PROVIDERS[provider]; the user's sweep options go to the first and win.

    TensorRT EP defaults: engine and timing caches on (engines in `trt_cache_dir`, timings in `timing_cache_dir`,
    default the same folder: a rebuild per run would be counted as part of every run) and fp16/int8 kernels allowed
    for fp16/int8 artifacts (TensorRT 10 semantics; an int8 artifact is Q/DQ, so int8 is explicit quantisation, no
    calibration table)."""
    names = PROVIDERS[provider]
    options: list[dict[str, Any]] = [{} for _ in names]
    for index, name in enumerate(names):
        if name in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
            options[index]["device_id"] = 0
    if provider == "tensorrt":
        if trt_cache_dir is None:
            raise ValueError("the TensorRT EP needs an engine cache directory")
        options[0].update({
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(trt_cache_dir),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(timing_cache_dir or trt_cache_dir),
            "trt_fp16_enable": precision in ("fp16", "int8"),
            "trt_int8_enable": precision == "int8",
        })  # fmt: skip
    options[0].update(user_options)
    return options


def ort_tensorrt_versions() -> dict[str, str]:
    """What a TensorRT EP engine is only valid for: the GPU and the library versions. ORT names its engine files
    by model hash and compute capability, not by TensorRT version."""
    from yolobench.gpu import GpuUnavailable, gpu_identity, installed_version

    try:
        gpu: dict[str, str] = gpu_identity().cache_versions()
    except GpuUnavailable:
        gpu = {"gpu": "unknown"}
    return {
        **gpu,
        "onnxruntime": installed_version("onnxruntime-gpu", "onnxruntime"),
        "tensorrt": installed_version("tensorrt", "tensorrt-cu13-libs", "tensorrt-cu12-libs", "tensorrt-libs"),
    }


def ort_tensorrt_cache_dir(cache_root: Path) -> Path:
    """Timing cache folder of the ORT TensorRT EP in the artifact cache, one per GPU and library versions."""
    return Path(cache_root) / ORT_TENSORRT_CACHE_DIR / digest(ort_tensorrt_versions())


class OrtSession(SessionBase):
    """One InferenceSession. `provider` is the sweep's provider name (cpu, cuda, tensorrt); `output_path` the
    graph ORT optimised, where it could save one."""

    def __init__(self, session: Any, level: str, threads: int, inter_op_threads: int,
                 binding_device: str | None = None, *, provider: str = "cpu", output_path: Path | None = None,
                 session_open_s: float = 0.0) -> None:
        self._session = session
        model_input, model_output = session.get_inputs()[0], session.get_outputs()[0]
        self._input_name = model_input.name
        self._output_names = [model_output.name]
        self._level = level
        self._threads = threads
        self._inter_op_threads = inter_op_threads
        self._binding = None
        self.provider = provider
        self.output_path = output_path
        self.session_open_s = session_open_s
        self.binding_device = binding_device
        self._executed_graph: str | None = None
        if binding_device is not None:
            self._bind(model_input, model_output, binding_device)

    def _bind(self, model_input: Any, model_output: Any, device: str) -> None:
        """Preallocate the input and output on `device` once; each call then only copies in and out."""
        import onnxruntime as ort

        def static(shape: list[Any]) -> list[int] | None:
            return [int(d) for d in shape] if all(isinstance(d, int) for d in shape) else None

        input_shape = static(model_input.shape)
        if input_shape is None:
            raise ModelMismatch(f"IO binding needs a static input shape, the model has {model_input.shape}")
        self._input_dtype = _NUMPY_TYPES[model_input.type]
        self._input_value = ort.OrtValue.ortvalue_from_numpy(np.zeros(input_shape, self._input_dtype), device, 0)
        binding = self._session.io_binding()
        binding.bind_ortvalue_input(self._input_name, self._input_value)
        output_shape = static(model_output.shape)
        if output_shape is not None:
            output_value = ort.OrtValue.ortvalue_from_shape_and_type(
                output_shape, _NUMPY_TYPES[model_output.type], device, 0
            )
            binding.bind_ortvalue_output(model_output.name, output_value)
            self._output_value = output_value
        else:
            binding.bind_output(model_output.name, device, 0)
        self._binding = binding
        self.phase_timings = PhaseTimings(HOST_CLOCK_SYNCHRONIZED)

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        if self._binding is None:
            return self._session.run(self._output_names, {self._input_name: tensor})[0]
        started = time.perf_counter()
        self._input_value.update_inplace(np.ascontiguousarray(tensor, dtype=self._input_dtype))  # host -> device
        copied_in = time.perf_counter()
        self._session.run_with_iobinding(self._binding)  # returns once the provider's stream is synchronised
        computed = time.perf_counter()
        output = self._binding.copy_outputs_to_cpu()[0]  # device -> host, for post-processing
        copied_out = time.perf_counter()
        self.phase_timings.add((copied_in - started) * 1e3, (computed - copied_in) * 1e3, (copied_out - computed) * 1e3)
        return output

    def info(self) -> dict[str, Any]:
        providers = self._session.get_providers()
        info = {
            "providers": ",".join(providers),
            # 0 means ORT's default: one intra-op thread per physical core.
            "threads": self._threads or (psutil.cpu_count(logical=False) or 1),
            "threads_requested": self._threads,
            "inter_op_threads": self._inter_op_threads,
            "ort_level": self._level,
            "io_binding": self.binding_device or "none",
            "session_open_s": round(self.session_open_s, 4),  # InferenceSession creation, every run
        }
        if (graph := self.executed_graph()) is not None:
            info["executed_graph"] = graph
        if providers and providers[0] != "CPUExecutionProvider":
            # What ORT actually applied, defaults included (strings, as ORT reports them).
            info["provider_options"] = {
                name: dict(values) for name, values in self._session.get_provider_options().items() if name in providers
            }
        if self.phase_timings is not None:
            info["phase_timing"] = self.phase_timings.method
        return info

    def executed_graph(self) -> str | None:
        """The optimised graph ORT saved (weights included) with what else decides how it runs: the
        level itself is left out, since all it does shows in the graph. None under the TensorRT EP."""
        if self._executed_graph is None and self.output_path is not None and self.output_path.is_file():
            graph = hashlib.sha256(self.output_path.read_bytes()).hexdigest()
            self._executed_graph = digest({
                "graph": graph, "providers": self._session.get_providers(), "threads": self._threads,
                "inter_op_threads": self._inter_op_threads, "io_binding": self.binding_device,
                "provider_options": self._session.get_provider_options()})
        return self._executed_graph

    def close(self) -> None:
        self._binding = None
        self._session = None


def _require_provider(ort: Any, provider: str) -> list[str]:
    """The provider chain for `provider`, or RuntimeUnavailable: falling back silently would log CPU numbers under
    a GPU provider's name."""
    wanted = PROVIDERS[provider]
    available = ort.get_available_providers()
    if wanted[0] not in available:
        raise RuntimeUnavailable(
            f"provider {wanted[0]} is not available here (available: {', '.join(available)}); "
            "install onnxruntime-gpu (pip install 'yolobench[gpu]') on a machine with an NVIDIA GPU"
        )
    if provider != "cpu":
        _preload_cuda_libraries(ort)
    return wanted


def _session_options(ort: Any, level: str, threads: int, inter_op_threads: int, optimised: Path | None) -> Any:
    session_options = ort.SessionOptions()
    session_options.graph_optimization_level = graph_optimization_level(level)
    session_options.intra_op_num_threads = threads
    session_options.inter_op_num_threads = inter_op_threads
    session_options.log_severity_level = 3
    if optimised is not None:
        session_options.optimized_model_filepath = str(optimised)
    return session_options


def open_ort_session(
    model_path: Path,
    *,
    provider: str,
    level: str,
    threads: int = 0,
    inter_op_threads: int = 0,
    precision: str = "fp32",
    user_provider_options: dict[str, Any] | None = None,
    work_dir: Path,
    cache_root: Path | None = None,
    engine_cache_dir: Path | None = None,
    io_binding: bool | None = None,
) -> OrtSession:
    """Open `model_path` on `provider`. The session's `output_path` is the ORT-optimised model (None under the
    TensorRT EP); its creation time is `info()["session_open_s"]`. TensorRT EP: engines in `engine_cache_dir`,
    timings in ort_tensorrt_cache_dir(cache_root) (both default to one folder in `work_dir`). `io_binding` None =
    bind where the provider's device is not the host."""
    import onnxruntime as ort

    wanted = _require_provider(ort, provider)
    trt_cache_dir = timing_cache_dir = None
    if provider == "tensorrt":
        trt_cache_dir = engine_cache_dir or Path(work_dir) / ORT_TENSORRT_CACHE_DIR
        timing_cache_dir = ort_tensorrt_cache_dir(cache_root) if cache_root is not None else trt_cache_dir
        for folder in (trt_cache_dir, timing_cache_dir):
            folder.mkdir(parents=True, exist_ok=True)
    options = provider_options(provider, precision, dict(user_provider_options or {}), trt_cache_dir, timing_cache_dir)
    # ORT refuses to save a graph holding TensorRT-compiled nodes.
    optimised = Path(work_dir) / f"model.ort-{level}.onnx" if provider != "tensorrt" else None
    started = time.perf_counter()
    try:
        session = ort.InferenceSession(str(model_path), sess_options=_session_options(ort, level, threads,
                                       inter_op_threads, optimised), providers=wanted, provider_options=options)  # fmt: skip
    except Exception as error:  # ORT raises its own Fail/RuntimeException types for a provider that cannot load
        if provider == "cpu":
            raise
        raise RuntimeUnavailable(f"{wanted[0]} could not open the model: {str(error).splitlines()[0][:500]}") from error
    session_open_s = time.perf_counter() - started
    in_use = session.get_providers()
    if in_use[0] != wanted[0]:
        # ORT drops a provider whose libraries fail to load and carries on with the next one.
        raise RuntimeUnavailable(f"{wanted[0]} failed to load (ORT fell back to {in_use[0]}); check CUDA/cuDNN/TensorRT libraries")
    device = None if io_binding is False else io_binding_device(in_use)
    if io_binding and device is None:
        device = "cpu"  # asked for explicitly on the CPU provider (tests, comparisons)
    return OrtSession(session, level, threads, inter_op_threads, binding_device=device, provider=provider,
                      output_path=optimised if optimised is not None and optimised.exists() else None,
                      session_open_s=session_open_s)  # fmt: skip


def _preload_cuda_libraries(ort: Any) -> None:
    """Load CUDA/cuDNN from the nvidia-* pip packages when present (ORT >= 1.21); harmless otherwise."""
    try:
        ort.preload_dlls()
    except Exception:  # absent in older ORT, or missing libraries: the session that needs them says which
        pass


def _precision(axes: Mapping[str, AxisValue], model: Artifact) -> str:
    return str(axes.get("precision") or model.manifest.get("precision") or "fp32")


def compile_tensorrt_ep(cache: ArtifactCache, model: Artifact, level: str, precision: str,
                        user_provider_options: Mapping[str, Any]) -> Artifact:
    """The TensorRT EP's engines for `model`, built once by opening it (the session is closed again) into a cached
    artifact: the first session of a model builds for minutes, every later one loads the engines."""
    config = {"provider": "tensorrt", "ort_level": level, "precision": precision,
              "provider_options": dict(user_provider_options)}

    def build(work_dir: Path) -> BuildOutput:
        session = open_ort_session(model.path, provider="tensorrt", level=level, precision=precision,
                                   user_provider_options=dict(user_provider_options), work_dir=work_dir,
                                   cache_root=cache.root, engine_cache_dir=work_dir)  # fmt: skip
        session.close()
        engine_files = sorted(path.name for path in work_dir.iterdir() if path.is_file())
        (work_dir / ENGINES_INDEX).write_text(json.dumps(engine_files, indent=2))
        inherited = {key: model.manifest[key] for key in ("imgsz", "names", "num_classes", "precision")
                     if key in model.manifest}
        return BuildOutput(ENGINES_INDEX, {**inherited, "engine_files": engine_files,
                                           "session_open_s": round(session.session_open_s, 3)})

    return cache.get_or_build(ORT_TENSORRT_STAGE, config, model, ort_tensorrt_versions(), build)


class OnnxRuntime(Runtime):
    info = catalog.ONNXRUNTIME

    def availability(self) -> Availability:
        try:
            import onnxruntime as ort
        except ImportError:
            return Availability(False, "package onnxruntime is not installed")
        return Availability(True, f"onnxruntime {ort.__version__}; providers here: "
                                  f"{', '.join(ort.get_available_providers())}")

    def checks(self) -> list[Check]:
        """Each provider a sweep file can name, usable here or not, and why."""
        try:
            import onnxruntime as ort
        except ImportError:
            return [Check(f"provider {name}", False, "package onnxruntime is not installed") for name in PROVIDERS]
        from yolobench.gpu import gpu_unavailable_reason

        available = ort.get_available_providers()
        checks = []
        for name, providers in PROVIDERS.items():
            if providers[0] not in available:
                checks.append(Check(f"provider {name}", False,
                                    f"{providers[0]} is not in this onnxruntime build (install onnxruntime-gpu)"))
            elif name != "cpu" and (reason := gpu_unavailable_reason()) is not None:
                checks.append(Check(f"provider {name}", False, f"{providers[0]} is built in, but {reason}"))
            else:
                checks.append(Check(f"provider {name}", True, providers[0]))
        return checks

    def compile(self, model: Artifact, axes: Mapping[str, AxisValue], options: OnnxRuntimeOptions,
                cache: ArtifactCache) -> Artifact | None:
        """None (ORT takes the ONNX itself), except under the TensorRT EP: its engines, built once."""
        if options.provider != "tensorrt":
            return None
        axes = self.info.resolve_axes(axes)
        return compile_tensorrt_ep(cache, model, str(axes["ort_level"]), _precision(axes, model),
                                   options.provider_options)

    def open(self, model: Artifact, compiled: Artifact | None, axes: Mapping[str, AxisValue],
             options: OnnxRuntimeOptions, decode: DecodeSettings, work_dir: Path) -> OrtSession:
        axes = self.info.resolve_axes(axes)
        return open_ort_session(
            model.path,
            provider=options.provider,
            level=str(axes["ort_level"]),
            threads=int(axes.get("threads", options.threads)),
            inter_op_threads=options.inter_op_threads,
            precision=_precision(axes, model),
            user_provider_options=dict(options.provider_options),
            work_dir=work_dir,
            engine_cache_dir=compiled.directory if compiled is not None else None,
        )

    def facts(self, session: SessionBase, model: Artifact, compiled: Artifact | None,
              axes: Mapping[str, AxisValue]) -> RunFacts:
        """What ORT fused at the variant's level, read from the graph it optimised (yolobench.runtimes.ort_fusion)."""
        from yolobench.runtimes.ort_fusion import ort_fusion_facts

        if not isinstance(session, OrtSession):
            raise TypeError(f"OnnxRuntime.facts takes the OrtSession its open() returned, not {type(session).__name__}")
        axes = self.info.resolve_axes(axes)
        return ort_fusion_facts(str(axes["ort_level"]), _precision(axes, model), session.output_path, session.provider)

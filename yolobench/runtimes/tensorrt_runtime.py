"""TensorRT: the variant's ONNX artifact is compiled into an engine (stages/tensorrt.py, cached per GPU and
TensorRT version) and run with device buffers from cuda-python, so a measuring host such as a Jetson
needs neither torch nor pycuda. Each inference records CUDA events around the host-to-device copy, the
engine (execute_async_v3) and the device-to-host copy, so GPU compute and end-to-end are reported apart."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from yolobench.cache import Artifact, ArtifactCache, BuildFailed
from yolobench.gpu import Cuda, CudaError, GpuUnavailable, gpu_identity, stream_handle
from yolobench.runtimes import OpenedSession, RuntimeUnavailable, register
from yolobench.runtimes.timing import CUDA_EVENTS, PhaseTimings
from yolobench.stages.tensorrt import EngineSettings, TensorRTUnavailable, build_engine, import_tensorrt

if TYPE_CHECKING:
    from yolobench.space import Variant
    from yolobench.spec import RuntimeSpec

DEFAULT_OPT_LEVEL = 3  # TensorRT's own default, for sweeps without a trt_opt_level axis


@dataclass
class _Binding:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    device: int
    host_pointer: int
    host: np.ndarray  # pinned


class TensorRTSession:
    """One deserialised engine with its execution context, pinned host buffers, device buffers and stream."""

    def __init__(self, engine_bytes: bytes, *, trt: Any | None = None, cuda: Cuda | None = None,
                 engine_manifest: dict[str, Any] | None = None) -> None:
        self._trt = trt if trt is not None else import_tensorrt()
        self._cuda = cuda if cuda is not None else Cuda()
        self._manifest = dict(engine_manifest or {})
        self._logger = self._trt.Logger(self._trt.Logger.WARNING)
        self._runtime = self._trt.Runtime(self._logger)
        started = time.perf_counter()
        self._engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        if self._engine is None:
            raise BuildFailed("TensorRT could not deserialise the engine (built for another GPU or TensorRT version?)")
        self._context = self._engine.create_execution_context()
        self.load_s = time.perf_counter() - started
        self._stream = self._cuda.stream()
        self._events = [self._cuda.event() for _ in range(4)]
        self._inputs: list[_Binding] = []
        self._outputs: list[_Binding] = []
        try:
            for index in range(self._engine.num_io_tensors):
                self._allocate(self._engine.get_tensor_name(index))
        except BaseException:
            self.close()
            raise
        if len(self._inputs) != 1 or not self._outputs:
            self.close()
            raise ValueError(f"expected one input and at least one output, engine has "
                             f"{len(self._inputs)} inputs and {len(self._outputs)} outputs")
        self.phase_timings = PhaseTimings(CUDA_EVENTS)

    def _allocate(self, name: str) -> None:
        trt = self._trt
        shape = tuple(int(d) for d in self._engine.get_tensor_shape(name))
        if any(d < 0 for d in shape):
            raise ValueError(f"tensor {name} has a dynamic shape {shape}; yolobench exports static shapes")
        dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name)))
        host_pointer, host = self._cuda.pinned_array(shape, dtype)
        device = self._cuda.malloc(host.nbytes)
        binding = _Binding(name, shape, dtype, device, host_pointer, host)
        if not self._context.set_tensor_address(name, device):
            raise RuntimeError(f"TensorRT refused the device address of tensor {name}")
        is_input = self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        (self._inputs if is_input else self._outputs).append(binding)

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """Copy in, run, copy out on one stream, timing each phase with events; return the first output."""
        cuda, stream = self._cuda, self._stream
        start, copied_in, computed, copied_out = self._events
        source = self._inputs[0]
        if tensor.shape != source.shape:
            raise ValueError(f"input shape {tensor.shape} does not match the engine's {source.shape}")
        np.copyto(source.host, tensor, casting="same_kind")
        cuda.record(start, stream)
        cuda.to_device_async(source.device, source.host, stream)
        cuda.record(copied_in, stream)
        if not self._context.execute_async_v3(stream_handle(stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        cuda.record(computed, stream)
        for output in self._outputs:
            cuda.to_host_async(output.host, output.device, stream)
        cuda.record(copied_out, stream)
        cuda.synchronize(stream)
        self.phase_timings.add(cuda.elapsed_ms(start, copied_in), cuda.elapsed_ms(copied_in, computed),
                               cuda.elapsed_ms(computed, copied_out))  # fmt: skip
        # A copy: the pinned buffer is overwritten by the next call.
        return self._outputs[0].host.astype(np.float32, copy=True)

    def info(self) -> dict[str, Any]:
        manifest = self._manifest
        return {
            "providers": "TensorRT",
            "threads": 1,
            "tensorrt_version": manifest.get("tensorrt_version", str(getattr(self._trt, "__version__", ""))),
            "gpu": manifest.get("gpu", ""),
            "compute_capability": manifest.get("compute_capability", ""),
            "typing": manifest.get("typing", ""),
            "builder_flags": manifest.get("builder_flags", []),
            "network_flags": manifest.get("network_flags", []),
            "builder_optimization_level": manifest.get("builder_optimization_level"),
            "sparsity": manifest.get("sparsity", {}),
            "timing_cache": manifest.get("timing_cache", {}),
            "engine_load_s": round(self.load_s, 4),
            "io": {b.name: {"shape": list(b.shape), "dtype": str(b.dtype)} for b in (*self._inputs, *self._outputs)},
            "phase_timing": self.phase_timings.method,
            "engine_key": manifest.get("key", ""),
        }

    def close(self) -> None:
        cuda = self._cuda
        for binding in (*getattr(self, "_inputs", []), *getattr(self, "_outputs", [])):
            _quietly(cuda.free, binding.device)
            _quietly(cuda.free_pinned, binding.host_pointer)
        self._inputs, self._outputs = [], []
        for event in getattr(self, "_events", []):
            _quietly(cuda.destroy_event, event)
        self._events = []
        if getattr(self, "_stream", None) is not None:
            _quietly(cuda.destroy_stream, self._stream)
            self._stream = None
        self._context = None
        self._engine = None


def _quietly(release: Any, handle: Any) -> None:
    try:
        release(handle)
    except CudaError:
        pass  # releasing after a failed start; the error that matters was raised already


def engine_settings(variant: Variant, options: RuntimeSpec) -> EngineSettings:
    """The builder settings a variant asks for: precision, the trt_opt_level and sparsity axes, workspace."""
    return EngineSettings(
        precision=str(variant["precision"]),
        builder_optimization_level=int(variant.get("trt_opt_level", DEFAULT_OPT_LEVEL)),
        sparsity=bool(variant.get("sparsity", False)),
        workspace_mb=int(getattr(options, "trt_workspace_mb", 1024)),
    )


class TensorRTRuntime:
    name = "tensorrt"

    def availability(self) -> tuple[bool, str]:
        try:
            trt = import_tensorrt()
        except TensorRTUnavailable as error:
            return False, str(error)
        try:
            gpu = gpu_identity()
        except GpuUnavailable as error:
            return False, f"tensorrt {trt.__version__} is installed, but {error}"
        return True, f"tensorrt {trt.__version__}; {gpu.name} (compute capability {gpu.compute_capability})"

    def checks(self) -> list[tuple[str, bool, str]]:
        """Each piece an engine build and run needs, for `yolobench doctor`."""
        import importlib.util

        from yolobench.gpu import cuda_runtime

        results: list[tuple[str, bool, str]] = []
        try:
            trt = import_tensorrt()
            results.append(("tensorrt package", True, f"tensorrt {trt.__version__}"))
        except TensorRTUnavailable as error:
            results.append(("tensorrt package", False, str(error)))
        try:
            runtime = cuda_runtime()
            results.append(("cuda-python", True, f"{runtime.__name__} (device buffers, stream, events)"))
        except GpuUnavailable as error:
            results.append(("cuda-python", False, str(error)))
        try:
            gpu = gpu_identity()
            results.append(("GPU", True, f"{gpu.name}, compute capability {gpu.compute_capability}, "
                                         f"{gpu.memory_mb} MiB, driver CUDA {gpu.driver}"))  # fmt: skip
        except GpuUnavailable as error:
            results.append(("GPU", False, str(error)))
        onnx_here = importlib.util.find_spec("onnx") is not None
        results.append(("2:4 sparsity check", onnx_here, "onnx installed" if onnx_here else
                        "package onnx is not installed: engine manifests will not say which weights are 2:4-sparse"))
        return results

    def open(self, model: Artifact, variant: Variant, options: RuntimeSpec, work_dir: Path,
             cache: ArtifactCache) -> OpenedSession:
        try:
            trt = import_tensorrt()
            gpu = gpu_identity()
            cuda = Cuda()
        except (TensorRTUnavailable, GpuUnavailable) as error:
            raise RuntimeUnavailable(str(error)) from None
        engine = build_engine(cache, model, engine_settings(variant, options), trt=trt, gpu=gpu)
        session = TensorRTSession(engine.path.read_bytes(), trt=trt, cuda=cuda, engine_manifest=engine.manifest)
        # The recorded build time, also when the engine came from the cache: the same figure every rerun.
        return OpenedSession(session=session, compiled_artifact=engine.path,
                             compile_s=float(engine.manifest.get("build_s", 0.0)))  # fmt: skip


@register("tensorrt")
def _factory() -> TensorRTRuntime:
    return TensorRTRuntime()

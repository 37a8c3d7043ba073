"""TensorRT: `compile` builds the variant's ONNX artifact into an engine (stages/tensorrt.py, a cached stage keyed
with the GPU and TensorRT version), and `open` deserialises it and runs it with device buffers from cuda-python,
so a measuring host such as a Jetson needs neither torch nor pycuda. Each inference records CUDA events around
the host-to-device copy, the engine (execute_async_v3) and the device-to-host copy, so GPU compute and
end-to-end are reported apart."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from yolobench.cache import Artifact, ArtifactCache, BuildFailed
from yolobench.errors import ModelMismatch, RuntimeUnavailable
from yolobench.gpu import Cuda, CudaError, GpuUnavailable, gpu_identity, stream_handle
from yolobench.runtimes import catalog
from yolobench.runtimes.base import Availability, AxisValue, Check, DecodeSettings, Runtime, SessionBase
from yolobench.runtimes.timing import CUDA_EVENTS, PhaseTimings
from yolobench.stages.tensorrt import EngineSettings, TensorRTUnavailable, build_engine, import_tensorrt

if TYPE_CHECKING:
    from yolobench.runtimes.options import TensorRTOptions


@dataclass
class _Binding:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    device: int
    host_pointer: int
    host: np.ndarray  # pinned


class TensorRTSession(SessionBase):
    """One deserialised engine with its execution context, pinned host buffers, device buffers and stream."""

    def __init__(self, engine_bytes: bytes, *, trt: Any | None = None, cuda: Cuda | None = None,
                 engine_manifest: dict[str, Any] | None = None) -> None:
        self._trt = trt if trt is not None else import_tensorrt()
        self._cuda = cuda if cuda is not None else Cuda()
        self._manifest = dict(engine_manifest or {})
        self._inputs: list[_Binding] = []
        self._outputs: list[_Binding] = []
        self._events: list[Any] = []
        self._stream: Any = None
        self._context: Any = None
        self._logger = self._trt.Logger(self._trt.Logger.WARNING)
        self._runtime = self._trt.Runtime(self._logger)
        started = time.perf_counter()
        self._engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        if self._engine is None:
            raise BuildFailed("TensorRT could not deserialise the engine (built for another GPU or TensorRT version?)")
        self._context = self._engine.create_execution_context()
        self.load_s = time.perf_counter() - started
        try:
            self._stream = self._cuda.stream()
            self._events = [self._cuda.event() for _ in range(4)]
            for index in range(self._engine.num_io_tensors):
                self._allocate(self._engine.get_tensor_name(index))
            if len(self._inputs) != 1 or not self._outputs:
                raise ModelMismatch(f"expected one input and at least one output, engine has "
                                    f"{len(self._inputs)} inputs and {len(self._outputs)} outputs")
        except BaseException:
            self.close()
            raise
        self.phase_timings = PhaseTimings(CUDA_EVENTS)

    def _allocate(self, name: str) -> None:
        trt = self._trt
        shape = tuple(int(d) for d in self._engine.get_tensor_shape(name))
        if any(d < 0 for d in shape):
            raise ModelMismatch(f"tensor {name} has a dynamic shape {shape}; yolobench exports static shapes")
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
            raise ModelMismatch(f"input shape {tensor.shape} does not match the engine's {source.shape}")
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
        for binding in (*self._inputs, *self._outputs):
            _quietly(cuda.free, binding.device)
            _quietly(cuda.free_pinned, binding.host_pointer)
        self._inputs, self._outputs = [], []
        for event in self._events:
            _quietly(cuda.destroy_event, event)
        self._events = []
        if self._stream is not None:
            _quietly(cuda.destroy_stream, self._stream)
            self._stream = None
        self._context = None
        self._engine = None


def _quietly(release: Any, handle: Any) -> None:
    try:
        release(handle)
    except CudaError:
        pass  # releasing after a failed start; the error that matters was raised already


def engine_settings(axes: Mapping[str, AxisValue], options: TensorRTOptions) -> EngineSettings:
    """The builder settings a variant asks for: precision, the trt_opt_level and sparsity axes (the runtime's
    defaults where the sweep does not vary them), and the workspace."""
    axes = catalog.TENSORRT.resolve_axes(axes)
    return EngineSettings(
        precision=str(axes["precision"]),
        builder_optimization_level=int(axes["trt_opt_level"]),
        sparsity=bool(axes["sparsity"]),
        workspace_mb=int(options.trt_workspace_mb),
    )


def _tensorrt_and_gpu() -> tuple[Any, Any]:
    try:
        return import_tensorrt(), gpu_identity()
    except (TensorRTUnavailable, GpuUnavailable) as error:
        raise RuntimeUnavailable(str(error)) from None


class TensorRTRuntime(Runtime):
    info = catalog.TENSORRT

    def availability(self) -> Availability:
        try:
            trt = import_tensorrt()
        except TensorRTUnavailable as error:
            return Availability(False, str(error))
        try:
            gpu = gpu_identity()
        except GpuUnavailable as error:
            return Availability(False, f"tensorrt {trt.__version__} is installed, but {error}")
        return Availability(True, f"tensorrt {trt.__version__}; {gpu.name} (compute capability {gpu.compute_capability})")

    def checks(self) -> list[Check]:
        """Each piece an engine build and run needs."""
        import importlib.util

        from yolobench.gpu import cuda_runtime

        results: list[Check] = []
        try:
            trt = import_tensorrt()
            results.append(Check("tensorrt package", True, f"tensorrt {trt.__version__}"))
        except TensorRTUnavailable as error:
            results.append(Check("tensorrt package", False, str(error)))
        try:
            runtime = cuda_runtime()
            results.append(Check("cuda-python", True, f"{runtime.__name__} (device buffers, stream, events)"))
        except GpuUnavailable as error:
            results.append(Check("cuda-python", False, str(error)))
        try:
            gpu = gpu_identity()
            results.append(Check("GPU", True, f"{gpu.name}, compute capability {gpu.compute_capability}, "
                                              f"{gpu.memory_mb} MiB, driver CUDA {gpu.driver}"))  # fmt: skip
        except GpuUnavailable as error:
            results.append(Check("GPU", False, str(error)))
        onnx_here = importlib.util.find_spec("onnx") is not None
        results.append(Check("2:4 sparsity check", onnx_here, "onnx installed" if onnx_here else
                             "package onnx is not installed: engine manifests will not say which weights are 2:4-sparse"))
        return results

    def compile(self, model: Artifact, axes: Mapping[str, AxisValue], options: TensorRTOptions,
                cache: ArtifactCache) -> Artifact:
        """The variant's engine, built once per GPU, TensorRT version and builder settings."""
        trt, gpu = _tensorrt_and_gpu()
        return build_engine(cache, model, engine_settings(axes, options), trt=trt, gpu=gpu)

    def open(self, model: Artifact, compiled: Artifact | None, axes: Mapping[str, AxisValue],
             options: TensorRTOptions, decode: DecodeSettings, work_dir: Path) -> TensorRTSession:
        if compiled is None:
            raise ValueError("TensorRTRuntime.open needs the engine its compile() made")
        trt, _ = _tensorrt_and_gpu()
        try:
            cuda = Cuda()
        except GpuUnavailable as error:
            raise RuntimeUnavailable(str(error)) from None
        return TensorRTSession(compiled.path.read_bytes(), trt=trt, cuda=cuda, engine_manifest=compiled.manifest)

"""NVIDIA GPU access without torch, through cuda-python: which GPU this is (a TensorRT engine only runs
where it was built, so its cache key names the GPU), and the device buffers, stream and events that a
TensorRT session copies and times with. Everything here imports its CUDA packages lazily."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from yolobench.versions import installed_version  # noqa: F401  (re-exported: runtimes import it from here)


class GpuUnavailable(RuntimeError):
    """No usable NVIDIA GPU here (no cuda-python, no driver, no device); the message says which."""


class CudaError(RuntimeError):
    """A CUDA runtime call that returned an error; the message names the call and CUDA's reason."""


def cuda_runtime() -> Any:
    """cuda-python's runtime API module: `cuda.bindings.runtime` (12.8+), or `cuda.cudart` before that."""
    try:
        from cuda.bindings import runtime

        return runtime
    except ImportError:
        pass
    try:
        from cuda import cudart  # type: ignore[attr-defined]

        return cudart
    except ImportError:
        raise GpuUnavailable("package cuda-python is not installed (pip install cuda-python)") from None


def checked(runtime: Any, call: str, result: Any) -> Any:
    """Unwrap cuda-python's `(error, value...)` tuple, raising CudaError unless the error is cudaSuccess."""
    if not isinstance(result, tuple):
        result = (result,)
    error, *values = result
    if int(error) != 0:  # cudaSuccess
        reason = runtime.cudaGetErrorString(error)
        text = reason[1] if isinstance(reason, tuple) else reason
        text = text.decode() if isinstance(text, bytes) else str(text)
        raise CudaError(f"{call} failed: {getattr(error, 'name', error)}: {text}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


@dataclass(frozen=True)
class GpuIdentity:
    """What an engine is tied to: the GPU's name and compute capability (and, for the record, the driver)."""

    name: str
    compute_capability: str  # "8.7" (Orin), "9.0" (H100)
    device: int = 0
    memory_mb: int = 0
    driver: str = ""

    def cache_versions(self) -> dict[str, str]:
        """The part of a compiled artifact's cache key that says where it can run."""
        return {"gpu": self.name, "compute_capability": self.compute_capability}


def _driver_version(runtime: Any) -> str:
    try:
        version = checked(runtime, "cudaDriverGetVersion", runtime.cudaDriverGetVersion())
    except CudaError:
        return ""
    return f"{version // 1000}.{version % 1000 // 10}" if version else ""


def gpu_identity(device: int = 0) -> GpuIdentity:
    """The GPU at `device`, through cuda-python, or NVML (nvidia-ml-py) where cuda-python is missing."""
    try:
        runtime = cuda_runtime()
    except GpuUnavailable as missing:
        return _nvml_identity(device, missing)
    try:
        count = checked(runtime, "cudaGetDeviceCount", runtime.cudaGetDeviceCount())
    except CudaError as error:
        if not Path("/proc/driver/nvidia/version").exists():  # CUDA's own message then blames the driver's version
            raise GpuUnavailable(f"no NVIDIA driver loaded here (no /proc/driver/nvidia; {error})") from None
        raise GpuUnavailable(f"no usable NVIDIA GPU: {error}") from None
    if device >= count:
        raise GpuUnavailable(f"no NVIDIA GPU {device}: {count} visible")
    props = checked(runtime, "cudaGetDeviceProperties", runtime.cudaGetDeviceProperties(device))
    name = props.name
    name = name.decode(errors="replace") if isinstance(name, (bytes, bytearray)) else str(name)
    return GpuIdentity(
        name=name.split("\x00", 1)[0].strip(),
        compute_capability=f"{props.major}.{props.minor}",
        device=device,
        memory_mb=int(props.totalGlobalMem) // 2**20,
        driver=_driver_version(runtime),
    )


def _nvml_identity(device: int, cuda_missing: GpuUnavailable) -> GpuIdentity:
    try:
        import pynvml
    except ImportError:
        raise GpuUnavailable(f"{cuda_missing}; nvidia-ml-py is not installed either") from None
    try:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(device)
        name = pynvml.nvmlDeviceGetName(handle)
        major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle).total
        driver = pynvml.nvmlSystemGetDriverVersion()
    except pynvml.NVMLError as error:
        raise GpuUnavailable(f"no usable NVIDIA GPU: NVML: {error}") from None
    decode = (lambda v: v.decode() if isinstance(v, bytes) else str(v))  # noqa: E731
    return GpuIdentity(decode(name), f"{major}.{minor}", device, int(memory) // 2**20, decode(driver))


def gpu_unavailable_reason(device: int = 0) -> str | None:
    """None when a GPU is usable here, else why not (for availability() and test skips)."""
    try:
        gpu_identity(device)
    except GpuUnavailable as error:
        return str(error)
    return None


class Cuda:
    """The handful of CUDA runtime calls a TensorRT session needs, each checked: device and pinned host
    buffers, one stream, events and async copies. Pinned host memory makes the copies truly async and is
    what a real deployment would use, so the end-to-end figure is not inflated by pageable copies."""

    def __init__(self, runtime: Any | None = None) -> None:
        self.runtime = runtime or cuda_runtime()

    def _call(self, name: str, *args: Any) -> Any:
        return checked(self.runtime, name, getattr(self.runtime, name)(*args))

    def malloc(self, nbytes: int) -> int:
        return int(self._call("cudaMalloc", max(int(nbytes), 1)))

    def free(self, pointer: int) -> None:
        self._call("cudaFree", pointer)

    def pinned_array(self, shape: tuple[int, ...], dtype: np.dtype) -> tuple[int, np.ndarray]:
        """Page-locked host memory viewed as a numpy array; free it with free_pinned(pointer)."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        pointer = int(self._call("cudaMallocHost", max(nbytes, 1)))
        raw = (ctypes.c_byte * max(nbytes, 1)).from_address(pointer)
        return pointer, np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape, dtype=np.int64))).reshape(shape)

    def free_pinned(self, pointer: int) -> None:
        self._call("cudaFreeHost", pointer)

    def stream(self) -> Any:
        return self._call("cudaStreamCreate")

    def destroy_stream(self, stream: Any) -> None:
        self._call("cudaStreamDestroy", stream)

    def event(self) -> Any:
        return self._call("cudaEventCreate")

    def destroy_event(self, event: Any) -> None:
        self._call("cudaEventDestroy", event)

    def record(self, event: Any, stream: Any) -> None:
        self._call("cudaEventRecord", event, stream)

    def elapsed_ms(self, start: Any, end: Any) -> float:
        return float(self._call("cudaEventElapsedTime", start, end))

    def synchronize(self, stream: Any) -> None:
        self._call("cudaStreamSynchronize", stream)

    def to_device_async(self, device_pointer: int, host: np.ndarray, stream: Any) -> None:
        kind = self.runtime.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call("cudaMemcpyAsync", device_pointer, host.ctypes.data, host.nbytes, kind, stream)

    def to_host_async(self, host: np.ndarray, device_pointer: int, stream: Any) -> None:
        kind = self.runtime.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call("cudaMemcpyAsync", host.ctypes.data, device_pointer, host.nbytes, kind, stream)


def stream_handle(stream: Any) -> int:
    """The raw cudaStream_t value TensorRT's execute_async_v3 takes (int() of cuda-python's handle object;
    its getPtr() is the address of the handle's storage, not the handle)."""
    return int(stream)

"""A stand-in for the `tensorrt` module, for hosts without TensorRT or a GPU: it implements only the builder
calls yolobench makes and records every setting it receives, so tests can assert the exact configuration a
real TensorRT would get. Two generations: TensorRT 10 (weak typing: BuilderFlag.FP16/INT8 exist) and
TensorRT 11 (strong typing only: those flags are gone).

Its public names are TensorRT's own (classes, methods, parameters, enum members; what it keeps for the
tests is underscored), and test_tensorrt_bindings.py checks them against the real bindings of both
generations, so code that runs against this fake uses only API the real module has."""

from __future__ import annotations

import enum
import json
import types
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Records:
    network_flags: list[int] = field(default_factory=list)
    parsed: list[str] = field(default_factory=list)
    timing_caches_created_from: list[bytes] = field(default_factory=list)
    builds: list[dict[str, Any]] = field(default_factory=list)
    executions: list[int] = field(default_factory=list)


def make_fake_tensorrt(version: str = "10.3.0", *, build_fails: bool = False) -> types.SimpleNamespace:
    """A fake `tensorrt` of `version` (major 10 = weak typing, 11 = strong typing only)."""
    major = int(version.split(".")[0])
    records = Records()

    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    class ILogger:
        def __init__(self) -> None:
            pass

        def log(self, severity: Severity, msg: str) -> None:  # pragma: no cover - overridden
            raise NotImplementedError

    ILogger.Severity = Severity  # type: ignore[attr-defined]

    class Logger(ILogger):
        WARNING = Severity.WARNING

        def __init__(self, min_severity: Severity = Severity.WARNING) -> None:
            super().__init__()

        def log(self, severity: Severity, msg: str) -> None:
            pass

    # Enum members with TensorRT's own values (only those yolobench or these tests use).
    common_flags = {"DEBUG": 2, "GPU_FALLBACK": 3, "REFIT": 4, "DISABLE_TIMING_CACHE": 5, "TF32": 6,
                    "SPARSE_WEIGHTS": 7}  # fmt: skip
    if major <= 10:
        builder_flags = {"FP16": 0, "INT8": 1, **common_flags, "OBEY_PRECISION_CONSTRAINTS": 9}
        network_flags = {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1}
    else:
        builder_flags, network_flags = common_flags, {"STRONGLY_TYPED": 0}
    BuilderFlag = enum.IntEnum("BuilderFlag", builder_flags)
    NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", network_flags)
    MemoryPoolType = enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0, "DLA_MANAGED_SRAM": 1})
    DataType = enum.Enum("DataType", {"FLOAT": 0, "HALF": 1})  # plain Enum: str() is "DataType.FLOAT", as in TensorRT

    class ITimingCache:
        def __init__(self, data: bytes) -> None:
            self._entries = [entry for entry in data.decode().split(";") if entry]

        def combine(self, input_cache: ITimingCache, ignore_mismatch: bool) -> bool:
            self._entries += [entry for entry in input_cache._entries if entry not in self._entries]
            return True

        def serialize(self) -> bytes:
            return ";".join(self._entries).encode()

    class ITensor:
        name: str = ""
        shape: tuple[int, ...] = ()
        dtype: Any = DataType.FLOAT

        def __init__(self, name: str, shape: tuple[int, ...]) -> None:
            self.name, self.shape = name, shape

    class INetworkDefinition:
        def __init__(self, flags: int) -> None:
            self._flags = flags
            self._inputs: list[ITensor] = []
            self._outputs: list[ITensor] = []

        @property
        def num_inputs(self) -> int:
            return len(self._inputs)

        @property
        def num_outputs(self) -> int:
            return len(self._outputs)

        def get_input(self, index: int) -> ITensor:
            return self._inputs[index]

        def get_output(self, index: int) -> ITensor:
            return self._outputs[index]

    class OnnxParser:
        num_errors = 0

        def __init__(self, network: INetworkDefinition, logger: ILogger) -> None:
            self._network = network

        def parse_from_file(self, model: str) -> bool:
            records.parsed.append(model)
            self._network._inputs = [ITensor("images", (1, 3, 32, 32))]
            self._network._outputs = [ITensor("output0", (1, 8, 32, 32))]
            return True

        def get_error(self, index: int) -> str:  # pragma: no cover - no errors
            return ""

    class IBuilderConfig:
        builder_optimization_level = 3  # TensorRT's default

        def __init__(self) -> None:
            self._flags = {BuilderFlag.TF32}  # on by default, as in TensorRT
            self._pool_limits: dict[Any, int] = {}
            self._timing_cache: ITimingCache | None = None
            self._ignore_mismatch: bool | None = None

        def set_flag(self, flag: Any) -> None:
            self._flags.add(BuilderFlag(flag))

        def clear_flag(self, flag: Any) -> None:
            self._flags.discard(BuilderFlag(flag))

        def get_flag(self, flag: Any) -> bool:
            return BuilderFlag(flag) in self._flags

        def set_memory_pool_limit(self, pool: Any, pool_size: int) -> None:
            self._pool_limits[MemoryPoolType(pool)] = pool_size

        def create_timing_cache(self, serialized_timing_cache: bytes) -> ITimingCache:
            records.timing_caches_created_from.append(bytes(serialized_timing_cache))
            return ITimingCache(bytes(serialized_timing_cache))

        def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
            self._timing_cache, self._ignore_mismatch = cache, ignore_mismatch
            return True

        def get_timing_cache(self) -> ITimingCache | None:
            return self._timing_cache

    class Builder:
        def __init__(self, logger: ILogger) -> None:
            self._logger = logger

        def create_network(self, flags: int = 0) -> INetworkDefinition:
            records.network_flags.append(flags)
            return INetworkDefinition(flags)

        def create_builder_config(self) -> IBuilderConfig:
            return IBuilderConfig()

        def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> bytes | None:
            snapshot = {
                "network_flags": sorted(f.name for f in NetworkDefinitionCreationFlag if network._flags >> f.value & 1),
                "builder_flags": sorted(flag.name for flag in config._flags),
                "builder_optimization_level": config.builder_optimization_level,
                "pool_limits": {pool.name: size for pool, size in config._pool_limits.items()},
                "timing_cache_set": config._timing_cache is not None,
                "timing_cache_ignore_mismatch": config._ignore_mismatch,
            }
            records.builds.append(snapshot)
            self._logger.log(Severity.VERBOSE, "tactic timing: lots of lines nobody keeps")
            if build_fails:
                self._logger.log(Severity.ERROR, "fake: no implementation for layer conv1")
                return None
            if BuilderFlag.SPARSE_WEIGHTS in config._flags:
                self._logger.log(Severity.INFO, "(Sparsity) Layers eligible for sparse math: conv1, conv2")
                self._logger.log(Severity.INFO,
                                 "(Sparsity) TRT inference plan picked sparse implementation for layers: conv2")
            if config._timing_cache is not None:  # a build adds the timings it measured
                config._timing_cache._entries.append(f"level{config.builder_optimization_level}-{len(records.builds)}")
            return b"fake-engine:" + json.dumps(snapshot, sort_keys=True).encode()

    # --- runtime side: an "engine" whose execution doubles its input, reading and writing device memory through
    # the fake CUDA of the test (device_memory: address -> array), so the data path can be checked end to end.
    TensorIOMode = enum.IntEnum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})

    def nptype(trt_type: Any) -> type:
        return {DataType.FLOAT: np.float32, DataType.HALF: np.float16}[DataType(trt_type)]

    class IExecutionContext:
        def __init__(self, engine: ICudaEngine) -> None:
            self._engine = engine
            self._addresses: dict[str, int] = {}

        def set_tensor_address(self, name: str, memory: int) -> bool:
            self._addresses[name] = memory
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            memory = self._engine._device_memory
            records.executions.append(stream_handle)
            memory.log.append(("execute", stream_handle))
            memory[self._addresses["output0"]][...] = memory[self._addresses["images"]] * 2
            return True

    class ICudaEngine:
        _tensors = {"images": (TensorIOMode.INPUT, (1, 3, 4, 4)), "output0": (TensorIOMode.OUTPUT, (1, 3, 4, 4))}

        def __init__(self, device_memory: Any) -> None:
            self._device_memory = device_memory

        @property
        def num_io_tensors(self) -> int:
            return len(self._tensors)

        def get_tensor_name(self, index: int) -> str:
            return list(self._tensors)[index]

        def get_tensor_mode(self, name: str) -> Any:
            return self._tensors[name][0]

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return self._tensors[name][1]

        def get_tensor_dtype(self, name: str) -> Any:
            return DataType.FLOAT

        def create_execution_context(self) -> IExecutionContext:
            return IExecutionContext(self)

    module = types.SimpleNamespace(
        __version__=version, records=records, ILogger=ILogger, Logger=Logger, Builder=Builder, OnnxParser=OnnxParser,
        BuilderFlag=BuilderFlag, NetworkDefinitionCreationFlag=NetworkDefinitionCreationFlag,
        MemoryPoolType=MemoryPoolType, TensorIOMode=TensorIOMode, DataType=DataType, nptype=nptype,
        IBuilderConfig=IBuilderConfig, INetworkDefinition=INetworkDefinition, ITensor=ITensor,
        ITimingCache=ITimingCache, ICudaEngine=ICudaEngine, IExecutionContext=IExecutionContext,
        device_memory=None,  # set by a test to its fake CUDA's memory before deserialising
    )  # fmt: skip

    class Runtime:
        def __init__(self, logger: ILogger) -> None:
            pass

        def deserialize_cuda_engine(self, serialized_engine: bytes) -> ICudaEngine | None:
            return ICudaEngine(module.device_memory) if bytes(serialized_engine).startswith(b"fake-engine:") else None

    module.Runtime = Runtime
    return module

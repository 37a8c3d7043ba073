"""A stand-in for the `tensorrt` module, for hosts without TensorRT or a GPU: it implements only the builder
calls yolobench makes and records every setting it receives, so tests can assert the exact configuration a
real TensorRT would get. Two generations: TensorRT 10 (weak typing: BuilderFlag.FP16/INT8 exist) and
TensorRT 11 (strong typing only: those flags are gone)."""

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

    flag_names = ["DEBUG", "GPU_FALLBACK", "REFIT", "DISABLE_TIMING_CACHE", "TF32", "SPARSE_WEIGHTS"]
    if major <= 10:
        flag_names = ["FP16", "INT8", *flag_names, "OBEY_PRECISION_CONSTRAINTS"]
    BuilderFlag = enum.IntEnum("BuilderFlag", {name: index for index, name in enumerate(flag_names)})
    network_flag_names = {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1} if major <= 10 else {"STRONGLY_TYPED": 1}
    NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", network_flag_names)
    MemoryPoolType = enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0, "DLA_MANAGED_SRAM": 1})

    class TimingCache:
        def __init__(self, data: bytes) -> None:
            self.entries = [entry for entry in data.decode().split(";") if entry]

        def combine(self, other: TimingCache, ignore_mismatch: bool) -> bool:
            self.entries += [entry for entry in other.entries if entry not in self.entries]
            return True

        def serialize(self) -> bytes:
            return ";".join(self.entries).encode()

    class Tensor:
        def __init__(self, name: str, shape: tuple[int, ...]) -> None:
            self.name, self.shape, self.dtype = name, shape, "DataType.FLOAT"

    class Network:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.inputs: list[Tensor] = []
            self.outputs: list[Tensor] = []

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        @property
        def num_outputs(self) -> int:
            return len(self.outputs)

        def get_input(self, index: int) -> Tensor:
            return self.inputs[index]

        def get_output(self, index: int) -> Tensor:
            return self.outputs[index]

    class OnnxParser:
        num_errors = 0

        def __init__(self, network: Network, logger: ILogger) -> None:
            self.network = network

        def parse_from_file(self, path: str) -> bool:
            records.parsed.append(path)
            self.network.inputs = [Tensor("images", (1, 3, 32, 32))]
            self.network.outputs = [Tensor("output0", (1, 8, 32, 32))]
            return True

        def get_error(self, index: int) -> str:  # pragma: no cover - no errors
            return ""

    class BuilderConfig:
        def __init__(self) -> None:
            self.flags = {BuilderFlag.TF32}  # on by default, as in TensorRT
            self.pool_limits: dict[Any, int] = {}
            self.builder_optimization_level = 3
            self.timing_cache: TimingCache | None = None
            self.ignore_mismatch: bool | None = None

        def set_flag(self, flag: Any) -> None:
            self.flags.add(BuilderFlag(flag))

        def clear_flag(self, flag: Any) -> None:
            self.flags.discard(BuilderFlag(flag))

        def get_flag(self, flag: Any) -> bool:
            return BuilderFlag(flag) in self.flags

        def set_memory_pool_limit(self, pool: Any, size: int) -> None:
            self.pool_limits[MemoryPoolType(pool)] = size

        def create_timing_cache(self, data: bytes) -> TimingCache:
            records.timing_caches_created_from.append(bytes(data))
            return TimingCache(bytes(data))

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            self.timing_cache, self.ignore_mismatch = cache, ignore_mismatch
            return True

        def get_timing_cache(self) -> TimingCache | None:
            return self.timing_cache

    class Builder:
        def __init__(self, logger: ILogger) -> None:
            self.logger = logger

        def create_network(self, flags: int = 0) -> Network:
            records.network_flags.append(flags)
            return Network(flags)

        def create_builder_config(self) -> BuilderConfig:
            return BuilderConfig()

        def build_serialized_network(self, network: Network, config: BuilderConfig) -> bytes | None:
            snapshot = {
                "network_flags": sorted(f.name for f in NetworkDefinitionCreationFlag if network.flags >> f.value & 1),
                "builder_flags": sorted(flag.name for flag in config.flags),
                "builder_optimization_level": config.builder_optimization_level,
                "pool_limits": {pool.name: size for pool, size in config.pool_limits.items()},
                "timing_cache_set": config.timing_cache is not None,
                "timing_cache_ignore_mismatch": config.ignore_mismatch,
            }
            records.builds.append(snapshot)
            self.logger.log(Severity.VERBOSE, "tactic timing: lots of lines nobody keeps")
            if build_fails:
                self.logger.log(Severity.ERROR, "fake: no implementation for layer conv1")
                return None
            if BuilderFlag.SPARSE_WEIGHTS in config.flags:
                self.logger.log(Severity.INFO, "(Sparsity) Layers eligible for sparse math: conv1, conv2")
                self.logger.log(Severity.INFO, "(Sparsity) TRT inference plan picked sparse implementation for layers: conv2")
            if config.timing_cache is not None:  # a build adds the timings it measured
                config.timing_cache.entries.append(f"level{config.builder_optimization_level}-{len(records.builds)}")
            return b"fake-engine:" + json.dumps(snapshot, sort_keys=True).encode()

    # --- runtime side: an "engine" whose execution doubles its input, reading and writing device memory through
    # the fake CUDA of the test (device_memory: address -> array), so the data path can be checked end to end.
    TensorIOMode = enum.IntEnum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})
    DataType = enum.IntEnum("DataType", {"FLOAT": 0, "HALF": 1})

    def nptype(data_type: Any) -> type:
        return {DataType.FLOAT: np.float32, DataType.HALF: np.float16}[DataType(data_type)]

    class ExecutionContext:
        def __init__(self, engine: Engine) -> None:
            self.engine = engine
            self.addresses: dict[str, int] = {}

        def set_tensor_address(self, name: str, address: int) -> bool:
            self.addresses[name] = address
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            memory = self.engine.device_memory
            records.executions.append(stream_handle)
            memory.log.append(("execute", stream_handle))
            memory[self.addresses["output0"]][...] = memory[self.addresses["images"]] * 2
            return True

    class Engine:
        tensors = {"images": (TensorIOMode.INPUT, (1, 3, 4, 4)), "output0": (TensorIOMode.OUTPUT, (1, 3, 4, 4))}

        def __init__(self, device_memory: Any) -> None:
            self.device_memory = device_memory

        @property
        def num_io_tensors(self) -> int:
            return len(self.tensors)

        def get_tensor_name(self, index: int) -> str:
            return list(self.tensors)[index]

        def get_tensor_mode(self, name: str) -> Any:
            return self.tensors[name][0]

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return self.tensors[name][1]

        def get_tensor_dtype(self, name: str) -> Any:
            return DataType.FLOAT

        def create_execution_context(self) -> ExecutionContext:
            return ExecutionContext(self)

    module = types.SimpleNamespace(
        __version__=version, records=records, ILogger=ILogger, Logger=Logger, Builder=Builder, OnnxParser=OnnxParser,
        BuilderFlag=BuilderFlag, NetworkDefinitionCreationFlag=NetworkDefinitionCreationFlag,
        MemoryPoolType=MemoryPoolType, TensorIOMode=TensorIOMode, DataType=DataType, nptype=nptype,
        device_memory=None,  # set by a test to its fake CUDA's memory before deserialising
    )  # fmt: skip

    class Runtime:
        def __init__(self, logger: ILogger) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> Engine | None:
            return Engine(module.device_memory) if bytes(data).startswith(b"fake-engine:") else None

    module.Runtime = Runtime
    return module

"""What a runtime is: a description as data (its axes, precisions, fusion, options model) that the
sweep file, the variant space and the report read, and the small interface the sweep loop drives
(compile, open, facts). Optional behaviour is a do-nothing default here, never a hasattr probe.

No pydantic and no heavy imports: a bare measuring host (scripts/gpu_check.py) imports this."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    from yolobench.cache import Artifact, ArtifactCache
    from yolobench.runtimes.timing import PhaseTimings

AxisValue = str | int | float | bool


@dataclass(frozen=True)
class AxisInfo:
    """One knob of a runtime that a sweep may vary.

    `values` lists what a sweep file may use; None means any `kind` value >= `minimum`. `default` is what a
    variant gets when the sweep has no such axis (None: the runtime decides from its options). `label`
    formats the value in a variant's label ("{value}", "threads{value}"); a bool shows as the name or
    no_<name>. `compile_input`: the axis is part of the compiled artifact (engine, blob), so its key."""

    name: str
    default: AxisValue | None
    values: tuple[AxisValue, ...] | None = None
    kind: type = str
    minimum: int | None = None
    label: str = "{value}"
    compile_input: bool = False

    def problem(self, value: Any) -> str | None:
        """Why `value` is not allowed on this axis, or None when it is."""
        is_bool = isinstance(value, bool)
        if (self.kind is bool) != is_bool or not isinstance(value, self.kind):
            return f"{value!r} is not a {self.kind.__name__}"
        if self.values is not None and value not in self.values:
            return f"{value!r} is not allowed; allowed: {', '.join(map(str, self.values))}"
        if self.minimum is not None and value < self.minimum:
            return f"{value!r} is not allowed; it must be >= {self.minimum}"
        return None

    def format_label(self, value: AxisValue) -> str:
        if isinstance(value, bool):
            return self.name if value else f"no_{self.name}"
        return self.label.format(name=self.name, value=value)


@dataclass(frozen=True)
class RuntimeInfo:
    """A runtime described as data (Olive's pass config idea): what spec, space and doctor need to know
    without importing the runtime. `implementation` and `options_model` are "module:attribute" paths,
    imported only when needed, so planning a sweep and a bare measuring host stay light."""

    name: str
    axes: tuple[AxisInfo, ...] = ()
    precisions: tuple[str, ...] = ("fp32", "fp16", "int8")
    precision_stage: bool = True  # False: the compiler makes its own precision from the fp32 export (OAK blobs)
    max_opset: int | None = None  # the newest ONNX opset the runtime's compiler reads; None: any
    mandatory_fusion: str | None = None  # what always fuses, whatever the sweep asks (TensorRT, blob compiler)
    options_model: str = "yolobench.runtimes.options:RuntimeOptions"  # pydantic model of the `runtime:` section
    implementation: str = ""  # "module:Class" of the Runtime subclass
    summary: str = ""

    def axis(self, name: str) -> AxisInfo | None:
        return next((axis for axis in self.axes if axis.name == name), None)

    @property
    def axis_names(self) -> tuple[str, ...]:
        return tuple(axis.name for axis in self.axes)

    def resolve_axes(self, values: Mapping[str, AxisValue]) -> dict[str, AxisValue]:
        """A variant's axes with this runtime's defaults filled in for the axes the sweep does not vary."""
        resolved = dict(values)
        for axis in self.axes:
            if axis.name not in resolved and axis.default is not None:
                resolved[axis.name] = axis.default
        return resolved


@dataclass(frozen=True)
class Availability:
    usable: bool
    reason: str


@dataclass(frozen=True)
class Check:
    """One piece a runtime needs besides itself (a provider, a compiler, a device), for `yolobench doctor`."""

    what: str
    usable: bool
    reason: str


@dataclass(frozen=True)
class DecodeSettings:
    """Thresholds of the host's decode, for a runtime that decodes on the device: the same on both."""

    conf: float = 0.001
    iou: float = 0.7
    max_det: int = 300


@dataclass(frozen=True)
class RunFacts:
    """What a runtime knows about a run beyond latency and accuracy (what it fused, integer kernels, ...)."""

    params: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


class SessionBase(ABC):
    """An open model on a runtime: what latency and accuracy are measured through."""

    phase_timings: PhaseTimings | None = None  # per-call h2d/compute/d2h, for sessions that can split a call
    output_path: Path | None = None  # what the runtime made of the model when opening it (ORT's optimised graph)

    @abstractmethod
    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """Raw first output for one NCHW float32 input."""

    def info(self) -> dict[str, Any]:
        """How the session actually runs (providers, threads, ...), for the run's params."""
        return {}

    def metrics(self) -> dict[str, float]:
        """What only the runtime can time (e.g. an OAK's on-device inference time)."""
        return {}

    def executed_graph(self) -> str | None:
        """A digest of what this session computes and how (the graph as the runtime made it, threads,
        provider); None where the runtime cannot tell. Two variants whose sessions give the same digest run
        one computation: a knob the runtime ignored for this model (an ORT level with nothing to do) made
        them differ only in name, and their order by latency is noise, so the confirmation times them as one."""
        return None

    def close(self) -> None:
        """Release the session; calling it twice is harmless."""


class Runtime(ABC):
    """A target runtime. `compile` makes what the runtime runs from the variant's model (a cached build
    stage: an engine, a blob; None where the runtime takes the ONNX itself); `open` opens it."""

    info: ClassVar[RuntimeInfo]

    @abstractmethod
    def availability(self) -> Availability:
        """Whether this runtime can run here, and why not."""

    def checks(self) -> list[Check]:
        return []

    def compile(self, model: Artifact, axes: Mapping[str, AxisValue], options: Any,
                cache: ArtifactCache) -> Artifact | None:
        return None

    @abstractmethod
    def open(self, model: Artifact, compiled: Artifact | None, axes: Mapping[str, AxisValue], options: Any,
             decode: DecodeSettings, work_dir: Path) -> SessionBase:
        """Open the variant's model (or what `compile` made of it) the way `axes` ask; `work_dir` is scratch."""

    def facts(self, session: SessionBase, model: Artifact, compiled: Artifact | None,
              axes: Mapping[str, AxisValue]) -> RunFacts:
        return RunFacts()

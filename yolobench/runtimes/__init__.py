"""Runtimes behind one small interface, registered by name; built-ins register the same way a
plug-in would, and an unknown name is refused with the list of known ones."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from yolobench.cache import Artifact, ArtifactCache

if TYPE_CHECKING:  # not at run time: runtimes import without pydantic (scripts/gpu_check.py on a bare GPU host)
    from yolobench.space import Variant
    from yolobench.spec import RuntimeSpec


class Session(Protocol):
    """An open model on a runtime: what latency and accuracy are measured through."""

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """Raw first output for one NCHW float32 input."""

    def info(self) -> dict[str, Any]:
        """How the session actually runs (providers, threads, ...), for the run's params."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class OpenedSession:
    session: Session
    compiled_artifact: Path | None  # what the runtime made of the model (ORT-optimised graph, engine, blob)
    compile_s: float


class Runtime(Protocol):
    """Optional extras, looked up with hasattr: `provider_availability() -> {provider: (usable, reason)}`
    and `checks() -> [(what, usable, reason)]` for `yolobench doctor`; `set_postprocess(conf, iou, max_det)`, called before `open` for a
    runtime that decodes on the device; and a session's `metrics() -> {name: value}` for what only the
    runtime can time (e.g. on-device inference)."""

    name: str

    def availability(self) -> tuple[bool, str]:
        """Whether this runtime can run here, and why not."""

    def open(self, model: Artifact, variant: Variant, options: RuntimeSpec, work_dir: Path,
             cache: ArtifactCache) -> OpenedSession:
        """Open `model` (the ONNX artifact of the variant's precision) the way `variant` asks.

        A runtime that compiles (TensorRT engine, OAK blob) keeps what it compiles in `cache`,
        keyed on the model's key and the compile settings; `work_dir` is scratch space."""


class RuntimeUnavailable(RuntimeError):
    """The runtime (or the provider a variant asks for) cannot run on this host."""


@dataclass
class _Registry:
    factories: dict[str, Callable[[], Runtime]] = field(default_factory=dict)

    def register(self, name: str) -> Callable[[Callable[[], Runtime]], Callable[[], Runtime]]:
        def decorator(factory: Callable[[], Runtime]) -> Callable[[], Runtime]:
            self.factories[name] = factory
            return factory

        return decorator

    def get(self, name: str) -> Runtime:
        _load_builtins()
        if name not in self.factories:
            raise KeyError(f"unknown runtime {name!r}; known runtimes: {', '.join(sorted(self.factories))}")
        return self.factories[name]()

    def names(self) -> list[str]:
        _load_builtins()
        return sorted(self.factories)


registry = _Registry()
register = registry.register
get_runtime = registry.get

_BUILTIN_MODULES = ("yolobench.runtimes.onnxruntime_runtime", "yolobench.runtimes.tensorrt_runtime",
                    "yolobench.runtimes.depthai_runtime")


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)

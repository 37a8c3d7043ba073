"""Runtimes registered by name, built-ins and plug-ins through one door: `register(info, implementation)`.
Plug-ins arrive through the entry-point group `yolobench.runtimes` (each entry point names a Runtime
subclass, whose `info` says the rest). An unknown name is refused with the list of known ones.

Reading a runtime's description (`runtime_info`) imports nothing heavy; `get_runtime` imports its
implementation on first use."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points

from yolobench.errors import RuntimeUnavailable
from yolobench.runtimes.base import (
    Availability, AxisInfo, Check, DecodeSettings, RunFacts, Runtime, RuntimeInfo, SessionBase,
)

ENTRY_POINT_GROUP = "yolobench.runtimes"

__all__ = [
    "Availability", "AxisInfo", "Check", "DecodeSettings", "RunFacts", "Runtime", "RuntimeInfo", "RuntimeUnavailable",
    "SessionBase", "ENTRY_POINT_GROUP", "get_runtime", "load_attribute", "register", "registry", "runtime_info",
]


def load_attribute(path: str) -> object:
    """The object a "module:attribute" path names, imported now."""
    module_name, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


@dataclass
class Registry:
    infos: dict[str, RuntimeInfo] = field(default_factory=dict)
    implementations: dict[str, Callable[[], Runtime] | str] = field(default_factory=dict)
    _plugins_loaded: bool = False

    def register(self, info: RuntimeInfo, implementation: Callable[[], Runtime] | str | None = None) -> None:
        """Register a runtime: its description and a factory (a Runtime subclass, or a "module:Class" path
        imported on first use; default: `info.implementation`)."""
        self.infos[info.name] = info
        self.implementations[info.name] = implementation or info.implementation

    def load_plugins(self, force: bool = False) -> None:
        """Register every runtime the installed packages declare under ENTRY_POINT_GROUP (once)."""
        if self._plugins_loaded and not force:
            return
        self._plugins_loaded = True
        for entry_point in entry_points(group=ENTRY_POINT_GROUP):
            runtime_class = entry_point.load()
            self.register(runtime_class.info, runtime_class)

    def info(self, name: str) -> RuntimeInfo:
        self.load_plugins()
        if name not in self.infos:
            raise KeyError(f"unknown runtime {name!r}; known runtimes: {', '.join(sorted(self.infos))}")
        return self.infos[name]

    def get(self, name: str) -> Runtime:
        self.info(name)
        implementation = self.implementations[name]
        factory = load_attribute(implementation) if isinstance(implementation, str) else implementation
        return factory()

    def names(self) -> list[str]:
        self.load_plugins()
        return sorted(self.infos)


registry = Registry()
register = registry.register
get_runtime = registry.get
runtime_info = registry.info


def _register_builtins() -> None:
    from yolobench.runtimes.catalog import BUILTINS

    for info in BUILTINS:
        register(info)


_register_builtins()

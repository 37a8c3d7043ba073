"""The converters that compile a variant's ONNX for an OAK (RVC2), behind one small interface and registered
by name, built-ins and plug-ins alike: the sweep file picks one with `runtime.depthai.converter`. An unknown
name is refused with the list of known ones.

A converter turns the rewritten YOLO11 ONNX (stages/blob.py) into a compiled model: a superblob (one compile
serves every SHAVE count; the device picks one when the archive is opened) or, for the legacy service, one blob
per SHAVE count. stages/rvc2_compile.py caches what it returns as the variant's NN Archive."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from yolobench.runtimes.base import Availability

API_KEY_ENV = "HUBAI_API_KEY"  # HubAI's own variable; never logged, printed, recorded or hashed
# Preprocessing every converter is asked for: BGR uint8 frames in, divided by 255 and reversed to RGB in the blob.
ENCODING = {"from": "BGR", "to": "RGB"}
MEAN_VALUES = [0.0, 0.0, 0.0]
SCALE_VALUES = [255.0, 255.0, 255.0]


@dataclass(frozen=True)
class ConversionRequest:
    """What a converter is asked to compile. `shaves` is None for a superblob (every SHAVE count at once)."""

    onnx_path: Path
    name: str  # file and upload names: letters, digits, '-' and '_' only
    input_name: str
    input_shape: tuple[int, ...]
    shaves: int | None = None


class Converter(ABC):
    """One way of compiling for RVC2. `settings` and `versions` are what its output is cached by, so they
    must say everything that decides it, and nothing secret or merely where it runs (a URL, a key)."""

    name: ClassVar[str]
    superblob: ClassVar[bool]  # True: one compile serves every SHAVE count
    opsets: ClassVar[tuple[int, int]]  # ONNX opsets its OpenVINO reads, inclusive
    summary: ClassVar[str] = ""

    @classmethod
    def from_options(cls, options: Any | None) -> Converter:
        """The converter as `runtime.depthai` configures it (None: from the environment alone)."""
        return cls()

    @abstractmethod
    def availability(self) -> Availability:
        """Whether it can compile here, and why not (without contacting any service)."""

    @abstractmethod
    def versions(self) -> dict[str, str]:
        """Versions of the tools that compile (part of the cache key)."""

    def settings(self) -> dict[str, Any]:
        """Its own settings that change what it compiles (part of the cache key)."""
        return {}

    @abstractmethod
    def convert(self, request: ConversionRequest, work_dir: Path) -> Path:
        """Compile; return the NN Archive, superblob or blob it made, inside `work_dir`."""


_REGISTRY: dict[str, type[Converter] | str] = {
    "hubai": "yolobench.converters.hubai:HubAIConverter",
    "modelconverter": "yolobench.converters.modelconverter:ModelConverter",
    "blobconverter": "yolobench.converters.blobconverter:BlobConverter",
}


def register_converter(name: str, converter: type[Converter] | str) -> None:
    """Register a converter class (or a "module:Class" path, imported on first use) under `name`."""
    _REGISTRY[name] = converter


def converter_names() -> list[str]:
    return sorted(_REGISTRY)


def converter_class(name: str) -> type[Converter]:
    if name not in _REGISTRY:
        raise KeyError(f"unknown converter {name!r}; known converters: {', '.join(converter_names())}")
    entry = _REGISTRY[name]
    if isinstance(entry, str):
        module_name, _, attribute = entry.partition(":")
        entry = getattr(importlib.import_module(module_name), attribute)
    return entry


def make_converter(name: str, options: Any | None = None) -> Converter:
    return converter_class(name).from_options(options)

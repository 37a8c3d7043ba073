"""Installed library versions, read from package metadata without importing the packages: for build
stages' cache keys and for the host fingerprint tagged on every run."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable

# The libraries that shape a built artifact (the default of `versions`).
BUILD_PACKAGES = ("torch", "ultralytics", "onnx", "onnxslim", "onnxruntime")
# Packages whose module comes from either of several wheels.
DISTRIBUTIONS = {"onnxruntime": ("onnxruntime", "onnxruntime-gpu")}
ABSENT = "absent"


def installed_version(*distribution_names: str) -> str:
    """The version of the first of `distribution_names` that is installed, or '' if none is."""
    for name in distribution_names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return ""


def versions(packages: Iterable[str] = BUILD_PACKAGES) -> dict[str, str]:
    """Version per package (from whichever of its wheels is installed), 'absent' for one not installed."""
    return {name: installed_version(*DISTRIBUTIONS.get(name, (name,))) or ABSENT for name in packages}

"""Host fingerprint: which machine and which library versions produced a number, so runs from
different hosts are never compared blind. Tagged on every run."""

from __future__ import annotations

import functools
import platform
import shutil
import subprocess
from pathlib import Path

import psutil

from yolobench.versions import installed_version

LIBRARIES = (
    "yolobench", "numpy", "opencv-python-headless", "onnxruntime", "onnxruntime-gpu", "mlflow", "optuna",
    "torch", "ultralytics", "onnx", "onnxslim", "tensorrt", "depthai", "faster-coco-eval",
)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model", "Hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _governor() -> str | None:
    path = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _gpus() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    try:
        output = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return "; ".join(line.strip() for line in output.splitlines()) or None


def library_versions() -> dict[str, str]:
    """Version per installed distribution of LIBRARIES (each wheel by its own name); missing ones are left out."""
    return {name: version for name in LIBRARIES if (version := installed_version(name))}


@functools.cache
def host_fingerprint() -> dict[str, str]:
    """Tags describing this host; computed once per process."""
    tags = {
        "host.cpu": _cpu_model(),
        "host.cores_physical": str(psutil.cpu_count(logical=False) or 0),
        "host.cores_logical": str(psutil.cpu_count(logical=True) or 0),
        "host.memory_gb": f"{psutil.virtual_memory().total / 2**30:.1f}",
        "host.os": platform.platform(),
        "host.machine": platform.machine(),
        "host.python": platform.python_version(),
        "host.name": platform.node(),
    }
    if governor := _governor():
        tags["host.cpu_governor"] = governor
    if gpus := _gpus():
        tags["host.gpu"] = gpus
    tags.update({f"version.{name}": version for name, version in library_versions().items()})
    return tags

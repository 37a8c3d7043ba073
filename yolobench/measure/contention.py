"""Foreign load: how busy other processes kept this machine while a measurement window was timed. A
window timed while a neighbour (a browser, a build, another sweep) used the CPU measures the neighbour
too, so the window is refused and re-taken (measure/latency.py).

CPU: the system's busy time minus this process's own CPU time, over the window's wall time, in percent
of one core (100 = one core fully busy). GPU: other processes holding a context on the device (NVML)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil


def _system_busy_s() -> float:
    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    return sum(times) - idle - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)


def _own_cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system + times.children_user + times.children_system


@dataclass(frozen=True)
class ForeignReading:
    cpu_percent: float  # other processes' CPU use over the window, percent of one core
    gpu_processes: int  # other processes on the GPU (0 where there is no NVML)


class ForeignLoad:
    """Measures foreign load between `start()` and `stop()`: two reads of cumulative counters, so nothing
    runs while the window is timed. Sources are injectable so the arithmetic is testable."""

    def __init__(self, system_busy_s: Callable[[], float] = _system_busy_s,
                 own_cpu_s: Callable[[], float] | None = None, clock: Callable[[], float] = time.monotonic,
                 gpu_processes: Callable[[], int] | None = None) -> None:
        process = psutil.Process()
        self._system_busy_s = system_busy_s
        self._own_cpu_s = own_cpu_s or (lambda: _own_cpu_s(process))
        self._clock = clock
        self._gpu_processes = gpu_processes or _nvml_foreign_processes()
        self._start: tuple[float, float, float] | None = None

    def start(self) -> None:
        self._start = (self._system_busy_s(), self._own_cpu_s(), self._clock())

    def stop(self) -> ForeignReading:
        if self._start is None:
            raise RuntimeError("ForeignLoad.stop() without start()")
        busy0, own0, t0 = self._start
        wall = max(self._clock() - t0, 1e-9)
        foreign = max(0.0, (self._system_busy_s() - busy0) - (self._own_cpu_s() - own0))
        self._start = None
        return ForeignReading(cpu_percent=100.0 * foreign / wall, gpu_processes=self._gpu_processes())


def _nvml_foreign_processes() -> Callable[[], int]:
    """Counter of other processes with compute work on any GPU; a constant 0 without NVML or a GPU."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception:  # no package, no driver, no device: nothing to count
        return lambda: 0
    me = os.getpid()

    def count() -> int:
        total = 0
        for handle in handles:
            try:
                processes: list[Any] = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
            except Exception:
                continue
            total += sum(1 for p in processes if p.pid != me)
        return total

    return count

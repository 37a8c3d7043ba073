"""What the host was doing while latency was timed: a background thread samples process CPU and memory,
GPU use (NVML), Jetson tegrastats and Raspberry Pi temperature and throttling, so a slow or noisy figure
can be told apart from a busy, hot or throttled machine. Sources a host lacks are skipped silently."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import psutil

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 0.1  # one sample per 100 ms: a few hundred microseconds of work per second of timing
THERMAL_ZONE = Path("/sys/class/thermal/thermal_zone0/temp")  # the SoC sensor on a Raspberry Pi
THROTTLE_INTERVAL_S = 1.0  # vcgencmd is a process spawn: ask it at most once a second
# `vcgencmd get_throttled` bits: 0 under-voltage, 1 ARM frequency capped, 2 throttled, 3 soft temperature
# limit, each "now"; bits 16-19 are the same four conditions "has occurred since boot" (sticky).
THROTTLED_NOW_MASK = 0xF
THROTTLED_SINCE_BOOT_MASK = 0xF0000

# How the readings of the timed phase are summarised, by reading name -> (metric name, reduction).
SUMMARIES: dict[str, tuple[tuple[str, str], ...]] = {
    "cpu_percent": (("cpu_percent_mean", "mean"), ("cpu_percent_max", "max")),  # this process; 100 = one core
    "sys_cpu_percent": (("sys_cpu_percent_mean", "mean"),),  # the whole host, 0..100: other load competing
    "rss_mb": (("rss_mb_max", "max"),),
    "sys_mem_percent": (("sys_mem_percent_max", "max"),),
    "gpu_util": (("gpu_util_mean", "mean"), ("gpu_util_max", "max")),
    "gpu_mem_mb": (("gpu_mem_mb_max", "max"),),
    "temp_c": (("temp_c_max", "max"),),
    "power_mw": (("power_mw_mean", "mean"),),
    "tegra_ram_mb": (("tegra_ram_mb_max", "max"),),
    "tegra_cpu_percent": (("tegra_cpu_percent_mean", "mean"),),
    "throttled": (("throttled", "max"),),
    "throttled_flags": (("throttled_flags", "or"),),
}


class Source(Protocol):
    """One kind of reading. `read` is called from the sampler thread; it returns what it has now."""

    def read(self) -> dict[str, float]: ...

    def close(self) -> None: ...


# --- parsers (pure functions, tested on recorded output) --------------------------------------------

_TEGRA_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_TEGRA_CPU = re.compile(r"\bCPU \[([^\]]*)\]")
_TEGRA_GR3D = re.compile(r"\bGR3D_FREQ (\d+)%")
_TEGRA_TEMP = re.compile(r"\b([A-Za-z][\w]*)@(-?\d+(?:\.\d+)?)C\b")
_TEGRA_POWER = re.compile(r"\b(VDD_IN|POM_5V_IN) (\d+)(?:mW)?/(\d+)(?:mW)?")
_THERMAL_SENTINEL_C = -200.0  # tegrastats reports an absent sensor as -256C
_BOGUS_SENSORS = {"PMIC"}  # the Jetson Nano's PMIC sensor always reads 100C


def parse_tegrastats(line: str) -> dict[str, float]:
    """One line of Jetson `tegrastats` -> readings: tegra_ram_mb, tegra_cpu_percent (mean of online cores),
    gpu_util (GR3D_FREQ %), temp_c (hottest sensor) and power_mw (board input, VDD_IN or POM_5V_IN, now)."""
    readings: dict[str, float] = {}
    if match := _TEGRA_RAM.search(line):
        readings["tegra_ram_mb"] = float(match.group(1))
    if match := _TEGRA_CPU.search(line):
        loads = [float(core.split("%")[0]) for core in match.group(1).split(",") if "%" in core]
        if loads:
            readings["tegra_cpu_percent"] = sum(loads) / len(loads)
    if match := _TEGRA_GR3D.search(line):
        readings["gpu_util"] = float(match.group(1))
    temperatures = [float(value) for sensor, value in _TEGRA_TEMP.findall(line)
                    if sensor not in _BOGUS_SENSORS and float(value) > _THERMAL_SENTINEL_C]
    if temperatures:
        readings["temp_c"] = max(temperatures)
    if match := _TEGRA_POWER.search(line):
        readings["power_mw"] = float(match.group(2))
    return readings


def parse_throttled(output: str) -> int:
    """`vcgencmd get_throttled` output, e.g. 'throttled=0x50005' -> the flag bits (0x50005)."""
    match = re.search(r"throttled=(0x[0-9a-fA-F]+|\d+)", output)
    if match is None:
        raise ValueError(f"not vcgencmd get_throttled output: {output.strip()!r}")
    return int(match.group(1), 0)


def throttled_during(first_flags: int, flags: int) -> bool:
    """Whether a reading shows throttling now, or a sticky condition that was not there at the start."""
    new_since_start = flags & ~first_flags & THROTTLED_SINCE_BOOT_MASK
    return bool(flags & THROTTLED_NOW_MASK or new_since_start)


def summarise(samples: Iterable[dict[str, float]]) -> dict[str, float]:
    """Readings of the timed phase -> metrics (see SUMMARIES); readings no sample had are left out."""
    columns: dict[str, list[float]] = {}
    count = 0
    for sample in samples:
        count += 1
        for name, value in sample.items():
            columns.setdefault(name, []).append(float(value))
    metrics: dict[str, float] = {"resource_samples": float(count)}
    for name, values in columns.items():
        for metric, reduction in SUMMARIES.get(name, ()):
            if reduction == "mean":
                metrics[metric] = sum(values) / len(values)
            elif reduction == "max":
                metrics[metric] = max(values)
            else:  # "or": flag bits seen in any sample
                bits = 0
                for value in values:
                    bits |= int(value)
                metrics[metric] = float(bits)
    return metrics


# --- sources -----------------------------------------------------------------------------------------

class ProcessSource:
    """This process's CPU % (100 = one core busy) and RSS; the host's CPU % and memory in use."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._process.cpu_percent(None)  # the first call only sets the reference point
        psutil.cpu_percent(None)

    def read(self) -> dict[str, float]:
        with self._process.oneshot():
            cpu = self._process.cpu_percent(None)
            rss = self._process.memory_info().rss
        return {
            "cpu_percent": cpu,
            "sys_cpu_percent": psutil.cpu_percent(None),
            "rss_mb": rss / 2**20,
            "sys_mem_percent": psutil.virtual_memory().percent,
        }

    def close(self) -> None:
        pass


class NvmlSource:
    """GPU utilisation % and memory in use, the busiest GPU of the host's, through NVML."""

    def __init__(self, nvml: Any, handles: list[Any]) -> None:
        self._nvml = nvml
        self._handles = handles

    @classmethod
    def open(cls) -> NvmlSource | None:
        try:
            import pynvml
        except ImportError:
            return None
        try:
            pynvml.nvmlInit()
        except Exception:  # no driver or no GPU: NVMLError subclasses, or OSError for a missing library
            return None
        try:
            count = pynvml.nvmlDeviceGetCount()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(index) for index in range(count)]
        except Exception:
            pynvml.nvmlShutdown()
            return None
        if not handles:
            pynvml.nvmlShutdown()
            return None
        return cls(pynvml, handles)

    def read(self) -> dict[str, float]:
        utilisation = [self._nvml.nvmlDeviceGetUtilizationRates(h).gpu for h in self._handles]
        memory = [self._nvml.nvmlDeviceGetMemoryInfo(h).used for h in self._handles]
        return {"gpu_util": float(max(utilisation)), "gpu_mem_mb": max(memory) / 2**20}

    def close(self) -> None:
        self._nvml.nvmlShutdown()


class TegrastatsSource:
    """Jetson: `tegrastats` streams a line per interval; a reader thread keeps the latest one. `on_readings`,
    when given, also sees every parsed line as it arrives (the energy meter integrates its power)."""

    def __init__(self, process: subprocess.Popen,
                 on_readings: Callable[[dict[str, float]], None] | None = None) -> None:
        self._process = process
        self._on_readings = on_readings
        self._latest: dict[str, float] = {}
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read_lines, name="yolobench-tegrastats", daemon=True)
        self._reader.start()

    @classmethod
    def open(cls, interval_s: float,
             on_readings: Callable[[dict[str, float]], None] | None = None) -> TegrastatsSource | None:
        binary = shutil.which("tegrastats")
        if binary is None:
            return None
        try:
            process = subprocess.Popen(
                [binary, "--interval", str(max(int(interval_s * 1000), 10))],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            )
        except OSError:
            return None
        return cls(process, on_readings)

    def _read_lines(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            readings = parse_tegrastats(line)
            if readings:
                with self._lock:
                    self._latest = readings
                if self._on_readings is not None:
                    self._on_readings(readings)

    def read(self) -> dict[str, float]:
        with self._lock:  # each line is counted once
            readings, self._latest = self._latest, {}
        return readings

    def close(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self._process.kill()
        self._reader.join(timeout=2)


class ThermalZoneSource:
    """A sysfs thermal sensor in millidegrees (the SoC temperature on a Raspberry Pi)."""

    def __init__(self, path: Path) -> None:
        self._path = path

    @classmethod
    def open(cls, path: Path = THERMAL_ZONE) -> ThermalZoneSource | None:
        try:
            float(path.read_text())
        except (OSError, ValueError):
            return None
        return cls(path)

    def read(self) -> dict[str, float]:
        return {"temp_c": float(self._path.read_text()) / 1000.0}

    def close(self) -> None:
        pass


class ThrottleSource:
    """Raspberry Pi: `vcgencmd get_throttled`, at most once a second, compared with the flags at the start."""

    def __init__(self, command: list[str], first_flags: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._command = command
        self._first_flags = first_flags
        self._clock = clock
        self._last_read = clock()

    @staticmethod
    def _query(command: list[str]) -> int:
        output = subprocess.run(command, capture_output=True, text=True, timeout=2, check=True).stdout
        return parse_throttled(output)

    @classmethod
    def open(cls) -> ThrottleSource | None:
        binary = shutil.which("vcgencmd")
        if binary is None:
            return None
        command = [binary, "get_throttled"]
        try:
            return cls(command, cls._query(command))
        except (OSError, subprocess.SubprocessError, ValueError):
            return None

    def read(self, force: bool = False) -> dict[str, float]:
        now = self._clock()
        if not force and now - self._last_read < THROTTLE_INTERVAL_S:
            return {}
        self._last_read = now
        flags = self._query(self._command)
        return {"throttled": float(throttled_during(self._first_flags, flags)), "throttled_flags": float(flags)}

    def close(self) -> None:
        pass


def available_sources(interval_s: float = DEFAULT_INTERVAL_S) -> list[Source]:
    """Every source this host has; the process source always."""
    sources: list[Source] = [ProcessSource()]
    for opened in (NvmlSource.open(), TegrastatsSource.open(interval_s), ThermalZoneSource.open(), ThrottleSource.open()):
        if opened is not None:
            sources.append(opened)
    return sources


# --- the sampler -------------------------------------------------------------------------------------

class ResourceSampler:
    """Samples resource use on a background thread between `start()` and `stop()`.

    Sources are opened in `start()`, before the timed loop begins, so nothing slow happens while it runs;
    each tick takes a fraction of a millisecond. A source that fails while reading is dropped (a sampler
    must never break a measurement). `start()` again begins a fresh set of readings."""

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S,
                 sources: Callable[[], list[Source]] | None = None) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.interval_s = interval_s
        self._open_sources = sources or (lambda: available_sources(interval_s))
        self._sources: list[Source] = []
        self._samples: list[dict[str, float]] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def source_names(self) -> list[str]:
        return [type(source).__name__ for source in self._sources]

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("ResourceSampler.start() called twice without stop()")
        self._sources = self._open_sources()
        self._samples = []
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="yolobench-resources", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._tick()

    def _tick(self, final: bool = False) -> None:
        sample: dict[str, float] = {}
        for source in list(self._sources):
            try:
                readings = source.read(force=True) if final and isinstance(source, ThrottleSource) else source.read()
            except Exception as error:  # a broken source: drop it, keep measuring
                logger.debug("resource source %s failed: %s", type(source).__name__, error)
                self._sources.remove(source)
                _close(source)
                continue
            sample.update(readings)
        if sample:
            self._samples.append(sample)

    def stop(self) -> dict[str, float]:
        """Stop sampling (one last sample covers the end) and return the summary metrics."""
        if self._thread is None:
            raise RuntimeError("ResourceSampler.stop() called before start()")
        self._stop.set()
        self._thread.join()
        self._thread = None
        self._tick(final=True)
        for source in self._sources:
            _close(source)
        self._sources = []
        return summarise(self._samples)


def _close(source: Source) -> None:
    try:
        source.close()
    except Exception as error:  # closing is tidying up; it must not fail a measurement either
        logger.debug("closing resource source %s failed: %s", type(source).__name__, error)

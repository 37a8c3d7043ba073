"""Energy of the timed phase where the host has a sensor: RAPL package counters (x86, powercap sysfs), NVML
total energy (NVIDIA GPUs) and tegrastats board input power (Jetson). An idle reading before timing tells the
work's own share apart from what the host draws anyway. A host without a sensor gets no metric and a reason."""

from __future__ import annotations

import logging
import re
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from yolobench.measure.resources import TegrastatsSource

logger = logging.getLogger(__name__)

POWERCAP_ROOT = Path("/sys/class/powercap")
# Top-level zones of the MSR interface only: `intel-rapl:N:M` subzones (core, uncore, dram) are inside their
# package, and `intel-rapl-mmio:N` is the same package read another way; either would count it twice.
# AMD's RAPL driver registers under the same `intel-rapl` names.
_RAPL_TOP_ZONE = re.compile(r"^intel-rapl:(\d+)$")
TEGRASTATS_INTERVAL_S = 0.1  # one power sample per 100 ms to integrate
FIRST_LINE_TIMEOUT_S = 3.0  # tegrastats prints its first line after one interval; allow a slow start
STALE_AFTER_S = 2.0  # no tegrastats line for this long: the stream died, holding the last power would lie


class EnergyReader(Protocol):
    """One sensor seen as a counter: joules since it was opened, read at the edges of each phase.
    `whole_board` readers measure the board's input, which already includes CPU and GPU."""

    name: str
    whole_board: bool

    def energy_j(self) -> float: ...

    def close(self) -> None: ...


Opener = Callable[[], tuple[Sequence[EnergyReader], str]]


# --- RAPL (x86: Intel, and AMD Zen through the same powercap interface) ------------------------------------

def read_sysfs(path: Path) -> str:
    return path.read_text()


class RaplPackage:
    """A RAPL package domain: `energy_uj` counts microjoules and wraps at `max_energy_range_uj`. Each read
    adds the step since the previous one, so one wrap between two reads is handled (a wrap takes minutes
    at server power, hours on a laptop; reads come at the edges of each phase)."""

    whole_board = False

    def __init__(self, name: str, energy_path: Path, max_range_uj: int,
                 read: Callable[[Path], str] = read_sysfs) -> None:
        self.name = name
        self._energy_path = energy_path
        self._max_range_uj = max_range_uj
        self._read = read
        self._last_uj = self._counter_uj()
        self._total_uj = 0

    def _counter_uj(self) -> int:
        return int(self._read(self._energy_path).strip())

    def energy_j(self) -> float:
        now_uj = self._counter_uj()
        step_uj = now_uj - self._last_uj
        if step_uj < 0:  # the counter wrapped past max_energy_range_uj since the last read
            step_uj += self._max_range_uj
        self._last_uj = now_uj
        self._total_uj += step_uj
        return self._total_uj / 1e6

    def close(self) -> None:
        pass


def open_rapl(root: Path = POWERCAP_ROOT, read: Callable[[Path], str] = read_sysfs) -> tuple[list[RaplPackage], str]:
    """Every readable RAPL package domain under `root`, or none and why (energy_uj is root-only on kernels
    patched for CVE-2020-8694, so permission denied is common)."""
    if not root.is_dir():
        return [], f"no RAPL ({root} does not exist)"
    zones = sorted((int(match.group(1)), path) for path in root.iterdir()
                   if (match := _RAPL_TOP_ZONE.match(path.name)))
    packages: list[RaplPackage] = []
    problems: list[str] = []
    for _, zone in zones:
        try:
            name = read(zone / "name").strip()
            if not name.startswith("package"):
                continue  # psys is the whole platform, package included: summing it would count the package twice
            max_range_uj = int(read(zone / "max_energy_range_uj").strip())
            packages.append(RaplPackage(f"rapl:{name}", zone / "energy_uj", max_range_uj, read))
        except PermissionError as error:
            denied = Path(error.filename).name if error.filename else "a file"
            problems.append(f"permission denied for {zone.name}/{denied}")
        except (OSError, ValueError) as error:
            problems.append(f"{zone.name}: {error}")
    if packages:
        return packages, ""
    detail = f" ({'; '.join(problems)})" if problems else ""
    return [], f"no RAPL domain readable under {root}{detail}"


# --- NVML (NVIDIA GPUs, Volta and newer) --------------------------------------------------------------------

class NvmlEnergy:
    """One GPU's total energy counter (millijoules since the driver loaded). Holds its own NVML reference
    (nvmlInit is reference-counted), released on close."""

    whole_board = False

    def __init__(self, nvml: Any, handle: Any, index: int) -> None:
        self.name = f"nvml:{index}"
        self._nvml = nvml
        self._handle = handle
        self._first_mj = self._counter_mj()  # raises where the GPU has no counter (before Volta)
        nvml.nvmlInit()

    def _counter_mj(self) -> int:
        return int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))

    def energy_j(self) -> float:
        return (self._counter_mj() - self._first_mj) / 1000.0

    def close(self) -> None:
        self._nvml.nvmlShutdown()


def open_nvml(nvml: Any | None = None) -> tuple[list[NvmlEnergy], str]:
    """A reader per GPU with an energy counter, or none and why. `nvml` is the pynvml module (imported
    here when not given) or a stand-in with the same functions."""
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:
            return [], "no NVIDIA GPU (NVML not installed: pip install nvidia-ml-py)"
    try:
        nvml.nvmlInit()
    except Exception as error:  # NVMLError (no driver, no library) or OSError
        return [], f"no NVIDIA GPU (NVML: {error})"
    readers: list[NvmlEnergy] = []
    problems: list[str] = []
    try:
        for index in range(nvml.nvmlDeviceGetCount()):
            try:
                readers.append(NvmlEnergy(nvml, nvml.nvmlDeviceGetHandleByIndex(index), index))
            except Exception as error:  # NVML_ERROR_NOT_SUPPORTED before Volta
                problems.append(f"GPU {index}: {error}")
    except Exception as error:
        problems.append(f"device count: {error}")
    finally:
        nvml.nvmlShutdown()  # the probe's reference; each reader holds its own
    if readers:
        return readers, ""
    if not problems:
        return [], "no NVIDIA GPU (NVML sees none)"
    return [], f"no NVML total energy counter ({'; '.join(problems)})"


# --- tegrastats (Jetson) ------------------------------------------------------------------------------------

class PowerIntegrator:
    """Energy from power samples, ∫P dt: tegrastats prints the power now, once an interval, and each sample
    is held until the next. Samples come from a reader thread, reads from the measuring one."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._energy_j = 0.0
        self._power_w: float | None = None
        self._sampled_at = 0.0

    def add(self, power_w: float) -> None:
        with self._lock:
            now = self._clock()
            self._energy_j += self._held_j(now)
            self._power_w, self._sampled_at = power_w, now

    def _held_j(self, now: float) -> float:
        return 0.0 if self._power_w is None else self._power_w * (now - self._sampled_at)

    @property
    def has_samples(self) -> bool:
        return self._power_w is not None

    def energy_j(self, stale_after_s: float = float("inf")) -> float:
        """Energy so far; raises when the last sample is older than `stale_after_s` (the stream stopped)."""
        with self._lock:
            now = self._clock()
            if self._power_w is not None and now - self._sampled_at > stale_after_s:
                raise RuntimeError(f"no power sample for {now - self._sampled_at:.1f} s")
            return self._energy_j + self._held_j(now)


class TegrastatsEnergy:
    """Jetson board input power (VDD_IN on Orin and Xavier NX, POM_5V_IN on the Nano) from tegrastats,
    integrated over time. The input rail is the whole board, CPU and GPU included."""

    name = "tegrastats:board_input"
    whole_board = True

    def __init__(self, clock: Callable[[], float] = time.monotonic, stale_after_s: float = STALE_AFTER_S) -> None:
        self._integrator = PowerIntegrator(clock)
        self._stale_after_s = stale_after_s
        self._first_line = threading.Event()
        self._stream: TegrastatsSource | None = None

    def add(self, readings: dict[str, float]) -> None:
        """One parsed tegrastats line (see `parse_tegrastats`)."""
        if "power_mw" in readings:
            self._integrator.add(readings["power_mw"] / 1000.0)
        self._first_line.set()

    @property
    def has_power(self) -> bool:
        return self._integrator.has_samples

    def energy_j(self) -> float:
        return self._integrator.energy_j(self._stale_after_s)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


def open_tegrastats(process: subprocess.Popen | None = None, interval_s: float = TEGRASTATS_INTERVAL_S,
                    first_line_s: float = FIRST_LINE_TIMEOUT_S,
                    clock: Callable[[], float] = time.monotonic) -> tuple[list[TegrastatsEnergy], str]:
    """The board input power of a Jetson, or none and why. `process` is a running tegrastats (or a recording
    played back); without one, tegrastats is started when the host has it."""
    reader = TegrastatsEnergy(clock)
    if process is not None:
        reader._stream = TegrastatsSource(process, on_readings=reader.add)
    else:
        reader._stream = TegrastatsSource.open(interval_s, on_readings=reader.add)
        if reader._stream is None:
            return [], "not a Jetson (no tegrastats)"
    if not reader._first_line.wait(first_line_s):
        reader.close()
        return [], f"tegrastats printed no line in {first_line_s:g} s"
    if not reader.has_power:
        reader.close()  # AGX Xavier and AGX Orin list module rails only (GPU, CPU, SOC...), no board input
        return [], "tegrastats shows no board input rail (VDD_IN or POM_5V_IN)"
    return [reader], ""


# --- the meter ----------------------------------------------------------------------------------------------

def energy_metrics(energy_j: float, wall_s: float, inferences: int, idle_w: float | None) -> dict[str, float]:
    """The timed phase's energy -> power_w_mean, energy_mj_per_inference and, with an idle reading, the same
    above idle (the share the inferences themselves cost)."""
    power_w = energy_j / wall_s
    metrics = {"power_w_mean": power_w, "energy_mj_per_inference": energy_j * 1000.0 / inferences}
    if idle_w is not None:
        above_w = power_w - idle_w
        metrics.update(power_w_idle=idle_w, power_w_above_idle=above_w,
                       energy_mj_per_inference_above_idle=above_w * wall_s * 1000.0 / inferences)
    return metrics


class EnergyMeter:
    """The sum of every open sensor over the timed phase. A sensor that fails mid-way makes the meter
    unavailable (a partial sum would read as a lower figure), with the failure as its reason."""

    def __init__(self, readers: Sequence[EnergyReader] = (), reason: str = "", skipped: str = "",
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self._readers = list(readers)
        self.reason = "" if self._readers else (reason or "no energy sensor")
        self.skipped = skipped  # why the sensors not in `sources` are missing ("" when none is)
        self._clock = clock
        self._sleep = sleep
        self._idle_w: float | None = None
        self._start: tuple[float, float] | None = None

    @property
    def available(self) -> bool:
        return bool(self._readers)

    @property
    def sources(self) -> list[str]:
        return [reader.name for reader in self._readers]

    def tags(self) -> dict[str, str]:
        """What to tag a run with: the sources summed, or why there is no energy metric."""
        if self.available:
            return {"energy_sources": ",".join(self.sources)}
        return {"energy_unavailable": self.reason}

    def _mark(self) -> tuple[float, float] | None:
        """(time, joules summed over the sensors), or None when a sensor failed (the meter is then off)."""
        at_s = self._clock()
        total_j = 0.0
        for reader in self._readers:
            try:
                total_j += reader.energy_j()
            except Exception as error:  # a sensor must never break a measurement
                self._fail(f"energy reading failed ({reader.name}: {error})")
                return None
        return at_s, total_j

    def _fail(self, reason: str) -> None:
        logger.warning("%s; no energy metrics", reason)
        self.close()
        self.reason = reason

    def measure_idle(self, seconds: float = 1.0) -> None:
        """The host's power at rest, before the timed phase: sleeps `seconds`."""
        if seconds <= 0:
            raise ValueError(f"seconds must be > 0, got {seconds}")
        if not self.available:
            return
        first = self._mark()
        self._sleep(seconds)
        last = self._mark()
        if first is not None and last is not None and last[0] > first[0]:
            self._idle_w = (last[1] - first[1]) / (last[0] - first[0])

    def start(self) -> None:
        if self.available:
            self._start = self._mark()

    def stop(self, inferences: int) -> dict[str, float]:
        """The metrics of the phase since `start()`; {} when no sensor is available."""
        if inferences <= 0:
            raise ValueError(f"inferences must be > 0, got {inferences}")
        if not self.available:
            return {}
        if self._start is None:
            raise RuntimeError("EnergyMeter.stop() called before start()")
        first, self._start = self._start, None
        last = self._mark()
        if last is None or last[0] <= first[0]:
            return {}
        return energy_metrics(last[1] - first[1], last[0] - first[0], inferences, self._idle_w)

    def close(self) -> None:
        for reader in self._readers:
            try:
                reader.close()
            except Exception as error:  # tidying up must not fail a measurement
                logger.debug("closing energy reader %s failed: %s", reader.name, error)
        self._readers = []


DEFAULT_OPENERS: tuple[Opener, ...] = (open_rapl, open_nvml, open_tegrastats)


def open_energy_meter(openers: Sequence[Opener] = DEFAULT_OPENERS, clock: Callable[[], float] = time.monotonic,
                      sleep: Callable[[float], None] = time.sleep) -> EnergyMeter:
    """Every sensor this host has, summed (CPU package + GPU is the system's draw for the work). A board
    input rail already includes CPU and GPU, so where there is one it is the only source. Never raises."""
    readers: list[EnergyReader] = []
    reasons: list[str] = []
    for opener in openers:
        try:
            opened, reason = opener()
        except Exception as error:  # an opener bug must not stop a sweep; it is logged and named
            logger.warning("energy sensor %s failed to open", getattr(opener, "__name__", opener), exc_info=True)
            opened, reason = [], f"{getattr(opener, '__name__', 'sensor')} failed: {error!r}"
        readers.extend(opened)
        if reason:
            reasons.append(reason)
    whole_board = [reader for reader in readers if reader.whole_board][:1]
    if whole_board:
        for reader in readers:
            if reader not in whole_board:
                reasons.append(f"{reader.name} left out: {whole_board[0].name} includes it")
                reader.close()
        readers = whole_board
    return EnergyMeter(readers, reason="; ".join(reasons), skipped="; ".join(reasons) if readers else "",
                       clock=clock, sleep=sleep)

"""Energy meter: the RAPL reader on recorded powercap trees (wrap-around, permission denied), the NVML reader
on a recording stand-in for pynvml, the tegrastats reader on recorded Orin, Xavier and Nano lines (played back
through a real process too), the derived metrics with a fake clock, and the reason this host has no sensor."""

from __future__ import annotations

import errno
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.test_resources import JETSON_NANO, ORIN_NANO
from yolobench.measure.energy import (
    EnergyMeter,
    PowerIntegrator,
    TegrastatsEnergy,
    energy_metrics,
    open_energy_meter,
    open_nvml,
    open_rapl,
    open_tegrastats,
)
from yolobench.measure.resources import parse_tegrastats

INTEL_RANGE_UJ = 262143328850  # max_energy_range_uj of an Intel package domain

# Recorded tegrastats lines: a Xavier NX on JetPack 5 (mW units) and on JetPack 4 (no units), and an AGX
# Xavier, which lists module rails (GPU, CPU, SOC, CV, VDDRQ, SYS5V) but no board input.
XAVIER_NX = (
    "RAM 3120/7773MB (lfb 412x4MB) SWAP 0/3886MB (cached 0MB) CPU [14%@1190,9%@1190,11%@1190,8%@1190,off,off] "
    "EMC_FREQ 7%@1600 GR3D_FREQ 61%@[1109] VIC_FREQ 115 APE 150 AUX@41C CPU@43.5C AO@40.5C GPU@42C PMIC@50C "
    "VDD_IN 6830mW/6204mW VDD_CPU_GPU_CV 2462mW/2016mW VDD_SOC 1518mW/1470mW"
)
XAVIER_NX_JP4 = (
    "RAM 2914/7773MB (lfb 301x4MB) SWAP 0/3886MB (cached 0MB) CPU [6%@1190,4%@1190,off,off,off,off] "
    "EMC_FREQ 0% GR3D_FREQ 0% AO@35C GPU@34.5C PMIC@100C AUX@34.5C CPU@36C thermal@35C "
    "VDD_IN 4543/4543 VDD_CPU_GPU_CV 855/855 VDD_SOC 1304/1304"
)
AGX_XAVIER = (
    "RAM 5210/31920MB (lfb 6500x4MB) SWAP 0/15960MB (cached 0MB) CPU [5%@1190,2%@1190,3%@1190,1%@1190,off,off,"
    "off,off] EMC_FREQ 0% GR3D_FREQ 0% AO@36C GPU@36.5C Tdiode@38.75C PMIC@100C AUX@35.5C CPU@37.5C "
    "thermal@36.3C Tboard@36C GPU 155/155 CPU 465/465 SOC 1551/1551 CV 0/0 VDDRQ 310/310 SYS5V 1789/1789"
)


# --- RAPL ---------------------------------------------------------------------------------------------------

def write_zone(root: Path, zone: str, name: str, energy_uj: int, max_range_uj: int = INTEL_RANGE_UJ) -> None:
    """One powercap zone as /sys/class/powercap lists it (every zone, subzones included, at the top)."""
    folder = root / zone
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "name").write_text(f"{name}\n")
    (folder / "energy_uj").write_text(f"{energy_uj}\n")
    (folder / "max_energy_range_uj").write_text(f"{max_range_uj}\n")


def set_energy(root: Path, zone: str, energy_uj: int) -> None:
    (root / zone / "energy_uj").write_text(f"{energy_uj}\n")


def laptop_tree(root: Path) -> None:
    """An Intel laptop: package-0 with core and uncore subzones, psys (the platform), and the MMIO copy."""
    (root / "intel-rapl").mkdir(parents=True)
    (root / "intel-rapl" / "enabled").write_text("1\n")  # the control type, not a zone
    write_zone(root, "intel-rapl:0", "package-0", 1_000_000)
    write_zone(root, "intel-rapl:0:0", "core", 500_000)
    write_zone(root, "intel-rapl:0:1", "uncore", 100_000)
    write_zone(root, "intel-rapl:1", "psys", 9_000_000)
    write_zone(root, "intel-rapl-mmio:0", "package-0", 1_000_000)


def test_rapl_reads_only_top_level_packages(tmp_path: Path) -> None:
    laptop_tree(tmp_path)
    packages, reason = open_rapl(tmp_path)
    assert reason == "" and [package.name for package in packages] == ["rapl:package-0"]
    for zone, energy_uj in (("intel-rapl:0", 3_500_000), ("intel-rapl:0:0", 2_000_000),
                            ("intel-rapl:1", 20_000_000), ("intel-rapl-mmio:0", 3_500_000)):
        set_energy(tmp_path, zone, energy_uj)
    assert packages[0].energy_j() == pytest.approx(2.5)  # the package's step only: no subzone, psys or MMIO copy
    set_energy(tmp_path, "intel-rapl:0", 4_000_000)
    assert packages[0].energy_j() == pytest.approx(3.0)  # a running total since the reader opened


def test_rapl_opens_every_socket_in_numeric_order(tmp_path: Path) -> None:
    for index in (1, 0, 10):  # sorted by number, not text
        write_zone(tmp_path, f"intel-rapl:{index}", f"package-{index}", 0)
        write_zone(tmp_path, f"intel-rapl:{index}:0", "dram", 0)
    packages, reason = open_rapl(tmp_path)
    assert reason == ""
    assert [package.name for package in packages] == ["rapl:package-0", "rapl:package-1", "rapl:package-10"]


def test_rapl_counter_wrap_around(tmp_path: Path) -> None:
    range_uj = 65_532_610_987  # an AMD package's range, which wraps within minutes under load
    write_zone(tmp_path, "intel-rapl:0", "package-0", range_uj - 1_000_000, max_range_uj=range_uj)
    (package,), _ = open_rapl(tmp_path)
    set_energy(tmp_path, "intel-rapl:0", 500_000)  # passed the top and began again
    assert package.energy_j() == pytest.approx(1.5)
    set_energy(tmp_path, "intel-rapl:0", 2_500_000)
    assert package.energy_j() == pytest.approx(3.5)  # no wrap this time: a plain step of 2 J


def read_as_unprivileged_user(path: Path) -> str:
    """Reads a file as a non-root user would: no read bit, EACCES (the tests may run as root, which ignores it)."""
    if not path.stat().st_mode & (stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))
    return path.read_text()


def test_rapl_permission_denied_names_the_file(tmp_path: Path) -> None:
    laptop_tree(tmp_path)
    for zone in ("intel-rapl:0", "intel-rapl:0:0", "intel-rapl:0:1", "intel-rapl:1", "intel-rapl-mmio:0"):
        (tmp_path / zone / "energy_uj").chmod(0)  # root-only since CVE-2020-8694; no read bit, as a user sees it
    packages, reason = open_rapl(tmp_path, read=read_as_unprivileged_user)
    assert packages == []
    assert reason == f"no RAPL domain readable under {tmp_path} (permission denied for intel-rapl:0/energy_uj)"


def test_rapl_absent_or_without_a_package(tmp_path: Path) -> None:
    assert open_rapl(tmp_path / "powercap") == ([], f"no RAPL ({tmp_path / 'powercap'} does not exist)")
    write_zone(tmp_path, "dtpm:0", "soc", 0)  # an ARM board's powercap tree: no RAPL at all
    write_zone(tmp_path, "intel-rapl:0", "psys", 0)
    assert open_rapl(tmp_path) == ([], f"no RAPL domain readable under {tmp_path}")
    (tmp_path / "intel-rapl:0" / "name").write_text("package-0\n")
    (tmp_path / "intel-rapl:0" / "energy_uj").write_text("garbage\n")
    packages, reason = open_rapl(tmp_path)
    assert packages == [] and "intel-rapl:0: invalid literal" in reason


# --- NVML ---------------------------------------------------------------------------------------------------

class RecordedNvml:
    """Stand-in for pynvml with the functions the energy reader calls: per GPU, the successive total-energy
    readings (mJ) of a recording, or None for a GPU without the counter (before Volta)."""

    class NVMLError(Exception):
        pass

    def __init__(self, counters_mj: list[list[int] | None], init_error: str = "") -> None:
        self._counters = [list(counter) if counter is not None else None for counter in counters_mj]
        self._init_error = init_error
        self.references = 0

    def nvmlInit(self) -> None:
        if self._init_error:
            raise self.NVMLError(self._init_error)
        self.references += 1

    def nvmlShutdown(self) -> None:
        self.references -= 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self._counters)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:
        counter = self._counters[handle]
        if counter is None:
            raise self.NVMLError("Not Supported")
        return counter.pop(0) if len(counter) > 1 else counter[0]


def test_the_stand_in_calls_functions_real_pynvml_has() -> None:
    pynvml = pytest.importorskip("pynvml")
    called = [name for name in vars(RecordedNvml) if name.startswith("nvml")]
    assert len(called) == 5 and all(callable(getattr(pynvml, name, None)) for name in called)


def test_nvml_counter_per_gpu_and_its_references() -> None:
    nvml = RecordedNvml([[9_000_000, 9_001_500, 9_004_000], None, [100, 350]])
    readers, reason = open_nvml(nvml)
    assert reason == "" and [reader.name for reader in readers] == ["nvml:0", "nvml:2"]  # GPU 1 has no counter
    assert nvml.references == 2  # the probe's reference was given back; each reader holds one
    assert readers[0].energy_j() == pytest.approx(1.5) and readers[0].energy_j() == pytest.approx(4.0)
    assert readers[1].energy_j() == pytest.approx(0.25)
    for reader in readers:
        reader.close()
    assert nvml.references == 0


def test_nvml_reasons() -> None:
    assert open_nvml(RecordedNvml([], init_error="NVML Shared Library Not Found")) == (
        [], "no NVIDIA GPU (NVML: NVML Shared Library Not Found)")
    nvml = RecordedNvml([None])
    assert open_nvml(nvml) == ([], "no NVML total energy counter (GPU 0: Not Supported)")
    assert nvml.references == 0
    assert open_nvml(RecordedNvml([])) == ([], "no NVIDIA GPU (NVML sees none)")


# --- tegrastats ---------------------------------------------------------------------------------------------

def test_board_input_power_of_each_jetson_generation() -> None:
    powers = {line: parse_tegrastats(line).get("power_mw") for line in (ORIN_NANO, XAVIER_NX, XAVIER_NX_JP4,
                                                                         JETSON_NANO, AGX_XAVIER)}
    assert list(powers.values()) == [4800.0, 6830.0, 4543.0, 3108.0, None]  # the power now, not the average


def test_tegrastats_energy_integrates_held_samples() -> None:
    now = [0.0]
    reader = TegrastatsEnergy(clock=lambda: now[0], stale_after_s=2.0)
    assert not reader.has_power
    reader.add(parse_tegrastats(ORIN_NANO))  # 4.8 W from t=0
    now[0] = 0.5
    reader.add(parse_tegrastats(XAVIER_NX))  # 6.83 W from t=0.5
    now[0] = 0.75
    reader.add(parse_tegrastats(AGX_XAVIER))  # a line without the rail changes nothing
    now[0] = 1.0
    assert reader.energy_j() == pytest.approx(4.8 * 0.5 + 6.83 * 0.5)
    now[0] = 2.6  # 2.1 s after the last power sample: the stream has stopped
    with pytest.raises(RuntimeError, match="no power sample for 2.1 s"):
        reader.energy_j()


def test_power_integrator_before_any_sample() -> None:
    now = [5.0]
    integrator = PowerIntegrator(clock=lambda: now[0])
    assert integrator.energy_j() == 0.0 and not integrator.has_samples
    integrator.add(2.0)
    now[0] = 8.0
    assert integrator.energy_j() == pytest.approx(6.0)


def play_back(line: str) -> subprocess.Popen:
    """A process that prints a recorded tegrastats line every 20 ms, as tegrastats --interval 20 would."""
    script = f"while true; do echo '{line}'; sleep 0.02; done"
    return subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE, text=True)


def test_tegrastats_reader_follows_a_streaming_process() -> None:
    process = play_back(ORIN_NANO)
    readers, reason = open_tegrastats(process=process)
    assert reason == "" and [reader.name for reader in readers] == ["tegrastats:board_input"]
    try:
        first_j, first_s = readers[0].energy_j(), time.monotonic()
        time.sleep(0.2)
        power_w = (readers[0].energy_j() - first_j) / (time.monotonic() - first_s)
        assert power_w == pytest.approx(4.8, rel=0.05)
    finally:
        readers[0].close()
    assert process.poll() is not None  # the stream was stopped


def test_tegrastats_without_a_board_rail_or_without_lines() -> None:
    agx = play_back(AGX_XAVIER)
    assert open_tegrastats(process=agx) == ([], "tegrastats shows no board input rail (VDD_IN or POM_5V_IN)")
    assert agx.poll() is not None
    silent = subprocess.Popen(["sleep", "5"], stdout=subprocess.PIPE, text=True)
    assert open_tegrastats(process=silent, first_line_s=0.2) == ([], "tegrastats printed no line in 0.2 s")
    assert silent.poll() is not None


# --- the meter ----------------------------------------------------------------------------------------------

class Host:
    """A fake clock and sensors that draw set powers while time advances (sleep = advance)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.power_w: dict[str, float] = {}
        self.energy_j: dict[str, float] = {}
        self.closed: list[str] = []
        self.broken: set[str] = set()

    def advance(self, seconds: float) -> None:
        for name, power_w in self.power_w.items():
            self.energy_j[name] = self.energy_j.get(name, 0.0) + power_w * seconds
        self.now += seconds

    def opener(self, name: str, whole_board: bool = False):
        return lambda: ([HostReader(self, name, whole_board)], "")


class HostReader:
    def __init__(self, host: Host, name: str, whole_board: bool) -> None:
        self.host, self.name, self.whole_board = host, name, whole_board

    def energy_j(self) -> float:
        if self.name in self.host.broken:
            raise OSError("sensor went away")
        return self.host.energy_j.get(self.name, 0.0)

    def close(self) -> None:
        self.host.closed.append(self.name)


def test_derived_metrics_sum_the_sources_and_subtract_idle() -> None:
    host = Host()
    no_jetson = lambda: ([], "not a Jetson (no tegrastats)")  # noqa: E731
    meter = open_energy_meter([host.opener("rapl:package-0"), host.opener("nvml:0"), no_jetson],
                              clock=lambda: host.now, sleep=host.advance)
    assert meter.available and meter.reason == "" and meter.sources == ["rapl:package-0", "nvml:0"]
    assert meter.skipped == "not a Jetson (no tegrastats)"
    host.power_w = {"rapl:package-0": 6.0, "nvml:0": 14.0}
    meter.measure_idle(2.0)
    assert host.now == 2.0  # it slept
    host.advance(5.0)  # loading the model between idle and timing: not counted
    meter.start()
    host.power_w = {"rapl:package-0": 30.0, "nvml:0": 45.0}
    host.advance(4.0)
    assert meter.stop(inferences=200) == pytest.approx({
        "power_w_mean": 75.0, "energy_mj_per_inference": 1500.0, "power_w_idle": 20.0,
        "power_w_above_idle": 55.0, "energy_mj_per_inference_above_idle": 1100.0,
    })
    assert meter.tags() == {"energy_sources": "rapl:package-0,nvml:0"}
    meter.close()
    assert host.closed == ["rapl:package-0", "nvml:0"] and not meter.available


def test_without_idle_only_the_phase_and_arithmetic_checks() -> None:
    assert energy_metrics(12.0, 3.0, 40, None) == pytest.approx({"power_w_mean": 4.0, "energy_mj_per_inference": 300.0})
    below = energy_metrics(6.0, 2.0, 10, idle_w=3.5)  # noise can put the phase under idle: kept, not hidden
    assert below["power_w_above_idle"] == pytest.approx(-0.5)
    assert below["energy_mj_per_inference_above_idle"] == pytest.approx(-100.0)
    empty = EnergyMeter()
    assert not empty.available and empty.reason == "no energy sensor" and empty.stop(inferences=3) == {}


def test_meter_misuse_is_a_bug() -> None:
    host = Host()
    meter = open_energy_meter([host.opener("nvml:0")], clock=lambda: host.now, sleep=host.advance)
    with pytest.raises(RuntimeError, match="before start"):
        meter.stop(10)
    with pytest.raises(ValueError, match="inferences must be > 0"):
        meter.stop(0)
    with pytest.raises(ValueError, match="seconds must be > 0"):
        meter.measure_idle(0)


def test_a_failing_sensor_turns_the_meter_off_with_its_reason() -> None:
    host = Host()
    meter = open_energy_meter([host.opener("rapl:package-0"), host.opener("nvml:0")],
                              clock=lambda: host.now, sleep=host.advance)
    host.power_w = {"rapl:package-0": 10.0, "nvml:0": 10.0}
    meter.start()
    host.advance(1.0)
    host.broken.add("nvml:0")
    assert meter.stop(5) == {}  # not the CPU package alone, which would read as a frugal variant
    assert not meter.available and meter.reason == "energy reading failed (nvml:0: sensor went away)"
    assert host.closed == ["rapl:package-0", "nvml:0"]
    assert meter.tags() == {"energy_unavailable": meter.reason}


def test_a_board_input_rail_is_the_only_source() -> None:
    host = Host()
    meter = open_energy_meter([host.opener("nvml:0"), host.opener("tegrastats:board_input", whole_board=True)],
                              clock=lambda: host.now, sleep=host.advance)
    assert meter.sources == ["tegrastats:board_input"] and host.closed == ["nvml:0"]
    assert meter.skipped == "nvml:0 left out: tegrastats:board_input includes it"


def test_an_opener_that_raises_does_not_stop_the_others() -> None:
    host = Host()

    def broken_opener() -> tuple[list, str]:
        raise KeyError("surprise")

    meter = open_energy_meter([broken_opener, host.opener("nvml:0")])
    assert meter.sources == ["nvml:0"] and "broken_opener failed: KeyError('surprise')" in meter.skipped
    assert not open_energy_meter([broken_opener]).available


def test_reasons_from_each_reader_joined(tmp_path: Path) -> None:
    laptop_tree(tmp_path)
    (tmp_path / "intel-rapl:0" / "energy_uj").chmod(0)
    meter = open_energy_meter([lambda: open_rapl(tmp_path, read_as_unprivileged_user),
                               lambda: open_nvml(RecordedNvml([None])),
                               lambda: open_tegrastats(process=play_back(AGX_XAVIER))])
    assert meter.reason == (f"no RAPL domain readable under {tmp_path} (permission denied for "
                            "intel-rapl:0/energy_uj); no NVML total energy counter (GPU 0: Not Supported); "
                            "tegrastats shows no board input rail (VDD_IN or POM_5V_IN)")
    assert meter.stop(10) == {} and meter.tags() == {"energy_unavailable": meter.reason}


def test_this_host_says_why_it_has_no_energy_metric() -> None:
    meter = open_energy_meter()
    try:
        if meter.available:  # a host with a readable sensor: it is named, and there is no reason
            assert meter.sources and meter.reason == ""
            return
        for reader in ("RAPL", "NVML", "tegrastats"):
            assert reader in meter.reason
        meter.measure_idle(0.01)
        meter.start()
        assert meter.stop(inferences=10) == {} and meter.sources == []
    finally:
        meter.close()

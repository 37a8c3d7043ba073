"""Resource sampling: the parsers on recorded tegrastats and vcgencmd output, the summary rules, each
source through a real file or process, and the sampler on this host's CPU and memory (psutil). Also the
host fingerprint's library versions, which come from the same lookup as the build stages' cache keys."""

from __future__ import annotations

import importlib.metadata
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from yolobench.measure.resources import (
    ProcessSource,
    ResourceSampler,
    TegrastatsSource,
    ThermalZoneSource,
    ThrottleSource,
    parse_tegrastats,
    parse_throttled,
    summarise,
    throttled_during,
)

# Recorded lines: a Jetson Orin Nano (JetPack 6) and a Jetson Nano (JetPack 4, power in POM_* without units,
# a PMIC sensor that always reads 100C, two cores off).
ORIN_NANO = (
    "11-21-2024 15:24:11 RAM 2335/7620MB (lfb 1101x4MB) SWAP 0/3810MB (cached 0MB) "
    "CPU [2%@729,1%@729,0%@729,5%@729,10%@1510,0%@729] GR3D_FREQ 37% cpu@47.25C soc2@45.437C soc0@46.093C "
    "gpu@46.312C tj@48.5C soc1@45.843C VDD_IN 4800mW/4711mW VDD_CPU_GPU_CV 481mW/481mW VDD_SOC 1442mW/1442mW"
)
JETSON_NANO = (
    "RAM 1543/3964MB (lfb 135x4MB) SWAP 0/1982MB (cached 0MB) IRAM 0/252kB(lfb 252kB) "
    "CPU [12%@1479,4%@1479,off,off] EMC_FREQ 3%@1600 GR3D_FREQ 55%@921 APE 25 PLL@35C CPU@37.5C PMIC@100C "
    "GPU@36.5C AO@44C thermal@36.75C POM_5V_IN 3108/3108 POM_5V_GPU 1078/1078 POM_5V_CPU 431/431"
)


def test_tegrastats_lines_of_two_jetson_generations() -> None:
    orin = parse_tegrastats(ORIN_NANO)
    assert orin == pytest.approx({"tegra_ram_mb": 2335.0, "tegra_cpu_percent": 3.0, "gpu_util": 37.0,
                                  "temp_c": 48.5, "power_mw": 4800.0})
    nano = parse_tegrastats(JETSON_NANO)
    assert nano == pytest.approx({"tegra_ram_mb": 1543.0, "tegra_cpu_percent": 8.0, "gpu_util": 55.0,
                                  "temp_c": 44.0, "power_mw": 3108.0})  # off cores and the PMIC left out
    assert parse_tegrastats("RAM 100/200MB cpu@-256C gpu@30C") == {"tegra_ram_mb": 100.0, "temp_c": 30.0}
    assert parse_tegrastats("nothing to see") == {}


def test_get_throttled_output_and_what_counts_as_throttled() -> None:
    assert parse_throttled("throttled=0x0\n") == 0
    assert parse_throttled("throttled=0x50005\n") == 0x50005
    with pytest.raises(ValueError, match="not vcgencmd"):
        parse_throttled("VCHI initialization failed")
    assert not throttled_during(0x50000, 0x50000)  # happened before the timed phase, over now
    assert throttled_during(0x50000, 0x50005)  # under-voltage and throttling now
    assert throttled_during(0x0, 0x20000)  # capped at some point since the start, over by now
    assert not throttled_during(0x0, 0x0)


def test_summary_reductions() -> None:
    samples = [
        {"cpu_percent": 100.0, "rss_mb": 50.0, "gpu_util": 10.0, "throttled": 0.0, "throttled_flags": 0x10000},
        {"cpu_percent": 50.0, "rss_mb": 70.0, "gpu_util": 30.0, "throttled": 1.0, "throttled_flags": 0x4},
        {"cpu_percent": 0.0, "rss_mb": 60.0, "unknown_reading": 5.0},
    ]
    assert summarise(samples) == pytest.approx({
        "resource_samples": 3.0, "cpu_percent_mean": 50.0, "cpu_percent_max": 100.0, "rss_mb_max": 70.0,
        "gpu_util_mean": 20.0, "gpu_util_max": 30.0, "throttled": 1.0, "throttled_flags": float(0x10004),
    })
    assert summarise([]) == {"resource_samples": 0.0}


def test_thermal_zone_file(tmp_path: Path) -> None:
    zone = tmp_path / "temp"
    zone.write_text("52312\n")
    source = ThermalZoneSource.open(zone)
    assert source is not None and source.read() == {"temp_c": pytest.approx(52.312)}
    assert ThermalZoneSource.open(tmp_path / "absent") is None


def test_throttle_source_asks_the_command_at_most_once_a_second() -> None:
    now = [0.0]
    source = ThrottleSource(["printf", "throttled=0x50005\\n"], first_flags=0x50000, clock=lambda: now[0])
    assert source.read() == {}  # the flags at the start were just read
    now[0] = 1.5
    assert source.read() == {"throttled": 1.0, "throttled_flags": float(0x50005)}
    now[0] = 1.7
    assert source.read() == {}
    assert source.read(force=True)["throttled"] == 1.0


def test_tegrastats_source_follows_a_streaming_process() -> None:
    import subprocess

    script = f"while true; do echo '{ORIN_NANO}'; sleep 0.02; done"
    source = TegrastatsSource(subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE, text=True))
    try:
        deadline = time.monotonic() + 5
        readings: dict[str, float] = {}
        while not readings and time.monotonic() < deadline:
            time.sleep(0.05)
            readings = source.read()
        assert readings["gpu_util"] == 37.0 and readings["power_mw"] == 4800.0
    finally:
        source.close()
    assert source._process.poll() is not None  # the stream was stopped


def test_process_source_reads_this_process() -> None:
    readings = ProcessSource().read()
    assert set(readings) == {"cpu_percent", "sys_cpu_percent", "rss_mb", "sys_mem_percent"}
    assert readings["rss_mb"] == pytest.approx(psutil.Process().memory_info().rss / 2**20, rel=0.2)
    assert 0 < readings["sys_mem_percent"] <= 100


def test_sampler_sees_a_busy_thread_and_its_memory() -> None:
    sampler = ResourceSampler(interval_s=0.02)
    sampler.start()
    assert "ProcessSource" in sampler.source_names
    block = np.ones(64 * 2**20 // 8)  # 64 MB held while sampling
    deadline = time.perf_counter() + 0.4
    while time.perf_counter() < deadline:  # keep one core busy
        block[: 2**16] += 1.0
    metrics = sampler.stop()
    assert metrics["resource_samples"] >= 5
    assert metrics["cpu_percent_mean"] > 10  # 0 would mean the process was never seen working
    assert metrics["rss_mb_max"] > block.nbytes / 2**20
    assert 0 < metrics["sys_mem_percent_max"] <= 100 and 0 <= metrics["sys_cpu_percent_mean"] <= 100
    assert not [t for t in threading.enumerate() if t.name == "yolobench-resources"]  # the thread has ended
    del block


class Flaky:
    """A source that works once, then fails: the sampler must drop it and go on."""

    def __init__(self) -> None:
        self.reads = 0
        self.closed = False

    def read(self) -> dict[str, float]:
        self.reads += 1
        if self.reads > 1:
            raise OSError("sensor went away")
        return {"temp_c": 40.0}

    def close(self) -> None:
        self.closed = True


def test_a_failing_source_is_dropped_and_each_start_begins_afresh() -> None:
    opened: list[Flaky] = []

    def sources() -> list:
        opened.append(Flaky())
        return [ProcessSource(), opened[-1]]

    sampler = ResourceSampler(interval_s=0.01, sources=sources)
    sampler.start()
    time.sleep(0.1)
    first = sampler.stop()
    assert first["temp_c_max"] == 40.0 and first["resource_samples"] >= 3 and "rss_mb_max" in first
    assert opened[0].reads == 2 and opened[0].closed  # dropped (and closed) after its failure, never read again
    sampler.start()
    second = sampler.stop()
    assert len(opened) == 2 and opened[1].closed
    assert second["resource_samples"] <= first["resource_samples"]
    with pytest.raises(RuntimeError):
        sampler.stop()
    with pytest.raises(ValueError):
        ResourceSampler(interval_s=0)


@pytest.mark.skipif(sys.platform != "linux", reason="NVML and sysfs sources are probed on Linux")
def test_absent_sources_are_skipped_silently() -> None:
    from yolobench.measure.resources import available_sources

    names = {type(source).__name__ for source in available_sources()}
    assert "ProcessSource" in names
    if not Path("/sys/class/thermal/thermal_zone0/temp").exists():
        assert "ThermalZoneSource" not in names
    if not any(Path(p, "vcgencmd").exists() for p in os.environ.get("PATH", "").split(os.pathsep)):
        assert "ThrottleSource" not in names


def test_one_version_lookup_behind_every_name_it_had() -> None:
    from yolobench import gpu, versions
    from yolobench.measure.system import LIBRARIES, host_fingerprint, library_versions
    from yolobench.stages import ultralytics_env

    numpy_version = importlib.metadata.version("numpy")
    assert gpu.installed_version is versions.installed_version
    assert ultralytics_env.versions is versions.versions
    assert versions.installed_version("not-a-distribution-x9", "numpy") == numpy_version  # the first installed one
    assert versions.installed_version("not-a-distribution-x9") == ""
    # Cache keys name every package asked for, 'absent' included; onnxruntime is whichever of its wheels is here.
    found = versions.versions(("numpy", "not-a-distribution-x9", "onnxruntime"))
    assert found["numpy"] == numpy_version and found["not-a-distribution-x9"] == "absent"
    assert found["onnxruntime"] == versions.installed_version("onnxruntime", "onnxruntime-gpu") != ""
    # The host fingerprint lists each wheel under its own name and leaves out what is not installed.
    libraries = library_versions()
    assert libraries["numpy"] == numpy_version and set(libraries) <= set(LIBRARIES)
    for name in set(LIBRARIES) - set(libraries):
        assert versions.installed_version(name) == ""
    assert host_fingerprint()["version.numpy"] == numpy_version

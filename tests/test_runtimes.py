"""The runtime registry: built-ins and plug-ins through one door (register() or the `yolobench.runtimes` entry
points), an unknown name refused with the known ones, a plug-in's description (axes, options model) read by the
sweep file and the labels without a line of yolobench changed, and `yolobench doctor` reporting each runtime
and its providers. What every runtime must do is in tests/runtime_conformance.py."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

import yolobench.runtimes as runtimes_module
from tests.runtime_conformance import RuntimeTestCase, tiny_model
from yolobench.cache import Artifact, ArtifactCache
from yolobench.runtimes import (
    Availability, AxisInfo, DecodeSettings, Registry, Runtime, RuntimeInfo, SessionBase, get_runtime, registry,
    runtime_info,
)  # fmt: skip

RUNTIMES = registry.names()


def test_the_builtin_runtimes_are_registered() -> None:
    assert {"onnxruntime", "tensorrt", "depthai"} <= set(RUNTIMES)


@pytest.mark.parametrize("name", RUNTIMES)
def test_every_runtime_is_a_runtime_with_its_registered_description(name: str) -> None:
    runtime = get_runtime(name)
    assert isinstance(runtime, Runtime)
    assert runtime.info is runtime_info(name) and runtime.info.name == name
    availability = runtime.availability()
    assert isinstance(availability, Availability) and availability.reason.strip()


def test_unknown_runtime_is_refused_with_the_known_ones() -> None:
    with pytest.raises(KeyError) as error:
        get_runtime("openvino-npu")
    message = str(error.value)
    assert "openvino-npu" in message
    for name in RUNTIMES:
        assert name in message


# --- a plug-in -----------------------------------------------------------------------------------------

PLUGIN = RuntimeInfo(
    name="numpy-npu",
    axes=(AxisInfo("lanes", default=2, values=(1, 2, 4), kind=int, label="lanes{value}"),
          AxisInfo("turbo", default=False, values=(False, True), kind=bool)),
    precisions=("fp32", "fp16"),
    options_model="yolobench.runtimes.options:RuntimeOptions",
    summary="a made-up accelerator, for the tests",
)


class PluginSession(SessionBase):
    def __init__(self, output_shape: list[int], lanes: int) -> None:
        self.output_shape, self.lanes, self.closed = tuple(output_shape), lanes, 0

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        return np.zeros(self.output_shape, np.float32)

    def info(self) -> dict[str, Any]:
        return {"providers": "numpy", "threads": self.lanes}

    def close(self) -> None:
        self.closed += 1


class PluginRuntime(Runtime):
    info = PLUGIN

    def availability(self) -> Availability:
        return Availability(True, "numpy is always here")

    def open(self, model: Artifact, compiled: Artifact | None, axes: Mapping[str, Any], options: Any,
             decode: DecodeSettings, work_dir: Path) -> PluginSession:
        return PluginSession(model.manifest["output_shape"], int(axes["lanes"]))


@pytest.fixture()
def plugin() -> Iterator[RuntimeInfo]:
    registry.register(PLUGIN, PluginRuntime)
    try:
        yield PLUGIN
    finally:
        registry.infos.pop(PLUGIN.name)
        registry.implementations.pop(PLUGIN.name)


def plugin_sweep(**axes: Any) -> dict[str, Any]:
    all_axes = {"scale": ["n"], "precision": ["fp16"], "imgsz": [320], **axes}
    return {"name": "p", "runtime": {"name": PLUGIN.name, "cpu_affinity": [0]}, "model": {"weights": "a.pt"},
            "data": {"yaml": "d.yaml"}, "axes": all_axes, "baseline": {name: values[0] for name, values in all_axes.items()}}


def test_a_registered_plugin_passes_the_conformance_checks(plugin: RuntimeInfo, tmp_path: Path) -> None:
    case = RuntimeTestCase(plugin.name)
    case.check_axes()
    case.check_precisions()
    case.check_options_model()
    case.check_availability_says_why()
    case.check_infers_describes_and_closes(tmp_path)
    case.check_every_open_time_axis_value_opens(tmp_path)  # lanes 1, 2, 4; turbo off and on


def test_a_plugin_s_axes_and_options_are_read_by_the_sweep_file_and_the_labels(plugin: RuntimeInfo) -> None:
    from yolobench.space import Space
    from yolobench.spec import SpecError, parse_spec

    # Its axes in the file's order; labels and the space take them in the plug-in's own order.
    spec = parse_spec(plugin_sweep(turbo=[False, True], lanes=[4, 1]))
    assert spec.runtime.name == plugin.name and spec.runtime.cpu_affinity == [0]
    assert list(spec.axes.as_dict()) == ["scale", "precision", "imgsz", "lanes", "turbo"]
    assert sorted(v.label for v in Space.from_spec(spec).variants()) == [
        "n-fp16-320-lanes1-no_turbo", "n-fp16-320-lanes1-turbo", "n-fp16-320-lanes4-no_turbo", "n-fp16-320-lanes4-turbo"]
    with pytest.raises(SpecError, match=r"axes\.lanes\.1 = 3: 3 is not allowed; allowed: 1, 2, 4"):
        parse_spec(plugin_sweep(lanes=[1, 3]))
    with pytest.raises(SpecError, match=r"axes\.precision = \['int8'\]: 'int8' not allowed for runtime 'numpy-npu'; "
                                        r"allowed: fp32, fp16"):
        parse_spec({**plugin_sweep(), "axes": {"precision": ["int8"], "imgsz": [320]}})
    with pytest.raises(SpecError, match=r"runtime\.provider = 'cuda': unknown key; allowed keys: name, cpu_affinity"):
        parse_spec({**plugin_sweep(), "runtime": {"name": plugin.name, "provider": "cuda"}})


def test_doctor_reports_a_plugin_like_a_builtin(plugin: RuntimeInfo) -> None:
    from yolobench.doctor import runtime_report

    status = next(s for s in runtime_report() if s.name == plugin.name)
    assert status.usable and status.reason == "numpy is always here" and status.details == []


def test_plugins_arrive_through_the_entry_point_group(monkeypatch: pytest.MonkeyPatch) -> None:
    groups: list[str] = []

    def entry_points(group: str) -> list[Any]:
        groups.append(group)
        return [SimpleNamespace(load=lambda: PluginRuntime)]

    monkeypatch.setattr(runtimes_module, "entry_points", entry_points)
    fresh = Registry()
    assert fresh.names() == [PLUGIN.name] and groups == [runtimes_module.ENTRY_POINT_GROUP]
    assert fresh.info(PLUGIN.name) is PLUGIN and isinstance(fresh.get(PLUGIN.name), PluginRuntime)
    fresh.names()
    assert len(groups) == 1  # loaded once


def test_a_plugin_that_does_not_import_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    from yolobench.doctor import runtime_status

    broken = RuntimeInfo(name="broken-npu", implementation="yolobench_no_such_module:Runtime")
    registry.register(broken)
    try:
        status = runtime_status("broken-npu")
    finally:
        registry.infos.pop("broken-npu")
        registry.implementations.pop("broken-npu")
    assert not status.usable and "yolobench_no_such_module" in status.reason


# --- yolobench doctor ----------------------------------------------------------------------------------

def test_doctor_lists_runtimes_providers_and_the_host(capsys: pytest.CaptureFixture[str]) -> None:
    from yolobench.cli import main

    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    for name in RUNTIMES:
        line = next(line for line in lines if line.startswith(f"  {name} "))
        assert ("NOT usable: " in line) or (" usable: " in line)
    # ONNX Runtime's CPU provider always runs; each provider has its own line.
    assert any(line.strip().startswith("provider cpu") and " usable: " in line for line in lines)
    assert sum(line.strip().startswith("provider ") for line in lines) >= 3
    assert "host:" in lines and any(line.strip().startswith("host.cpu:") for line in lines)


def test_doctor_says_why_depthai_cannot_run_here() -> None:
    from yolobench.doctor import runtime_report

    status = next(s for s in runtime_report() if s.name == "depthai")
    if status.usable:
        pytest.skip("an OAK device is attached here")
    assert "not installed" in status.reason or "no OAK device" in status.reason or "2.x API" in status.reason
    assert {check.what for check in status.details} == {"blob compiler", "on-device decoding"}


def test_onnxruntime_reports_each_provider_with_a_reason() -> None:
    from yolobench.runtimes.onnxruntime_runtime import PROVIDERS

    checks = {check.what: check for check in get_runtime("onnxruntime").checks()}
    assert set(checks) == {f"provider {name}" for name in PROVIDERS}
    assert checks["provider cpu"].usable is True


def test_the_tiny_model_helper_gives_a_cache_artifact(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "cache")
    model = tiny_model(cache)
    assert cache.lookup("export", model.key) == model and model.manifest["num_classes"] == 4

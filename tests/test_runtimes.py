"""The runtime registry tests itself: every registered runtime (built-in or added later) answers the
same questions, and `yolobench doctor` reports each one and its providers."""

from __future__ import annotations

import pytest

from yolobench.runtimes import get_runtime, registry

RUNTIMES = registry.names()


def test_the_builtin_runtimes_are_registered() -> None:
    assert {"onnxruntime", "tensorrt", "depthai"} <= set(RUNTIMES)


@pytest.mark.parametrize("name", RUNTIMES)
def test_every_runtime_says_whether_it_can_run_here_and_why(name: str) -> None:
    runtime = get_runtime(name)
    assert runtime.name == name
    usable, reason = runtime.availability()
    assert isinstance(usable, bool)
    assert isinstance(reason, str) and reason.strip()
    assert callable(runtime.open)


@pytest.mark.parametrize("name", RUNTIMES)
def test_every_runtime_s_extra_checks_have_reasons(name: str) -> None:
    runtime = get_runtime(name)
    checks = list(runtime.checks()) if hasattr(runtime, "checks") else []
    if hasattr(runtime, "provider_availability"):
        checks += [(provider, *answer) for provider, answer in runtime.provider_availability().items()]
    for what, usable, reason in checks:
        assert what and isinstance(usable, bool) and reason.strip()


def test_unknown_runtime_is_refused_with_the_known_ones() -> None:
    with pytest.raises(KeyError) as error:
        get_runtime("openvino-npu")
    message = str(error.value)
    assert "openvino-npu" in message
    for name in RUNTIMES:
        assert name in message


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

"""`yolobench doctor`: which runtimes, providers and compilers can run on this host and, when one
cannot, why (package missing, no device, no GPU), so a user learns it before a sweep fails on it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Check:
    what: str
    usable: bool
    reason: str


@dataclass(frozen=True)
class RuntimeStatus:
    name: str
    usable: bool
    reason: str
    details: list[Check] = field(default_factory=list)


def runtime_report() -> list[RuntimeStatus]:
    """Every registered runtime's availability, with its providers (ONNX Runtime) or other checks."""
    from yolobench.runtimes import get_runtime, registry

    report = []
    for name in registry.names():
        runtime = get_runtime(name)
        usable, reason = runtime.availability()
        details: list[Check] = []
        if hasattr(runtime, "provider_availability"):
            details += [Check(f"provider {provider}", ok, why)
                        for provider, (ok, why) in runtime.provider_availability().items()]
        if hasattr(runtime, "checks"):
            details += [Check(what, ok, why) for what, ok, why in runtime.checks()]
        report.append(RuntimeStatus(name, usable, reason, details))
    return report


def format_report(report: list[RuntimeStatus], fingerprint: dict[str, str]) -> list[str]:
    lines = ["runtimes:"]
    for status in report:
        lines.append(f"  {status.name:<12} {'usable' if status.usable else 'NOT usable'}: {status.reason}")
        for check in status.details:
            lines.append(f"    {check.what:<22} {'usable' if check.usable else 'NOT usable'}: {check.reason}")
    lines.append("host:")
    lines += [f"  {key}: {value}" for key, value in fingerprint.items()]
    return lines

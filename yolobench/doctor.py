"""`yolobench doctor`: which runtimes, providers and compilers can run on this host and, when one
cannot, why (package missing, no device, no GPU), so a user learns it before a sweep fails on it."""

from __future__ import annotations

from dataclasses import dataclass, field

from yolobench.runtimes.base import Check

__all__ = ["Check", "RuntimeStatus", "format_report", "runtime_report"]


@dataclass(frozen=True)
class RuntimeStatus:
    name: str
    usable: bool
    reason: str
    details: list[Check] = field(default_factory=list)


def runtime_status(name: str) -> RuntimeStatus:
    """One registered runtime's availability and its own checks (providers, compilers, devices)."""
    from yolobench.runtimes import get_runtime

    try:
        runtime = get_runtime(name)
    except ImportError as error:  # a plug-in whose implementation does not import here
        return RuntimeStatus(name, False, f"its implementation does not import: {error}")
    availability = runtime.availability()
    return RuntimeStatus(name, availability.usable, availability.reason, list(runtime.checks()))


def runtime_report() -> list[RuntimeStatus]:
    """Every registered runtime's status, built-ins and plug-ins alike."""
    from yolobench.runtimes import registry

    return [runtime_status(name) for name in registry.names()]


def format_report(report: list[RuntimeStatus], fingerprint: dict[str, str]) -> list[str]:
    lines = ["runtimes:"]
    for status in report:
        lines.append(f"  {status.name:<12} {'usable' if status.usable else 'NOT usable'}: {status.reason}")
        for check in status.details:
            lines.append(f"    {check.what:<22} {'usable' if check.usable else 'NOT usable'}: {check.reason}")
    lines.append("host:")
    lines += [f"  {key}: {value}" for key, value in fingerprint.items()]
    return lines

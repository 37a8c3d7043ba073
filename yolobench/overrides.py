"""Command-line changes to a sweep file (`--weights`, `--data`, `--only AXIS=V1,V2`, `--set key=YAML`),
applied to the file's mapping before it is validated, so they meet the same checks and messages as the
file itself. The effective sweep is what the parent run logs (sweep.json), so a run can be reproduced."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import yaml


class OverrideError(ValueError):
    """An override that cannot be applied: says which flag, the value, and what is allowed."""


def _yaml_value(text: str, flag: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise OverrideError(f"{flag}: '{text}' is not a YAML value: {error}") from None


def _split(item: str, flag: str, form: str) -> tuple[str, str]:
    key, equals, value = item.partition("=")
    if not equals or not key.strip():
        raise OverrideError(f"{flag} {item}: expected {form}")
    return key.strip(), value


@dataclass(frozen=True)
class Overrides:
    weights: str | None = None
    data: str | None = None
    only: tuple[str, ...] = ()  # "AXIS=V1,V2": keep only these values of an axis
    sets: tuple[str, ...] = ()  # "dotted.key=YAML": any other field

    def __bool__(self) -> bool:
        return bool(self.weights or self.data or self.only or self.sets)

    def as_list(self) -> list[str]:
        """The overrides as flags, for the parent run's record."""
        return ([f"--weights={self.weights}"] * bool(self.weights) + [f"--data={self.data}"] * bool(self.data)
                + [f"--only={o}" for o in self.only] + [f"--set={s}" for s in self.sets])

    def apply(self, sweep: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """The sweep mapping with the overrides in, and notes on what they changed beyond the asked field
        (e.g. a baseline moved because --only narrowed its value out)."""
        sweep, notes = copy.deepcopy(sweep), []
        if self.weights:
            sweep["model"] = {"weights": self.weights}
        if self.data:
            kept = {k: v for k, v in (sweep.get("data") or {}).items() if k in ("val_images", "calibration_split")}
            sweep["data"] = {"yaml": self.data, **kept}
        for item in self.only:
            notes += _narrow(sweep, *_split(item, "--only", "AXIS=V1,V2 (e.g. --only imgsz=320,256)"))
        for item in self.sets:
            key, text = _split(item, "--set", "dotted.key=YAML (e.g. --set measure.min_runs=100)")
            _set(sweep, key, _yaml_value(text, f"--set {key}"))
        return sweep, notes


def _narrow(sweep: dict[str, Any], axis: str, text: str) -> list[str]:
    axes = sweep.get("axes") or {}
    if axis not in axes:
        raise OverrideError(f"--only {axis}={text}: the sweep has no axis '{axis}'; its axes: {', '.join(axes)}")
    current = axes[axis]
    if not isinstance(current, list):
        raise OverrideError(f"--only {axis}: the axis is continuous ({current}); use --set axes.{axis}=... instead")
    wanted = [_yaml_value(v.strip(), f"--only {axis}") for v in text.split(",") if v.strip()]
    missing = [v for v in wanted if v not in current]
    if not wanted or missing:
        raise OverrideError(f"--only {axis}={text}: {', '.join(map(str, missing)) or 'no value'} not among the "
                            f"axis' values ({', '.join(map(str, current))}); to add values use "
                            f"--set axes.{axis}=[...]")
    axes[axis] = [v for v in current if v in wanted]  # the file's order
    baseline = sweep.get("baseline") or {}
    if axis in baseline and baseline[axis] not in axes[axis]:
        baseline[axis] = axes[axis][0]
        return [f"baseline {axis} is now {axes[axis][0]}: --only left out the file's baseline value"]
    return []


def _set(sweep: dict[str, Any], dotted: str, value: Any) -> None:
    node = sweep
    *parents, leaf = dotted.split(".")
    for index, part in enumerate(parents):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise OverrideError(f"--set {dotted}: '{'.'.join(parents[:index + 1])}' is {child!r}, not a section")
        node = child
    node[leaf] = value

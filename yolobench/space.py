"""The variant space of a sweep: axes -> grid, exclusions, baseline, count. A Variant is a plain
value (axis name -> str/int/bool) so that it can be an Optuna trial's params and MLflow params."""

from __future__ import annotations

import itertools
from pathlib import Path
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from yolobench.runtimes import RuntimeInfo, runtime_info
from yolobench.spec import FloatRange, SweepSpec

AxisValue = str | int | float | bool
AxisValues = list[AxisValue] | FloatRange
# How the common axes show in a label; a runtime's axes show as their AxisInfo says.
LABEL_PREFIXES = {"width_multiple": "w", "depth_multiple": "d", "teacher": "teacher-"}


@dataclass(frozen=True)
class Variant:
    """One point of the space; axes in build order. `runtime` (not part of the value: two variants with the
    same axes are equal) says how the runtime's own axes show in the label."""

    values: tuple[tuple[str, AxisValue], ...]
    runtime: RuntimeInfo | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, axis_order: list[str], values: Mapping[str, AxisValue], runtime: RuntimeInfo | None = None) -> Variant:
        return cls(tuple((name, values[name]) for name in axis_order), runtime)

    def __getitem__(self, axis: str) -> AxisValue:
        return dict(self.values)[axis]

    def get(self, axis: str, default: Any = None) -> Any:
        return dict(self.values).get(axis, default)

    def as_dict(self) -> dict[str, AxisValue]:
        return dict(self.values)

    @property
    def label(self) -> str:
        """Short human name, e.g. `n-fp16-320-all`."""
        return "-".join(self._label_part(name, value) for name, value in self.values)

    def _label_part(self, name: str, value: AxisValue) -> str:
        axis = self.runtime.axis(name) if self.runtime is not None else None
        if axis is not None:
            return axis.format_label(value)
        if isinstance(value, bool):
            return name if value else f"no_{name}"
        if name in LABEL_PREFIXES:
            shown = Path(str(value)).stem if name == "teacher" else f"{value:g}" if isinstance(value, float) else value
            return f"{LABEL_PREFIXES[name]}{shown}"
        return str(value)

    def matches(self, partial: Mapping[str, Any]) -> bool:
        mine = self.as_dict()
        return all(mine.get(name) == value for name, value in partial.items())


@dataclass(frozen=True)
class Space:
    axes: dict[str, AxisValues]
    excluded: tuple[Mapping[str, Any], ...]
    baseline: Variant
    runtime: RuntimeInfo | None = None  # the sweep's runtime: how its axes show in labels

    @classmethod
    def from_spec(cls, spec: SweepSpec) -> Space:
        axes = spec.axes.as_dict()
        runtime = runtime_info(spec.runtime.name)
        return cls(
            axes=axes,
            excluded=tuple(spec.exclude),
            baseline=Variant.of(list(axes), spec.baseline, runtime),
            runtime=runtime,
        )

    @property
    def axis_names(self) -> list[str]:
        return list(self.axes)

    @property
    def is_finite(self) -> bool:
        return not any(isinstance(values, FloatRange) for values in self.axes.values())

    def variants(self) -> Iterator[Variant]:
        """Every variant of a finite space (a continuous axis has no list to enumerate)."""
        if not self.is_finite:
            raise ValueError("a space with a continuous axis cannot be enumerated")
        for combination in itertools.product(*self.axes.values()):
            variant = Variant(tuple(zip(self.axes, combination)), self.runtime)
            if not self.is_excluded(variant):
                yield variant

    def is_excluded(self, variant: Variant) -> bool:
        return any(variant.matches(entry) for entry in self.excluded)

    def count(self) -> int | None:
        """Number of variants; None when an axis is continuous."""
        return sum(1 for _ in self.variants()) if self.is_finite else None

    def variant_from_params(self, params: Mapping[str, Any]) -> Variant:
        return Variant.of(self.axis_names, params, self.runtime)

"""The variant space of a sweep: axes -> grid, exclusions, baseline, count. A Variant is a plain
value (axis name -> str/int/bool) so that it can be an Optuna trial's params and MLflow params."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from yolobench.spec import FloatRange, SweepSpec

AxisValue = str | int | float | bool
AxisValues = list[AxisValue] | FloatRange
LABEL_PREFIXES = {"width_multiple": "w", "depth_multiple": "d", "teacher": "teacher-"}


@dataclass(frozen=True)
class Variant:
    """One point of the space; axes in build order."""

    values: tuple[tuple[str, AxisValue], ...]

    @classmethod
    def of(cls, axis_order: list[str], values: Mapping[str, AxisValue]) -> Variant:
        return cls(tuple((name, values[name]) for name in axis_order))

    def __getitem__(self, axis: str) -> AxisValue:
        return dict(self.values)[axis]

    def get(self, axis: str, default: Any = None) -> Any:
        return dict(self.values).get(axis, default)

    def as_dict(self) -> dict[str, AxisValue]:
        return dict(self.values)

    @property
    def label(self) -> str:
        """Short human name, e.g. `n-fp16-320-all`."""
        parts = []
        for name, value in self.values:
            if isinstance(value, bool):
                parts.append(f"{name}" if value else f"no_{name}")
            elif name in LABEL_PREFIXES:
                shown = Path(str(value)).stem if name == "teacher" else f"{value:g}" if isinstance(value, float) else value
                parts.append(f"{LABEL_PREFIXES[name]}{shown}")
            elif name in {"threads", "shaves", "trt_opt_level"}:
                parts.append(f"{name}{value}")
            else:
                parts.append(str(value))
        return "-".join(parts)

    def matches(self, partial: Mapping[str, Any]) -> bool:
        mine = self.as_dict()
        return all(mine.get(name) == value for name, value in partial.items())


@dataclass(frozen=True)
class Space:
    axes: dict[str, AxisValues]
    excluded: tuple[Mapping[str, Any], ...]
    baseline: Variant

    @classmethod
    def from_spec(cls, spec: SweepSpec) -> Space:
        axes = spec.axes.as_dict()
        return cls(
            axes=axes,
            excluded=tuple(spec.exclude),
            baseline=Variant.of(list(axes), spec.baseline),
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
            variant = Variant(tuple(zip(self.axes, combination)))
            if not self.is_excluded(variant):
                yield variant

    def is_excluded(self, variant: Variant) -> bool:
        return any(variant.matches(entry) for entry in self.excluded)

    def count(self) -> int | None:
        """Number of variants; None when an axis is continuous."""
        return sum(1 for _ in self.variants()) if self.is_finite else None

    def variant_from_params(self, params: Mapping[str, Any]) -> Variant:
        return Variant.of(self.axis_names, params)


def variant_key(spec: SweepSpec, variant: Variant) -> str:
    """Identity of a measured variant: what is built (model, data) and how it is run. Computable
    before building, so a resumed sweep knows what it has done without touching the cache.

    What is built counts in full, defaults included: a new default recipe is a new model. How it is
    measured counts by the settings that differ from their defaults, so that a newer yolobench that
    adds a measurement setting does not make every finished variant look new."""

    def built(section: Any) -> dict[str, Any]:
        return section.model_dump(mode="json")

    def measured(section: Any) -> dict[str, Any]:
        return section.model_dump(mode="json", exclude_defaults=True)

    identity = {
        "model": built(spec.model),
        "data": built(spec.data),
        "export": built(spec.export),
        "int8": built(spec.int8) if variant.get("precision") == "int8" else None,
        "runtime": measured(spec.runtime),
        "measure": measured(spec.measure),
        "variant": variant.as_dict(),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]

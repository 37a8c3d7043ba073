"""The latency/accuracy front and its hypervolume: pure mathematics on objective values, shared by the
sweep (tags and the parent's hypervolume metric), the report and the sampler replay benchmark.

Losses are normalised so sweeps compare: a minimised metric as a ratio to the baseline's value
(reference 2: twice the baseline's latency or size counts for nothing), mAP as 1 - mAP (reference 1)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

REFERENCE_RATIO = 2.0


def objective_values(metrics: dict[str, Any], objectives: Sequence[Any]) -> list[float]:
    return [float(metrics[objective.metric]) for objective in objectives]


def losses(metrics: dict[str, float], objectives: Sequence[Any], baseline: dict[str, float]) -> list[float]:
    values = []
    for objective in objectives:
        value = float(metrics[objective.metric])
        if objective.resolved_direction == "maximize":
            values.append(1.0 - value if objective.metric.startswith("map") else -value)
        else:
            values.append(value / float(baseline[objective.metric]))
    return values


def reference_point(objectives: Sequence[Any]) -> list[float]:
    return [1.0 if o.resolved_direction == "maximize" else REFERENCE_RATIO for o in objectives]


def dominates(other: Sequence[float], point: Sequence[float]) -> bool:
    """`other` is no worse than `point` on every coordinate and better on one (all minimised)."""
    return all(o <= p for o, p in zip(other, point)) and any(o < p for o, p in zip(other, point))


def non_dominated(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the points no other point dominates (all coordinates minimised)."""
    return [i for i, point in enumerate(points)
            if not any(dominates(other, point) for j, other in enumerate(points) if j != i)]


def oriented(metrics: dict[str, float], objectives: Sequence[Any]) -> list[float]:
    """The objectives as values to minimise, before any normalisation: `losses` orders points the same way
    (each coordinate is an increasing function of these), so both give the same front whatever the baseline."""
    return [-float(metrics[o.metric]) if o.resolved_direction == "maximize" else float(metrics[o.metric])
            for o in objectives]


class GrowingFront:
    """The non-dominated points of a set that grows one point at a time. A new point is compared with the front's
    members only: a point no member dominates is dominated by no point of the set (dominance is transitive), and
    the members it dominates leave. Members are named (a run id); equal points are all members, as in
    non_dominated."""

    def __init__(self) -> None:
        self.members: dict[str, list[float]] = {}

    def add(self, name: str, point: Sequence[float]) -> tuple[bool, list[str]]:
        """Whether the point joined the front, and the members that left it for this one."""
        if any(dominates(member, point) for member in self.members.values()):
            return False, []
        left = [other for other, member in self.members.items() if dominates(point, member)]
        for other in left:
            del self.members[other]
        self.members[name] = list(point)
        return True, left


def hypervolume(points: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """Volume dominated by the points and bounded by the reference point (all minimised)."""
    inside = np.array([p for p in points if all(v < r for v, r in zip(p, reference))], dtype=float)
    if len(inside) == 0:
        return 0.0
    front = inside[non_dominated(inside.tolist())]
    if front.shape[1] == 2:
        front = front[np.argsort(front[:, 0])]
        volume, previous_y = 0.0, reference[1]
        for x, y in front:
            if y < previous_y:
                volume += (reference[0] - x) * (previous_y - y)
                previous_y = y
        return float(volume)
    from yolobench.search import exact_hypervolume  # Optuna's WFG, behind the one door to Optuna internals

    return exact_hypervolume(front, reference)

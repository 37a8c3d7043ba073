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


def non_dominated(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the points no other point dominates (all coordinates minimised)."""
    front = []
    for i, point in enumerate(points):
        dominated = any(
            all(o <= p for o, p in zip(other, point)) and any(o < p for o, p in zip(other, point))
            for j, other in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return front


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

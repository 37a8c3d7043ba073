from __future__ import annotations

import random

import numpy as np
import pytest
from optuna._hypervolume import compute_hypervolume

from yolobench.pareto import hypervolume, losses, non_dominated, reference_point
from yolobench.spec import Objective


def brute_force_front(points):
    return [
        i for i, p in enumerate(points)
        if not any(all(q_k <= p_k for q_k, p_k in zip(q, p)) and q != p for q in points)
    ]


def test_front_on_known_points() -> None:
    # (latency ratio, 1 - mAP): lower is better on both.
    points = [(1.0, 0.5), (2.0, 0.3), (1.5, 0.6), (3.0, 0.3), (0.5, 0.9)]
    assert non_dominated(points) == [0, 1, 4]


@pytest.mark.parametrize("dimensions", [2, 3])
def test_front_matches_brute_force(dimensions: int) -> None:
    rng = random.Random(dimensions)
    for _ in range(50):
        points = [tuple(rng.choice([0.5, 1.0, rng.random()]) for _ in range(dimensions)) for _ in range(20)]
        assert non_dominated(points) == brute_force_front(points)


def test_hypervolume_known_value_and_against_optuna() -> None:
    assert hypervolume([(1.0, 0.5)], [2.0, 1.0]) == pytest.approx(0.5)
    assert hypervolume([(1.0, 0.5), (0.5, 0.8)], [2.0, 1.0]) == pytest.approx(1.5 * 0.2 + 1.0 * 0.3)
    assert hypervolume([(2.5, 0.1)], [2.0, 1.0]) == 0.0  # outside the reference box
    rng = np.random.default_rng(0)
    for _ in range(20):
        points = rng.random((15, 3)) * 1.2
        inside = points[(points < 1.0).all(axis=1)]
        expected = compute_hypervolume(inside, np.ones(3)) if len(inside) else 0.0
        assert hypervolume(points.tolist(), [1.0, 1.0, 1.0]) == pytest.approx(expected)


def test_losses_are_normalised_to_the_baseline() -> None:
    objectives = [Objective(metric="latency_ms_p50"), Objective(metric="map50_95")]
    baseline = {"latency_ms_p50": 20.0, "map50_95": 0.6}
    assert losses({"latency_ms_p50": 10.0, "map50_95": 0.55}, objectives, baseline) == pytest.approx([0.5, 0.45])
    assert reference_point(objectives) == [2.0, 1.0]


def test_variants_whose_p50_intervals_overlap_share_a_rank() -> None:
    from yolobench.report import format_table, latency_ranks

    rows = [{"label": "a", "latency_ms_p50": 5.0, "latency_ms_p50_ci_low": 4.8, "latency_ms_p50_ci_high": 5.2},
            {"label": "b", "latency_ms_p50": 5.1, "latency_ms_p50_ci_low": 5.0, "latency_ms_p50_ci_high": 5.3},
            {"label": "c", "latency_ms_p50": 9.0, "latency_ms_p50_ci_low": 8.5, "latency_ms_p50_ci_high": 9.4},
            {"label": "d", "latency_ms_p50": 12.0}]
    assert latency_ranks(rows) == ["=1", "=1", "3", "4"]
    table = format_table([{**r, "pareto": False} for r in rows])
    assert "4.80-5.20" in table.splitlines()[1] and table.splitlines()[0].startswith("rank")

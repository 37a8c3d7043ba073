from __future__ import annotations

import random

from yolobench.report import pareto_front


def brute_force_front(points):
    return [
        i for i, (l, a) in enumerate(points)
        if not any((l2 <= l and a2 >= a) and (l2 < l or a2 > a) for l2, a2 in points)
    ]


def test_pareto_front_on_known_points() -> None:
    points = [(1.0, 0.5), (2.0, 0.7), (1.5, 0.4), (3.0, 0.7), (0.5, 0.1)]
    assert pareto_front(points) == [0, 1, 4]


def test_pareto_front_matches_brute_force() -> None:
    rng = random.Random(0)
    for _ in range(50):
        points = [(rng.choice([1.0, 2.0, 3.0, rng.random()]), rng.choice([0.5, rng.random()])) for _ in range(20)]
        assert pareto_front(points) == brute_force_front(points)

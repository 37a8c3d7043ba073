"""benchmarks/host_drift.py's question, how long a confirmation this host needs for a front figure to repeat
within 5%: its count of confirmations apart, on recordings whose answer is known."""

from __future__ import annotations

import numpy as np

from benchmarks.host_drift import apart_by_length


def recording(rounds: int, speed_of_round, int8_of_round) -> list[dict[str, np.ndarray]]:
    """Rounds of three variants; `speed_of_round` moves all of them (the host), `int8_of_round` one alone."""
    rng = np.random.default_rng(0)
    base = {"int8-256-all": 16.0, "fp16-256-all": 19.0, "export-320-disable": 40.0}
    return [{label: value * speed_of_round(r) * (int8_of_round(r) if label.startswith("int8") else 1.0)
             * (1 + 0.002 * rng.standard_normal(3)) for label, value in base.items()} for r in range(rounds)]


def test_a_host_slower_for_a_whole_confirmation_is_levelled_out() -> None:
    slow_second_half = recording(40, lambda r: 1.0 if r < 20 else 1.2, lambda r: 1.0)
    apart, pairs, worst = apart_by_length(slow_second_half, 20, ["int8-256-all", "fp16-256-all"])
    assert (apart, pairs) == (0, 1)
    assert worst < 1.01


def test_a_variant_faster_for_one_confirmation_alone_is_counted_apart() -> None:
    int8_episode = recording(60, lambda r: 1.0, lambda r: 0.9 if 20 <= r < 40 else 1.0)
    apart, pairs, worst = apart_by_length(int8_episode, 20, ["int8-256-all", "fp16-256-all"])
    assert (apart, pairs) == (2, 3)  # the episode's confirmation against each of the other two
    assert 1.08 < worst < 1.13
    # Confirmations three times as long hold the whole episode in one: nothing left to compare it with.
    assert apart_by_length(int8_episode, 60, ["int8-256-all"])[1] == 0

"""Confirming the ranking before it is reported (Model Analyzer re-measures its top configurations too):
the whole grid when it is small, else the variants on the front, those within a margin of it and those
timed while the reference had drifted, are re-timed with the baseline in short interleaved bursts,
round-robin in one process with their sessions open, so each of them sees the same machine. The
confirmed p50 becomes the variant's latency_ms_p50.

Resume-safe: a variant's confirmation is written when its rounds are done; a sweep killed before that
confirms it on the rerun, and never adds a run."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import ExitStack

import numpy as np

from yolobench import pareto, search, tracking
from yolobench.retime import Retimer, latency_figures, record
from yolobench.space import Space

CONFIRMED_ATTR = "confirmed"


def near_front(results: Sequence[search.Result], objectives: Sequence, baseline: dict, margin: float) -> list[int]:
    """Indices of the results on the front, or on it were their minimised objectives `margin` better."""
    points = [pareto.losses(r.metrics, objectives, baseline) for r in results]
    minimised = [o.resolved_direction == "minimize" for o in objectives]
    chosen = set(pareto.non_dominated(points))
    for index, point in enumerate(points):
        better = [v / (1 + margin) if m else v for v, m in zip(point, minimised)]
        if index not in chosen and pareto.non_dominated([better, *points[:index], *points[index + 1:]])[:1] == [0]:
            chosen.add(index)
    return sorted(chosen)


def _groups(retimer: Retimer, variants: list, memory_mb: float) -> list[list]:
    """Variants in groups whose models fit the memory budget together (a model's session takes a few times
    its file's size), so that sessions are held open for the interleaved rounds and rotated past it."""
    groups, current, used = [], [], 0.0
    for variant in variants:
        size = 3 * retimer.builder.build(variant).model.path.stat().st_size / 2**20
        if current and used + size > memory_mb:
            groups.append(current)
            current, used = [], 0.0
        current.append(variant)
        used += size
    return [*groups, current] if current else groups


def interleaved_samples(retimer: Retimer, variants: list, reference, rounds: int,
                        memory_mb: float) -> dict[str, np.ndarray]:
    """Round-robin bursts, each round in another order, the reference (the baseline) in every group.
    A shared host's speed moves within seconds, and a round sees it move for every variant in it; so each
    round's samples are divided by the round's pace, what its variants say in common (the median over them
    of their burst's median against their own median), and what is left between two variants is their own
    difference rather than the moment each was timed at."""
    runs = max(3, math.ceil(retimer.spec.measure.min_runs / rounds))
    rounds_of: list[dict[str, np.ndarray]] = []
    with retimer.session(reference) as reference_session:
        retimer.burst(reference_session, reference, runs)  # warm-up
        others = [v for v in variants if v.label != reference.label]
        for group in _groups(retimer, others, memory_mb) or [[]]:  # the reference alone, if it is all that is left
            with ExitStack() as stack:
                sessions = [(v, stack.enter_context(retimer.session(v))) for v in group]
                for variant, session in sessions:
                    retimer.burst(session, variant, runs)  # warm-up
                sessions.append((reference, reference_session))
                for round_index in range(rounds):
                    order = sessions if round_index % 2 == 0 else sessions[::-1]
                    rounds_of.append({v.label: retimer.burst(s, v, runs) for v, s in order})
    return paced(rounds_of)


def paced(rounds_of: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Each variant's samples, every round's divided by that round's pace (1.0 = the rounds' usual speed)."""
    labels = {label for times in rounds_of for label in times}
    usual = {label: float(np.median(np.concatenate([t[label] for t in rounds_of if label in t]))) for label in labels}
    samples: dict[str, list[np.ndarray]] = {label: [] for label in labels}
    for times in rounds_of:
        pace = float(np.median([np.median(t) / usual[label] for label, t in times.items()]))
        for label, t in times.items():
            samples[label].append(t / pace)
    return {label: np.concatenate(parts) for label, parts in samples.items()}


def confirm_front(study, tracker: tracking.Tracker, retimer: Retimer, space: Space, baseline_key: str,
                  extra_keys: set[str] = frozenset(), say: Callable[[str], None] = print) -> int:
    """Re-time the front's neighbourhood interleaved; returns how many variants were confirmed now."""
    measure = retimer.spec.measure
    results = search.results(study)
    baseline = search.metrics_of(study, baseline_key, first_pass=True)
    if not measure.confirm or not baseline or not results:
        return 0
    if len(results) <= measure.confirm_all_up_to:
        chosen = {r.key for r in results}  # small enough for the whole ranking to rest on interleaved timing
    else:
        chosen = {results[i].key for i in near_front(results, retimer.spec.search.objectives, baseline,
                                                     measure.confirm_margin)} | set(extra_keys)
    confirmed = {key for key, figures in search.retimed(study).items() if figures.get(CONFIRMED_ATTR)}
    todo = [r for r in results if r.key in chosen and r.key not in confirmed]
    if not todo:
        return 0
    by_key = {r.key: r for r in results}
    group = [r for r in todo if r.key != baseline_key] + [by_key[baseline_key]]
    variants = [space.variant_from_params(r.params) for r in group]
    say(f"confirming the ranking: {len(variants)} variants re-timed interleaved, {measure.confirm_rounds} rounds")
    samples = interleaved_samples(retimer, variants[:-1], variants[-1], measure.confirm_rounds,
                                  measure.confirm_memory_mb)
    baseline_p50 = float(np.median(samples[variants[-1].label]))
    for result, variant in zip(group, variants):
        record(study, tracker, result, latency_figures(samples[variant.label]), {tracking.CONFIRMED_TAG: "true"},
               baseline_p50, marks={CONFIRMED_ATTR: 1.0})
    return len(group)

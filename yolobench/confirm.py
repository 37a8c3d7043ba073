"""Confirming the ranking before it is reported (Model Analyzer re-measures its top configurations too):
the whole grid when it is small, else the variants on the front, those within a margin of it and those
timed while the reference had drifted, are re-timed with the baseline in short interleaved bursts,
round-robin in one process with their sessions open, so each of them sees the same machine; the variants
near the front get longer bursts, since the front is what a mis-timed variant would change. Interleaving
fixes the ratios between the variants; the level they are reported at is the sweep's (sweep_level). The
confirmed p50 becomes the variant's latency_ms_p50. Variants whose sessions ran the same graph (an ORT level
that found nothing to do in this model) are one computation, timed once: one figure for all of them, and
their runs say so (yolobench.same_graph_as).

Resume-safe: a variant's confirmation is written when its rounds are done; a sweep killed before that
confirms it on the rerun, and never adds a run. A twin left unconfirmed by a kill between its twins' records
takes the figure they were confirmed with, not one of its own."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Interleaved:
    """The confirmation's samples by variant label (paced), and the digest of the graph each variant's
    session ran (SessionBase.executed_graph; None where its runtime cannot tell)."""

    samples: dict[str, np.ndarray]
    graphs: dict[str, str | None]

    def twins(self, label: str) -> list[str]:
        """The other variants whose sessions ran the same graph as `label`'s."""
        graph = self.graphs.get(label)
        return sorted(other for other, g in self.graphs.items() if graph is not None and g == graph and other != label)

    def pooled(self, label: str) -> np.ndarray:
        """`label`'s samples with its twins': one computation is one figure, and an order between twins
        would be the noise of the moment each was timed at. A twin opened with another in the same group
        was not timed at all (interleaved_samples): its twin's bursts are its figure."""
        return np.concatenate([self.samples[other] for other in sorted([label, *self.twins(label)])
                               if other in self.samples])


def interleaved_samples(retimer: Retimer, variants: list, reference, rounds: int, memory_mb: float,
                        longer: Collection[str] = (), factor: int = 1) -> Interleaved:
    """Round-robin bursts, each round in another order, the reference (the baseline) in every group; the
    bursts of the variants labelled in `longer` are `factor` times as long. A variant whose session runs
    the same graph as one already open in its group (the reference included) is not timed: its twin is.
    A shared host's speed moves within seconds, and a round sees it move for every variant in it; so each
    round's samples are divided by the round's pace, what its variants say in common (the median over them
    of their burst's median against their own median), and what is left between two variants is their own
    difference rather than the moment each was timed at."""
    base_runs = max(3, math.ceil(retimer.spec.measure.min_runs / rounds))
    rounds_of: list[dict[str, np.ndarray]] = []
    graphs: dict[str, str | None] = {}
    longer = set(longer)
    with retimer.session(reference) as reference_session:
        graphs[reference.label] = reference_session.executed_graph()
        retimer.burst(reference_session, reference, base_runs)  # warm-up
        others = [v for v in variants if v.label != reference.label]
        for group in _groups(retimer, others, memory_mb) or [[]]:  # the reference alone, if it is all that is left
            with ExitStack() as stack:
                sessions = _open_group(retimer, stack, group, reference, graphs, longer)
                for variant, session in sessions:
                    retimer.burst(session, variant, base_runs)  # warm-up
                sessions.append((reference, reference_session))
                for round_index in range(rounds):
                    order = sessions if round_index % 2 == 0 else sessions[::-1]
                    rounds_of.append({v.label: retimer.burst(s, v, base_runs * (factor if v.label in longer else 1))
                                      for v, s in order})
    return Interleaved(paced(rounds_of), graphs)


def _open_group(retimer: Retimer, stack: ExitStack, group: list, reference, graphs: dict[str, str | None],
                longer: set[str]) -> list:
    """Open the group's sessions (closed by `stack`) and record each one's graph; returns those to time, one
    per graph: a twin of the reference or of a variant opened before it is left to that one's bursts, which
    are longer if the twin's were to be."""
    timing = {graphs[reference.label]: reference.label} if graphs[reference.label] is not None else {}
    sessions = []
    for variant in group:
        session = stack.enter_context(retimer.session(variant))
        graph = graphs[variant.label] = session.executed_graph()
        if graph is not None and graph in timing:
            if variant.label in longer:
                longer.add(timing[graph])
            continue
        if graph is not None:
            timing[graph] = variant.label
        sessions.append((variant, session))
    return sessions


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


def confirms_whole(measure, variants: int | None) -> bool:
    """Whether a grid of this many variants is confirmed whole, for the whole ranking to rest on interleaved
    timing (None: a space without end)."""
    return measure.confirm and variants is not None and variants <= measure.confirm_all_up_to


def sweep_level(study, group: Sequence[search.Result], confirmed_p50: Mapping[str, float],
                baseline_key: str) -> float:
    """What the confirmation's figures are multiplied by to stand at the sweep's level, not at the level of
    the half-minute the confirmation took: a shared host is faster or slower for minutes at a time, and
    that moved every confirmed figure of one sweep against another's (benchmarks/ranking_stability.py).
    Each variant's first pass read the host at another moment of the sweep; the median over the group of
    first-pass p50 / confirmed p50 is the sweep's level against the confirmation's. A later group (a rerun
    after a kill) is put where the baseline's earlier confirmation stands, so the two groups agree."""
    earlier = search.retimed(study).get(baseline_key, {})
    if earlier.get(CONFIRMED_ATTR) and "latency_ms_p50" in earlier:
        return earlier["latency_ms_p50"] / confirmed_p50[baseline_key]
    firsts = {r.key: (search.metrics_of(study, r.key, first_pass=True) or {}).get("latency_ms_p50") for r in group}
    ratios = [first / confirmed_p50[key] for key, first in firsts.items() if first]
    return float(np.median(ratios)) if ratios else 1.0


def _confirmed_twins(tracker: tracking.Tracker, results: Sequence[search.Result],
                     confirmed: Collection[str]) -> dict[str, tuple[str, str]]:
    """By the graph its session ran (its run's tag), a variant confirmed before: (its key, its label)."""
    twins: dict[str, tuple[str, str]] = {}
    for result in results:
        if result.key in confirmed:
            run = tracker.run(result.run_id)
            if graph := run.data.tags.get(tracking.EXECUTED_GRAPH_TAG):
                twins.setdefault(graph, (result.key, run.info.run_name))
    return twins


def confirm_front(study, tracker: tracking.Tracker, retimer: Retimer, space: Space, baseline_key: str,
                  extra_keys: set[str] = frozenset(), say: Callable[[str], None] = print) -> int:
    """Re-time the front's neighbourhood interleaved; returns how many variants were confirmed now."""
    measure = retimer.spec.measure
    results = search.results(study)
    baseline = search.metrics_of(study, baseline_key, first_pass=True)
    if not measure.confirm or not baseline or not results:
        return 0
    near = {results[i].key for i in near_front(results, retimer.spec.search.objectives, baseline,
                                               measure.confirm_margin)}
    whole = confirms_whole(measure, len(results))
    chosen = {r.key for r in results} if whole else near | set(extra_keys)
    confirmed = {key for key, figures in search.retimed(study).items() if figures.get(CONFIRMED_ATTR)}
    todo = [r for r in results if r.key in chosen and r.key not in confirmed]
    if not todo:
        return 0
    by_key = {r.key: r for r in results}
    group = [r for r in todo if r.key != baseline_key] + [by_key[baseline_key]]
    variants = [space.variant_from_params(r.params) for r in group]
    # Only a whole grid has variants far from the front to give shorter bursts; else every one is near it.
    longer = {v.label for r, v in zip(group, variants) if r.key in near} if whole else set()
    say(f"confirming the ranking: {len(variants)} variants re-timed interleaved, {measure.confirm_rounds} rounds"
        f" ({len(longer)} near the front {measure.confirm_front_factor}x longer)")
    timed = interleaved_samples(retimer, variants[:-1], variants[-1], measure.confirm_rounds,
                                measure.confirm_memory_mb, longer, measure.confirm_front_factor)
    samples = {v.label: timed.pooled(v.label) for v in variants}
    p50s = {r.key: float(np.median(samples[v.label])) for r, v in zip(group, variants)}
    level = sweep_level(study, group, p50s, baseline_key)
    earlier = _confirmed_twins(tracker, results, confirmed)
    # The baseline first: a rerun after a kill among these records puts its group where the baseline stands.
    for result, variant in [*zip(group, variants)][::-1]:
        figures = {**latency_figures(samples[variant.label] * level), "confirm_level": level}
        twins = timed.twins(variant.label)
        twin = earlier.get(timed.graphs.get(variant.label) or "")
        if twin and twin[0] != result.key:
            figures = {name: value for name, value in search.retimed(study)[twin[0]].items() if name in figures}
            twins = sorted({*twins, twin[1]})
        tags = {tracking.CONFIRMED_TAG: "true", **({tracking.SAME_GRAPH_TAG: ",".join(twins)} if twins else {})}
        record(study, tracker, result, figures, tags, p50s[baseline_key] * level, marks={CONFIRMED_ATTR: 1.0})
    return len(group)

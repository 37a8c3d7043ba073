"""Reports from the store: a sweep's variants as a table, Pareto-optimal ones (latency vs mAP) marked."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from yolobench import tracking


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated when minimising the first value and maximising the second."""
    front = []
    for i, (latency_i, accuracy_i) in enumerate(points):
        dominated = any(
            latency_j <= latency_i and accuracy_j >= accuracy_i and (latency_j, accuracy_j) != (latency_i, accuracy_i)
            for j, (latency_j, accuracy_j) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return front


def sweep_rows(tracker: tracking.Tracker, experiment_name: str, sweep_name: str) -> list[dict[str, Any]]:
    """One row per finished child run of the sweep's parent runs, fastest first."""
    experiment = tracker.client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return []
    runs = tracker.client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{tracking.SWEEP_TAG}` = '{sweep_name}' and attributes.status = 'FINISHED'",
        max_results=50000,
    )
    rows = [
        {"label": run.data.tags.get(tracking.RUN_NAME_TAG, run.info.run_id), "run_id": run.info.run_id,
         **run.data.metrics}
        for run in runs
        if tracking.PARENT_TAG in run.data.tags and "latency_ms_p50" in run.data.metrics
    ]
    front = set(pareto_front([(row["latency_ms_p50"], row["map50_95"]) for row in rows]))
    for index, row in enumerate(rows):
        row["pareto"] = index in front
    return sorted(rows, key=lambda row: row["latency_ms_p50"])


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    columns = [("variant", "label", "{}"), ("p50 ms", "latency_ms_p50", "{:.2f}"), ("p90 ms", "latency_ms_p90", "{:.2f}"),
               ("e2e p50", "e2e_ms_p50", "{:.2f}"), ("mAP50-95", "map50_95", "{:.3f}"), ("mAP50", "map50", "{:.3f}"),
               ("speed-up", "speedup_vs_baseline", "{:.2f}x"), ("size MB", "model_size_mb", "{:.1f}"),
               ("pareto", "pareto", "{}")]
    cells = [[title for title, _, _ in columns]]
    for row in rows:
        cells.append([fmt.format(row[key]) if key in row else "-" for _, key, fmt in columns])
    cells[1:] = [[*line[:-1], "*" if line[-1] == "True" else ""] for line in cells[1:]]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join("  ".join(value.ljust(width) for value, width in zip(line, widths)) for line in cells)


def print_report(spec: Any, settings: Any) -> int:
    tracker = tracking.Tracker(settings.resolved_tracking_uri)
    experiment = settings.experiment or spec.tracking.experiment or spec.name
    rows = sweep_rows(tracker, experiment, spec.name)
    if not rows:
        print(f"no finished runs of sweep {spec.name!r} in experiment {experiment!r} at {settings.resolved_tracking_uri}")
        return 1
    print(format_table(rows))
    print(f"\n{len(rows)} variants; * = on the latency/mAP50-95 Pareto front")
    return 0

"""Reports from the store: a sweep's variants as a table with its Pareto front (the sweep's objectives) marked,
and the front as a plot (PNG, interactive HTML) and a table for the parent run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yolobench import pareto, search, tracking


def sweep_rows(tracker: tracking.Tracker, experiment_name: str, sweep_name: str,
               objectives: Sequence[Any]) -> list[dict[str, Any]]:
    """One row per finished child run of the sweep, fastest first, with `pareto` set for the runs no
    other run beats on every objective."""
    experiment_id = tracker.existing_experiment_id(experiment_name)
    if experiment_id is None:
        return []
    runs = tracker.find_runs([experiment_id], tags={tracking.SWEEP_TAG: sweep_name}, finished_only=True)
    rows = [
        {"label": run.data.tags.get(tracking.RUN_NAME_TAG, run.info.run_id), "run_id": run.info.run_id,
         **run.data.metrics}
        for run in runs
        if tracking.PARENT_TAG in run.data.tags and "latency_ms_p50" in run.data.metrics
    ]
    signs = [-1.0 if o.resolved_direction == "maximize" else 1.0 for o in objectives]
    points = [[sign * row.get(o.metric, float("nan")) for sign, o in zip(signs, objectives)] for row in rows]
    front = set(pareto.non_dominated(points))
    for index, row in enumerate(rows):
        row["pareto"] = index in front
    return sorted(rows, key=lambda row: row["latency_ms_p50"])


@dataclass
class FrontTags:
    """The front as this worker tags it while the sweep runs: the pareto tag on each run (as set here, or as read
    when the sweep started) and the front itself, grown from each new result (pareto.GrowingFront) rather than
    found again among every result at every step."""

    known: dict[str, str] = field(default_factory=dict)  # run id -> its pareto tag's value
    front: pareto.GrowingFront = field(default_factory=pareto.GrowingFront)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # run id -> metrics, of the front's members
    mark: search.ResultsMark | None = None  # how far the study's results were taken in


def update_front(study: Any, tracker: tracking.Tracker, parent_id: str, objectives: Sequence[Any],
                 baseline: dict[str, float] | None, tags: FrontTags, step: int) -> None:
    """Tag the study's measured runs on the front (and untag those that left it); log the front's
    hypervolume on the parent run at `step` (the evaluations so far). Only the results measured since the last
    call are compared, and with the front's members only; all of them again when a result already taken in
    changed (re-timed). The front does not depend on the baseline (pareto.oriented); its hypervolume does."""
    if not baseline:
        return
    new, tags.mark, everything = search.results_since(study, tags.mark)
    if everything:
        tags.front, tags.metrics = pareto.GrowingFront(), {}
    changes: dict[str, bool] = {}
    for result in new:
        joined, left = tags.front.add(result.run_id, pareto.oriented(result.metrics, objectives))
        changes[result.run_id] = joined
        for run_id in left:
            changes[run_id] = False
            del tags.metrics[run_id]
        if joined:
            tags.metrics[result.run_id] = result.metrics
    if not tags.mark.count:
        return
    tracker.tag_front(changes, tags.known)
    points = [pareto.losses(tags.metrics[run_id], objectives, baseline) for run_id in tags.front.members]
    tracker.log(parent_id, metrics={"hypervolume": pareto.hypervolume(points, pareto.reference_point(objectives)),
                                    "front_size": len(points), "variants_measured": tags.mark.count}, step=step)


def log_front_report(tracker: tracking.Tracker, parent_id: str, experiment_name: str, spec: Any) -> None:
    """The front as a plot and a table, logged to the parent run under pareto/."""
    import tempfile

    rows = sweep_rows(tracker, experiment_name, spec.name, spec.search.objectives)
    if rows:
        with tempfile.TemporaryDirectory() as folder:
            for path in write_front_report(Path(folder), rows, spec.search.objectives, spec.name):
                tracker.log_file(parent_id, path, "pareto")


def latency_ranks(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Rank by p50 (rows sorted fastest first), where a variant whose p50 interval overlaps the one before it
    shares that rank ("=3"): the two were not told apart, so the table does not pretend they were."""
    ranks: list[str] = []
    rank, previous_high = 0, None
    for index, row in enumerate(rows):
        low = row.get("latency_ms_p50_ci_low", row["latency_ms_p50"])
        if previous_high is not None and low <= previous_high:
            ranks.append(f"={rank}")
            if not ranks[-2].startswith("="):
                ranks[-2] = f"={rank}"
        else:
            rank = index + 1
            ranks.append(str(rank))
        previous_high = max(row.get("latency_ms_p50_ci_high", row["latency_ms_p50"]), previous_high or 0.0)
    return ranks


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    columns = [("rank", "rank", "{}"), ("variant", "label", "{}"), ("p50 ms", "latency_ms_p50", "{:.2f}"),
               ("p50 95% CI", "p50_ci", "{}"), ("p90 ms", "latency_ms_p90", "{:.2f}"),
               ("e2e p50", "e2e_ms_p50", "{:.2f}"), ("mAP50-95", "map50_95", "{:.3f}"), ("mAP50", "map50", "{:.3f}"),
               ("speed-up", "speedup_vs_baseline", "{:.2f}x"), ("size MB", "model_size_mb", "{:.1f}"),
               ("pareto", "pareto", "{}")]
    rows = [{**row, "rank": rank, **({"p50_ci": f"{row['latency_ms_p50_ci_low']:.2f}-{row['latency_ms_p50_ci_high']:.2f}"}
                                      if "latency_ms_p50_ci_low" in row else {})}
            for row, rank in zip(rows, latency_ranks(rows))]
    cells = [[title for title, _, _ in columns]]
    for row in rows:
        cells.append([fmt.format(row[key]) if key in row else "-" for _, key, fmt in columns])
    cells[1:] = [[*line[:-1], "*" if line[-1] == "True" else ""] for line in cells[1:]]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join("  ".join(value.ljust(width) for value, width in zip(line, widths)) for line in cells)


def print_report(spec: Any, settings: Any) -> int:
    tracker = tracking.Tracker(settings.resolved_tracking_uri)
    experiment = settings.experiment or spec.tracking.experiment or spec.name
    rows = sweep_rows(tracker, experiment, spec.name, spec.search.objectives)
    if not rows:
        print(f"no finished runs of sweep {spec.name!r} in experiment {experiment!r} at {settings.resolved_tracking_uri}")
        return 1
    print(format_table(rows))
    names = " / ".join(f"{o.metric} ({o.resolved_direction})" for o in spec.search.objectives)
    print(f"\n{len(rows)} variants; * = on the Pareto front of {names}; '=N': p50 intervals overlap, not told apart")
    return 0


def _axis_values(rows: Sequence[dict[str, Any]], metric: str) -> list[float]:
    return [float(row.get(metric, float("nan"))) for row in rows]


def _front_markdown(rows: Sequence[dict[str, Any]], objectives: Sequence[Any]) -> str:
    metrics = [o.metric for o in objectives]
    lines = ["| variant | " + " | ".join(metrics) + " | run |", "|---" * (len(metrics) + 2) + "|"]
    for row in rows:
        if row["pareto"]:
            values = " | ".join(f"{row.get(m, float('nan')):.4g}" for m in metrics)
            lines.append(f"| {row['label']} | {values} | {row['run_id']} |")
    return "\n".join(lines) + "\n"


def _front_svg_html(rows: Sequence[dict[str, Any]], x_metric: str, y_metric: str, title: str) -> str:
    """A self-contained interactive page (hover a point for its variant): no plotting library needed."""
    import html

    width, height, margin = 720, 480, 60
    xs, ys = _axis_values(rows, x_metric), _axis_values(rows, y_metric)
    x_low, x_high = min(xs), max(xs)
    y_low, y_high = min(ys), max(ys)

    def scale(value: float, low: float, high: float, size: int, flip: bool) -> float:
        fraction = 0.5 if high == low else (value - low) / (high - low)
        return margin + (1 - fraction if flip else fraction) * (size - 2 * margin)

    points = []
    for row, x, y in zip(rows, xs, ys):
        colour = "#d62728" if row["pareto"] else "#1f77b4"
        tip = html.escape(f"{row['label']}: {x_metric}={x:.4g}, {y_metric}={y:.4g}")
        points.append(
            f'<circle cx="{scale(x, x_low, x_high, width, False):.1f}" cy="{scale(y, y_low, y_high, height, True):.1f}" '
            f'r="{6 if row["pareto"] else 4}" fill="{colour}"><title>{tip}</title></circle>'
        )
    front = sorted((x, y) for row, x, y in zip(rows, xs, ys) if row["pareto"])
    line = " ".join(
        f"{scale(x, x_low, x_high, width, False):.1f},{scale(y, y_low, y_high, height, True):.1f}" for x, y in front)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title></head>
<body style="font-family:sans-serif"><h3>{html.escape(title)}: Pareto front (red), hover a point</h3>
<svg width="{width}" height="{height}" style="border:1px solid #ccc">
<polyline points="{line}" fill="none" stroke="#d62728" stroke-dasharray="4"/>
{''.join(points)}
<text x="{width / 2}" y="{height - 15}" text-anchor="middle">{x_metric} ({x_low:.4g} .. {x_high:.4g})</text>
<text x="15" y="{height / 2}" transform="rotate(-90 15 {height / 2})" text-anchor="middle">{y_metric} ({y_low:.4g} .. {y_high:.4g})</text>
</svg></body></html>
"""


def write_front_report(folder: Path, rows: Sequence[dict[str, Any]], objectives: Sequence[Any], title: str) -> list[Path]:
    """Pareto plot (PNG and interactive HTML) of the first two objectives, and the front as a table."""
    x_metric, y_metric = objectives[0].metric, objectives[1].metric
    written = [folder / "front.md", folder / "pareto.html"]
    written[0].write_text(_front_markdown(rows, objectives))
    written[1].write_text(_front_svg_html(rows, x_metric, y_metric, title))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # a measuring host may lack matplotlib: the HTML and the table still go out
        return written
    figure, axes = plt.subplots(figsize=(7, 4.5))
    xs, ys = _axis_values(rows, x_metric), _axis_values(rows, y_metric)
    on_front = [row["pareto"] for row in rows]
    axes.scatter([x for x, f in zip(xs, on_front) if not f], [y for y, f in zip(ys, on_front) if not f],
                 s=18, label="variant")
    front = sorted((x, y, row["label"]) for x, y, row in zip(xs, ys, rows) if row["pareto"])
    axes.plot([p[0] for p in front], [p[1] for p in front], "o--", color="tab:red", label="Pareto front")
    for x, y, label in front:
        axes.annotate(label, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    axes.set_xlabel(x_metric)
    axes.set_ylabel(y_metric)
    axes.set_title(title)
    axes.legend()
    figure.tight_layout()
    png = folder / "pareto.png"
    figure.savefig(png, dpi=120)
    plt.close(figure)
    return [*written, png]

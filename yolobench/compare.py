"""Targets side by side: each sweep's front of latency_ms_p50 against mAP50-95 and its baseline, read from the
store the way `yolobench report` reads one sweep, as one table and one plot (PNG, and a self-contained HTML page
holding the same figure as inline SVG and the table)."""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yolobench import report, tracking

LATENCY, ACCURACY = "latency_ms_p50", "map50_95"  # the plot's axes, and the front every target is compared on
PNG_NAME, HTML_NAME = "compare.png", "compare.html"
MISSING_MATPLOTLIB = ("matplotlib is missing here (it comes with the build extra: pip install 'yolobench[build]', "
                      "or pip install matplotlib): the table is printed, no plot written")

COLUMNS = [("target", "target", "{}"), ("variant", "label", "{}"), ("p50 ms", LATENCY, "{:.2f}"),
           ("p50 95% CI", "p50_ci", "{}"), ("mAP50-95", ACCURACY, "{:.3f}"), ("mAP50", "map50", "{:.3f}"),
           ("speed-up", "speedup_vs_baseline", "{:.2f}x"), ("mAP delta", "map50_95_delta_vs_baseline", "{:+.3f}"),
           ("front", "front_mark", "{}"), ("baseline", "baseline_mark", "{}")]


@dataclass(frozen=True)
class SweepResult:
    """One sweep's finished variants, fastest first, `pareto` set on the front of the two plotted metrics."""

    name: str
    target: str  # the sweep file's description of the hardware
    baseline: str  # the baseline variant's label
    rows: list[dict[str, Any]]

    @property
    def legend(self) -> str:
        return f"{self.name} ({self.target})" if self.target else self.name

    @property
    def front(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if row["pareto"]]

    @property
    def baseline_row(self) -> dict[str, Any] | None:
        return next((row for row in self.rows if row["label"] == self.baseline), None)

    @property
    def shown(self) -> list[dict[str, Any]]:
        """The rows the table holds: the front and the baseline (on the front or not), fastest first."""
        return [row for row in self.rows if row["pareto"] or row["label"] == self.baseline]


def gather(specs: Sequence[Any], settings: Any) -> tuple[list[SweepResult], list[str]]:
    """Each sweep's rows from the store (the same experiment `report` reads), and a line for each sweep that
    has no finished runs there."""
    from yolobench.space import Space
    from yolobench.spec import Objective

    # The same two axes for every target, whatever each sweep searched on: that is what the plot shows.
    objectives = [Objective(metric=LATENCY), Objective(metric=ACCURACY)]
    tracker = tracking.Tracker(settings.resolved_tracking_uri)
    results: list[SweepResult] = []
    missing: list[str] = []
    seen: set[tuple[str, str]] = set()
    for spec in specs:
        experiment = settings.experiment or spec.tracking.experiment or spec.name
        if (experiment, spec.name) in seen:  # the same sweep named twice is one line of the legend
            continue
        seen.add((experiment, spec.name))
        rows = [row for row in report.sweep_rows(tracker, experiment, spec.name, objectives) if ACCURACY in row]
        if not rows:
            missing.append(f"no finished runs of sweep {spec.name!r} in experiment {experiment!r} "
                           f"at {settings.resolved_tracking_uri}")
            continue
        results.append(SweepResult(spec.name, spec.target, Space.from_spec(spec).baseline.label, rows))
    return results, missing


def table_cells(results: Sequence[SweepResult]) -> list[list[str]]:
    """The header and one line per shown row of every sweep, in the order the sweeps were given."""
    cells = [[title for title, _, _ in COLUMNS]]
    for result in results:
        for row in result.shown:
            values = {**row, "target": result.name, "front_mark": "*" if row["pareto"] else "",
                      "baseline_mark": "baseline" if row["label"] == result.baseline else ""}
            if "latency_ms_p50_ci_low" in row:
                values["p50_ci"] = f"{row['latency_ms_p50_ci_low']:.2f}-{row['latency_ms_p50_ci_high']:.2f}"
            cells.append([fmt.format(values[key]) if key in values else "-" for _, key, fmt in COLUMNS])
    return cells


def format_table(results: Sequence[SweepResult]) -> str:
    cells = table_cells(results)
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(value.ljust(width) for value, width in zip(line, widths)).rstrip() for line in cells)


def footer(results: Sequence[SweepResult]) -> str:
    counts = ", ".join(f"{r.name} {len(r.front)} of {len(r.rows)}" for r in results)
    return (f"front (*): no other variant of the same sweep is faster ({LATENCY}) and as accurate ({ACCURACY}),\n"
            f"or as fast and more accurate; on the front: {counts}\n"
            f"speed-up and mAP delta: against each sweep's own baseline")


def _figure(results: Sequence[SweepResult]) -> Any:
    """Latency against mAP50-95: per sweep one colour, its front as a step line, the baseline as a star, its
    other variants as faint dots. Built on a Figure of its own with the Agg canvas: no pyplot, no GUI backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    figure = Figure(figsize=(8, 5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for index, result in enumerate(results):
        colour = f"C{index % 10}"
        others = [row for row in result.rows if not row["pareto"] and row["label"] != result.baseline]
        axes.scatter([row[LATENCY] for row in others], [row[ACCURACY] for row in others], s=10, color=colour,
                     alpha=0.3, linewidths=0)
        front = result.front  # fastest first: mAP rises along it, so each level holds until the next point
        axes.step([row[LATENCY] for row in front], [row[ACCURACY] for row in front], where="post", color=colour,
                  marker="o", markersize=5, label=f"{result.legend}: front")
        for row in front:
            axes.annotate(row["label"], (row[LATENCY], row[ACCURACY]), fontsize=6, color=colour,
                          xytext=(3, 3), textcoords="offset points")
        baseline = result.baseline_row
        if baseline is not None:
            axes.scatter([baseline[LATENCY]], [baseline[ACCURACY]], marker="*", s=180, color=colour,
                         edgecolors="black", linewidths=0.8, zorder=3)
            if not baseline["pareto"]:
                axes.annotate(baseline["label"], (baseline[LATENCY], baseline[ACCURACY]), fontsize=6, color=colour,
                              xytext=(5, -8), textcoords="offset points")
    latencies = [row[LATENCY] for result in results for row in result.rows if row[LATENCY] > 0]
    if latencies and max(latencies) / min(latencies) >= 10:  # a Pi and a GPU on one axis: ratios, not ms, compare
        axes.set_xscale("log")
    handles, labels = axes.get_legend_handles_labels()
    handles.append(Line2D([], [], marker="*", linestyle="none", markersize=11, color="grey",
                          markeredgecolor="black", label="baseline"))
    axes.legend(handles=handles, labels=[*labels, "baseline"], fontsize=7, loc="best")
    axes.set_xlabel(f"{LATENCY} (ms, lower is better)")
    axes.set_ylabel(f"{ACCURACY} (higher is better)")
    axes.set_title("yolobench compare: " + ", ".join(result.name for result in results), fontsize=10)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def _html_page(results: Sequence[SweepResult], svg: str) -> str:
    cells = table_cells(results)
    header = "".join(f"<th>{html.escape(title)}</th>" for title in cells[0])
    body = "\n".join("<tr>" + "".join(f"<td>{html.escape(value)}</td>" for value in line) + "</tr>"
                     for line in cells[1:])
    title = html.escape("yolobench compare: " + ", ".join(r.name for r in results))
    legend = "".join(f"<li>{html.escape(r.legend)}: baseline {html.escape(r.baseline)}</li>" for r in results)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif}} table{{border-collapse:collapse}}
th,td{{padding:2px 10px;border-bottom:1px solid #ddd;text-align:left;font-size:13px}}</style></head>
<body><h3>{title}</h3>
{svg}
<ul>{legend}</ul>
<table><thead><tr>{header}</tr></thead><tbody>
{body}
</tbody></table>
<p>{html.escape(footer(results))}</p>
</body></html>
"""


def write_plot(results: Sequence[SweepResult], folder: Path) -> list[Path]:
    """compare.png and compare.html in `folder`; ImportError where matplotlib is missing."""
    import matplotlib

    folder.mkdir(parents=True, exist_ok=True)
    # Glyphs as paths: the SVG needs no font on the reader's side; a fixed salt keeps its ids stable.
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": "yolobench-compare"}):
        figure = _figure(results)
        png = folder / PNG_NAME
        figure.savefig(png, dpi=120)
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    svg = buffer.getvalue()
    page = folder / HTML_NAME
    page.write_text(_html_page(results, svg[svg.index("<svg"):]), encoding="utf-8")
    return [png, page]


def compare(specs: Sequence[Any], settings: Any, folder: Path) -> int:
    """Print the table of every sweep's front and baseline and write the plot; 1 when a sweep had no runs."""
    results, missing = gather(specs, settings)
    for line in missing:
        print(line)
    if not results:
        return 1
    print(format_table(results))
    print("\n" + footer(results))
    try:
        written = write_plot(results, folder)
    except ImportError:
        print(MISSING_MATPLOTLIB)
    else:
        for path in written:
            print(f"wrote {path}")
    return 1 if missing else 0

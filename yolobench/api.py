"""The Python door: `yolobench.sweep()` runs a sweep as the command line does and returns its summary;
`yolobench.results()` reads a sweep's rows back as a pandas DataFrame (the report's columns, the front
marked). Arguments mirror the command line's flags, overrides included."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from yolobench.overrides import Overrides
from yolobench.settings import SweepSettings, SweepSummary
from yolobench.spec import SweepSpec, load_sweep

REPORT_COLUMNS = ("label", "latency_ms_p50", "latency_ms_p50_ci_low", "latency_ms_p50_ci_high", "latency_ms_p90",
                  "e2e_ms_p50", "map50_95", "map50", "speedup_vs_baseline", "model_size_mb", "pareto", "rank",
                  "run_id")


def _overrides(weights: str | None, data: str | None, only: Mapping[str, Sequence[Any]] | None,
               set: Mapping[str, Any] | None) -> Overrides:
    """Structured values as the flags' text (JSON is YAML), so both doors meet the same checks."""
    narrowed = tuple(f"{axis}={','.join(json.dumps(v) for v in values)}" for axis, values in (only or {}).items())
    settings = tuple(f"{key}={json.dumps(value)}" for key, value in (set or {}).items())
    return Overrides(weights, data, narrowed, settings)


def _spec_and_settings(target: str | Path, home: str | Path, tracking_uri: str | None, storage: str | None,
                       experiment: str | None, overrides: Overrides, **extra: Any) -> tuple[SweepSpec, SweepSettings]:
    spec, _ = load_sweep(target, overrides)
    return spec, SweepSettings(home=Path(home), tracking_uri=tracking_uri, storage=storage, experiment=experiment,
                               **extra)


def sweep(target: str | Path, *, home: str | Path = "mlruns", tracking_uri: str | None = None,
          storage: str | None = None, experiment: str | None = None, weights: str | None = None,
          data: str | None = None, only: Mapping[str, Sequence[Any]] | None = None,
          set: Mapping[str, Any] | None = None, measure_only: bool = False, cache_dir: str | Path | None = None,
          retry_failed: bool = False) -> SweepSummary:
    """Run (or resume) a sweep: a shipped target's name or a sweep file. `only={"imgsz": [320]}` narrows an
    axis, `set={"measure.min_runs": 100}` sets any field. Raises yolobench.errors.SweepStopped when it
    cannot start, SpecError on a bad sweep file."""
    from yolobench.runner import run_sweep

    spec, settings = _spec_and_settings(target, home, tracking_uri, storage, experiment,
                                        _overrides(weights, data, only, set), measure_only=measure_only,
                                        cache_dir=Path(cache_dir) if cache_dir else None, retry_failed=retry_failed)
    return run_sweep(spec, settings)


def results(target: str | Path, *, home: str | Path = "mlruns", tracking_uri: str | None = None,
            experiment: str | None = None, weights: str | None = None, data: str | None = None,
            only: Mapping[str, Sequence[Any]] | None = None, set: Mapping[str, Any] | None = None):
    """The sweep's finished variants, fastest first: one row each with the report's columns (`pareto` marks
    the front, `rank` the latency rank with ties where p50 intervals overlap), the variant's axes as
    `axis.<name>` columns. Empty when nothing was measured yet."""
    import pandas as pd

    from yolobench import tracking
    from yolobench.report import latency_ranks, sweep_rows

    spec, settings = _spec_and_settings(target, home, tracking_uri, None, experiment,
                                        _overrides(weights, data, only, set))
    tracker = tracking.Tracker(settings.resolved_tracking_uri)
    rows = sweep_rows(tracker, settings.experiment or spec.tracking.experiment or spec.name, spec.name,
                      spec.search.objectives)
    for row, rank in zip(rows, latency_ranks(rows)):
        row["rank"] = rank
        params = tracker.run(row["run_id"]).data.params
        row.update({f"axis.{axis}": params.get(axis) for axis in spec.axes.as_dict()})
    frame = pd.DataFrame(rows)
    first = [c for c in REPORT_COLUMNS if c in frame.columns]
    axes = [c for c in frame.columns if c.startswith("axis.")]
    return frame[first + axes + [c for c in frame.columns if c not in first and c not in axes]]

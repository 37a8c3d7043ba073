"""Opening a variant (build, compile, open: each cached, so a second opening rebuilds nothing) and
re-timing it after its first pass, for the drift reference and the front's confirmation, the way the sweep
times. What changes is written where the study and the
MLflow run keep a variant's latency, so the report, the front and the UI show the re-timed figure."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from yolobench import search, tracking
from yolobench.build import Builder, Built
from yolobench.cache import Artifact, ArtifactCache
from yolobench.measure.harness import EvalData, window_settings
from yolobench.measure.latency import Iteration
from yolobench.measure.windows import WindowSettings, measure_windows, median_confidence_interval
from yolobench.runtimes import DecodeSettings, Runtime, RuntimeInfo, SessionBase
from yolobench.space import Variant
from yolobench.spec import SweepSpec

LATENCY_METRICS = ("latency_ms_p50", "latency_ms_p90", "latency_ms_p95", "latency_ms_p99", "latency_ms_mean")


@dataclass(frozen=True)
class Opened:
    built: Built
    compiled: Artifact | None
    axes: dict[str, Any]
    session: SessionBase
    work_dir: Path


@dataclass
class Retimer:
    """Opens variants with the sweep's own collaborators (the loop measures through it too) and times them again."""

    spec: SweepSpec
    info: RuntimeInfo
    builder: Builder
    runtime: Runtime
    cache: ArtifactCache
    decode: DecodeSettings
    data: EvalData

    @contextmanager
    def opened(self, variant: Variant, on_built: Callable[[Built], None] | None = None) -> Iterator[Opened]:
        """Build (cached), compile (cached) and open the variant; the session is closed on the way out.
        `on_built` sees what was built before the compile step, which may fail."""
        built = self.builder.build(variant)
        if on_built is not None:
            on_built(built)
        axes = self.info.resolve_axes(variant.as_dict())
        compiled = self.runtime.compile(built.model, axes, self.spec.runtime, self.cache)
        work_dir = Path(tempfile.mkdtemp(prefix="yolobench-"))
        session = None
        try:
            session = self.runtime.open(built.model, compiled, axes, self.spec.runtime, self.decode, work_dir)
            yield Opened(built, compiled, axes, session, work_dir)
        finally:
            if session is not None:
                session.close()
            shutil.rmtree(work_dir, ignore_errors=True)

    @contextmanager
    def session(self, variant: Variant) -> Iterator[SessionBase]:
        with self.opened(variant) as opened:
            yield opened.session

    def settings(self, session: SessionBase, share: int = 1) -> WindowSettings:
        """The sweep's window settings, with the timed minimum split over `share` interleaved rounds."""
        full = window_settings(self.spec.measure, session.phase_timings is not None)
        return WindowSettings(**{**full.__dict__, "min_runs": max(3, full.min_runs // share),
                                 "min_seconds": full.min_seconds / share, "max_seconds": full.max_seconds / share,
                                 "warmup_runs": min(full.warmup_runs, 3), "warmup_seconds": 0.0})

    def samples(self, session: SessionBase, variant: Variant, share: int = 1) -> np.ndarray:
        """Inference times (ms) of the kept windows of one timed phase."""
        timed = measure_windows(session.infer, self.data.latency_images, int(variant["imgsz"]),
                                self.settings(session, share))
        return timed.result.inference_ms

    def burst(self, session: SessionBase, variant: Variant, runs: int) -> np.ndarray:
        """Inference times (ms) of `runs` back-to-back passes of the timed pipeline, no windows: the
        interleaved rounds of the confirmation are what makes them comparable. One pass before them is not
        kept: coming after other models, it finds this one's weights out of the CPU's caches, and the
        latency reported is a warm one, as in the first pass."""
        iteration = Iteration(session.infer, self.data.latency_images, int(variant["imgsz"]), time.perf_counter,
                              self.spec.measure.conf, self.spec.measure.iou, self.spec.measure.max_det)
        times = []
        for index in range(runs + 1):
            _, preprocessed, inferred, _ = iteration(index)
            times.append(inferred - preprocessed)
        return np.asarray(times[1:]) * 1000.0

    def p50(self, variant: Variant) -> float:
        with self.session(variant) as session:
            return float(np.median(self.samples(session, variant)))


def latency_figures(samples: np.ndarray) -> dict[str, float]:
    """The re-timed latency metrics, under the names the first pass logged them."""
    p50, p90, p95, p99 = np.percentile(samples, [50, 90, 95, 99])
    low, high = median_confidence_interval(samples)
    return {"latency_ms_p50": float(p50), "latency_ms_p90": float(p90), "latency_ms_p95": float(p95),
            "latency_ms_p99": float(p99), "latency_ms_mean": float(np.mean(samples)),
            "latency_ms_p50_ci_low": low, "latency_ms_p50_ci_high": high}


def record(study: Any, tracker: tracking.Tracker, result: search.Result, figures: Mapping[str, float],
           tags: Mapping[str, str], baseline_p50: float | None = None,
           marks: Mapping[str, float] | None = None) -> dict[str, float]:
    """Write re-timed figures over a variant's first pass: the study's record (with `marks`, which only the
    study keeps) and its MLflow run (the first pass's p50 stays as latency_ms_p50_first)."""
    first = search.metrics_of(study, result.key, first_pass=True) or {}
    update = {**figures, "latency_ms_p50_first": float(first.get("latency_ms_p50", figures["latency_ms_p50"]))}
    if baseline_p50:
        update["speedup_vs_baseline"] = baseline_p50 / update["latency_ms_p50"]
    search.record_retimed(study, result.key, {**search.retimed(study).get(result.key, {}), **update, **(marks or {})})
    tracker.log(result.run_id, metrics=update, tags=tags)
    return update

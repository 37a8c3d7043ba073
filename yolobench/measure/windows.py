"""Latency a ranking can rest on: the timed phase runs in short windows. A window timed while other
processes loaded the machine is refused and re-taken after a back-off; the phase ends when the last three
windows' p50 agree within a tolerance (Triton's perf_analyzer waits for agreeing windows too), or at a
time cap, when the run is flagged unstable. The p50 carries an order-statistic confidence interval."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from yolobench.measure.contention import ForeignLoad
from yolobench.measure.latency import Iteration, LatencyResult, phase_done
from yolobench.measure.resources import ResourceSampler

AGREEING_WINDOWS = 3


@dataclass(frozen=True)
class WindowSettings:
    warmup_runs: int = 10
    warmup_seconds: float = 1.0
    min_runs: int = 50  # over the kept windows together
    min_seconds: float = 2.0
    stability: float = 0.05  # the kept windows' p50s agree within this fraction (max / min - 1)
    max_seconds: float = 8.0  # the timed phase's cap, refused windows and back-offs included
    foreign_limit: float = 25.0  # percent of one core other processes may use during a window
    contended_retries: int = 3  # refused windows in a row before one is kept anyway (and the run flagged)
    backoff_s: float = 0.25  # first wait after a refused window; doubles each time

    min_window_runs: int = 20  # fewer samples give window p50s that scatter by more than `stability` alone

    @property
    def window_runs(self) -> int:
        return max(min(self.min_window_runs, self.min_runs), math.ceil(self.min_runs / AGREEING_WINDOWS))

    @property
    def window_seconds(self) -> float:
        return self.min_seconds / AGREEING_WINDOWS


@dataclass(frozen=True, eq=False)
class Window:
    pre: np.ndarray
    inference: np.ndarray
    post: np.ndarray
    seconds: float
    foreign_cpu_percent: float
    first_call: int  # call number (from the first timed call) of the window's first inference
    kept: bool = True

    @property
    def p50(self) -> float:
        return float(np.median(self.inference))


def median_confidence_interval(samples: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free interval of the median from order statistics (binomial ranks, normal approximation)."""
    ordered = np.sort(np.asarray(samples, dtype=np.float64))
    n = ordered.size
    if n == 0:
        return math.nan, math.nan
    z = {0.90: 1.645, 0.95: 1.96, 0.99: 2.576}.get(confidence, 1.96)
    half = z * math.sqrt(n) / 2
    low, high = max(0, math.floor(n / 2 - half)), min(n - 1, math.ceil(n / 2 + half))
    return float(ordered[low]), float(ordered[high])


@dataclass(frozen=True, eq=False)
class WindowedLatency:
    """The timed phase's windows and the verdict on them; `result` pools the kept windows."""

    result: LatencyResult
    windows: tuple[Window, ...]
    settings: WindowSettings
    converged: bool
    contended: bool
    kept_spans: tuple[tuple[int, int], ...]  # (call number from the first warm-up call, count) per kept window
    spread: float  # max / min - 1 of the kept windows' p50s

    @property
    def unstable(self) -> bool:
        return not self.converged

    def samples(self) -> dict[str, Any]:
        """Every window of the timed phase with its per-call times (ms), refused ones too: what the run's latency
        metrics summarise, for an artifact (a metric per sample would bury the run's figures in the MLflow UI)."""
        return {"kept_spans": [list(span) for span in self.kept_spans], "windows": [
            {"kept": window.kept, "seconds": window.seconds, "foreign_cpu_percent": window.foreign_cpu_percent,
             "first_call": window.first_call, "preprocess_ms": _rounded(window.pre),
             "inference_ms": _rounded(window.inference), "postprocess_ms": _rounded(window.post)}
            for window in self.windows]}

    def metrics(self) -> dict[str, float]:
        low, high = median_confidence_interval(self.result.inference_ms)
        timed = [w for w in self.windows if w.kept]
        foreign = [w.foreign_cpu_percent for w in timed]
        return {
            **self.result.metrics(),
            "latency_ms_p50_ci_low": low,
            "latency_ms_p50_ci_high": high,
            "latency_windows": float(len(self.windows)),
            "latency_windows_refused": float(sum(not w.kept for w in self.windows)),
            "latency_window_spread": self.spread,
            "foreign_cpu_percent_mean": float(np.mean(foreign)) if foreign else 0.0,
            "foreign_cpu_percent_max": float(max(w.foreign_cpu_percent for w in self.windows)),
            # The names of the release that re-measured once on a high CV: windows timed, first kept.
            "latency_attempts": float(len(self.windows)),
            "latency_attempt_kept": float(next(i for i, w in enumerate(self.windows)
                                               if w is timed[-min(AGREEING_WINDOWS, len(timed))]) + 1),
        }


@dataclass
class _Phase:
    iteration: Iteration
    settings: WindowSettings
    clock: Callable[[], float]
    foreign: ForeignLoad
    windows: list[Window] = field(default_factory=list)
    calls: int = 0

    def window(self) -> Window:
        pre, inference, post = [], [], []
        self.foreign.start()
        started = now = self.clock()
        while not phase_done(len(inference), now - started, self.settings.window_runs, self.settings.window_seconds,
                             100000):
            start, preprocessed, inferred, now = self.iteration(self.calls + len(inference))
            pre.append(preprocessed - start)
            inference.append(inferred - preprocessed)
            post.append(now - inferred)
        reading = self.foreign.stop()
        first_call, self.calls = self.calls, self.calls + len(inference)
        ms = 1000.0
        return Window(np.asarray(pre) * ms, np.asarray(inference) * ms, np.asarray(post) * ms, now - started,
                      reading.cpu_percent + 100.0 * reading.gpu_processes, first_call)

    def kept(self) -> list[Window]:
        return [w for w in self.windows if w.kept]


def _spread(windows: Sequence[Window]) -> float:
    p50s = [w.p50 for w in windows]
    return max(p50s) / min(p50s) - 1.0 if p50s and min(p50s) > 0 else math.inf


def _settled(phase: _Phase) -> bool:
    kept = phase.kept()[-AGREEING_WINDOWS:]
    return (len(kept) == AGREEING_WINDOWS and sum(w.inference.size for w in kept) >= phase.settings.min_runs
            and sum(w.seconds for w in kept) >= phase.settings.min_seconds * 0.999
            and _spread(kept) <= phase.settings.stability)


def _timed_phase(phase: _Phase, sleep: Callable[[float], None]) -> tuple[bool, bool]:
    """Windows until the kept ones agree or the cap; returns (converged, contended)."""
    settings, started, refused_in_a_row, contended = phase.settings, phase.clock(), 0, False
    while True:
        window = phase.window()
        foreign = window.foreign_cpu_percent > settings.foreign_limit
        if foreign and refused_in_a_row < settings.contended_retries:
            phase.windows.append(Window(**{**window.__dict__, "kept": False}))
            sleep(settings.backoff_s * 2 ** refused_in_a_row)
            refused_in_a_row += 1
        else:
            contended |= foreign
            refused_in_a_row = 0
            phase.windows.append(window)
        if _settled(phase):
            return True, contended
        if phase.clock() - started >= settings.max_seconds and len(phase.kept()) >= 1:
            return False, contended


def measure_windows(infer: Callable[[np.ndarray], np.ndarray], images: Sequence[np.ndarray], imgsz: int,
                    settings: WindowSettings = WindowSettings(), clock: Callable[[], float] = time.perf_counter,
                    sampler: ResourceSampler | None = None, foreign: ForeignLoad | None = None,
                    sleep: Callable[[float], None] = time.sleep, conf: float = 0.001, iou: float = 0.7,
                    max_det: int = 300) -> WindowedLatency:
    """Warm up, then time windows of pre-process, `infer` and post-process over `images` (BGR, cycled)."""
    if len(images) == 0:
        raise ValueError("measure_windows needs at least one image")
    iteration = Iteration(infer, images, imgsz, clock, conf, iou, max_det)
    warmup_start, warmup_runs = clock(), 0
    while not phase_done(warmup_runs, clock() - warmup_start, settings.warmup_runs, settings.warmup_seconds, 100000):
        iteration(warmup_runs)
        warmup_runs += 1
    phase = _Phase(Iteration(infer, images, imgsz, clock, conf, iou, max_det), settings, clock,
                   foreign or ForeignLoad())
    if sampler is not None:
        sampler.start()
    try:
        converged, contended = _timed_phase(phase, sleep)
    finally:
        resources = sampler.stop() if sampler is not None else {}
    kept = phase.kept()[-AGREEING_WINDOWS:]
    result = LatencyResult(preprocess_ms=np.concatenate([w.pre for w in kept]),
                           inference_ms=np.concatenate([w.inference for w in kept]),
                           postprocess_ms=np.concatenate([w.post for w in kept]),
                           timed_seconds=sum(w.seconds for w in kept), warmup_runs=warmup_runs, resources=resources)
    spans = tuple((warmup_runs + w.first_call, int(w.inference.size)) for w in kept)
    return WindowedLatency(result, tuple(phase.windows), settings, converged, contended, spans, _spread(kept))


def _rounded(times_ms: np.ndarray) -> list[float]:
    return [round(float(value), 5) for value in times_ms]  # 10 ns: finer than any clock here resolves

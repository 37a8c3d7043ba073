"""Latency of a variant, measured the same way for every runtime: warm-up, then enough timed
iterations (by count and by time) with pre-process, inference and post-process timed apart; a
re-measure when the times scatter, and CPU pinning while timing."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from yolobench.data.letterbox import to_input_tensor
from yolobench.measure.postprocess import decode_yolo11
from yolobench.measure.resources import ResourceSampler

HIGH_CV_THRESHOLD = 0.10  # inference-time coefficient of variation above which a variant is re-measured

METRIC_NAMES = (
    "latency_ms_p50",
    "latency_ms_p90",
    "latency_ms_p95",
    "latency_ms_p99",
    "latency_ms_mean",
    "latency_ms_std",
    "latency_ms_min",
    "latency_ms_max",
    "latency_cv",
    "e2e_ms_p50",
    "e2e_ms_p90",
    "e2e_ms_p95",
    "e2e_ms_p99",
    "e2e_ms_mean",
    "fps",
    "preprocess_ms",
    "postprocess_ms",
    "timed_runs",
    "timed_seconds",
)


@dataclass(frozen=True)
class LatencySettings:
    """How long to warm up and how much to time; both the count and the time must be reached."""

    warmup_runs: int = 10
    warmup_seconds: float = 1.0
    min_runs: int = 50
    min_seconds: float = 2.0
    max_runs: int = 100000

    def __post_init__(self) -> None:
        if self.warmup_runs < 0 or self.warmup_seconds < 0 or self.min_seconds < 0:
            raise ValueError("latency settings must not be negative")
        if not 1 <= self.min_runs <= self.max_runs:
            raise ValueError(f"need 1 <= min_runs ({self.min_runs}) <= max_runs ({self.max_runs})")


def phase_done(runs: int, elapsed_s: float, min_runs: int, min_seconds: float, max_runs: int) -> bool:
    """Stop rule of a phase: both `min_runs` and `min_seconds` reached, or `max_runs` hit."""
    return runs >= max_runs or (runs >= min_runs and elapsed_s >= min_seconds)


@dataclass(frozen=True, eq=False)
class LatencyResult:
    """Per-iteration times (ms) of the timed phase and its wall time."""

    preprocess_ms: np.ndarray
    inference_ms: np.ndarray
    postprocess_ms: np.ndarray
    timed_seconds: float
    warmup_runs: int = 0
    resources: Mapping[str, float] = field(default_factory=dict)  # ResourceSampler summary of the timed phase

    @property
    def e2e_ms(self) -> np.ndarray:
        return self.preprocess_ms + self.inference_ms + self.postprocess_ms

    @property
    def latency_cv(self) -> float:
        mean = float(self.inference_ms.mean())
        return float(self.inference_ms.std() / mean) if mean > 0 else 0.0

    def high_cv(self, threshold: float = HIGH_CV_THRESHOLD) -> bool:
        """Whether inference times varied too much for the percentiles to be trusted."""
        return self.latency_cv > threshold

    def metrics(self) -> dict[str, float]:
        """Summary statistics under their logged names (see METRIC_NAMES), and the resource readings."""
        inference, e2e = self.inference_ms, self.e2e_ms
        p50, p90, p95, p99 = np.percentile(inference, [50, 90, 95, 99])
        e50, e90, e95, e99 = np.percentile(e2e, [50, 90, 95, 99])
        e2e_mean = float(e2e.mean())
        return {
            "latency_ms_p50": float(p50),
            "latency_ms_p90": float(p90),
            "latency_ms_p95": float(p95),
            "latency_ms_p99": float(p99),
            "latency_ms_mean": float(inference.mean()),
            "latency_ms_std": float(inference.std()),
            "latency_ms_min": float(inference.min()),
            "latency_ms_max": float(inference.max()),
            "latency_cv": self.latency_cv,
            "e2e_ms_p50": float(e50),
            "e2e_ms_p90": float(e90),
            "e2e_ms_p95": float(e95),
            "e2e_ms_p99": float(e99),
            "e2e_ms_mean": e2e_mean,
            "fps": 1000.0 / e2e_mean if e2e_mean > 0 else 0.0,
            "preprocess_ms": float(self.preprocess_ms.mean()),
            "postprocess_ms": float(self.postprocess_ms.mean()),
            "timed_runs": float(inference.size),
            "timed_seconds": float(self.timed_seconds),
            **{name: float(value) for name, value in self.resources.items()},
        }


def measure_latency(
    infer: Callable[[np.ndarray], np.ndarray],
    images: Sequence[np.ndarray],
    imgsz: int,
    settings: LatencySettings = LatencySettings(),
    clock: Callable[[], float] = time.perf_counter,
    conf: float = 0.001,
    iou: float = 0.7,
    max_det: int = 300,
    sampler: ResourceSampler | None = None,
) -> LatencyResult:
    """Time pre-process, `infer` and post-process per iteration over `images` (BGR, cycled).

    Warm-up runs the same pipeline, untimed, until both `warmup_runs` and `warmup_seconds` are
    reached; the timed phase until both `min_runs` and `min_seconds` are (or `max_runs`). A
    `sampler` samples resource use during the timed phase only."""
    if len(images) == 0:
        raise ValueError("measure_latency needs at least one image")
    iteration = Iteration(infer, images, imgsz, clock, conf, iou, max_det)
    warmup_start, warmup_runs = clock(), 0
    while not phase_done(
        warmup_runs, clock() - warmup_start, settings.warmup_runs, settings.warmup_seconds, settings.max_runs
    ):
        iteration(warmup_runs)
        warmup_runs += 1

    pre: list[float] = []
    inf: list[float] = []
    post: list[float] = []
    if sampler is not None:
        sampler.start()
    try:
        timed_start = clock()
        now = timed_start
        while not phase_done(len(inf), now - timed_start, settings.min_runs, settings.min_seconds, settings.max_runs):
            start, preprocessed, inferred, now = iteration(len(inf))
            pre.append(preprocessed - start)
            inf.append(inferred - preprocessed)
            post.append(now - inferred)
    finally:
        resources = sampler.stop() if sampler is not None else {}
    return LatencyResult(preprocess_ms=np.asarray(pre) * 1000.0, inference_ms=np.asarray(inf) * 1000.0,
                         postprocess_ms=np.asarray(post) * 1000.0, timed_seconds=now - timed_start,
                         warmup_runs=warmup_runs, resources=resources)


@dataclass(frozen=True)
class Iteration:
    """One pass of the timed pipeline on image `index` (cycled): returns its four clock readings."""

    infer: Callable[[np.ndarray], np.ndarray]
    images: Sequence[np.ndarray]
    imgsz: int
    clock: Callable[[], float]
    conf: float
    iou: float
    max_det: int

    def __call__(self, index: int) -> tuple[float, float, float, float]:
        image = self.images[index % len(self.images)]
        clock = self.clock
        start = clock()
        tensor, transform = to_input_tensor(image, self.imgsz)
        preprocessed = clock()
        output = self.infer(tensor)
        inferred = clock()
        detections = decode_yolo11(output, self.conf, self.iou, self.max_det)
        transform.boxes_to_original(detections.boxes, image.shape[:2])
        return start, preprocessed, inferred, clock()


class CpuAffinityError(RuntimeError):
    """The CPUs asked for in runtime.cpu_affinity cannot be used on this host."""


def _thread_ids() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc/self/task")]
    except OSError:  # no procfs: the calling thread only
        return [0]


def current_cpus() -> list[int] | None:
    """CPUs this process may run on, or None where the OS does not say (not Linux)."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    return sorted(os.sched_getaffinity(0))


@contextmanager
def pinned_to_cpus(cpus: Sequence[int] | None) -> Iterator[list[int] | None]:
    """Pin every thread of this process (the runtime's thread pool too) to `cpus`, and put each back
    as it was on exit; yields the CPUs in use. With `cpus` None nothing changes."""
    if cpus is None:
        yield current_cpus()
        return
    if not hasattr(os, "sched_setaffinity"):
        raise CpuAffinityError("runtime.cpu_affinity needs os.sched_setaffinity (Linux); leave it out on this host")
    wanted = set(int(cpu) for cpu in cpus)
    previous: dict[int, set[int]] = {}
    try:
        for tid in _thread_ids():
            try:
                mask = os.sched_getaffinity(tid)
                os.sched_setaffinity(tid, wanted)
            except ProcessLookupError:  # the thread ended meanwhile
                continue
            previous[tid] = mask
    except OSError as error:
        _restore(previous)
        raise CpuAffinityError(
            f"runtime.cpu_affinity {sorted(wanted)}: cannot pin to these CPUs here ({error}); "
            f"this process may use CPUs {current_cpus()}"
        ) from None
    try:
        yield current_cpus()
    finally:
        _restore(previous)


def _restore(previous: Mapping[int, set[int]]) -> None:
    for tid, mask in previous.items():
        try:
            os.sched_setaffinity(tid, mask)
        except OSError:  # the thread ended meanwhile
            continue

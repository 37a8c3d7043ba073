"""One variant's measurement through one open session: latency (pinned to the sweep's CPUs, with a
resource sampler), then accuracy through the very session that was timed. Used by the sweep loop,
the benchmarks and the GPU check, so all of them measure the same way."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from yolobench.measure.accuracy import AccuracyResult, evaluate
from yolobench.measure.latency import CheckedLatency, LatencySettings, measure_latency_checked, pinned_to_cpus
from yolobench.measure.resources import ResourceSampler

if TYPE_CHECKING:
    from yolobench.data.dataset import DataSet
    from yolobench.runtimes.base import SessionBase
    from yolobench.spec import MeasureSpec

LATENCY_IMAGES = 8  # distinct val images cycled through the timed loop


@dataclass(frozen=True)
class EvalData:
    """What every variant is measured on: the scored val images and the latency loop's decoded frames."""

    names: dict[int, str]
    val_images: tuple[Path, ...]
    latency_images: tuple[np.ndarray, ...]

    @classmethod
    def from_dataset(cls, dataset: DataSet, limit: int = 0) -> EvalData:
        """The val split (its first `limit` images when > 0), with the first few decoded for timing."""
        images = dataset.val_images[:limit] if limit else dataset.val_images
        frames = []
        for path in images[:LATENCY_IMAGES]:
            frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if frame is None:
                raise FileNotFoundError(f"cannot read image {path}")
            frames.append(frame)
        return cls(names=dataset.names, val_images=tuple(images), latency_images=tuple(frames))


@dataclass(frozen=True)
class Measurement:
    latency: CheckedLatency
    accuracy: AccuracyResult
    phases: dict[str, float]  # device phases (h2d/compute/d2h) of the kept attempt's timed calls only
    runtime_metrics: dict[str, float]  # what only the runtime can time (an OAK's on-device inference)
    session_info: dict[str, Any]
    cpus_used: list[int] | None

    def metrics(self) -> dict[str, float]:
        return {**self.latency.metrics(), **self.accuracy.metrics(), **self.runtime_metrics, **self.phases}


def latency_settings(measure: MeasureSpec) -> LatencySettings:
    return LatencySettings(warmup_runs=measure.warmup_runs, warmup_seconds=measure.warmup_seconds,
                           min_runs=measure.min_runs, min_seconds=measure.min_seconds)


def kept_timed_calls(calls_before: int, calls_after: int, latency: CheckedLatency) -> tuple[int, int]:
    """(first call number, count) of the timed calls the latency harness kept. It runs warm-up then timed
    calls, once or twice (a re-measure when the CV was high): the first attempt's timed calls follow its
    warm-up, a kept second attempt's timed calls are the last ones."""
    timed = latency.result
    count = int(timed.inference_ms.size)
    first = calls_before + timed.warmup_runs if latency.kept_attempt == 1 else calls_after - count
    return first, count


@dataclass(frozen=True)
class Timing:
    latency: CheckedLatency
    phases: dict[str, float]
    cpus_used: list[int] | None


def time_session(session: SessionBase, images: Sequence[np.ndarray], imgsz: int, measure: MeasureSpec,
                 cpu_affinity: Sequence[int] | None = None, sampler: ResourceSampler | None = None) -> Timing:
    """The timed phase as a sweep runs it: pinned to the sweep's CPUs, resources sampled, re-measured once
    when the times scatter; with the device phases of the calls it kept."""
    timings = session.phase_timings
    calls_before = len(timings) if timings is not None else 0
    with pinned_to_cpus(cpu_affinity) as cpus_used:
        latency = measure_latency_checked(
            session.infer, images, imgsz, latency_settings(measure),
            cv_threshold=measure.cv_threshold, sampler=sampler or ResourceSampler(),
        )
    phases: dict[str, float] = {}
    if timings is not None:
        first, count = kept_timed_calls(calls_before, len(timings), latency)
        if count > 0 and first >= 0 and first + count <= len(timings):
            phases = timings.metrics(first, count)
    return Timing(latency, phases, cpus_used)


def measure_session(session: SessionBase, data: EvalData, imgsz: int, measure: MeasureSpec,
                    cpu_affinity: Sequence[int] | None = None,
                    sampler: ResourceSampler | None = None) -> Measurement:
    """Time the session, then score it through the same session; the caller closes it."""
    timing = time_session(session, data.latency_images, imgsz, measure, cpu_affinity, sampler)
    accuracy = evaluate(session.infer, data.val_images, data.names, imgsz, conf=measure.conf, iou=measure.iou,
                        max_det=measure.max_det, multi_label=measure.multi_label)
    return Measurement(latency=timing.latency, accuracy=accuracy, phases=timing.phases,
                       runtime_metrics=session.metrics(), session_info=session.info(), cpus_used=timing.cpus_used)

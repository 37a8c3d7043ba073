"""One variant's measurement through one open session: latency (pinned to the sweep's CPUs, with a
resource sampler), then accuracy through the very session that was timed. Used by the sweep loop,
the benchmarks and the GPU check, so all of them measure the same way."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from yolobench.measure.accuracy import AccuracyResult, evaluate, read_image
from yolobench.measure.energy import EnergyMeter
from yolobench.measure.latency import pinned_to_cpus
from yolobench.measure.resources import ResourceSampler
from yolobench.measure.reuse import ReusedAccuracy
from yolobench.measure.windows import WindowedLatency, WindowSettings, measure_windows
from yolobench.tracking import DATA_FINGERPRINT_TAG, LATENCY_REUSED_TAG

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
    fingerprint: str | None = None  # of the scored images and labels (data/validate.py), tagged on each run

    @classmethod
    def from_dataset(cls, dataset: DataSet, limit: int = 0) -> EvalData:
        """The val split (its first `limit` images when > 0), with the first few decoded for timing."""
        images = dataset.val_images[:limit] if limit else dataset.val_images
        frames = tuple(read_image(path) for path in images[:LATENCY_IMAGES])
        return cls(names=dataset.names, val_images=tuple(images), latency_images=frames,
                   fingerprint=dataset.fingerprint)


@dataclass(frozen=True)
class Timing:
    latency: WindowedLatency
    phases: dict[str, float]  # device phases (h2d/compute/d2h) of the kept windows' calls only
    cpus_used: list[int] | None
    energy: dict[str, float]  # {} where the host has no power sensor ...
    tags: dict[str, str]  # ... and then a tag says why (yolobench.energy_unavailable)


@dataclass(frozen=True)
class TimedGraph:
    """A run's timing, kept by the graph its session ran (SessionBase.executed_graph): a later variant whose
    session runs the same graph (an ORT level that finds nothing to do in the model) is the same computation,
    so it takes this timing instead of timing it again, as the confirmation times twins once."""

    timing: Timing
    run_id: str
    key: str  # the variant key of the run that was timed ...
    label: str  # ... and its label


@dataclass(frozen=True)
class Measurement:
    timing: Timing
    accuracy: AccuracyResult | ReusedAccuracy
    runtime_metrics: dict[str, float]  # what only the runtime can time (an OAK's on-device inference)
    session_info: dict[str, Any]
    tags: dict[str, str] = field(default_factory=dict)  # what the measurement says about itself (energy sensors)

    @property
    def latency(self) -> WindowedLatency:
        return self.timing.latency

    @property
    def cpus_used(self) -> list[int] | None:
        return self.timing.cpus_used

    def metrics(self) -> dict[str, float]:
        return {**self.latency.metrics(), **self.accuracy.metrics(), **self.runtime_metrics, **self.timing.energy,
                **self.timing.phases}


def window_settings(measure: MeasureSpec, device_timed: bool) -> WindowSettings:
    """The sweep file's measurement section as the windowed timer's settings; a session that times a device
    (GPU) is held to a tighter agreement by default, its times scatter less than a CPU's."""
    stability = measure.stability or (0.025 if device_timed else 0.05)
    max_seconds = measure.max_seconds or 2 * measure.min_seconds + 2
    return WindowSettings(warmup_runs=measure.warmup_runs, warmup_seconds=measure.warmup_seconds,
                          min_runs=measure.min_runs, min_seconds=measure.min_seconds, stability=stability,
                          max_seconds=max_seconds, foreign_limit=measure.foreign_limit,
                          contended_retries=measure.contended_retries)


def time_session(session: SessionBase, images: Sequence[np.ndarray], imgsz: int, measure: MeasureSpec,
                 cpu_affinity: Sequence[int] | None = None, sampler: ResourceSampler | None = None,
                 energy: EnergyMeter | None = None) -> Timing:
    """The timed phase as a sweep runs it: pinned to the sweep's CPUs, resources sampled, in windows that
    foreign load cannot spoil; with the device phases of the calls it kept and the energy it took."""
    timings = session.phase_timings
    calls_before = len(timings) if timings is not None else 0
    if energy is not None:
        energy.start()
    with pinned_to_cpus(cpu_affinity) as cpus_used:
        latency = measure_windows(session.infer, images, imgsz, window_settings(measure, timings is not None),
                                  sampler=sampler or ResourceSampler())
    timed_calls = sum(w.inference.size for w in latency.windows)
    joules = energy.stop(timed_calls) if energy is not None else {}
    tags = {f"yolobench.{name}": value for name, value in energy.tags().items()} if energy is not None else {}
    phases = timings.metrics_of([(calls_before + first, count) for first, count in latency.kept_spans]) \
        if timings is not None else {}
    return Timing(latency, phases, cpus_used, joules, tags)


def measure_session(session: SessionBase, data: EvalData, imgsz: int, measure: MeasureSpec,
                    cpu_affinity: Sequence[int] | None = None, sampler: ResourceSampler | None = None,
                    energy: EnergyMeter | None = None,
                    reuse: Callable[[SessionBase], ReusedAccuracy | None] | None = None,
                    timed: TimedGraph | None = None) -> Measurement:
    """Time the session (or take `timed`: a twin's timing of the same graph), then score it through the same
    session (or take the accuracy `reuse` finds for it: a variant of the same numerics already scored); the
    caller closes it."""
    timing = timed.timing if timed is not None else time_session(
        session, data.latency_images, imgsz, measure, cpu_affinity, sampler, energy)
    accuracy = (reuse(session) if reuse is not None else None) or evaluate(
        session.infer, data.val_images, data.names, imgsz, conf=measure.conf, iou=measure.iou,
        max_det=measure.max_det, multi_label=measure.multi_label)
    tags = {**timing.tags, **({DATA_FINGERPRINT_TAG: data.fingerprint} if data.fingerprint else {}),
            **({LATENCY_REUSED_TAG: timed.run_id} if timed is not None else {})}
    return Measurement(timing, accuracy, runtime_metrics=session.metrics(), session_info=session.info(), tags=tags)

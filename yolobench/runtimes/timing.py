"""Phases a GPU session times inside each inference: host-to-device copy, device compute, device-to-host
copy. The latency harness times `infer()` as a whole (it must return host numpy for post-processing, so
its "inference" figure includes both copies); a session that can split the call keeps these per-call
phases, and the sweep reports device compute apart from the end-to-end figure.

Sessions keep them in `SessionBase.phase_timings`; None (a session that cannot split a call, e.g. the CPU
provider) reports nothing extra."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from yolobench.runtimes.base import SessionBase

# How the phases were timed, recorded on the run so numbers from different methods are not mixed blind.
CUDA_EVENTS = "cuda_events"  # device-side events around each phase (TensorRT)
HOST_CLOCK_SYNCHRONIZED = "host_clock_synchronized"  # perf_counter around calls that return synchronised (ORT IO binding)


class PhaseTimings:
    """Per-call (h2d, compute, d2h) times in milliseconds, in call order."""

    def __init__(self, method: str) -> None:
        self.method = method
        self._rows: list[tuple[float, float, float]] = []

    def add(self, h2d_ms: float, compute_ms: float, d2h_ms: float) -> None:
        self._rows.append((float(h2d_ms), float(compute_ms), float(d2h_ms)))

    def clear(self) -> None:
        self._rows.clear()

    def __len__(self) -> int:
        return len(self._rows)

    def metrics_of(self, spans: list[tuple[int, int]]) -> dict[str, float]:
        """Summary of the calls in each (first call, count) span, together; {} where a span is out of range."""
        rows = [row for first, count in spans for row in self._rows[first:first + count]]
        if not rows or any(first < 0 or first + count > len(self._rows) for first, count in spans):
            return {}
        keep, self._rows = self._rows, rows
        try:
            return self.metrics()
        finally:
            self._rows = keep

    def metrics(self, first: int = 0, count: int | None = None) -> dict[str, float]:
        """Summary of `count` calls from call number `first` (all calls by default), under the run's metric names."""
        rows = self._rows[first:] if count is None else self._rows[first:first + count]
        if not rows:
            return {}
        table = np.asarray(rows, dtype=np.float64)
        h2d, compute, d2h = table[:, 0], table[:, 1], table[:, 2]
        e2e = table.sum(axis=1)
        c50, c90, c99 = np.percentile(compute, [50, 90, 99])
        e50, e90, e99 = np.percentile(e2e, [50, 90, 99])
        return {
            "gpu_compute_ms_p50": float(c50),
            "gpu_compute_ms_p90": float(c90),
            "gpu_compute_ms_p99": float(c99),
            "gpu_compute_ms_mean": float(compute.mean()),
            "gpu_h2d_ms_mean": float(h2d.mean()),
            "gpu_d2h_ms_mean": float(d2h.mean()),
            "gpu_e2e_ms_p50": float(e50),
            "gpu_e2e_ms_p90": float(e90),
            "gpu_e2e_ms_p99": float(e99),
            "gpu_timed_calls": float(len(rows)),
        }

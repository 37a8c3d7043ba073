"""Progress for long sweeps: done/total, ETA and the variant being worked on, one line per event
so it reads well in a terminal and in a CI log alike."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class Progress:
    def __init__(self, total: int, already_done: int = 0, stream: TextIO | None = None,
                 clock=time.monotonic) -> None:
        self.total = total
        self.done = already_done
        self._done_here = 0
        self._stream = stream or sys.stdout
        self._clock = clock
        self._started = clock()
        self._excluded = 0.0

    def exclude(self, seconds: float) -> None:
        """Leave one-off work (training a model that later variants share) out of the per-variant pace."""
        self._excluded += seconds

    def eta_seconds(self) -> float | None:
        if self._done_here == 0:
            return None
        per_variant = max(0.0, self._clock() - self._started - self._excluded) / self._done_here
        return per_variant * (self.total - self.done)

    def _prefix(self) -> str:
        width = len(str(self.total))
        percent = 100 * self.done / self.total if self.total else 100
        eta = self.eta_seconds()
        eta_text = f"eta {_duration(eta)}" if eta is not None else "eta --"
        return f"[{self.done:>{width}}/{self.total} {percent:3.0f}% {eta_text}]"

    def message(self, text: str) -> None:
        print(f"{self._prefix()} {text}", file=self._stream, flush=True)

    def start(self, label: str) -> None:
        self.message(f"{label} ...")

    def finish(self, label: str, outcome: str) -> None:
        self.done += 1
        self._done_here += 1
        self.message(f"{label} {outcome}")


def result_line(metrics: dict[str, float]) -> str:
    line = f"p50 {metrics['latency_ms_p50']:.2f} ms  mAP50-95 {metrics['map50_95']:.3f}"
    if "speedup_vs_baseline" in metrics:
        line += f"  x{metrics['speedup_vs_baseline']:.2f} vs baseline"
    return line

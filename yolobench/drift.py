"""The drift reference: the baseline is re-timed every few variants or minutes, so a machine that changes
under the sweep (a laptop on battery, a Pi that throttles, a Jetson that changes clocks, a neighbour that
starts) is seen. Its drift is the parent run's `reference_drift` metric over steps. Variants timed while it
had drifted beyond tolerance are re-timed once it is back within; those still waiting when the sweep ends
join the front's confirmation. A grid the confirmation re-times whole waits for it instead."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from yolobench import search, tracking
from yolobench.confirm import confirms_whole
from yolobench.retime import Retimer, latency_figures, record
from yolobench.space import Space

@dataclass
class DriftReference:
    study: object
    tracker: tracking.Tracker
    retimer: Retimer
    space: Space
    baseline_key: str
    parent_id: str
    clock: Callable[[], float] = time.monotonic
    say: Callable[[str], None] = print
    pending: list[str] = field(default_factory=list)  # variant keys timed since the last check
    suspect: list[str] = field(default_factory=list)  # timed while the reference had drifted: to re-time
    checks: int = 0

    def __post_init__(self) -> None:
        self._last = self.clock()

    def after(self, key: str | None) -> None:
        """Note a variant just timed (None: nothing was timed); check the reference when one is due."""
        if key is not None and key != self.baseline_key:
            self.pending.append(key)
        measure = self.retimer.spec.measure
        due_count = measure.reference_every and len(self.pending) >= measure.reference_every
        due_time = measure.reference_minutes and self.pending and self.clock() - self._last >= 60 * measure.reference_minutes
        if due_count or due_time:
            self.check()

    def check(self) -> float | None:
        """Re-time the baseline; returns its drift (re-timed p50 / first p50), None before it was measured."""
        first = search.metrics_of(self.study, self.baseline_key, first_pass=True)
        if not first:
            return None
        drift = self.retimer.p50(self.space.baseline) / first["latency_ms_p50"]
        self.checks += 1
        self._last = self.clock()
        self.tracker.log(self.parent_id, metrics={"reference_drift": drift}, step=self.checks)
        if abs(drift - 1) > self.retimer.spec.measure.drift_tolerance:
            when = "in the confirmation" if self.confirmed_whole() else "once it settles"
            self.say(f"reference drift x{drift:.2f}: {len(self.pending)} variant(s) to re-time {when}")
            self.suspect += self.pending
        elif not self.confirmed_whole():
            self.retime(self.suspect)
            self.suspect = []
        self.pending = []
        return drift

    def confirmed_whole(self) -> bool:
        """Whether the confirmation will re-time every variant, suspects included."""
        return confirms_whole(self.retimer.spec.measure, self.space.count())

    def retime(self, keys: list[str]) -> None:
        first_p50 = (search.metrics_of(self.study, self.baseline_key, first_pass=True) or {}).get("latency_ms_p50")
        by_key = {result.key: result for result in search.results(self.study)}
        for key in dict.fromkeys(keys):
            result = by_key.get(key)
            if result is not None:
                variant = self.space.variant_from_params(result.params)
                with self.retimer.session(variant) as session:
                    figures = latency_figures(self.retimer.samples(session, variant))
                record(self.study, self.tracker, result, figures, {tracking.RETIMED_TAG: "true"}, first_p50)

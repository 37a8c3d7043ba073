"""What a sweep is run with (where its stores are, what to retry) and what it reports back."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from yolobench.tracking import default_tracking_uri
from yolobench.urls import with_installed_driver


@dataclass(frozen=True)
class SweepSettings:
    home: Path = Path("mlruns")
    tracking_uri: str | None = None
    storage: str | None = None
    experiment: str | None = None
    cache_dir: Path | None = None
    retry_failed: bool = False
    measure_only: bool = False  # take every model from the cache folder or MLflow; never build (no torch needed)
    study: str | None = None  # the Optuna study's name (default: the sweep's); one per device class
    heartbeat_grace_s: float | None = None  # a worker silent this long is taken for dead (default search.GRACE_S)

    def for_spec(self, spec: Any) -> SweepSettings:
        """The sweep file's tracking.tracking_uri and search.storage where neither a flag nor the environment
        (MLFLOW_TRACKING_URI) gave one; the sweep's name as the study's where --study gave none."""
        return replace(self, tracking_uri=self.tracking_uri or spec.tracking.tracking_uri,
                       storage=self.storage or spec.search.storage, study=self.study or spec.name)

    @property
    def resolved_tracking_uri(self) -> str:
        return with_installed_driver(self.tracking_uri) if self.tracking_uri else default_tracking_uri(self.home)

    @property
    def resolved_storage(self) -> str:
        return with_installed_driver(self.storage) if self.storage else f"sqlite:///{(self.home / 'optuna.db').resolve()}"

    @property
    def resolved_cache_dir(self) -> Path:
        return self.cache_dir or self.home / "cache"


@dataclass
class SweepSummary:
    sweep: str
    experiment: str
    tracking_uri: str
    storage: str
    parent_run_id: str = ""
    total: int = 0
    measured: int = 0
    reused: int = 0
    failed: int = 0  # failed in this run
    already_done: int = 0
    failed_before: int = 0  # recorded as failed by an earlier run (not retried: --retry-failed)
    failures: dict[str, str] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return self.failed == 0 and self.failed_before == 0

    def nothing_left(self, grid: bool) -> str:
        done = "done" if grid else "done or the budget spent"
        failed = f"; {self.failed_before} failed (--retry-failed runs them again)" if self.failed_before else ""
        return f"nothing left to do: every variant {done}{failed}"

    def note(self, state: Any, keys: Any, grid: bool) -> SweepSummary:
        """What the study held when the sweep started: failed for good, and done (of this file's variants)."""
        self.failed_before = sum(trial.state.name == "FAIL" for trial in state.done.values())
        self.already_done = sum(k in state.done for k in keys) if grid else len(state.done)
        return self

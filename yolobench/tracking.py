"""MLflow: one experiment per sweep, one parent run per sweep, one child run per variant.
The names of params, metrics and tags live here so that runs compare across targets."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SWEEP_TAG = "yolobench.sweep"
VARIANT_KEY_TAG = "yolobench.variant_key"
ARTIFACT_KEY_TAG = "yolobench.artifact_key"
ERROR_TAG = "yolobench.error"
UNSTABLE_TAG = "yolobench.unstable"  # "true": inference CV stayed above measure.cv_threshold after a re-measure
PARETO_TAG = "yolobench.pareto"
PARENT_OF_TAG = "yolobench.parent_of"  # on a parent run: which study (storage and sweep name) it belongs to
TRAINING_KEY_TAG = "yolobench.training_key"  # on a training run: the trained model's cache key
TRAINING_RUN_TAG = "yolobench.training_run_id"  # on a variant: the run that trained its weights
PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"


def default_tracking_uri(home: Path) -> str:
    return f"sqlite:///{(Path(home) / 'mlflow.db').resolve()}"


def _is_local(tracking_uri: str) -> bool:
    return tracking_uri.startswith(("sqlite:", "file:", "/")) or "://" not in tracking_uri


@dataclass
class Tracker:
    """A thin layer over MlflowClient: explicit run ids, no global active-run state."""

    tracking_uri: str
    artifact_root: Path | None = None  # for a local store: where run artifacts go

    def __post_init__(self) -> None:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # sweeps run offline; nothing phones home
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.tracking_uri)

    def experiment_id(self, name: str) -> str:
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            if experiment.lifecycle_stage == "deleted":
                self.client.restore_experiment(experiment.experiment_id)
            return experiment.experiment_id
        location = None
        if self.artifact_root is not None and _is_local(self.tracking_uri):
            location = (Path(self.artifact_root) / name).resolve().as_uri()
        return self.client.create_experiment(name, artifact_location=location)

    def run_exists(self, run_id: str | None) -> bool:
        if not run_id:
            return False
        try:
            run = self.client.get_run(run_id)
        except Exception:  # MlflowException for an unknown id, on any store
            return False
        return run.info.lifecycle_stage == "active"

    def open_parent(self, experiment_id: str, sweep_name: str, run_id: str | None, params: Mapping[str, Any],
                    tags: Mapping[str, str]) -> str:
        """Reopen the sweep's parent run if it still exists, else start one."""
        if self.run_exists(run_id):
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        run = self.client.create_run(experiment_id, run_name=sweep_name, tags={SWEEP_TAG: sweep_name, **tags})
        self.log(run.info.run_id, params=params)
        return run.info.run_id

    def child_runs(self, experiment_id: str, parent_id: str) -> dict[str, Any]:
        """Active child runs of the parent, by variant key."""
        runs = self.client.search_runs(
            [experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}'", max_results=50000
        )
        return {run.data.tags[VARIANT_KEY_TAG]: run for run in runs if VARIANT_KEY_TAG in run.data.tags}

    def start_child(self, experiment_id: str, parent_id: str, name: str, tags: Mapping[str, str]) -> str:
        run = self.client.create_run(experiment_id, run_name=name, tags={PARENT_TAG: parent_id, **tags})
        return run.info.run_id

    def log(self, run_id: str, params: Mapping[str, Any] | None = None, metrics: Mapping[str, float] | None = None,
            tags: Mapping[str, str] | None = None, step: int = 0) -> None:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.utils.time import get_current_time_millis

        now = get_current_time_millis()
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, step) for k, v in (metrics or {}).items()],
            params=[Param(k, str(v)) for k, v in (params or {}).items()],
            tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
        )

    def set_tag(self, run_id: str, key: str, value: str, attempts: int = 5) -> None:
        """Set a tag another worker may be setting at the same moment (the front's tags move as each
        worker finishes a variant): on a shared store both may insert it at once, and one insert fails."""
        for attempt in range(attempts):
            try:
                self.client.set_tag(run_id, key, value)
                return
            except Exception:  # MlflowException wrapping the store's IntegrityError; any store
                if attempt == attempts - 1:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def log_file(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def log_json(self, run_id: str, payload: Any, filename: str, artifact_path: str | None = None) -> None:
        with tempfile.TemporaryDirectory() as folder:
            target = Path(folder) / filename
            target.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
            self.log_file(run_id, target, artifact_path)

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def discard(self, run_id: str) -> None:
        """Remove a child run a killed sweep left unfinished, so the rerun leaves no duplicate."""
        self.client.delete_run(run_id)

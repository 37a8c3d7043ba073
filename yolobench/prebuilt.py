"""Models built elsewhere: a measuring host (Raspberry Pi, Jetson, OAK host) has no torch or
Ultralytics, so `yolobench sweep --measure-only` takes each variant's model from a cache folder
copied from the build machine, or from the MLflow artifact store a build sweep logged it to.

A cache key depends on the build tools' versions, which a measuring host cannot know; the build key
(keys.build_key) depends only on what the sweep file says is built, so both machines compute it. The
build side records build key -> artifact in the cache (`prebuilt/`) and tags the MLflow run that
logged the model with it (publish_model)."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yolobench.build import Built, model_name
from yolobench.cache import MANIFEST_NAME, Artifact, ArtifactCache, write_atomically
from yolobench.errors import SweepStopped, VariantFailed
from yolobench.keys import build_key, identity
from yolobench.space import Variant
from yolobench.spec import SweepSpec
from yolobench.tracking import BUILD_KEY_TAG, MODEL_ARTIFACT_DIR, MODEL_LOGGED_TAG, TRAINING_RUN_TAG, Tracker

INDEX_DIR = "prebuilt"  # inside the cache root: one json per build key
LINEAGE_NAME = "lineage.json"


class ArtifactMissing(VariantFailed):
    """A variant whose built model is neither in the cache folder nor in the MLflow store."""


class NothingPrebuilt(SweepStopped):
    """--measure-only, and not one variant to measure has a built model anywhere."""


def build_axes(spec: SweepSpec, variant: Variant) -> dict[str, Any]:
    """The variant's axes that shape the built model: everything but the runtime's knobs."""
    return identity(spec, variant)["build_axes"]


def record_build(cache: ArtifactCache, key: str, built: Built, axes: dict[str, Any]) -> None:
    """Note in the cache which artifact a build key resolved to (and how it was made, in case only the
    model's own folder is copied), for a measuring host that copies the cache."""
    path = cache.root / INDEX_DIR / f"{key}.json"
    entry = {"stage": built.model.stage, "key": built.model.key, "model_name": built.model_name, "axes": axes,
             "lineage": built.lineage}
    if path.is_file():
        try:
            if json.loads(path.read_text()) == json.loads(json.dumps(entry, default=str)):
                return
        except ValueError:
            pass
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(entry, indent=2, sort_keys=True, default=str))


def _logged_run(tracker: Tracker, experiment_ids: Sequence[str], key: str, artifact_key: str | None = None) -> Any:
    """The latest run that logged the model of build key `key` (and of `artifact_key`, if given)."""
    tags = {BUILD_KEY_TAG: key, **({MODEL_LOGGED_TAG: artifact_key} if artifact_key else {})}
    runs = tracker.find_runs(experiment_ids, tags=tags, newest_first=True, limit=50)
    return next((run for run in runs if MODEL_LOGGED_TAG in run.data.tags), None)


def publish_model(tracker: Tracker, cache: ArtifactCache, experiment_id: str, run_id: str, spec: SweepSpec,
                  variant: Variant, built: Built) -> None:
    """Index the runtime's input model by build key in the cache and log it once per artifact to MLflow,
    so a measuring host without the build extra can take it. A model that came from elsewhere is only
    tagged with its build key and where it came from."""
    key = build_key(spec, variant)
    if built.source != "built":
        tracker.log(run_id, tags={BUILD_KEY_TAG: key}, params={"model_source": built.source})
        return
    record_build(cache, key, built, build_axes(spec, variant))
    tracker.log(run_id, tags={BUILD_KEY_TAG: key})
    if _logged_run(tracker, [experiment_id], key, built.model.key) is not None:
        return
    with tempfile.TemporaryDirectory() as folder:
        staging = Path(folder) / MODEL_ARTIFACT_DIR
        staging.mkdir()
        for item in built.model.directory.iterdir():
            if item.is_file():
                shutil.copyfile(item, staging / item.name)
        (staging / LINEAGE_NAME).write_text(json.dumps(built.lineage, indent=2, sort_keys=True, default=str))
        tracker.log_folder(run_id, staging, MODEL_ARTIFACT_DIR)
    tracker.log(run_id, tags={MODEL_LOGGED_TAG: built.model.key})


def record_provenance(tracker: Tracker, cache: ArtifactCache, experiment_id: str, run_id: str, spec: SweepSpec,
                      variant: Variant, built: Built) -> None:
    """Where a variant's model came from: published for measuring hosts, and the runs that trained it."""
    from yolobench.measure.system import host_fingerprint

    publish_model(tracker, cache, experiment_id, run_id, spec, variant, built)
    training_ids = [tracker.training_run(experiment_id, t, host_fingerprint()) for t in built.trainings]
    if training_ids:
        tracker.log(run_id, tags={TRAINING_RUN_TAG: training_ids[0]})


@dataclass(frozen=True)
class Located:
    artifact: Artifact
    lineage: list[dict[str, Any]]
    model_name: str
    source: str  # where it came from, for the run's params


class PrebuiltBuilder:
    """The Builder of a measuring host: finds each variant's model without building, in the cache folder's
    index first, then in MLflow. What comes from MLflow is put into the local cache under its own key (so
    compiling runtimes key their blobs and engines on it) and indexed, so the next run finds it locally."""

    def __init__(self, spec: SweepSpec, cache: ArtifactCache, tracker: Tracker, experiment_id: str | None) -> None:
        self.spec = spec
        self.cache = cache
        self.tracker = tracker
        self.experiment_id = experiment_id

    def describe(self, variant: Variant) -> str:
        return model_name(self.spec, variant)

    def build(self, variant: Variant) -> Built:
        located = self.locate(variant)
        return Built(located.artifact, located.lineage, located.model_name or self.describe(variant), located.source)

    def check(self, variants: Sequence[Variant]) -> None:
        """Stop before starting when nothing at all can be measured: one message beats a FAILED run per
        variant. When some are there, the missing ones become FAILED runs that name what is missing."""
        if not variants:
            return
        experiments = self._experiments()
        keys = {v.label: build_key(self.spec, v) for v in variants}
        missing = [v for v in variants if self._from_cache(keys[v.label]) is None
                   and _logged_run(self.tracker, experiments, keys[v.label]) is None]
        if len(missing) == len(variants):
            listed = ", ".join(v.label for v in missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            raise NothingPrebuilt(
                f"--measure-only: none of the {len(missing)} variants to measure has a built model ({listed}). "
                f"Looked in the cache folder {self.cache.root / INDEX_DIR} and the MLflow store "
                f"{self.tracker.tracking_uri}. Build them where the build extra is installed "
                "(yolobench sweep FILE), then copy that cache folder here (--cache-dir) or point --tracking-uri "
                "at the store the build sweep logged to"
            )

    def locate(self, variant: Variant) -> Located:
        key = build_key(self.spec, variant)
        found = self._from_cache(key) or self._from_mlflow(key, build_axes(self.spec, variant))
        if found is None:
            raise ArtifactMissing(
                f"no built model for variant {variant.label} (build key {key}, axes "
                f"{build_axes(self.spec, variant)}): not indexed in the cache folder {self.cache.root / INDEX_DIR}, "
                f"and no run in the MLflow store {self.tracker.tracking_uri} is tagged {BUILD_KEY_TAG}={key} with "
                "a logged model. Build it where the build extra is installed (yolobench sweep FILE) and copy that "
                "cache folder here (--cache-dir), or point --tracking-uri at the store the build sweep logged to; "
                "then rerun with --measure-only --retry-failed"
            )
        return found

    def _from_cache(self, key: str) -> Located | None:
        index = self.cache.root / INDEX_DIR / f"{key}.json"
        if not index.is_file():
            return None
        entry = json.loads(index.read_text())
        artifact = self.cache.lookup(entry["stage"], entry["key"])
        if artifact is None or not artifact.path.is_file():
            return None
        lineage = self.cache.lineage(artifact)
        if not any(m.get("stage") == "export" for m in lineage):  # ancestors not copied: use what was recorded
            lineage = entry.get("lineage") or lineage
        return Located(artifact, lineage, entry.get("model_name", ""), f"cache:{self.cache.root}")

    def _experiments(self) -> list[str]:
        """The sweep's experiment first, then every other active one (a build sweep may have had another name)."""
        others = [e for e in self.tracker.experiment_ids() if e != self.experiment_id]
        return [self.experiment_id, *others] if self.experiment_id is not None else others

    def _from_mlflow(self, key: str, axes: dict[str, Any]) -> Located | None:
        run = _logged_run(self.tracker, self._experiments(), key)
        if run is None:
            return None
        with tempfile.TemporaryDirectory() as folder:
            local = self.tracker.download(run.info.run_id, MODEL_ARTIFACT_DIR, Path(folder))
            manifest = json.loads((local / MANIFEST_NAME).read_text())
            stage, artifact_key = manifest["stage"], manifest["key"]
            if self.cache.lookup(stage, artifact_key) is None:
                self.cache.adopt(stage, artifact_key, local)
        artifact = self.cache.lookup(stage, artifact_key)
        assert artifact is not None
        lineage = json.loads((artifact.directory / LINEAGE_NAME).read_text())
        built = Built(artifact, lineage, run.data.params.get("model", ""), f"mlflow:run {run.info.run_id}")
        record_build(self.cache, key, built, axes)
        return Located(artifact, lineage, built.model_name, built.source)

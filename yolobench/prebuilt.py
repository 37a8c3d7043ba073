"""Models built elsewhere: a measuring host (Raspberry Pi, Jetson, OAK host) has no torch or
Ultralytics, so `yolobench sweep --measure-only` takes each variant's model from a cache folder
copied from the build machine, or from the MLflow artifact store a build sweep logged it to.

A cache key depends on the build tools' versions, which a measuring host cannot know; the
*build key* here depends only on what the sweep file says is built (model, data, export options,
int8 recipe, the variant's build axes), so both machines compute it. The build side records build key ->
artifact in the cache (`prebuilt/`) and tags the MLflow run that logged the model with it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yolobench.cache import MANIFEST_NAME, Artifact, ArtifactCache
from yolobench.space import Variant
from yolobench.spec import RUNTIME_AXES, SweepSpec

INDEX_DIR = "prebuilt"  # inside the cache root: one json per build key
MODEL_ARTIFACT_DIR = "model"  # MLflow artifact folder of the runtime's input model
LINEAGE_NAME = "lineage.json"
BUILD_KEY_TAG = "yolobench.build_key"
MODEL_LOGGED_TAG = "yolobench.model_logged"  # artifact key of the model logged under model/ by this run
_RUNTIME_AXES = set().union(*RUNTIME_AXES.values())


class ArtifactMissing(RuntimeError):
    """A variant whose built model is neither in the cache folder nor in the MLflow store."""


def build_axes(variant: Variant) -> dict[str, Any]:
    """The variant's axes that shape the built model: everything but the runtime's knobs."""
    return {name: value for name, value in variant.as_dict().items() if name not in _RUNTIME_AXES}


def build_key(spec: SweepSpec, variant: Variant) -> str:
    """Identity of the model the runtime receives, from the sweep file alone (no tool versions)."""
    axes = build_axes(variant)
    data = spec.data.model_dump()
    data.pop("val_images", None)  # how much of the val split is scored does not change the model
    identity = {
        "model": spec.model.model_dump(),
        "data": data,
        "export": spec.export.model_dump(),
        "int8": spec.int8.model_dump() if axes.get("precision") == "int8" else None,
        "axes": axes,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _write_json_atomically(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(handle, "w") as tmp:
        json.dump(payload, tmp, indent=2, sort_keys=True, default=str)
    os.replace(tmp_name, path)


def record_build(cache: ArtifactCache, key: str, model: Artifact, model_name: str, axes: dict[str, Any],
                 lineage: list[dict[str, Any]]) -> None:
    """Note in the cache which artifact a build key resolved to (and how it was made, in case only the
    model's own folder is copied), for a measuring host that copies the cache."""
    path = cache.root / INDEX_DIR / f"{key}.json"
    entry = {"stage": model.stage, "key": model.key, "model_name": model_name, "axes": axes, "lineage": lineage}
    if path.is_file():
        try:
            if json.loads(path.read_text()) == entry:
                return
        except ValueError:
            pass
    _write_json_atomically(path, entry)


def log_model(tracker: Any, run_id: str, key: str, model: Artifact, lineage: list[dict[str, Any]],
              experiment_id: str) -> bool:
    """Log the runtime's input model under model/ (once per artifact in the experiment) and tag the run
    with its build key, so a measuring host can fetch it from MLflow. Returns whether it uploaded."""
    tracker.log(run_id, tags={BUILD_KEY_TAG: key})
    if _find_logged_run(tracker.client, [experiment_id], key, model.key) is not None:
        return False
    with tempfile.TemporaryDirectory() as folder:
        staging = Path(folder) / MODEL_ARTIFACT_DIR
        staging.mkdir()
        for item in model.directory.iterdir():
            if item.is_file():
                shutil.copyfile(item, staging / item.name)
        (staging / LINEAGE_NAME).write_text(json.dumps(lineage, indent=2, sort_keys=True, default=str))
        tracker.client.log_artifacts(run_id, str(staging), MODEL_ARTIFACT_DIR)
    tracker.log(run_id, tags={MODEL_LOGGED_TAG: model.key})
    return True


def _find_logged_run(client: Any, experiment_ids: list[str], key: str, artifact_key: str | None = None) -> Any:
    """The latest run that logged the model of build key `key` (and of `artifact_key`, if given)."""
    query = f"tags.`{BUILD_KEY_TAG}` = '{key}'"
    if artifact_key is not None:
        query += f" and tags.`{MODEL_LOGGED_TAG}` = '{artifact_key}'"
    runs = client.search_runs(experiment_ids, filter_string=query, max_results=50,
                              order_by=["attributes.start_time DESC"])
    return next((run for run in runs if MODEL_LOGGED_TAG in run.data.tags), None)


@dataclass(frozen=True)
class Located:
    artifact: Artifact
    lineage: list[dict[str, Any]]
    model_name: str
    source: str  # where it came from, for the run's params


class PrebuiltModels:
    """Finds each variant's model without building: the cache folder's index first, then MLflow.

    What comes from MLflow is put into the local cache under its own key (so compiling runtimes key
    their blobs and engines on it) and indexed, so the next run finds it locally."""

    def __init__(self, spec: SweepSpec, cache: ArtifactCache, tracker: Any, experiment_id: str) -> None:
        self.spec = spec
        self.cache = cache
        self.tracker = tracker
        self.experiment_id = experiment_id

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
        others = [e.experiment_id for e in self.tracker.client.search_experiments()
                  if e.experiment_id != self.experiment_id]
        return [self.experiment_id, *others]

    def _from_mlflow(self, key: str, axes: dict[str, Any]) -> Located | None:
        client = self.tracker.client
        run = None
        experiments = self._experiments()
        for start in range(0, len(experiments), 100):  # search_runs takes a bounded list of experiments
            run = _find_logged_run(client, experiments[start:start + 100], key)
            if run is not None:
                break
        if run is None:
            return None
        with tempfile.TemporaryDirectory() as folder:
            local = Path(client.download_artifacts(run.info.run_id, MODEL_ARTIFACT_DIR, folder))
            manifest = json.loads((local / MANIFEST_NAME).read_text())
            stage, artifact_key = manifest["stage"], manifest["key"]
            if self.cache.lookup(stage, artifact_key) is None:
                self.cache.adopt(stage, artifact_key, local)
        artifact = self.cache.lookup(stage, artifact_key)
        assert artifact is not None
        model_name = run.data.params.get("model", "")
        lineage = json.loads((artifact.directory / LINEAGE_NAME).read_text())
        record_build(self.cache, key, artifact, model_name, axes, lineage)
        return Located(artifact, lineage, model_name, f"mlflow:run {run.info.run_id}")

    def locate(self, variant: Variant) -> Located:
        key = build_key(self.spec, variant)
        found = self._from_cache(key) or self._from_mlflow(key, build_axes(variant))
        if found is None:
            raise ArtifactMissing(
                f"no built model for variant {variant.label} (build key {key}, axes {build_axes(variant)}): "
                f"not indexed in the cache folder {self.cache.root / INDEX_DIR}, and no run in the MLflow store "
                f"{self.tracker.tracking_uri} is tagged {BUILD_KEY_TAG}={key} with a logged model. Build it where "
                "the build extra is installed (yolobench sweep FILE) and copy that cache folder here "
                "(--cache-dir), or point --tracking-uri at the store the build sweep logged to; then rerun with "
                "--measure-only --retry-failed"
            )
        return found

    def available(self, variants: list[Variant]) -> tuple[list[Variant], list[Variant]]:
        """(found, missing) without downloading: for the check before a sweep starts."""
        found, missing = [], []
        experiments = self._experiments()
        for variant in variants:
            key = build_key(self.spec, variant)
            hit = self._from_cache(key) is not None or any(
                _find_logged_run(self.tracker.client, experiments[start:start + 100], key) is not None
                for start in range(0, len(experiments), 100)
            )
            (found if hit else missing).append(variant)
        return found, missing


class MeasureOnlyBuilder:
    """Stands in for the runner's VariantBuilder on a measuring host: `build` finds, never builds."""

    def __init__(self, models: PrebuiltModels, spec: SweepSpec) -> None:
        self.models = models
        self.spec = spec
        self.training_run_ids: dict[str, str] = {}  # trained elsewhere: no training runs logged here
        self._located: dict[str, Located] = {}  # artifact key -> where it was found
        self._names: dict[str, str] = {}  # build key -> model name recorded by the build sweep

    def build(self, variant: Variant) -> Artifact:
        located = self.models.locate(variant)
        self._located[located.artifact.key] = located
        if located.model_name:
            self._names[build_key(self.spec, variant)] = located.model_name
        return located.artifact

    def lineage(self, model: Artifact) -> list[dict[str, Any]]:
        return self._located[model.key].lineage

    def source(self, model: Artifact) -> str:
        return self._located[model.key].source

    def model_name(self, variant: Variant) -> str:
        """The name the build sweep recorded; before the model is found, one made from the sweep file
        (the build side's name for pruned models needs Ultralytics, which is not here)."""
        recorded = self._names.get(build_key(self.spec, variant))
        if recorded:
            return recorded
        model, scale = self.spec.model, str(variant.get("scale", "n"))
        if model.weights is not None:
            return model.weights.format(scale=scale)
        training = {k: v for k, v in build_axes(variant).items() if k not in ("scale", "precision", "imgsz")}
        suffix = "".join(f",{k}={v}" for k, v in sorted(training.items()))
        return f"trained:{model.train.cfg.format(scale=scale)}{suffix}@{model.train.epochs}ep"

    def check_any_available(self, variants: list[Variant]) -> None:
        """Stop before starting when nothing at all can be measured: one message beats a FAILED run per
        variant. When some are there, the missing ones become FAILED runs that name what is missing."""
        if not variants:
            return
        found, missing = self.models.available(variants)
        if not found:
            listed = ", ".join(v.label for v in missing[:10])
            if len(missing) > 10:
                listed += f" and {len(missing) - 10} more"
            raise ArtifactMissing(
                f"--measure-only: none of the {len(missing)} variants to measure has a built model ({listed}). "
                f"Looked in the cache folder {self.models.cache.root / INDEX_DIR} and the MLflow store "
                f"{self.models.tracker.tracking_uri}. Build them where the build extra is installed "
                "(yolobench sweep FILE), then copy that cache folder here (--cache-dir) or point --tracking-uri "
                "at the store the build sweep logged to"
            )

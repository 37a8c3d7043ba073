"""The sweep loop: ask the study for a variant, build it (each stage cached), open it on the
runtime, measure latency and accuracy through that one session, log one MLflow child run, and
tell the study. Reruns resume: what is done is neither rebuilt, re-measured nor logged twice."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
from optuna.trial import TrialState

from yolobench import prebuilt, search, tracking
from yolobench.cache import Artifact, ArtifactCache
from yolobench.data.dataset import DataSet, load_dataset
from yolobench.fusion import runtime_fusion
from yolobench.measure.system import host_fingerprint
from yolobench.progress import Progress
from yolobench.runtimes import get_runtime
from yolobench.runtimes.timing import phase_calls, session_phase_metrics, timed_calls_start
from yolobench.space import Space, Variant, variant_key
from yolobench.spec import SweepSpec
from yolobench.stages.weights import WeightsUnavailable

# Exceptions that mean the code is wrong rather than the variant: these stop the sweep.
BUGS = (TypeError, AttributeError, NameError, KeyError, IndexError, AssertionError, ValueError)
LATENCY_IMAGES = 8  # distinct val images cycled through the timed loop


@dataclass(frozen=True)
class SweepSettings:
    home: Path = Path("mlruns")
    tracking_uri: str | None = None
    storage: str | None = None
    experiment: str | None = None
    cache_dir: Path | None = None
    retry_failed: bool = False
    measure_only: bool = False  # take every model from the cache folder or MLflow; never build (no torch needed)

    @property
    def resolved_tracking_uri(self) -> str:
        return self.tracking_uri or tracking.default_tracking_uri(self.home)

    @property
    def resolved_storage(self) -> str:
        return self.storage or f"sqlite:///{(self.home / 'optuna.db').resolve()}"

    @property
    def resolved_cache_dir(self) -> Path:
        return self.cache_dir or self.home / "cache"


@dataclass
class SweepSummary:
    sweep: str
    experiment: str
    tracking_uri: str
    storage: str
    parent_run_id: str
    total: int
    measured: int = 0
    reused: int = 0
    failed: int = 0
    already_done: int = 0
    failures: dict[str, str] = field(default_factory=dict)


class VariantFailed(RuntimeError):
    """A variant that could not be built or run; recorded as a FAILED run, the sweep goes on."""


def resolve_data_yaml(spec: SweepSpec, home: Path) -> Path:
    """The sweep's data set on disk: made here if synthetic, else a local file or Ultralytics' download."""
    if spec.data.synthetic is not None:
        from yolobench.data.synthetic import make_synthetic_dataset

        settings = spec.data.synthetic.model_dump()
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
        return make_synthetic_dataset(home / "data" / f"synthetic-{digest}", **settings)
    path = Path(spec.data.yaml)
    if path.is_file():
        return path.resolve()
    try:
        from ultralytics.data.utils import check_det_dataset
    except ImportError:
        raise VariantFailed(
            f"data.yaml {spec.data.yaml!r} is not a file here, and fetching it needs the build extra "
            "(pip install 'yolobench[build]') and internet; or point data.yaml at a local data yaml"
        ) from None
    from yolobench.stages.weights import hub_reachable

    if not hub_reachable():
        raise VariantFailed(
            f"data set {spec.data.yaml!r} is not on disk and cannot be downloaded (no internet). "
            "Download it on a machine with internet and point data.yaml at its local data yaml, "
            "or use data.synthetic for an offline run"
        )
    return Path(check_det_dataset(spec.data.yaml)["yaml_file"]).resolve()


class VariantBuilder:
    """Builds a variant's model through the cached stages: weights -> export -> precision."""

    def __init__(self, spec: SweepSpec, cache: ArtifactCache, data_yaml: Path, dataset: DataSet,
                 progress: Progress, on_trained: Callable[[Artifact, dict[str, Any]], str] | None = None) -> None:
        self.spec = spec
        self.cache = cache
        self.data_yaml = data_yaml
        self.dataset = dataset
        self.progress = progress
        self.on_trained = on_trained  # logs each trained model as an MLflow run; returns its run id
        self.training_run_ids: dict[str, str] = {}  # trained artifact key -> MLflow run id

    def weights(self, variant: Variant) -> Artifact:
        """The variant's weights: resolved, or trained once (cached by content) with its training axes."""
        model = self.spec.model
        scale = str(variant.get("scale", "n"))
        if model.weights is not None:
            from yolobench.stages.weights import resolve_weights

            return resolve_weights(self.cache, model.weights.format(scale=scale))
        cfg = self.model_cfg(variant)
        extra = {}
        teacher = str(variant.get("teacher", "none"))
        if teacher != "none":
            extra["distill_model"] = str(self.teacher(teacher).path)
        return self._train(cfg, {"teacher": teacher, **{k: variant.get(k) for k in ("width_multiple", "depth_multiple")
                                                        if variant.get(k) is not None}}, extra)

    def _train(self, cfg: str, description: dict[str, Any], extra: dict[str, Any]) -> Artifact:
        from yolobench.stages.train import train_model

        train = self.spec.model.train
        started = time.monotonic()
        artifact = train_model(
            self.cache, cfg, self.data_yaml,
            epochs=train.epochs, imgsz=train.imgsz, batch=train.batch, seed=train.seed,
            extra=extra or None, progress=self.progress.message,
        )
        self.progress.exclude(time.monotonic() - started)
        if self.on_trained is not None and artifact.key not in self.training_run_ids:
            self.training_run_ids[artifact.key] = self.on_trained(
                artifact, {"cfg": Path(cfg).name, **description, **train.model_dump()})
        return artifact

    def teacher(self, teacher: str) -> Artifact:
        """A teacher for distillation: a local .pt as it is, or an official architecture trained by
        yolobench on the sweep's data (offline there are no pretrained weights to start from)."""
        if teacher.endswith(".pt"):
            from yolobench.stages.weights import resolve_weights

            return resolve_weights(self.cache, teacher)
        return self._train(f"{teacher}.yaml", {"role": "teacher"}, {})

    def model_cfg(self, variant: Variant) -> str:
        """The model yaml to train: the scale's own, or one written with the variant's multiples."""
        train = self.spec.model.train
        scale = str(variant.get("scale", "n"))
        width, depth = variant.get("width_multiple"), variant.get("depth_multiple")
        if width is None and depth is None:
            return train.cfg.format(scale=scale)
        from yolobench.stages.model_yaml import write_scaled_yaml

        return str(write_scaled_yaml(self.cache.root / "model-yaml", scale, width, depth))

    def model_name(self, variant: Variant) -> str:
        model = self.spec.model
        scale = str(variant.get("scale", "n"))
        if model.weights is not None:
            return model.weights.format(scale=scale)
        return f"trained:{Path(self.model_cfg(variant)).name}@{model.train.epochs}ep"

    def lineage(self, model: Artifact) -> list[dict[str, Any]]:
        """Manifests from the model back to its weights (a measure-only builder gets them from elsewhere)."""
        return self.cache.lineage(model)

    def build(self, variant: Variant) -> Artifact:
        from yolobench.stages.export import export_onnx
        from yolobench.stages.quantize import convert_fp16, quantize_int8

        onnx = export_onnx(self.cache, self.weights(variant), int(variant["imgsz"]), self.spec.export)
        precision = variant["precision"]
        if self.spec.runtime.name == "depthai":  # the blob compiler makes FP16 from the fp32 graph, as Luxonis does
            return onnx
        if precision == "fp16":
            return convert_fp16(self.cache, onnx)
        if precision == "int8":
            recipe = self.spec.int8
            split = self.dataset.train_images if self.spec.data.calibration_split == "train" else self.dataset.val_images
            if not split:
                raise VariantFailed(f"no {self.spec.data.calibration_split} images for int8 calibration")
            return quantize_int8(self.cache, onnx, split[: recipe.calibration_images], recipe)
        return onnx


class Sweep:
    def __init__(self, spec: SweepSpec, settings: SweepSettings) -> None:
        self.spec = spec
        self.settings = settings
        self.space = Space.from_spec(spec)
        # Every variant by key where the space is finite; a continuous (Pareto) space has no list.
        self.keys = {variant_key(spec, v): v for v in self.space.variants()} if self.space.is_finite else {}
        self.baseline_key = variant_key(spec, self.space.baseline)
        self.experiment_name = settings.experiment or spec.tracking.experiment or spec.name

    # --- setup -------------------------------------------------------------------------------
    def _prepare(self) -> None:
        home = self.settings.home
        home.mkdir(parents=True, exist_ok=True)
        if not self.settings.measure_only:  # a measuring host has no Ultralytics to prepare
            from yolobench.stages.ultralytics_env import prepare_ultralytics

            prepare_ultralytics(home / "ultralytics")
        self.cache = ArtifactCache(self.settings.resolved_cache_dir)
        self.tracker = tracking.Tracker(self.settings.resolved_tracking_uri, artifact_root=home / "artifacts")
        self.study = search.open_study(self.settings.resolved_storage, self.spec.name, self.space, self.spec.search)
        self.experiment_id = self.tracker.experiment_id(self.experiment_name)

    def _open_parent(self) -> str:
        parent_id = self.tracker.open_parent(
            self.experiment_id,
            self.spec.name,
            self.study.user_attrs.get("mlflow_parent_run_id"),
            params={"target": self.spec.target, "runtime": self.spec.runtime.name,
                    "provider": self.spec.runtime.provider, "variants": self.space.count() or "continuous",
                    "baseline": self.space.baseline.label,
                    "axes": json.dumps(self.spec.axes.model_dump(exclude_none=True)),
                    "search_mode": self.spec.search.mode,
                    "sampler": self.spec.search.sampler if self.spec.search.mode == "pareto" else "grid",
                    "objectives": ",".join(f"{o.metric}:{o.resolved_direction}" for o in self.spec.search.objectives),
                    "hv_reference": json.dumps(search.reference_point(self.spec.search.objectives)),
                    "hv_normalisation": "minimised metric / baseline's value; 1 - mAP"},
            tags={**host_fingerprint(), tracking.PARENT_OF_TAG: self._study_identity()},
        )
        parent_id = self._one_parent(parent_id)
        self.study.set_user_attr("mlflow_parent_run_id", parent_id)
        self.tracker.log_json(parent_id, self.spec.model_dump(mode="json"), "sweep.json")
        return parent_id

    def _study_identity(self) -> str:
        return hashlib.sha256(f"{self.settings.resolved_storage}#{self.spec.name}".encode()).hexdigest()[:20]

    def _one_parent(self, mine: str) -> str:
        """Workers that start a sweep together may each create a parent run. All of them settle on the
        earliest one carrying this study's tag (set when the run is created, so a run is never seen
        untagged), and a worker whose own run lost deletes it."""
        study = self._study_identity()
        self.tracker.set_tag(mine, tracking.PARENT_OF_TAG, study)  # a parent reopened from before the tag
        candidates = self.tracker.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{tracking.PARENT_OF_TAG}` = '{study}'", max_results=100)
        chosen = min(candidates, key=lambda run: (run.info.start_time, run.info.run_id)).info.run_id
        if chosen != mine:
            self.tracker.discard(mine)
            self.tracker.client.update_run(chosen, status="RUNNING")
        return chosen

    # --- the loop ----------------------------------------------------------------------------
    def run(self) -> SweepSummary:
        self._prepare()
        parent_id = self._open_parent()
        status = "FAILED"  # whatever stops the sweep early, the parent run does not stay RUNNING
        try:
            summary = self._run(parent_id)
            status = "FINISHED"
            return summary
        finally:
            self.tracker.finish(parent_id, status)
            self._log_front_report(parent_id)

    def _run(self, parent_id: str) -> SweepSummary:
        summary = SweepSummary(
            sweep=self.spec.name, experiment=self.experiment_name,
            tracking_uri=self.settings.resolved_tracking_uri, storage=self.settings.resolved_storage,
            parent_run_id=parent_id, total=len(self.keys),
        )
        state = search.study_state(self.study, self.settings.retry_failed)
        search.close_interrupted(self.study, state.interrupted)
        self.finished_untold = self._tidy_children(parent_id, state.done)
        pareto_mode = self.spec.search.mode == "pareto"
        summary.already_done = len(state.done) if pareto_mode else sum(1 for key in self.keys if key in state.done)
        budget = self.spec.search.budget
        total = (budget.trials or self.space.count() or 0) if pareto_mode else len(self.keys)
        summary.total = total
        progress = Progress(total, min(self._evaluations(), total) if pareto_mode else summary.already_done)
        if not self._more_to_do(state, time.monotonic()):
            progress.message("nothing left to do: every variant measured" + (" or the budget spent" if pareto_mode else ""))
            return summary

        self.data_yaml = resolve_data_yaml(self.spec, self.settings.home)
        self.dataset = load_dataset(self.data_yaml)
        if self.settings.measure_only:
            self.builder = prebuilt.MeasureOnlyBuilder(
                prebuilt.PrebuiltModels(self.spec, self.cache, self.tracker, self.experiment_id), self.spec)
            self.builder.check_any_available([v for k, v in self.keys.items() if k not in state.done])
        else:
            self.builder = VariantBuilder(self.spec, self.cache, self.data_yaml, self.dataset, progress,
                                          on_trained=self._log_training)
        val_images = self.dataset.val_images
        if self.spec.data.val_images:
            val_images = val_images[: self.spec.data.val_images]
        if not val_images:
            raise VariantFailed(f"the val split of {self.data_yaml} has no images")
        self.val_images = val_images
        self.latency_images = [cv2.imread(str(p)) for p in val_images[:LATENCY_IMAGES]]
        if self.baseline_key not in state.done:  # first: every run's speed-up and the front's scale need it
            self.study.enqueue_trial(self.space.baseline.as_dict())
        if not pareto_mode:
            search.enqueue_unreachable(self.study, {k: v for k, v in self.keys.items() if k not in state.done})

        self._pareto_tags = self._load_pareto_tags(parent_id)
        started = time.monotonic()
        while True:
            state = search.study_state(self.study, self.settings.retry_failed)
            if not self._more_to_do(state, started):
                return summary
            self._step(state.done, parent_id, progress, summary)
            self._update_front(parent_id)

    def _evaluations(self) -> int:
        """Trials that asked for a variant's result (measured, reused or failed) under the sweep file as it
        is now: what a budget counts. Trials of an earlier version of the file (other keys) do not count."""
        count = 0
        for trial in self.study.get_trials(deepcopy=False):
            if trial.user_attrs.get(search.OUTCOME_ATTR) not in ("measured", "reused", "failed"):
                continue
            try:
                variant = self.space.variant_from_params(trial.params)
            except KeyError:  # an axis the file no longer has
                continue
            count += variant_key(self.spec, variant) == trial.user_attrs.get(search.KEY_ATTR)
        return count

    def _more_to_do(self, state: search.StudyState, started: float) -> bool:
        if self.spec.search.mode == "grid":
            running_elsewhere = self._running_elsewhere()
            return any(k not in state.done and k not in running_elsewhere for k in self.keys)
        budget = self.spec.search.budget
        if budget.trials is not None and self._evaluations() >= budget.trials:
            return False
        if budget.minutes is not None and time.monotonic() - started >= budget.minutes * 60:
            return False
        return not self.keys or any(k not in state.done for k in self.keys)  # a finite space can run out

    # --- training runs, the front, its hypervolume -------------------------------------------
    def _log_training(self, artifact: Artifact, description: dict[str, Any]) -> str:
        """Each trained model is an MLflow run of its own (found again by its cache key, never logged twice)."""
        existing = self.tracker.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{tracking.TRAINING_KEY_TAG}` = '{artifact.key}'", max_results=1)
        if existing:
            return existing[0].info.run_id
        manifest = artifact.manifest
        run_id = self.tracker.client.create_run(
            self.experiment_id, run_name=f"train {description.get('cfg', '')}",
            tags={tracking.TRAINING_KEY_TAG: artifact.key, "yolobench.training": "true", **host_fingerprint()},
        ).info.run_id
        metrics = {f"train_{k}": v for k, v in (manifest.get("metrics") or {}).items()}
        metrics["train_s"] = float(manifest.get("train_s", manifest.get("build_s", 0.0)))
        self.tracker.log(run_id, params={k: v for k, v in description.items() if v is not None}, metrics=metrics)
        self.tracker.log_json(run_id, manifest, "manifest.json")
        self.tracker.finish(run_id)
        return run_id

    def _measured(self) -> list[tuple[str, dict[str, float]]]:
        """(MLflow run id, metrics) of each measured variant, once per variant."""
        seen: dict[str, tuple[str, dict[str, float]]] = {}
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            attrs = trial.user_attrs
            if attrs.get(search.OUTCOME_ATTR) == "measured" and "metrics" in attrs and "mlflow_run_id" in attrs:
                seen.setdefault(attrs[search.KEY_ATTR], (attrs["mlflow_run_id"], attrs["metrics"]))
        return list(seen.values())

    def _load_pareto_tags(self, parent_id: str) -> dict[str, str]:
        return {run.info.run_id: run.data.tags.get(tracking.PARETO_TAG, "")
                for run in self.tracker.child_runs(self.experiment_id, parent_id).values()}

    def _update_front(self, parent_id: str) -> None:
        """Tag the runs on the front (and untag those that left it); log the front's hypervolume."""
        baseline = self._baseline_metrics()
        measured = self._measured()
        if not baseline or not measured:
            return
        objectives = self.spec.search.objectives
        points = [search.losses(metrics, objectives, baseline) for _, metrics in measured]
        front = set(search.non_dominated(points))
        for index, (run_id, _) in enumerate(measured):
            wanted = "true" if index in front else "false"
            if self._pareto_tags.get(run_id) != wanted:
                self.tracker.set_tag(run_id, tracking.PARETO_TAG, wanted)
                self._pareto_tags[run_id] = wanted
        volume = search.hypervolume(points, search.reference_point(objectives))
        self.tracker.log(parent_id, metrics={"hypervolume": volume, "front_size": len(front),
                                             "variants_measured": len(measured)}, step=self._evaluations())

    def _log_front_report(self, parent_id: str) -> None:
        from yolobench.report import sweep_rows, write_front_report

        rows = sweep_rows(self.tracker, self.experiment_name, self.spec.name, self.spec.search.objectives)
        if not rows:
            return
        with tempfile.TemporaryDirectory() as folder:
            for path in write_front_report(Path(folder), rows, self.spec.search.objectives, self.spec.name):
                self.tracker.log_file(parent_id, path, "pareto")

    def _running_elsewhere(self) -> set[str]:
        me = search.worker_id()
        return {
            t.user_attrs[search.KEY_ATTR]
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if search.KEY_ATTR in t.user_attrs and t.user_attrs.get(search.WORKER_ATTR) != me
        }

    def _tidy_children(self, parent_id: str, done: dict[str, Any]) -> dict[str, Any]:
        """Delete child runs a killed sweep left unfinished; return the finished ones whose result the
        study never heard of (killed between logging and telling), so they are told, not re-measured."""
        running_elsewhere = self._running_elsewhere()
        finished_untold = {}
        for key, run in self.tracker.child_runs(self.experiment_id, parent_id).items():
            if key in done or key in running_elsewhere:
                continue
            if run.info.status == "FINISHED" and {"latency_ms_p50", "map50_95"} <= set(run.data.metrics):
                finished_untold[key] = run
            elif run.info.status != "FAILED":
                self.tracker.discard(run.info.run_id)
        return finished_untold

    def _step(self, done: dict[str, Any], parent_id: str, progress: Progress, summary: SweepSummary) -> None:
        trial = self.study.ask()
        trial.set_user_attr(search.WORKER_ATTR, search.worker_id())
        variant = search.suggest_variant(trial, self.space)
        key = variant_key(self.spec, variant)
        trial.set_user_attr(search.KEY_ATTR, key)
        trial.set_user_attr("label", variant.label)
        if self.space.is_excluded(variant):
            trial.set_user_attr(search.OUTCOME_ATTR, "excluded")
            self.study.tell(trial, state=TrialState.PRUNED)
            return
        if key in self._running_elsewhere():  # another worker took the same point at the same moment
            trial.set_user_attr(search.OUTCOME_ATTR, "taken")
            self.study.tell(trial, state=TrialState.PRUNED)
            return
        if key in done:  # a proposal of a point already measured: the result comes from the store
            previous = done[key]
            trial.set_user_attr(search.OUTCOME_ATTR, "reused")
            trial.set_user_attr("reused_from", previous.number)
            if previous.state == TrialState.COMPLETE:
                self.study.tell(trial, previous.values)
            else:
                self.study.tell(trial, state=TrialState.FAIL)
            summary.reused += 1
            return

        if key in self.finished_untold:
            run = self.finished_untold.pop(key)
            trial.set_user_attr("mlflow_run_id", run.info.run_id)
            trial.set_user_attr(search.OUTCOME_ATTR, "measured")
            trial.set_user_attr("metrics", dict(run.data.metrics))
            self.study.tell(trial, search.objective_values(run.data.metrics, self.spec.search.objectives))
            summary.reused += 1
            progress.finish(variant.label, "measured before the last interruption; result taken from MLflow")
            return

        progress.start(variant.label)
        run_id = self.tracker.start_child(
            self.experiment_id, parent_id, variant.label,
            tags={tracking.VARIANT_KEY_TAG: key, tracking.SWEEP_TAG: self.spec.name, **host_fingerprint()},
        )
        trial.set_user_attr("mlflow_run_id", run_id)
        try:
            with search.heartbeat(self.study, trial):
                metrics = self._measure(variant, run_id)
        except BUGS:
            self.tracker.log(run_id, tags={tracking.ERROR_TAG: traceback.format_exc(limit=3)[-4000:]})
            self.tracker.finish(run_id, "FAILED")
            trial.set_user_attr(search.OUTCOME_ATTR, "bug")
            self.study.tell(trial, state=TrialState.FAIL)
            raise
        except (KeyboardInterrupt, WeightsUnavailable):
            # Not the variant's fault, and no variant could do better: stop, leaving it to be redone.
            self.tracker.discard(run_id)
            search.close_interrupted(self.study, [self.study._storage.get_trial(trial._trial_id)])
            raise
        except Exception as error:  # a variant that cannot be built or run: record it, go on
            reason = f"{type(error).__name__}: {error}"
            self.tracker.log(run_id, params=self._params(variant), tags={tracking.ERROR_TAG: reason[:5000]})
            self.tracker.finish(run_id, "FAILED")
            trial.set_user_attr(search.OUTCOME_ATTR, "failed")
            trial.set_user_attr("failure", reason[:2000])
            self.study.tell(trial, state=TrialState.FAIL)
            summary.failed += 1
            summary.failures[variant.label] = reason
            progress.finish(variant.label, f"FAILED: {reason.splitlines()[0][:200]}")
            return
        self.tracker.finish(run_id, "FINISHED")
        trial.set_user_attr(search.OUTCOME_ATTR, "measured")
        trial.set_user_attr("metrics", metrics)
        self.study.tell(trial, search.objective_values(metrics, self.spec.search.objectives))
        summary.measured += 1
        progress.finish(
            variant.label,
            f"p50 {metrics['latency_ms_p50']:.2f} ms  mAP50-95 {metrics['map50_95']:.3f}"
            + (f"  x{metrics['speedup_vs_baseline']:.2f} vs baseline" if "speedup_vs_baseline" in metrics else ""),
        )

    # --- one variant -------------------------------------------------------------------------
    def _params(self, variant: Variant) -> dict[str, Any]:
        return {
            **variant.as_dict(),
            "runtime": self.spec.runtime.name,
            "provider": self.spec.runtime.provider,
            "model": self.builder.model_name(variant),
            "data": self.data_yaml.name if self.spec.data.yaml else "synthetic",
        }

    def _publish_model(self, variant: Variant, run_id: str, model: Artifact, lineage: list[dict[str, Any]]) -> None:
        """Index the runtime's input model by build key in the cache and log it once to MLflow, so a
        measuring host without the build extra can take it (`--measure-only`)."""
        key = prebuilt.build_key(self.spec, variant)
        if self.settings.measure_only:
            self.tracker.log(run_id, tags={prebuilt.BUILD_KEY_TAG: key},
                             params={"model_source": self.builder.source(model)})
            return
        prebuilt.record_build(self.cache, key, model, self.builder.model_name(variant), prebuilt.build_axes(variant),
                              lineage)
        prebuilt.log_model(self.tracker, run_id, key, model, lineage, self.experiment_id)

    def _baseline_metrics(self) -> dict[str, float] | None:
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if trial.user_attrs.get(search.KEY_ATTR) == self.baseline_key and "metrics" in trial.user_attrs:
                return trial.user_attrs["metrics"]
        return None

    def _measure(self, variant: Variant, run_id: str) -> dict[str, float]:
        from yolobench.measure.accuracy import evaluate, write_coco_json
        from yolobench.measure.latency import LatencySettings, measure_latency_checked, pinned_to_cpus
        from yolobench.measure.resources import ResourceSampler

        model = self.builder.build(variant)
        lineage = self.builder.lineage(model)
        self._publish_model(variant, run_id, model, lineage)
        export_manifest = next(m for m in lineage if m["stage"] == "export")
        trained = next((m["key"] for m in lineage if m["stage"] == "train"), None)
        if trained in self.builder.training_run_ids:
            self.tracker.log(run_id, tags={tracking.TRAINING_RUN_TAG: self.builder.training_run_ids[trained]})
        imgsz = int(variant["imgsz"])
        runtime = get_runtime(self.spec.runtime.name)
        if hasattr(runtime, "set_postprocess"):  # decodes on the device: with the host decode's thresholds
            runtime.set_postprocess(self.spec.measure.conf, self.spec.measure.iou, self.spec.measure.max_det)
        work_dir = Path(tempfile.mkdtemp(prefix="yolobench-"))
        try:
            opened = runtime.open(model, variant, self.spec.runtime, work_dir, self.cache)
            session = opened.session
            measure = self.spec.measure
            calls_before = phase_calls(session)
            with pinned_to_cpus(self.spec.runtime.cpu_affinity) as cpus_used:
                latency = measure_latency_checked(
                    session.infer, self.latency_images, imgsz,
                    LatencySettings(warmup_runs=measure.warmup_runs, warmup_seconds=measure.warmup_seconds,
                                    min_runs=measure.min_runs, min_seconds=measure.min_seconds),
                    cv_threshold=measure.cv_threshold, sampler=ResourceSampler(),
                )
            # GPU sessions time copy-in, compute and copy-out apart; summarise the harness's kept timed calls.
            timed = latency.result
            phase_metrics = session_phase_metrics(session, timed_calls_start(
                calls_before, phase_calls(session), latency.kept_attempt, timed.warmup_runs, timed.inference_ms.size,
            ), timed.inference_ms.size)
            accuracy = evaluate(session.infer, self.val_images, self.dataset.names, imgsz,
                                conf=measure.conf, iou=measure.iou, max_det=measure.max_det,
                                multi_label=measure.multi_label)
            info = session.info()
            fusion_params, fusion_tags = runtime_fusion(
                self.spec.runtime.name, str(variant["precision"]), variant.get("ort_level", "all"),
                opened.compiled_artifact, export_manifest, self.spec.runtime.provider,
            )
            # Optional: what only the runtime can time (e.g. an OAK's on-device inference time).
            runtime_metrics = session.metrics() if hasattr(session, "metrics") else {}
            session.close()
            metrics: dict[str, float] = {**latency.metrics(), **accuracy.metrics(), **runtime_metrics, **phase_metrics}
            metrics["model_size_mb"] = model.path.stat().st_size / 2**20
            metrics["params"] = float(export_manifest.get("params", 0))
            metrics["gflops"] = float(export_manifest.get("gflops", 0))
            metrics["build_s"] = sum(float(m.get("build_s", 0)) for m in lineage if m["stage"] not in ("weights", "train")) + opened.compile_s
            baseline = metrics if variant == self.space.baseline else self._baseline_metrics()
            if baseline:
                metrics["speedup_vs_baseline"] = baseline["latency_ms_p50"] / metrics["latency_ms_p50"]
                metrics["map50_95_delta_vs_baseline"] = metrics["map50_95"] - baseline["map50_95"]
            params = {**self._params(variant), "threads": info.get("threads", ""), "providers": info.get("providers", ""),
                      "cpu_affinity": ",".join(map(str, cpus_used)) if cpus_used is not None else "unknown",
                      **fusion_params}
            self.tracker.log(run_id, params=params, metrics=metrics,
                             tags={tracking.ARTIFACT_KEY_TAG: model.key, "yolobench.label": variant.label,
                                   tracking.UNSTABLE_TAG: str(latency.unstable).lower(), **fusion_tags})
            if opened.compiled_artifact is not None:
                self.tracker.log_file(run_id, opened.compiled_artifact, "compiled")
            else:
                self.tracker.log_file(run_id, model.path, "compiled")
            self.tracker.log_json(run_id, {"runtime": info, "lineage": lineage}, "manifest.json", "compiled")
            for path in write_coco_json(accuracy, work_dir / "accuracy"):  # what was scored, to re-score anywhere
                self.tracker.log_file(run_id, path, "accuracy")
            return metrics
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)


def run_sweep(spec: SweepSpec, settings: SweepSettings) -> SweepSummary:
    return Sweep(spec, settings).run()

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from optuna.trial import TrialState

from yolobench import search, tracking
from yolobench.cache import Artifact, ArtifactCache
from yolobench.data.dataset import DataSet, load_dataset
from yolobench.measure.system import host_fingerprint
from yolobench.progress import Progress
from yolobench.runtimes import get_runtime
from yolobench.space import Space, Variant, variant_key
from yolobench.spec import SweepSpec

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
                 progress: Progress) -> None:
        self.spec = spec
        self.cache = cache
        self.data_yaml = data_yaml
        self.dataset = dataset
        self.progress = progress

    def weights(self, scale: str) -> Artifact:
        model = self.spec.model
        if model.weights is not None:
            from yolobench.stages.weights import resolve_weights

            return resolve_weights(self.cache, model.weights.format(scale=scale))
        from yolobench.stages.train import train_model

        train = model.train
        return train_model(
            self.cache, train.cfg.format(scale=scale), self.data_yaml,
            epochs=train.epochs, imgsz=train.imgsz, batch=train.batch, seed=train.seed,
            progress=self.progress.message,
        )

    def model_name(self, scale: str) -> str:
        model = self.spec.model
        if model.weights is not None:
            return model.weights.format(scale=scale)
        return f"trained:{model.train.cfg.format(scale=scale)}@{model.train.epochs}ep"

    def build(self, variant: Variant) -> Artifact:
        from yolobench.stages.export import export_onnx
        from yolobench.stages.quantize import Int8Recipe, convert_fp16, quantize_int8

        onnx = export_onnx(self.cache, self.weights(str(variant["scale"])), int(variant["imgsz"]))
        precision = variant["precision"]
        if precision == "fp16":
            return convert_fp16(self.cache, onnx)
        if precision == "int8":
            recipe = Int8Recipe(**self.spec.int8.model_dump())
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
        self.keys = {variant_key(spec, v): v for v in self.space.variants()}
        self.baseline_key = variant_key(spec, self.space.baseline)
        self.experiment_name = settings.experiment or spec.tracking.experiment or spec.name

    # --- setup -------------------------------------------------------------------------------
    def _prepare(self) -> None:
        home = self.settings.home
        home.mkdir(parents=True, exist_ok=True)
        from yolobench.stages.ultralytics_env import prepare_ultralytics

        prepare_ultralytics(home / "ultralytics")
        self.cache = ArtifactCache(self.settings.resolved_cache_dir)
        self.tracker = tracking.Tracker(self.settings.resolved_tracking_uri, artifact_root=home / "artifacts")
        self.study = search.open_study(self.settings.resolved_storage, self.spec.name, self.space, self.spec.search.seed)
        self.experiment_id = self.tracker.experiment_id(self.experiment_name)

    def _open_parent(self) -> str:
        parent_id = self.tracker.open_parent(
            self.experiment_id,
            self.spec.name,
            self.study.user_attrs.get("mlflow_parent_run_id"),
            params={"target": self.spec.target, "runtime": self.spec.runtime.name,
                    "provider": self.spec.runtime.provider, "variants": len(self.keys),
                    "baseline": self.space.baseline.label, "axes": json.dumps(self.space.axes)},
            tags=host_fingerprint(),
        )
        self.study.set_user_attr("mlflow_parent_run_id", parent_id)
        self.tracker.log_json(parent_id, self.spec.model_dump(mode="json"), "sweep.json")
        return parent_id

    # --- the loop ----------------------------------------------------------------------------
    def run(self) -> SweepSummary:
        self._prepare()
        parent_id = self._open_parent()
        summary = SweepSummary(
            sweep=self.spec.name, experiment=self.experiment_name,
            tracking_uri=self.settings.resolved_tracking_uri, storage=self.settings.resolved_storage,
            parent_run_id=parent_id, total=len(self.keys),
        )
        state = search.study_state(self.study, self.settings.retry_failed)
        search.close_interrupted(self.study, state.interrupted)
        self.finished_untold = self._tidy_children(parent_id, state.done)
        summary.already_done = sum(1 for key in self.keys if key in state.done)
        progress = Progress(len(self.keys), summary.already_done)
        if summary.already_done == len(self.keys):
            progress.message("all variants already measured; nothing to do")
            self.tracker.finish(parent_id)
            return summary

        self.data_yaml = resolve_data_yaml(self.spec, self.settings.home)
        self.dataset = load_dataset(self.data_yaml)
        self.builder = VariantBuilder(self.spec, self.cache, self.data_yaml, self.dataset, progress)
        val_images = self.dataset.val_images
        if self.spec.data.val_images:
            val_images = val_images[: self.spec.data.val_images]
        if not val_images:
            raise VariantFailed(f"the val split of {self.data_yaml} has no images")
        self.val_images = val_images
        self.latency_images = [cv2.imread(str(p)) for p in val_images[:LATENCY_IMAGES]]
        if self.baseline_key not in state.done:  # first, so every run can report its speed-up
            self.study.enqueue_trial(self.space.baseline.as_dict())
        search.enqueue_unreachable(self.study, {k: v for k, v in self.keys.items() if k not in state.done})

        status = "FAILED"
        try:
            while True:
                state = search.study_state(self.study, self.settings.retry_failed)
                running_elsewhere = self._running_elsewhere()
                remaining = [k for k in self.keys if k not in state.done and k not in running_elsewhere]
                if not remaining:
                    break
                self._step(state.done, parent_id, progress, summary)
            status = "FINISHED"
        finally:
            self.tracker.finish(parent_id, status)
        return summary

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
            self.study.tell(trial, search.objective_values(run.data.metrics))
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
        except KeyboardInterrupt:
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
        self.study.tell(trial, search.objective_values(metrics))
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
            "model": self.builder.model_name(str(variant["scale"])),
            "data": self.data_yaml.name if self.spec.data.yaml else "synthetic",
        }

    def _baseline_metrics(self) -> dict[str, float] | None:
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if trial.user_attrs.get(search.KEY_ATTR) == self.baseline_key and "metrics" in trial.user_attrs:
                return trial.user_attrs["metrics"]
        return None

    def _measure(self, variant: Variant, run_id: str) -> dict[str, float]:
        from yolobench.measure.accuracy import evaluate
        from yolobench.measure.latency import LatencySettings, measure_latency

        model = self.builder.build(variant)
        lineage = self.cache.lineage(model)
        export_manifest = next(m for m in lineage if m["stage"] == "export")
        imgsz = int(variant["imgsz"])
        runtime = get_runtime(self.spec.runtime.name)
        work_dir = Path(tempfile.mkdtemp(prefix="yolobench-"))
        try:
            opened = runtime.open(model, variant, self.spec.runtime, work_dir, self.cache)
            session = opened.session
            measure = self.spec.measure
            latency = measure_latency(
                session.infer, self.latency_images, imgsz,
                LatencySettings(warmup_runs=measure.warmup_runs, warmup_seconds=measure.warmup_seconds,
                                min_runs=measure.min_runs, min_seconds=measure.min_seconds),
            )
            accuracy = evaluate(session.infer, self.val_images, self.dataset.names, imgsz,
                                conf=measure.conf, iou=measure.iou, max_det=measure.max_det)
            info = session.info()
            session.close()
            metrics: dict[str, float] = {**latency.metrics(), **accuracy.metrics()}
            metrics["model_size_mb"] = model.path.stat().st_size / 2**20
            metrics["params"] = float(export_manifest.get("params", 0))
            metrics["gflops"] = float(export_manifest.get("gflops", 0))
            metrics["build_s"] = sum(float(m.get("build_s", 0)) for m in lineage if m["stage"] not in ("weights", "train")) + opened.compile_s
            baseline = metrics if variant == self.space.baseline else self._baseline_metrics()
            if baseline:
                metrics["speedup_vs_baseline"] = baseline["latency_ms_p50"] / metrics["latency_ms_p50"]
                metrics["map50_95_delta_vs_baseline"] = metrics["map50_95"] - baseline["map50_95"]
            params = {**self._params(variant), "threads": info.get("threads", ""), "providers": info.get("providers", "")}
            self.tracker.log(run_id, params=params, metrics=metrics,
                             tags={tracking.ARTIFACT_KEY_TAG: model.key, "yolobench.label": variant.label})
            if opened.compiled_artifact is not None:
                self.tracker.log_file(run_id, opened.compiled_artifact, "compiled")
            else:
                self.tracker.log_file(run_id, model.path, "compiled")
            self.tracker.log_json(run_id, {"runtime": info, "lineage": lineage}, "manifest.json", "compiled")
            return metrics
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)


def run_sweep(spec: SweepSpec, settings: SweepSettings) -> SweepSummary:
    return Sweep(spec, settings).run()

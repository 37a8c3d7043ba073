"""MLflow: one experiment per sweep, one parent run per sweep, one child run per variant, one run per
trained model; each variant's model as an MLflow logged model, the val split as the runs' data set. This is the
only module that talks to MLflow: every param, metric and tag name and every filter string lives here, so runs
compare across targets and an MLflow upgrade edits one file. What the descriptions say is in describe.py."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yolobench.urls import redact, redacted

if TYPE_CHECKING:
    from mlflow.entities import Run

    from yolobench.build import Built, Training
    from yolobench.cache import Artifact
    from yolobench.measure.harness import EvalData, Measurement
    from yolobench.runtimes.base import RunFacts, RuntimeInfo
    from yolobench.space import Variant
    from yolobench.spec import SweepSpec

# --- names -------------------------------------------------------------------------------------------
SWEEP_TAG = "yolobench.sweep"
VARIANT_KEY_TAG = "yolobench.variant_key"
ARTIFACT_KEY_TAG = "yolobench.artifact_key"
LABEL_TAG = "yolobench.label"
ERROR_TAG = "yolobench.error"
UNSTABLE_TAG = "yolobench.unstable"  # "true": the timed windows never agreed within measure.stability
CONTENDED_TAG = "yolobench.contended"  # "true": a window was kept though other processes loaded the machine
HIGH_CV_TAG = "yolobench.high_cv"  # "true": inference CV above measure.cv_threshold
RETIMED_TAG = "yolobench.retimed"  # "true": re-timed after the drift reference came back within tolerance
CONFIRMED_TAG = "yolobench.confirmed"  # "true": p50 re-timed interleaved with the front when the sweep ended
ACCURACY_REUSED_TAG = "yolobench.accuracy_reused_from"  # run id whose mAP this run took (same numerics)
LATENCY_REUSED_TAG = "yolobench.latency_reused_from"  # run id whose first-pass timing this run took (same graph)
EXECUTED_GRAPH_TAG = "yolobench.executed_graph"  # digest of the graph the session ran (SessionBase.executed_graph)
SAME_GRAPH_TAG = "yolobench.same_graph_as"  # labels whose sessions ran this run's graph: confirmed as one figure
PARETO_TAG = "yolobench.pareto"
PARENT_OF_TAG = "yolobench.parent_of"  # on a parent run: which study (storage and sweep name) it belongs to
TRAINING_TAG = "yolobench.training"  # "true" on a training run
TRAINING_KEY_TAG = "yolobench.training_key"  # on a training run: the trained model's cache key
TRAINING_RUN_TAG = "yolobench.training_run_id"  # on a variant: the run that trained its weights
BUILD_KEY_TAG = "yolobench.build_key"
MODEL_LOGGED_TAG = "yolobench.model_logged"  # artifact key of the model logged under model/ by this run
DATA_FINGERPRINT_TAG = "yolobench.data_fingerprint"  # the scored data's content (data/validate.py)
MODEL_ID_TAG = "yolobench.model_id"  # the MLflow logged model of the run's runnable model (what promote registers)
PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
NOTE_TAG = "mlflow.note.content"  # a run's description in the UI (markdown)
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"  # MLflow 3's UI then opens the model-training view, not the GenAI one
DATASET_CONTEXT = "validation"  # the data set input's context: what the runs' metrics were scored on

# runtime facts
EXPORT_FUSIONS_TAG = "yolobench.export_fusions"
RUNTIME_FUSION_TAG = "yolobench.runtime_fusion"
INT8_UNFUSED_TAG = "yolobench.int8_unfused"
ORT_FUSIONS_TAG = "yolobench.ort_fusions"

MODEL_ARTIFACT_DIR = "model"  # MLflow artifact folder of the runtime's input model (for --measure-only hosts)
COMPILED_ARTIFACT_DIR = "compiled"
LATENCY_SAMPLES = "samples.json"  # under latency/: every timed call's times; the run's metrics summarise them
RESULT_METRICS = ("latency_ms_p50", "map50_95")  # a FINISHED child run without both was never completed
MODEL_TYPE = "yolobench-variant"  # the logged models' model_type, to search them apart from others


def variants_url(ui: str, experiment_id: str) -> str:
    """An experiment's variants in MLflow's UI at `ui` (http://host:port), fastest first. MLflow 3.17's UI takes
    its view from a global switch that starts on GenAI, not from the experiment's kind, so the link asks for the
    model-training view; the filter lists the variants flat instead of folded under their parent run."""
    from urllib.parse import quote, urlencode

    query = {"workflowType": "machine_learning", "searchFilter": f"tags.`{LABEL_TAG}` LIKE '%'",
             "orderByKey": "metrics.`latency_ms_p50`", "orderByAsc": "true"}
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs?{urlencode(query, quote_via=quote)}"


def default_tracking_uri(home: Path) -> str:
    return f"sqlite:///{(Path(home) / 'mlflow.db').resolve()}"


def _sqlite_path(tracking_uri: str) -> Path | None:
    return Path(tracking_uri.removeprefix("sqlite:///")) if tracking_uri.startswith("sqlite:///") else None


def _is_local(tracking_uri: str) -> bool:
    return tracking_uri.startswith(("sqlite:", "file:", "/")) or "://" not in tracking_uri


# --- what one variant's run holds ---------------------------------------------------------------------
@dataclass(frozen=True)
class DataSetInput:
    """A data set as MLflow records a run's input: name, digest (of the content), source and a profile."""

    name: str
    digest: str
    source: str  # a URI of where it lives
    profile: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunRecord:
    """Everything a variant's run logs, assembled without touching MLflow (so it is tested in ms)."""

    params: dict[str, Any]
    metrics: dict[str, float]
    tags: dict[str, str]
    files: list[tuple[Path, str]] = field(default_factory=list)  # (file, artifact folder)
    json_files: list[tuple[Any, str, str]] = field(default_factory=list)  # (payload, file name, artifact folder)
    model: Path | None = None  # the runnable model, logged as an MLflow model of the run (registrable)
    model_name: str = ""
    dataset: DataSetInput | None = None  # what the metrics were scored on


def _provider(spec: SweepSpec) -> str:
    """The execution provider, for runtimes that have one (ONNX Runtime); '' for the others."""
    return str(spec.runtime.model_dump().get("provider", ""))


def parent_params(spec: SweepSpec, space: Any, hv_reference: Sequence[float]) -> dict[str, Any]:
    """The parent run's params: the sweep as a whole."""
    search = spec.search
    return {"target": spec.target, "runtime": spec.runtime.name, "provider": _provider(spec),
            "variants": space.count() or "continuous", "baseline": space.baseline.label,
            "axes": json.dumps(spec.axes.model_dump(exclude_none=True)), "search_mode": search.mode,
            "sampler": search.sampler if search.mode == "pareto" else "grid",
            "objectives": ",".join(f"{o.metric}:{o.resolved_direction}" for o in search.objectives),
            "hv_reference": json.dumps(list(hv_reference)),
            "hv_normalisation": "minimised metric / baseline's value; 1 - mAP"}


def data_name(spec: SweepSpec) -> str:
    return Path(spec.data.yaml).name if spec.data.yaml else "synthetic"


def variant_params(spec: SweepSpec, variant: Variant, model_name: str) -> dict[str, Any]:
    """The params every variant run has, a FAILED one too."""
    return {**variant.as_dict(), "runtime": spec.runtime.name, "provider": _provider(spec),
            "model": model_name, "data": data_name(spec)}


def _export_fusions(lineage: Sequence[Mapping[str, Any]]) -> str:
    """The exporter's own optimisations this artifact went through, e.g. 'batchnorm_folded_into_conv,...'."""
    export = next((m for m in lineage if m.get("stage") == "export"), {})
    return ",".join(entry["name"] for entry in export.get("applied_by_default", [])) or "none"


def build_seconds(lineage: Sequence[Mapping[str, Any]], compiled: Artifact | None) -> float:
    """Time to build what this variant needed, stage by stage (export, precision, compile), as each stage's
    manifest recorded it when it was built: the same figure on every rerun. Weights and training are
    shared by many variants and reported on the training run."""
    stages = [m for m in lineage if m.get("stage") not in ("weights", "train")]
    if compiled is not None:
        stages.append(compiled.manifest)
    return float(sum(float(m.get("build_s", 0.0)) for m in stages))


def variant_record(spec: SweepSpec, info: RuntimeInfo, variant: Variant, built: Built, compiled: Artifact | None,
                   measurement: Measurement, facts: RunFacts, baseline: Mapping[str, float] | None, *,
                   is_baseline: bool = False, files: Sequence[tuple[Path, str]] = (),
                   data: EvalData | None = None) -> RunRecord:
    """A measured variant as its MLflow run: params, metrics, tags and files, its description, its model (the
    compiled artifact, else the model the runtime opens) and the val split of `data` as its data set input.
    `baseline` is the baseline's metrics (None while it is not measured); the baseline itself is its own
    reference. `files` are logged as they are (the runnable model under compiled/, what was scored under
    accuracy/)."""
    from yolobench import describe

    export = next((m for m in built.lineage if m["stage"] == "export"), {})
    metrics = measurement.metrics()
    metrics["model_size_mb"] = built.model.path.stat().st_size / 2**20
    metrics["params"] = float(export.get("params", 0))
    metrics["gflops"] = float(export.get("gflops", 0))
    metrics["build_s"] = build_seconds(built.lineage, compiled)
    reference = metrics if is_baseline else baseline
    if reference:
        metrics["speedup_vs_baseline"] = reference["latency_ms_p50"] / metrics["latency_ms_p50"]
        metrics["map50_95_delta_vs_baseline"] = metrics["map50_95"] - reference["map50_95"]
    session = measurement.session_info
    cpus = measurement.cpus_used
    params = {**variant_params(spec, variant, built.model_name), "threads": session.get("threads", ""),
              "providers": session.get("providers", ""),
              "cpu_affinity": ",".join(map(str, cpus)) if cpus is not None else "unknown", **facts.params}
    tags = {ARTIFACT_KEY_TAG: built.model.key, LABEL_TAG: variant.label,
            UNSTABLE_TAG: str(measurement.latency.unstable).lower(),
            CONTENDED_TAG: str(measurement.latency.contended).lower(),
            HIGH_CV_TAG: str(measurement.latency.result.high_cv(spec.measure.cv_threshold)).lower(),
            EXPORT_FUSIONS_TAG: _export_fusions(built.lineage),
            **({RUNTIME_FUSION_TAG: info.mandatory_fusion} if info.mandatory_fusion else {}), **measurement.tags,
            **facts.tags}
    from yolobench.measure.reuse import ReusedAccuracy

    if isinstance(measurement.accuracy, ReusedAccuracy):
        tags[ACCURACY_REUSED_TAG] = measurement.accuracy.run_id
    if session.get("executed_graph"):
        tags[EXECUTED_GRAPH_TAG] = str(session["executed_graph"])
    lineage = ([compiled.manifest] if compiled is not None else []) + list(built.lineage)
    tags[NOTE_TAG] = describe.variant_note(
        params, metrics, tags, describe.SweepContext.from_spec(spec), metrics if is_baseline else baseline)
    return RunRecord(params=params, metrics=metrics, tags=tags, files=list(files),
                     json_files=[({"runtime": session, "lineage": lineage}, "manifest.json", COMPILED_ARTIFACT_DIR),
                                 (measurement.latency.samples(), LATENCY_SAMPLES, "latency")],
                     model=compiled.path if compiled is not None else built.model.path, model_name=variant.label,
                     dataset=describe.val_split(data, params["data"]) if data is not None else None)


def training_times(manifest: Mapping[str, Any]) -> tuple[int, int]:
    """(start, end) of a training in epoch ms, from its manifest: it was written when the training ended
    (`built_at`), `train_s` after the trainer started. A run created later still shows the training's span."""
    from datetime import datetime

    ended = datetime.strptime(str(manifest["built_at"]), "%Y-%m-%dT%H:%M:%S%z").timestamp()
    seconds = float(manifest.get("train_s", manifest.get("build_s", 0.0)))
    return int((ended - seconds) * 1000), int(ended * 1000)


def training_run_name(training: Training) -> str:
    """`train <file>`: the model yaml that was trained (the manifest's), never the sweep file's `{scale}` template."""
    cfg = str(training.artifact.manifest.get("model_cfg") or training.description.get("cfg", ""))
    return f"train {Path(cfg).name}"


def training_record(training: Training) -> RunRecord:
    from yolobench import describe

    manifest = training.artifact.manifest
    metrics = {f"train_{k}": float(v) for k, v in (manifest.get("metrics") or {}).items()}
    metrics["train_s"] = float(manifest.get("train_s", manifest.get("build_s", 0.0)))
    tags = {NOTE_TAG: describe.training_note(manifest, *training_times(manifest))} if "built_at" in manifest else {}
    return RunRecord(params={k: v for k, v in training.description.items() if v is not None}, metrics=metrics,
                     tags=tags, json_files=[(manifest, "manifest.json", "")])


# --- filters --------------------------------------------------------------------------------------------
def _quoted(value: str) -> str:
    return "'" + str(value).replace("'", "\\'") + "'"


def tag_filter(tags: Mapping[str, str], finished_only: bool = False) -> str:
    clauses = [f"tags.`{name}` = {_quoted(value)}" for name, value in tags.items()]
    if finished_only:
        clauses.append("attributes.status = 'FINISHED'")
    return " and ".join(clauses)


@dataclass
class Tracker:
    """The one door to MLflow, over MlflowClient with explicit run ids (no global active-run state).

    Contract: every write names its run; writes that several workers may make at once on a shared store
    (tags of the front, the parent election) retry; `settle_parent` makes workers that start together agree
    on one parent run; `training_run` and model publishing are idempotent (found again by their key)."""

    tracking_uri: str
    artifact_root: Path | None = None  # for a local store: where run artifacts go

    def __post_init__(self) -> None:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # sweeps run offline; nothing phones home
        # MLflow's "View run at <url>" lines would print a URL's credentials; yolobench says where runs are.
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a model fetch is one line of ours
        from mlflow.tracking import MlflowClient

        from yolobench.services import check_tracking_server, connect_timeout

        database = _sqlite_path(self.tracking_uri)
        if database is None:
            check_tracking_server(self.tracking_uri, connect_timeout())  # before MLflow's minutes of retries
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
            return
        # Two processes that open a fresh SQLite store together both run MLflow's schema migrations, and one
        # fails half-way; one at a time, the second finds the tables made.
        from yolobench.cache import file_lock

        database.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(database.with_name(database.name + ".lock")):
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
            self._client.search_experiments(max_results=1)

    # experiments and runs
    def experiment_id(self, name: str) -> str:
        """The experiment of that name, made (or restored) if need be, with the kind that makes MLflow 3's UI
        show runs, metrics and models rather than traces and prompts."""
        experiment = self._client.get_experiment_by_name(name)
        if experiment is not None:
            if experiment.lifecycle_stage == "deleted":
                self._client.restore_experiment(experiment.experiment_id)
            if experiment.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:  # made before yolobench set it
                self._client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
            return experiment.experiment_id
        location = None
        if self.artifact_root is not None and _is_local(self.tracking_uri):
            location = (Path(self.artifact_root) / name).resolve().as_uri()
        try:
            return self._client.create_experiment(name, artifact_location=location,
                                                  tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except Exception:  # another worker created it a moment ago: take theirs
            experiment = self._client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return experiment.experiment_id

    def sweep_experiments(self) -> list[tuple[str, str]]:
        """(id, name) of the active experiments yolobench made or reused (they carry its experiment kind)."""
        return [(e.experiment_id, e.name) for e in self._client.search_experiments()
                if e.tags.get(EXPERIMENT_KIND_TAG) == EXPERIMENT_KIND]

    def existing_experiment_id(self, name: str) -> str | None:
        experiment = self._client.get_experiment_by_name(name)
        return None if experiment is None else experiment.experiment_id

    def experiment_ids(self) -> list[str]:
        return [e.experiment_id for e in self._client.search_experiments()]

    def run(self, run_id: str) -> Run:
        return self._client.get_run(run_id)

    def run_exists(self, run_id: str | None) -> bool:
        if not run_id:
            return False
        try:
            run = self._client.get_run(run_id)
        except Exception:  # MlflowException for an unknown id, on any store
            return False
        return run.info.lifecycle_stage == "active"

    def find_runs(self, experiment_ids: Sequence[str], *, tags: Mapping[str, str], finished_only: bool = False,
                  newest_first: bool = False, limit: int = 50000) -> list[Run]:
        """Runs carrying every tag given; MLflow takes at most 100 experiments a call, so they go in chunks."""
        order = ["attributes.start_time DESC"] if newest_first else None
        runs: list[Run] = []
        ids = list(experiment_ids)
        for start in range(0, len(ids), 100):
            runs += self._client.search_runs(ids[start:start + 100], filter_string=tag_filter(tags, finished_only),
                                             max_results=limit, order_by=order)
        return runs

    def child_runs(self, experiment_id: str, parent_id: str) -> dict[str, Run]:
        """Active child runs of the parent, by variant key."""
        runs = self.find_runs([experiment_id], tags={PARENT_TAG: parent_id})
        return {run.data.tags[VARIANT_KEY_TAG]: run for run in runs if VARIANT_KEY_TAG in run.data.tags}

    def tidy_children(self, experiment_id: str, parent_id: str, data_fingerprint: str | None,
                      keep: set[str] | Callable[[], set[str]]) -> dict[str, Run]:
        """Delete the parent's unfinished child runs (a killed sweep's) and those measured on other data than
        `data_fingerprint` (superseded: their variants are measured again), except those of `keep`'s keys; return
        the FINISHED ones with results (by variant key): killed between logging and telling, the study was
        never told them, so they are told from MLflow rather than measured again. A callable `keep` is asked
        after the runs are listed: a worker claims its variant in the study before it starts the run, so a run
        another worker started meanwhile is then seen as that worker's, not as one a killed sweep left."""
        children = self.child_runs(experiment_id, parent_id)
        kept = keep() if callable(keep) else keep
        pending = {k: run for k, run in children.items() if k not in kept}
        stale = {k for k, run in pending.items() if data_fingerprint is not None
                 and run.data.tags.get(DATA_FINGERPRINT_TAG, data_fingerprint) != data_fingerprint}
        finished = finished_results(run for k, run in pending.items() if k not in stale)
        for key, run in pending.items():
            if key not in finished and (run.info.status != "FAILED" or key in stale):
                self.discard(run.info.run_id)
        return finished

    def start_child(self, experiment_id: str, parent_id: str, name: str, tags: Mapping[str, str]) -> str:
        return self._client.create_run(experiment_id, run_name=name, tags=redacted({PARENT_TAG: parent_id, **tags})).info.run_id

    def start_run(self, experiment_id: str, name: str, tags: Mapping[str, str], params: Mapping[str, Any]) -> str:
        run_id = self._client.create_run(experiment_id, run_name=name, tags=redacted(dict(tags))).info.run_id
        self.log(run_id, params=params)
        return run_id

    # the parent run
    def settle_parent(self, experiment_id: str, sweep_name: str, study: str, previous_id: str | None,
                      params: Mapping[str, Any], tags: Mapping[str, str]) -> str:
        """The sweep's parent run: the one the study remembers if it still exists, else a new one. Workers
        that start together may each create one; all settle on the earliest run carrying this study's tag
        (set when the run is created, so a run is never seen untagged), and a worker whose run lost deletes it."""
        if self.run_exists(previous_id):
            mine = previous_id
            self._client.update_run(mine, status="RUNNING")
            self.set_tag(mine, PARENT_OF_TAG, study)  # a parent reopened from before the tag
        else:
            mine = self._client.create_run(experiment_id, run_name=sweep_name,
                                           tags=redacted({SWEEP_TAG: sweep_name, PARENT_OF_TAG: study, **tags})).info.run_id
            self.log(mine, params=params)
        candidates = self.find_runs([experiment_id], tags={PARENT_OF_TAG: study}, limit=100)
        chosen = min(candidates, key=lambda run: (run.info.start_time, run.info.run_id)).info.run_id
        if chosen != mine:
            self.discard(mine)
            self._client.update_run(chosen, status="RUNNING")
        return chosen

    # training runs
    def training_run(self, experiment_id: str, training: Training, tags: Mapping[str, str]) -> str:
        """Each trained model is an MLflow run of its own, found again by its cache key (never logged twice)."""
        key = training.artifact.key
        existing = self.find_runs([experiment_id], tags={TRAINING_KEY_TAG: key}, limit=1)
        if existing:
            return existing[0].info.run_id
        manifest = training.artifact.manifest
        started, ended = training_times(manifest) if "built_at" in manifest else (None, None)
        run_id = self._client.create_run(
            experiment_id, start_time=started, run_name=training_run_name(training),
            tags=redacted({TRAINING_KEY_TAG: key, TRAINING_TAG: "true", **tags})).info.run_id
        self.log_record(run_id, training_record(training))
        self.finish(run_id, end_time=ended)
        return run_id

    # writing
    def log(self, run_id: str, params: Mapping[str, Any] | None = None, metrics: Mapping[str, float] | None = None,
            tags: Mapping[str, str] | None = None, step: int = 0, *, model_id: str | None = None,
            dataset: DataSetInput | None = None) -> None:
        """One batch; metrics given a `model_id` and a `dataset` show on that logged model's page, per data set."""
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.utils.time import get_current_time_millis

        now = get_current_time_millis()
        on = {"model_id": model_id, **({"dataset_name": dataset.name, "dataset_digest": dataset.digest} if dataset else {})}
        self._client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, step, **on) for k, v in (metrics or {}).items()],
            params=[Param(k, redact(str(v))) for k, v in (params or {}).items()],
            tags=[RunTag(k, redact(str(v))) for k, v in (tags or {}).items()],
        )

    def log_record(self, run_id: str, record: RunRecord) -> None:
        model_id = self.log_model(run_id, record.model, record.model_name, record.params) if record.model else None
        tags = {**record.tags, **({MODEL_ID_TAG: model_id} if model_id else {})}
        # The metrics go onto the model's page when the sweep ends (describe.explain_sweep), with the final figures.
        self.log(run_id, params=record.params, metrics=record.metrics, tags=tags, dataset=record.dataset)
        if record.dataset is not None:
            self.log_dataset(run_id, record.dataset)
        for path, folder in record.files:
            self.log_file(run_id, path, folder or None)
        for payload, name, folder in record.json_files:
            self.log_json(run_id, payload, name, folder or None)

    def link_model_metrics(self, run: Run, model_id: str, dataset: DataSetInput | None) -> None:
        """Show the run's current figures on its logged model's page (as metrics of the run linked to the model):
        those the model does not show yet or shows with another value, so a rerun adds no duplicate."""
        shown: dict[str, float] = {}
        for metric in sorted(self._client.get_logged_model(model_id).metrics or [], key=lambda m: m.timestamp):
            shown[metric.key] = metric.value
        changed = {k: v for k, v in run.data.metrics.items() if shown.get(k) != v}
        if changed:
            self.log(run.info.run_id, metrics=changed, model_id=model_id, dataset=dataset)

    def log_dataset(self, run_id: str, dataset: DataSetInput) -> None:
        """The data set as the run's input (the UI's Dataset column): MLflow keeps one row per name and digest."""
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.data.sources import LocalArtifactDatasetSource
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        described = MetaDataset(LocalArtifactDatasetSource(dataset.source), name=dataset.name,
                                digest=dataset.digest).to_dict()
        entity = Dataset(name=described["name"], digest=described["digest"], source_type=described["source_type"],
                         source=described["source"], profile=json.dumps(dataset.profile))
        self._client.log_inputs(run_id, [DatasetInput(entity, [InputTag(MLFLOW_DATASET_CONTEXT, DATASET_CONTEXT)])])

    def log_model(self, run_id: str, path: Path, name: str, params: Mapping[str, Any]) -> str:
        """Log a run's runnable model as an MLflow logged model of the run, so `mlflow.register_model` (and
        `yolobench promote`) take it; returns its model id. An ONNX file is saved in MLflow's ONNX flavour where
        the onnx package is installed (loadable with mlflow.onnx and pyfunc); anything else (an engine, a blob)
        goes as it is, with an MLmodel that names the file and the runtime."""
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus
        from mlflow.models import Model

        experiment_id = self._client.get_run(run_id).info.experiment_id
        model = self._client.create_logged_model(
            experiment_id, name=_logged_model_name(name), source_run_id=run_id, model_type=MODEL_TYPE,
            params={k: str(v)[:6000] for k, v in params.items()}, tags={LABEL_TAG: name})
        metadata = {"runtime": str(params.get("runtime", "")), "file": path.name, "label": name,
                    "variant": {k: str(v) for k, v in params.items()}}
        mlflow_model = Model(artifact_path=model.artifact_location, model_uuid=model.model_id, run_id=run_id,
                             model_id=model.model_id, metadata=metadata)
        with tempfile.TemporaryDirectory() as folder:
            staging = Path(folder) / "model"
            flavour = _save_model(path, staging, mlflow_model, params)
            self._client.log_model_artifacts(model.model_id, str(staging))
        self._client.set_logged_model_tags(model.model_id, {"yolobench.flavour": flavour})
        self._client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
        self._client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
        return model.model_id

    def register(self, run: Run, model_id: str, name: str, tags: Mapping[str, str], description: str) -> Any:
        """A new version of registered model `name` (made if need be) from a run's logged model. The source is
        the model's artifact location: MLflow's registry store resolves a models:/ source through the process's
        global tracking URI, which need not be this store's."""
        from mlflow.exceptions import MlflowException

        try:
            self._client.create_registered_model(name)
        except MlflowException as error:
            if error.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise
        location = self._client.get_logged_model(model_id).artifact_location
        return self._client.create_model_version(name, source=location, run_id=run.info.run_id, tags=dict(tags),
                                                 description=description, model_id=model_id)

    def set_tag(self, run_id: str, key: str, value: str, attempts: int = 5) -> None:
        """Set a tag another worker may be setting at the same moment (the front's tags move as each
        worker finishes a variant): on a shared store both may insert it at once, and one insert fails."""
        for attempt in range(attempts):
            try:
                self._client.set_tag(run_id, key, redact(str(value)))
                return
            except Exception:  # MlflowException wrapping the store's IntegrityError; any store
                if attempt == attempts - 1:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def log_file(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self._client.log_artifact(run_id, str(path), artifact_path)

    def log_folder(self, run_id: str, folder: Path, artifact_path: str) -> None:
        self._client.log_artifacts(run_id, str(folder), artifact_path)

    def log_json(self, run_id: str, payload: Any, filename: str, artifact_path: str | None = None) -> None:
        with tempfile.TemporaryDirectory() as folder:
            target = Path(folder) / filename
            target.write_text(json.dumps(redacted(payload), indent=2, sort_keys=True, default=str))
            self.log_file(run_id, target, artifact_path)

    def download(self, run_id: str, artifact_path: str, destination: Path) -> Path:
        return Path(self._client.download_artifacts(run_id, artifact_path, str(destination)))

    def finish(self, run_id: str, status: str = "FINISHED", end_time: int | None = None) -> None:
        self._client.set_terminated(run_id, status=status, end_time=end_time)

    def fail_run(self, run_id: str, reason: str, params: Mapping[str, Any] | None = None) -> None:
        """End a run as FAILED with the reason as its error tag (and what it was, where known)."""
        self.log(run_id, params=params, tags={ERROR_TAG: reason[:5000]})
        self.finish(run_id, "FAILED")

    def discard(self, run_id: str) -> None:
        """Remove a run a killed sweep left unfinished (or a superseded one), so no duplicate stays."""
        self._client.delete_run(run_id)

    def discard_failed(self, experiment_id: str, parent_id: str, variant_key: str, keep: str,
                       taken_over: str | None = None) -> None:
        """After a variant finished, its earlier FAILED runs go (a try before --retry-failed, or one on other
        data), and so does `taken_over`, the run a dead worker left RUNNING when this one took the variant over:
        the UI shows one run per variant."""
        runs = self.find_runs([experiment_id], tags={PARENT_TAG: parent_id, VARIANT_KEY_TAG: variant_key})
        for run in runs:
            left = run.info.status == "FAILED" or (run.info.run_id == taken_over and run.info.status == "RUNNING")
            if run.info.run_id != keep and left:
                self.discard(run.info.run_id)

    def tag_front(self, on_front: Mapping[str, bool], known: dict[str, str]) -> None:
        """Tag the runs on the front (and untag those that left it); `known` caches the tags already set."""
        for run_id, front in on_front.items():
            wanted = "true" if front else "false"
            if known.get(run_id) != wanted:
                self.set_tag(run_id, PARETO_TAG, wanted)
                known[run_id] = wanted

    def front_tags(self, experiment_id: str, parent_id: str) -> dict[str, str]:
        return {run.info.run_id: run.data.tags.get(PARETO_TAG, "")
                for run in self.child_runs(experiment_id, parent_id).values()}


def _logged_model_name(label: str) -> str:
    """A variant's label as a logged model's name, which may not hold / : . % or quotes (w0.25 -> w0_25)."""
    return "".join("_" if c in "/:.%\"'" else c for c in label) or "model"


def _session_options(params: Mapping[str, Any]) -> dict[str, int] | None:
    """The ONNX Runtime session options the variant was timed with, for MLflow's ONNX loader to open the
    logged model the same way: without them it opens at ORT's default level and thread count, which is
    another variant. MLflow's loader reads a level of 0 as unset, so a variant timed with `disable` loads at
    the default level; its ort_level param still says what was timed."""
    if params.get("runtime") != "onnxruntime" or "ort_level" not in params:
        return None
    from yolobench.runtimes.onnxruntime_runtime import graph_optimization_level

    options = {"graph_optimization_level": int(graph_optimization_level(str(params["ort_level"])))}
    threads = str(params.get("threads") or "")
    if threads.isdigit() and int(threads) > 0:  # 0 or unset: ORT's own choice, as it was timed
        options["intra_op_num_threads"] = int(threads)
    return options


def _save_model(path: Path, folder: Path, mlflow_model: Any, params: Mapping[str, Any]) -> str:
    """Write the MLflow model of `path` into `folder`; returns the flavour: 'onnx' or 'file'."""
    proto = None
    if path.suffix == ".onnx" and path.is_file():
        try:
            import onnx
        except ImportError:  # a measuring host without the build extra: the file goes as it is
            onnx = None
        if onnx is not None:
            try:
                proto = onnx.load(str(path))
            except Exception:  # DecodeError: not a graph onnx can read (a test's stand-in file)
                proto = None
    if proto is not None:
        import mlflow.onnx

        from yolobench.versions import versions

        listed = [p for p in str(params.get("providers", "")).split(",") if p.endswith("ExecutionProvider")] or None
        requirements = [f"{name}=={version}" for name, version in versions(("onnx", "onnxruntime")).items()
                        if version != "absent"]
        # pip_requirements given: MLflow would otherwise load the model in a subprocess to infer them (seconds).
        mlflow.onnx.save_model(proto, str(folder), mlflow_model=mlflow_model, pip_requirements=requirements,
                               onnx_execution_providers=listed, onnx_session_options=_session_options(params),
                               metadata=mlflow_model.metadata,
                               save_as_external_data=path.stat().st_size > 2**31 - 2**26)
        return "onnx"
    folder.mkdir(parents=True)
    if path.is_dir():
        shutil.copytree(path, folder / path.name)
    else:
        shutil.copyfile(path, folder / path.name)
    mlflow_model.save(str(folder / "MLmodel"))
    return "file"


def finished_results(runs: Iterable[Run]) -> dict[str, Run]:
    """Runs (by variant key) that finished with a result: measured before a kill, told to no study."""
    return {run.data.tags[VARIANT_KEY_TAG]: run for run in runs
            if run.info.status == "FINISHED" and set(RESULT_METRICS) <= set(run.data.metrics)}

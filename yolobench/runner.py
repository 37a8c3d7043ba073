"""The sweep loop: ask the study for a variant, build and compile it (each stage cached), open it, measure
latency and accuracy through that one session, log one MLflow child run, tell the study; then confirm the
front. Reruns resume. The loop only sequences declared collaborators (Builder, Runtime, Tracker, study),
each injectable: tests/test_runner.py drives every exit of a step in milliseconds."""

from __future__ import annotations

import time
import traceback
from typing import Any, TextIO

import optuna

from yolobench import describe, pareto, report, search, tracking
from yolobench.build import Builder, LocalBuilder
from yolobench.confirm import confirm_front
from yolobench.cache import ArtifactCache
from yolobench.data.validate import check_model_classes, open_checked
from yolobench.drift import DriftReference
from yolobench.errors import SweepStopped, is_bug
from yolobench.keys import KeyOfParams, build_key, study_identity, variant_key
from yolobench.measure.accuracy import write_coco_json
from yolobench.measure.energy import open_energy_meter
from yolobench.measure.harness import EvalData, TimedGraph, measure_session
from yolobench.measure.reuse import AccuracyReuse
from yolobench.measure.system import host_fingerprint
from yolobench.prebuilt import PrebuiltBuilder, record_provenance
from yolobench.progress import Progress, result_line
from yolobench.retime import Retimer
from yolobench.runtimes import DecodeSettings, Runtime, get_runtime, runtime_info
from yolobench.search import Outcome, TrialAttr, close_trial
from yolobench.settings import SweepSettings, SweepSummary
from yolobench.signals import terminate_as_interrupt
from yolobench.space import Space, Variant
from yolobench.spec import SweepSpec


class Sweep:
    def __init__(self, spec: SweepSpec, settings: SweepSettings, *, builder: Builder | None = None,
                 runtime: Runtime | None = None, tracker: tracking.Tracker | None = None,
                 study: optuna.Study | None = None, stream: TextIO | None = None) -> None:
        self.spec, self.settings = spec, settings.for_spec(spec)
        self.space = Space.from_spec(spec)
        self.info = runtime_info(spec.runtime.name)
        # Every variant by key where the space is finite; a continuous (Pareto) space has no list.
        self.keys = {variant_key(spec, v): v for v in self.space.variants()} if self.space.is_finite else {}
        self.baseline_key = variant_key(spec, self.space.baseline)
        self.experiment_name = settings.experiment or spec.tracking.experiment or spec.name
        self.grid = spec.search.mode == "grid"
        self.builder, self.runtime, self.tracker, self.study, self.stream = builder, runtime, tracker, study, stream
        self.dataset = open_checked(spec, settings)  # a broken data set stops before the home is written
        self.cache = ArtifactCache(settings.resolved_cache_dir)
        self.decode = DecodeSettings(spec.measure.conf, spec.measure.iou, spec.measure.max_det)
        self.summary = SweepSummary(spec.name, self.experiment_name, settings.resolved_tracking_uri,
                                    settings.resolved_storage, total=len(self.keys))
        self.finished_untold: dict[str, Any] = {}
        self.timed_graphs: dict[str, TimedGraph] = {}  # by executed graph: timed once in this process
        self._front = report.FrontTags()

    # --- setup: everything that can stop the sweep is checked before a study or parent run exists ------
    def _check_inputs(self) -> None:
        if self.space.is_finite and not self.keys:
            raise SweepStopped(f"the sweep file's exclude: leaves no variant of axes {self.space.axes} to measure")
        if not self.settings.measure_only and self.builder is None:  # a measuring host has no Ultralytics
            from yolobench.stages.ultralytics_env import prepare_ultralytics

            prepare_ultralytics(self.settings.home / "ultralytics")
        self.data = EvalData.from_dataset(self.dataset, self.spec.data.val_images)
        self.tracker = self.tracker or tracking.Tracker(self.settings.resolved_tracking_uri,
                                                        artifact_root=self.settings.home / "artifacts")
        self.progress = Progress(self.summary.total, stream=self.stream)
        self.builder = self.builder or (
            PrebuiltBuilder(self.spec, self.cache, self.tracker, None) if self.settings.measure_only else
            LocalBuilder(self.spec, self.cache, self.dataset.yaml_path, self.dataset, self.progress.message,
                         self.progress.exclude))
        self.builder.check(list(self.keys.values()) or [self.space.baseline])
        self.runtime = self.runtime or get_runtime(self.spec.runtime.name)
        self.energy, self.reuse = open_energy_meter(), AccuracyReuse(self.settings.home / "probes")
        self.retimer = Retimer(self.spec, self.info, self.builder, self.runtime, self.cache, self.decode, self.data)

    def _open_stores(self) -> str:
        self.experiment_id = self.tracker.experiment_id(self.experiment_name)
        if isinstance(self.builder, PrebuiltBuilder):
            self.builder.experiment_id = self.experiment_id
        if self.study is None:
            self.study = search.open_study(self.settings.resolved_storage, self.settings.study, self.space,
                                           self.spec.search, self.settings.heartbeat_grace_s)
        parent_id = self.tracker.settle_parent(
            self.experiment_id, self.spec.name, study_identity(self.settings.resolved_storage, self.settings.study),
            self.study.user_attrs.get(search.PARENT_RUN_ATTR),
            params=tracking.parent_params(self.spec, self.space, pareto.reference_point(self.spec.search.objectives)),
            tags=host_fingerprint())
        search.note_sweep(self.study, parent_id, self.dataset.fingerprint)
        self.tracker.log_json(parent_id, self.spec.model_dump(mode="json"), "sweep.json")
        self.summary.parent_run_id = parent_id
        return parent_id

    # --- the loop ------------------------------------------------------------------------------------
    def run(self) -> SweepSummary:
        with terminate_as_interrupt():
            self._check_inputs()
            parent_id = self._open_stores()
            status = "FAILED"  # whatever stops the sweep early, the parent run does not stay RUNNING
            try:
                self._run(parent_id)
                status = "FINISHED" if self.summary.succeeded else "FAILED"
            except KeyboardInterrupt:
                status = "KILLED"
                raise
            finally:
                self.tracker.finish(parent_id, status)
                report.log_front_report(self.tracker, parent_id, self.experiment_name, self.spec)
                describe.explain_sweep(self.tracker, self.experiment_id, parent_id, self.spec, self.data)
        return self.summary

    def _run(self, parent_id: str) -> None:
        state = search.study_state_when_free(self.study, self.settings.retry_failed, self.keys, self.progress.message)
        search.close_abandoned(self.study, state.interrupted)
        owned = lambda: search.owned_keys(self.study, self.settings.retry_failed)  # noqa: E731 (asked after the listing)
        self.finished_untold = self.tracker.tidy_children(self.experiment_id, parent_id, self.dataset.fingerprint, owned)
        summary = self.summary.note(state, self.keys, self.grid)
        if not self.grid:
            summary.total = self.progress.total = self.spec.search.budget.trials or self.space.count() or 0
        self.progress.done = summary.already_done if self.grid else min(self._evaluations(), summary.total)
        self._front = report.FrontTags(self.tracker.front_tags(self.experiment_id, parent_id))
        self.drift = DriftReference(self.study, self.tracker, self.retimer, self.space, self.baseline_key, parent_id,
                                    say=self.progress.message)
        if self._more_to_do(state, time.monotonic()):
            self._loop(state, parent_id)
        else:
            self.progress.message(summary.nothing_left(self.grid))
        if confirm_front(self.study, self.tracker, self.retimer, self.space, self.baseline_key,
                         set(self.drift.suspect), self.progress.message):
            self._update_front(parent_id)

    def _loop(self, state: search.StudyState, parent_id: str) -> None:
        if self.baseline_key not in state.done:
            search.enqueue_baseline(self.study, self.space.baseline, self.grid)
        if self.grid:
            search.enqueue_unreachable(self.study, {k: v for k, v in self.keys.items() if k not in state.done})
        if self.energy.available:
            self.energy.measure_idle(1.0)
        started = time.monotonic()
        while self._more_to_do(state := search.study_state_when_free(  # waits while only others' variants are left
                self.study, self.settings.retry_failed, self.keys, self.progress.message), started):
            self._step(parent_id)
            self._update_front(parent_id)

    def _more_to_do(self, state: search.StudyState, started: float) -> bool:
        if self.grid:
            # The keys are the truth, not GridSampler.is_exhausted: it counts interrupted and retried points as visited.
            return any(k not in state.done and k not in state.running_elsewhere for k in self.keys)
        budget = self.spec.search.budget
        if (budget.trials is not None and self._evaluations() >= budget.trials) or \
                (budget.minutes is not None and time.monotonic() - started >= budget.minutes * 60):
            return False
        return not self.keys or any(k not in state.done for k in self.keys)  # a finite space can run out

    def _evaluations(self) -> int:
        return search.evaluations(self.study, KeyOfParams(self.spec, self.space))  # counted once per trial

    def _step(self, parent_id: str) -> Outcome:
        trial = search.ask(self.study)
        trial.set_user_attr(TrialAttr.WORKER, search.worker_id())
        variant = search.suggest_variant(trial, self.space)
        key = variant_key(self.spec, variant)
        trial.set_user_attr(TrialAttr.KEY, key)
        trial.set_user_attr(TrialAttr.LABEL, variant.label)
        if self.space.is_excluded(variant):
            return self._close(trial, Outcome.EXCLUDED)
        state = search.ledger(self.study).state(self.settings.retry_failed)  # read after the key was claimed above
        if key in state.running_elsewhere:  # another worker took it at the same moment
            return self._close(trial, Outcome.TAKEN)
        if key in state.done:  # already measured (perhaps by another worker since the loop looked): from the store
            self.summary.reused += 1
            return self._close(trial, Outcome.REUSED, values=state.done[key].values, reused_from=state.done[key].number)
        if key in self.finished_untold:  # measured before a kill, never told: take the result from MLflow
            run = self.finished_untold.pop(key)
            self.summary.reused += 1
            self.progress.finish(variant.label, "measured before the last interruption; result taken from MLflow")
            return self._close(trial, Outcome.MEASURED, metrics=dict(run.data.metrics), run_id=run.info.run_id)
        return self._measure_trial(trial, variant, key, parent_id)

    def _close(self, trial: optuna.Trial, outcome: Outcome, **details: Any) -> Outcome:
        close_trial(self.study, trial, outcome, objectives=self.spec.search.objectives, **details)
        return outcome

    def _measure_trial(self, trial: optuna.Trial, variant: Variant, key: str, parent_id: str) -> Outcome:
        self.progress.start(variant.label)
        run_id = self.tracker.start_child(self.experiment_id, parent_id, variant.label, tags={
            tracking.VARIANT_KEY_TAG: key, tracking.SWEEP_TAG: self.spec.name, **host_fingerprint()})
        trial.set_user_attr(TrialAttr.RUN_ID, run_id)
        try:
            with search.heartbeat(self.study, trial):
                metrics = self._measure(variant, run_id)
        except BaseException as error:
            return self._on_error(trial, variant, run_id, error)
        self.tracker.finish(run_id)
        self.tracker.discard_failed(self.experiment_id, parent_id, key, run_id, search.taken_over(trial))
        self.summary.measured += 1
        self.progress.finish(variant.label, result_line(metrics))
        self.drift.after(key)
        return self._close(trial, Outcome.MEASURED, metrics=metrics, run_id=run_id)

    def _on_error(self, trial: optuna.Trial, variant: Variant, run_id: str, error: BaseException) -> Outcome:
        """Three kinds apart: a stop (interrupt, missing inputs) leaves the variant to be redone; a bug is
        recorded and raised; anything else is the variant's failure, recorded, and the sweep goes on."""
        if isinstance(error, (KeyboardInterrupt, SweepStopped)) or not isinstance(error, Exception):
            self.tracker.discard(run_id)
            self._close(trial, Outcome.INTERRUPTED)
            raise error
        if is_bug(error):
            self.tracker.fail_run(run_id, traceback.format_exc(limit=3)[-4000:])
            self._close(trial, Outcome.BUG)
            raise error
        reason = f"{type(error).__name__}: {error}"
        self.tracker.fail_run(run_id, reason, tracking.variant_params(self.spec, variant, self.builder.describe(variant)))
        self.summary.failed += 1
        self.summary.failures[variant.label] = reason
        self.progress.finish(variant.label, f"FAILED: {reason.splitlines()[0][:200]}")
        return self._close(trial, Outcome.FAILED, failure=reason)

    # --- one variant ---------------------------------------------------------------------------------
    def _measure(self, variant: Variant, run_id: str) -> dict[str, float]:
        with self.retimer.opened(variant, lambda built: record_provenance(
                self.tracker, self.cache, self.experiment_id, run_id, self.spec, variant, built)) as opened:
            built, compiled, session = opened.built, opened.compiled, opened.session
            check_model_classes(built.model.manifest, self.data.names)
            keys, imgsz = (build_key(self.spec, variant), variant_key(self.spec, variant)), int(variant["imgsz"])
            graph = session.executed_graph()
            timed = self._timed_twin(graph)
            measurement = measure_session(session, self.data, imgsz, self.spec.measure, self.spec.runtime.cpu_affinity,
                                          energy=self.energy, reuse=lambda s: self.reuse.reuse_or_remember(s.infer,
                                              self.data.val_images, imgsz, *keys, search.measured(self.study)),
                                          timed=timed)
            if timed is not None:
                self.progress.message(f"{variant.label}: its session runs {timed.label}'s graph; its timing is theirs")
            runnable = compiled.path if compiled is not None else (session.output_path or built.model.path)
            scored = write_coco_json(measurement.accuracy, opened.work_dir / "accuracy")  # to re-score anywhere
            is_baseline = variant == self.space.baseline
            record = tracking.variant_record(
                self.spec, self.info, variant, built, compiled, measurement,
                self.runtime.facts(session, built.model, compiled, opened.axes),
                None if is_baseline else search.metrics_of(self.study, self.baseline_key), is_baseline=is_baseline,
                files=[(runnable, tracking.COMPILED_ARTIFACT_DIR), *((p, "accuracy") for p in scored)], data=self.data)
            self.tracker.log_record(run_id, record)
            if graph is not None and timed is None:  # once logged, for the next variant whose session runs it
                self.timed_graphs[graph] = TimedGraph(measurement.timing, run_id, keys[1], variant.label)
            return record.metrics

    def _timed_twin(self, graph: str | None) -> TimedGraph | None:
        """The timing of a variant whose session ran this graph earlier in this sweep; not one timed while the
        drift reference had drifted, which is to be re-timed."""
        timed = self.timed_graphs.get(graph) if graph is not None else None
        return timed if timed is not None and timed.key not in self.drift.suspect else None

    # --- the front ----------------------------------------------------------------------------------
    def _update_front(self, parent_id: str) -> None:
        report.update_front(self.study, self.tracker, parent_id, self.spec.search.objectives,
                            search.metrics_of(self.study, self.baseline_key), self._front, self._evaluations())


def run_sweep(spec: SweepSpec, settings: SweepSettings) -> SweepSummary:
    return Sweep(spec, settings).run()

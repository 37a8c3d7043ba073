"""`yolobench promote`: put one variant's model into the MLflow Model Registry, where a deployment pipeline
picks the chosen variant up. The variant is named by its run id or by its label within the sweep's
experiment; the version carries the run's figures as tags and its description, so the registry alone says
what was shipped and how fast and accurate it measured."""

from __future__ import annotations

import re
from typing import Any

from yolobench import tracking
from yolobench.errors import SweepStopped

# The run's figures a version carries as tags (those the run has).
VERSION_METRICS = ("latency_ms_p50", "latency_ms_p50_ci_low", "latency_ms_p50_ci_high", "e2e_ms_p50",
                   "speedup_vs_baseline", "map50_95", "map50", "map50_95_delta_vs_baseline", "model_size_mb")
VERSION_TAGS = (tracking.LABEL_TAG, tracking.SWEEP_TAG, tracking.PARETO_TAG, tracking.CONFIRMED_TAG,
                tracking.VARIANT_KEY_TAG, tracking.ARTIFACT_KEY_TAG)
VERSION_PARAMS = ("runtime", "provider", "model", "data")  # the axes are in the label
RUN_ID = re.compile(r"^[0-9a-f]{32}$")


class NotPromotable(SweepStopped):
    """The run or label names no finished variant with a logged model."""


def find_variant(tracker: tracking.Tracker, what: str, experiment: str | None, sweep: str | None = None) -> Any:
    """The run `what` names: a run id, else a label (run name) among the finished variants of `experiment`
    (of sweep `sweep` where given); the newest when a resumed sweep left more than one."""
    if RUN_ID.match(what) and tracker.run_exists(what):
        return tracker.run(what)
    if experiment is None:
        raise NotPromotable(f"{what!r} is not a run id here; to name a variant by its label, give the sweep file "
                            "or target (yolobench promote SWEEP LABEL) or --experiment")
    experiment_id = tracker.existing_experiment_id(experiment)
    if experiment_id is None:
        raise NotPromotable(f"no experiment {experiment!r} at {tracker.tracking_uri}")
    tags = {tracking.LABEL_TAG: what, **({tracking.SWEEP_TAG: sweep} if sweep else {})}
    runs = [r for r in tracker.find_runs([experiment_id], tags=tags, finished_only=True, newest_first=True)
            if tracking.PARENT_TAG in r.data.tags]
    if not runs:
        labels = sorted({r.data.tags.get(tracking.LABEL_TAG, "") for r in tracker.find_runs(
            [experiment_id], tags={}, finished_only=True) if tracking.PARENT_TAG in r.data.tags} - {""})
        raise NotPromotable(f"no finished variant labelled {what!r} in experiment {experiment!r}; its variants: "
                            + (", ".join(labels[:30]) or "none"))
    return runs[0]


def version_tags(run: Any) -> dict[str, str]:
    """What a model version says about the run it came from: figures, label, front, the run itself."""
    tags = {f"yolobench.{name}": f"{run.data.metrics[name]:.6g}" for name in VERSION_METRICS
            if name in run.data.metrics}
    tags.update({name: run.data.tags[name] for name in VERSION_TAGS if name in run.data.tags})
    tags.update({f"yolobench.{k}": run.data.params[k] for k in VERSION_PARAMS if k in run.data.params})
    tags["yolobench.run_id"] = run.info.run_id
    return tags


def promote(tracker: tracking.Tracker, what: str, name: str, experiment: str | None = None,
            sweep: str | None = None) -> Any:
    """Register the variant's logged model as a new version of `name`; returns the ModelVersion."""
    run = find_variant(tracker, what, experiment, sweep)
    model_id = run.data.tags.get(tracking.MODEL_ID_TAG)
    if model_id is None and run.outputs is not None and run.outputs.model_outputs:
        model_id = run.outputs.model_outputs[-1].model_id  # logged by a yolobench before the tag
    if model_id is None:
        raise NotPromotable(f"run {run.info.run_id} ({run.data.tags.get(tracking.LABEL_TAG, '?')}) has no logged "
                            "model: it was measured by a yolobench that logged none, or it failed; sweep it again")
    return tracker.register(run, model_id, name, version_tags(run), run.data.tags.get(tracking.NOTE_TAG, ""))

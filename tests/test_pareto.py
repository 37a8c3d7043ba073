"""Pareto mode: samplers within a budget, reuse of measured points, training axes, front tags, hypervolume."""

from __future__ import annotations

from pathlib import Path

import mlflow
import optuna
import pytest

from tests.conftest import TINY_SWEEP
from yolobench import tracking
from yolobench.runner import Sweep, SweepSettings
from yolobench.spec import SpecError, parse_spec

pytestmark = pytest.mark.slow


def runs_of(home: Path, experiment: str = "tiny"):
    client = mlflow.MlflowClient(tracking.default_tracking_uri(home))
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    return client, client.search_runs([experiment_id], max_results=1000)


def pareto_spec(**search_overrides) -> dict:
    return {
        **TINY_SWEEP,
        "axes": {"scale": ["n"], "precision": ["fp32", "fp16"], "imgsz": [64, 96], "ort_level": ["all"]},
        "baseline": {"scale": "n", "precision": "fp32", "imgsz": 96, "ort_level": "all"},
        "search": {"mode": "pareto", "sampler": "random", "budget": {"trials": 8}, "seed": 3, **search_overrides},
    }


def test_proposals_of_measured_points_reuse_the_stored_result(seeded_home: Path) -> None:
    spec = parse_spec(pareto_spec())
    sweep = Sweep(spec, SweepSettings(home=seeded_home))
    summary = sweep.run()
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{seeded_home / 'optuna.db'}")
    by_outcome: dict[str, list] = {}
    for trial in study.trials:
        by_outcome.setdefault(trial.user_attrs.get("outcome"), []).append(trial)
    measured = by_outcome["measured"]
    assert len({t.user_attrs["variant_key"] for t in measured}) == len(measured) <= 4
    # The random sampler proposed measured points again before covering the space: each such
    # proposal got the stored values, and nothing was built or measured twice.
    for trial in by_outcome.get("reused", []):
        original = study.trials[trial.user_attrs["reused_from"]]
        assert trial.values == original.values and trial.params == original.params
    assert summary.measured == len(measured)
    assert sweep.cache.builds["export"] <= 2 and sweep.cache.builds["fp16"] <= 2
    client, runs = runs_of(seeded_home)
    children = [r for r in runs if tracking.PARENT_TAG in r.data.tags]
    assert len(children) == len(measured)


def test_pareto_tags_match_a_non_dominated_sort_and_hypervolume_is_logged(seeded_home: Path) -> None:
    spec = parse_spec(pareto_spec(budget={"trials": 6}, sampler="tpe"))
    Sweep(spec, SweepSettings(home=seeded_home)).run()
    client, runs = runs_of(seeded_home)
    children = [r for r in runs if tracking.PARENT_TAG in r.data.tags]
    points = [(r.data.metrics["latency_ms_p50"], -r.data.metrics["map50_95"]) for r in children]
    # Independent check: a brute-force non-dominated sort of the logged metrics.
    expected = {i for i, p in enumerate(points)
                if not any(q[0] <= p[0] and q[1] <= p[1] and q != p for q in points)}
    tagged = {i for i, r in enumerate(children) if r.data.tags.get(tracking.PARETO_TAG) == "true"}
    assert tagged == expected and tagged
    assert all(r.data.tags.get(tracking.PARETO_TAG) in ("true", "false") for r in children)
    parent = next(r for r in runs if tracking.SWEEP_TAG in r.data.tags and tracking.PARENT_TAG not in r.data.tags)
    history = client.get_metric_history(parent.info.run_id, "hypervolume")
    assert len(history) >= len(children) - 1
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == sorted(m.value for m in history)  # never shrinks
    assert parent.data.params["hv_reference"] == "[2.0, 1.0]"
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "pareto")}
    assert {"pareto/pareto.html", "pareto/front.md", "pareto/pareto.png"} <= artifacts


def test_budget_is_kept_across_resumes(seeded_home: Path) -> None:
    spec = parse_spec(pareto_spec(budget={"trials": 3}))
    Sweep(spec, SweepSettings(home=seeded_home)).run()
    again = Sweep(spec, SweepSettings(home=seeded_home)).run()
    assert again.measured == 0
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{seeded_home / 'optuna.db'}")
    assert sum(t.user_attrs.get("outcome") in ("measured", "reused", "failed") for t in study.trials) == 3


def test_training_axes_train_each_model_once_and_link_its_run(seeded_home: Path) -> None:
    spec = parse_spec({
        **TINY_SWEEP,
        "axes": {"scale": ["n"], "width_multiple": [0.125], "teacher": ["none", "yolo11n"],
                 "precision": ["fp32", "int8"], "imgsz": [64], "ort_level": ["all"]},
        "baseline": {"scale": "n", "width_multiple": 0.125, "teacher": "none", "precision": "fp32", "imgsz": 64,
                     "ort_level": "all"},
        "search": {"mode": "pareto", "sampler": "random", "budget": {"trials": 10}, "seed": 0},
    })
    sweep = Sweep(spec, SweepSettings(home=seeded_home))
    summary = sweep.run()
    assert summary.measured == 4  # the finite space is covered, then the search stops
    # Student w0.125 without and with distillation: two trainings, once each. The yolo11n teacher has
    # the tiny sweep's training settings, so it comes from the cache, and still gets its training run.
    assert sweep.cache.builds["train"] == 2
    client, runs = runs_of(seeded_home)
    training = {r.info.run_id: r for r in runs if r.data.tags.get("yolobench.training") == "true"}
    assert len(training) == 3
    children = [r for r in runs if tracking.PARENT_TAG in r.data.tags]
    assert len(children) == 4
    for run in children:
        assert run.data.tags[tracking.TRAINING_RUN_TAG] in training
    distilled = [r for r in children if r.data.params["teacher"] == "yolo11n"]
    used = {training[r.data.tags[tracking.TRAINING_RUN_TAG]].data.params.get("teacher") for r in distilled}
    assert used == {"yolo11n"}


def test_ranges_need_pareto_mode_and_a_budget() -> None:
    axes = {**TINY_SWEEP["axes"], "width_multiple": {"low": 0.1, "high": 0.3}}
    baseline = {**TINY_SWEEP["baseline"], "width_multiple": 0.2}
    with pytest.raises(SpecError, match="is a range: a grid needs a list"):
        parse_spec({**TINY_SWEEP, "axes": axes, "baseline": baseline})
    with pytest.raises(SpecError, match="needs a budget"):
        parse_spec({**TINY_SWEEP, "axes": axes, "baseline": baseline, "search": {"mode": "pareto"}})
    spec = parse_spec({**TINY_SWEEP, "axes": axes, "baseline": baseline,
                       "search": {"mode": "pareto", "budget": {"minutes": 5}}})
    from yolobench.space import Space

    assert Space.from_spec(spec).count() is None

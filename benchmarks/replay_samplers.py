"""Replay each Pareto sampler over a finished grid sweep's recorded results (nothing is measured)
and print how many evaluations it needs to reach a share of the full grid's hypervolume, median
over seeds. This is how yolobench's default Pareto sampler was chosen.

    python benchmarks/replay_samplers.py sweeps/replay-grid.yaml --home mlruns --seeds 5
(run `yolobench sweep sweeps/replay-grid.yaml` first: it is the ground truth)."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import optuna

from yolobench import search
from yolobench.space import Space, variant_key
from yolobench.spec import load_spec

SAMPLERS = ("random", "tpe", "nsga2", "gp")


def recorded_results(spec, storage: str) -> dict[str, dict[str, float]]:
    study = optuna.load_study(study_name=spec.name, storage=storage)
    results: dict[str, dict[str, float]] = {}
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if trial.user_attrs.get("outcome") == "measured":
            results.setdefault(trial.user_attrs["variant_key"], trial.user_attrs["metrics"])
    return results


def evaluations_to_reach(spec, space: Space, results, sampler_name: str, seed: int, share: float) -> int | None:
    """Evaluations (distinct variants whose result was needed) until the front's hypervolume reaches
    `share` of the full grid's; proposals of points already evaluated cost nothing, as in a sweep."""
    objectives = spec.search.objectives
    baseline = results[variant_key(spec, space.baseline)]
    reference = search.reference_point(objectives)
    full = search.hypervolume([search.losses(m, objectives, baseline) for m in results.values()], reference)
    grid_size = space.count()
    search_spec = spec.search.model_copy(
        update={"mode": "pareto", "sampler": sampler_name, "seed": seed,
                "budget": spec.search.budget.model_copy(update={"trials": grid_size})})
    study = optuna.create_study(directions=[o.resolved_direction for o in objectives],
                                sampler=search.make_sampler(search_spec, space))
    study.enqueue_trial(space.baseline.as_dict())  # a sweep measures its baseline first
    evaluated: dict[str, list[float]] = {}
    for _ in range(grid_size * 4):
        trial = study.ask()
        key = variant_key(spec, search.suggest_variant(trial, space))
        if key not in results:  # failed in the grid sweep
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            evaluated.setdefault(key, [])
            continue
        evaluated.setdefault(key, search.losses(results[key], objectives, baseline))
        study.tell(trial, search.objective_values(results[key], objectives))
        points = [p for p in evaluated.values() if p]
        if search.hypervolume(points, reference) >= share * full:
            return len(evaluated)
        if len(evaluated) == grid_size:
            return grid_size
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", nargs="?", default="sweeps/replay-grid.yaml")
    parser.add_argument("--home", default="mlruns")
    parser.add_argument("--storage", help="Optuna storage (default: sqlite under --home)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--share", type=float, default=0.95)
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    spec = load_spec(args.sweep)
    space = Space.from_spec(spec)
    storage = args.storage or f"sqlite:///{(Path(args.home) / 'optuna.db').resolve()}"
    results = recorded_results(spec, storage)
    grid_size = space.count()
    if len(results) < grid_size * 0.9:
        print(f"{spec.name}: only {len(results)} of {grid_size} variants recorded; run the grid sweep first",
              file=sys.stderr)
        return 1
    print(f"grid {spec.name}: {grid_size} variants ({len(results)} measured), target {args.share:.0%} of its "
          f"hypervolume, {args.seeds} seeds")
    print(f"{'sampler':<8} {'median evals':>12} {'of grid':>8} {'per seed':<30} {'time':>6}")
    for name in args.samplers.split(","):
        started = time.perf_counter()
        counts = [evaluations_to_reach(spec, space, results, name, seed, args.share) for seed in range(args.seeds)]
        reached = [c for c in counts if c is not None]
        median = statistics.median(reached) if len(reached) == len(counts) else float("nan")
        print(f"{name:<8} {median:>12.1f} {median / grid_size:>8.1%} {str(counts):<30} "
              f"{time.perf_counter() - started:>5.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Replay each Pareto sampler over a finished grid sweep's recorded results (nothing is measured)
and print how many evaluations it needs to reach a share of the full grid's hypervolume, median
over seeds. This is how yolobench's default Pareto sampler was chosen.

    python benchmarks/replay_samplers.py replay-grid --home mlruns --seeds 5
(run `yolobench sweep replay-grid` first: it is the ground truth)."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import optuna

from yolobench import pareto, search
from yolobench.space import Space
from yolobench.spec import load_spec

SAMPLERS = ("random", "tpe", "nsga2", "gp")


def _point(params: dict) -> str:
    """A variant by its axis values: the replay must not depend on settings that changed since the sweep."""
    return json.dumps(params, sort_keys=True)


def recorded_results(spec, storage: str) -> dict[str, dict[str, float]]:
    study = optuna.load_study(study_name=spec.name, storage=storage)
    results: dict[str, dict[str, float]] = {}
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if trial.user_attrs.get("outcome") == "measured":
            results.setdefault(_point(trial.params), trial.user_attrs["metrics"])
    return results


def evaluations_to_reach(spec, space: Space, results, sampler_name: str, seed: int, share: float) -> int | None:
    """Evaluations (distinct variants whose result was needed) until the front's hypervolume reaches
    `share` of the full grid's; proposals of points already evaluated cost nothing, as in a sweep."""
    objectives = spec.search.objectives
    baseline = results[_point(space.baseline.as_dict())]
    reference = pareto.reference_point(objectives)
    full = pareto.hypervolume([pareto.losses(m, objectives, baseline) for m in results.values()], reference)
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
        key = _point(search.suggest_variant(trial, space).as_dict())
        if key not in results:  # failed in the grid sweep
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            evaluated.setdefault(key, [])
            continue
        evaluated.setdefault(key, pareto.losses(results[key], objectives, baseline))
        study.tell(trial, pareto.objective_values(results[key], objectives))
        points = [p for p in evaluated.values() if p]
        if pareto.hypervolume(points, reference) >= share * full:
            return len(evaluated)
        if len(evaluated) == grid_size:
            return grid_size
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", nargs="?", default="replay-grid")
    parser.add_argument("--home", default="mlruns")
    parser.add_argument("--storage", help="Optuna storage (default: sqlite under --home)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--share", default="0.95,0.99", help="hypervolume shares to reach, comma-separated")
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
    shares = [float(share) for share in args.share.split(",")]
    print(f"grid {spec.name}: {grid_size} variants ({len(results)} measured); evaluations until the front "
          f"reaches a share of the full grid's hypervolume; median over {args.seeds} seeds")
    print(f"{'sampler':<8} " + " ".join(f"{f'{share:.0%} HV: evals (of grid)':>26} {'per seed':<24}" for share in shares))
    for name in args.samplers.split(","):
        cells = []
        for share in shares:
            counts = [evaluations_to_reach(spec, space, results, name, seed, share) for seed in range(args.seeds)]
            median = statistics.median(counts) if None not in counts else float("nan")
            cells.append(f"{f'{median:.1f} ({median / grid_size:.1%})':>26} {str(counts):<24}")
        print(f"{name:<8} " + " ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

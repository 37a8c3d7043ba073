"""Does the ranking hold when the same grid is measured again? Two independent quickstart sweeps (fresh
stores, the trained model copied in), then the same pair with a single-core busy loop in the second sweep
(30 s, starting 10 s in). For each pair: Kendall tau of the p50 ranking, the worst p50 ratio of the variants
on either sweep's front, and both fronts. With --old-checkout, the release before (another checkout of this
repository) sweeps the quickstart too, before, between and after the pairs, so the wall times are compared
side by side on the same machine (this one's speed moves by a third within minutes).

    .venv/bin/python benchmarks/ranking_stability.py [--model-cache mlruns/cache] [--old-checkout DIR] [--keep DIR]
    .venv/bin/python benchmarks/ranking_stability.py --compare DIR   # the figures again, from a run kept in DIR

Exits 1 when a pair misses the bar: tau >= 0.9 and every front variant within 5% in p50."""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TAU_BAR, RATIO_BAR = 0.9, 0.05


def run_sweep(home: Path, model_cache: Path, checkout: Path = REPO) -> float:
    """A quickstart sweep in a fresh home seeded with the trained model; returns its wall time."""
    shutil.copytree(model_cache / "train", home / "cache" / "train")
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    env.pop("MLFLOW_TRACKING_URI", None)
    started = time.monotonic()
    # Releases before the targets moved into the package kept them in sweeps/.
    sweep = "quickstart" if (checkout / "yolobench" / "targets").is_dir() else str(checkout / "sweeps" / "quickstart.yaml")
    result = subprocess.run([sys.executable, "-m", "yolobench.cli", "sweep", sweep, "--home", str(home)],
                            cwd=checkout, env=env, capture_output=True, text=True)
    wall = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"sweep in {home} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return wall


def finished_runs(home: Path) -> list:
    """The variants' finished MLflow runs of the quickstart sweep stored in `home`."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("quickstart")
    return [r for r in client.search_runs([experiment.experiment_id], max_results=1000)
            if "mlflow.parentRunId" in r.data.tags and r.info.status == "FINISHED"]


def results(home: Path) -> tuple[dict[str, dict[str, float]], set[str], int, int, int]:
    """Each variant's metrics by label (the figures the store reports now), the labels on the front, how
    many variants had their accuracy evaluated in full (the others took an evaluated sibling's mAP), how
    many were confirmed as one figure with another whose session ran the same graph, and how many had a
    first pass timed of their own (the others' sessions ran a graph timed before)."""
    runs = finished_runs(home)
    metrics = {r.info.run_name: dict(r.data.metrics) for r in runs}
    evaluated = sum("yolobench.accuracy_reused_from" not in r.data.tags for r in runs)
    same_graph = sum("yolobench.same_graph_as" in r.data.tags for r in runs)
    timed = sum("yolobench.latency_reused_from" not in r.data.tags for r in runs)
    front = {r.info.run_name for r in runs if r.data.tags.get("yolobench.pareto") == "true"}
    return metrics, front, evaluated, same_graph, timed


def one_per_graph(home: Path) -> set[str]:
    """One label per graph the sessions ran: twins (yolobench.same_graph_as) share one figure, so a flip
    between two graphs counts once in a tau over these, not once per pair of their twins."""
    groups = {frozenset([r.info.run_name, *filter(None, r.data.tags.get("yolobench.same_graph_as", "").split(","))])
              for r in finished_runs(home)}
    return {min(group) for group in groups}


def report_ranks(metrics: dict[str, dict[str, float]]) -> dict[str, int]:
    """The rank the report gives each variant: variants whose p50 intervals overlap share one (report.py)."""
    from yolobench.report import latency_ranks

    labels = sorted(metrics, key=lambda label: metrics[label]["latency_ms_p50"])
    ranks = latency_ranks([metrics[label] for label in labels])
    return {label: int(rank.lstrip("=")) for label, rank in zip(labels, ranks)}


def kendall_tau(first: dict[str, float], second: dict[str, float]) -> float:
    """Kendall's tau-b: tau-a where nothing is tied; pairs tied in one ranking count as neither agreeing nor not."""
    labels = sorted(set(first) & set(second))
    concordant = discordant = tied_first = tied_second = 0
    for a, b in itertools.combinations(labels, 2):
        sign = (first[a] - first[b]) * (second[a] - second[b])
        concordant += sign > 0
        discordant += sign < 0
        tied_first += first[a] == first[b]
        tied_second += second[a] == second[b]
    pairs = len(labels) * (len(labels) - 1) // 2
    denominator = ((pairs - tied_first) * (pairs - tied_second)) ** 0.5
    return (concordant - discordant) / denominator if denominator else 1.0


def p50_interval(metrics: dict[str, float]) -> tuple[float, float]:
    return (metrics.get("latency_ms_p50_ci_low", metrics["latency_ms_p50"]),
            metrics.get("latency_ms_p50_ci_high", metrics["latency_ms_p50"]))


def told_apart(metrics: dict[str, float], other: dict[str, float]) -> bool:
    """Whether a sweep's p50 intervals of two variants do not overlap: it says which is faster."""
    (low, high), (other_low, other_high) = p50_interval(metrics), p50_interval(other)
    return high < other_low or other_high < low


def order_flips(metrics_a: dict[str, dict[str, float]], metrics_b: dict[str, dict[str, float]]) -> tuple[int, int]:
    """Pairs of variants the two sweeps order oppositely by p50, and how many of those both sweeps told apart
    (intervals not overlapping in either): a flip between variants a sweep could not tell apart is the noise
    its interval owned up to; a flip between two told apart is a ranking that did not hold."""
    flips = contradicted = 0
    for x, y in itertools.combinations(sorted(set(metrics_a) & set(metrics_b)), 2):
        a, b = (metrics_a[x], metrics_a[y]), (metrics_b[x], metrics_b[y])
        if (a[0]["latency_ms_p50"] - a[1]["latency_ms_p50"]) * (b[0]["latency_ms_p50"] - b[1]["latency_ms_p50"]) < 0:
            flips += 1
            contradicted += told_apart(*a) and told_apart(*b)
    return flips, contradicted


def busy_loop(start_after_s: float, seconds: float) -> threading.Thread:
    """A neighbour: one core kept busy by another process for `seconds`, starting `start_after_s` from now."""
    def neighbour() -> None:
        time.sleep(start_after_s)
        process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(seconds)
        process.kill()
        process.wait()

    thread = threading.Thread(target=neighbour, daemon=True)
    thread.start()
    return thread


def compare(name: str, first: Path, second: Path) -> bool:
    metrics_a, front_a, evaluated_a, same_a, timed_a = results(first)
    metrics_b, front_b, evaluated_b, same_b, timed_b = results(second)
    p50_a = {label: m["latency_ms_p50"] for label, m in metrics_a.items()}
    p50_b = {label: m["latency_ms_p50"] for label, m in metrics_b.items()}
    both = sorted(set(p50_a) & set(p50_b))
    tau = kendall_tau(p50_a, p50_b)
    on_front = sorted((front_a | front_b) & set(both))
    ratios = {label: max(p50_a[label], p50_b[label]) / min(p50_a[label], p50_b[label]) for label in on_front}
    worst = max(ratios.items(), key=lambda item: item[1], default=("-", 1.0))
    # How much of the difference is the machine's speed between the two sweeps, the same for every variant.
    level = statistics.median(p50_b[label] / p50_a[label] for label in both)
    levelled = {label: max(r := p50_b[label] / p50_a[label] / level, 1 / r) for label in on_front}
    worst_levelled = max(levelled.items(), key=lambda item: item[1], default=("-", 1.0))
    print(f"\n{name}: Kendall tau of p50 {tau:.3f} over {len(both)} variants; "
          f"worst front ratio {worst[1]:.3f} ({worst[0]})")
    print(f"  front 1: {', '.join(f'{l} {p50_a[l]:.2f}' for l in sorted(front_a, key=p50_a.get))}")
    print(f"  front 2: {', '.join(f'{l} {p50_b[l]:.2f}' for l in sorted(front_b, key=p50_b.get))}")
    print(f"  the second sweep's p50 over the first's, median over the variants: {level:.3f}; with that divided "
          f"out, the worst front ratio is {worst_levelled[1]:.3f} ({worst_levelled[0]})")
    levels = [statistics.median(m.get("confirm_level", 1.0) for m in metrics.values())
              for metrics in (metrics_a, metrics_b)]
    print(f"  each sweep's level against its confirmation's (confirm_level; 1.0 where not logged): "
          f"{levels[0]:.3f} and {levels[1]:.3f}")
    graphs = one_per_graph(first) & one_per_graph(second)
    moved = [p50_b[g] / p50_a[g] for g in graphs]
    print(f"  Kendall tau of p50 over the {len(graphs)} distinct graphs (twins counted once): "
          f"{kendall_tau({g: p50_a[g] for g in graphs}, {g: p50_b[g] for g in graphs}):.3f}; the graph that moved "
          f"most between the sweeps against the one that moved least (what no level divides out): "
          f"{max(moved) / min(moved):.3f}")
    ranks_a, ranks_b = report_ranks(metrics_a), report_ranks(metrics_b)
    print(f"  tau-b of the report's ranks (variants whose p50 intervals overlap share a rank; "
          f"{len(set(ranks_a.values()))} and {len(set(ranks_b.values()))} ranks): {kendall_tau(ranks_a, ranks_b):.3f}")
    flips, contradicted = order_flips(metrics_a, metrics_b)
    print(f"  pairs ordered oppositely by p50: {flips} of {len(both) * (len(both) - 1) // 2}; of those, told apart "
          f"by both sweeps' intervals: {contradicted}")
    print(f"  accuracy evaluated in full for {evaluated_a} of {len(metrics_a)} and {evaluated_b} of {len(metrics_b)} "
          "variants; the others took the mAP of a sibling with the same outputs")
    print(f"  variants whose session ran the same graph as another's, confirmed as one figure with it: {same_a} and "
          f"{same_b}; first passes timed: {timed_a} and {timed_b}")
    passed = tau >= TAU_BAR and worst[1] - 1 <= RATIO_BAR
    print(f"  {'PASS' if passed else 'FAIL'} (bar: tau >= {TAU_BAR}, front within {RATIO_BAR:.0%})")
    return passed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-cache", type=Path, default=REPO / "mlruns" / "cache",
                        help="a cache holding the quickstart's trained model (train/), e.g. after make quickstart")
    parser.add_argument("--old-checkout", type=Path, help="a checkout of the release to compare wall time with")
    parser.add_argument("--busy-at", type=float, default=10.0)
    parser.add_argument("--busy-for", type=float, default=30.0)
    parser.add_argument("--keep", type=Path, help="keep the sweeps' homes in this folder (default: deleted)")
    parser.add_argument("--compare", type=Path, metavar="DIR", help="sweep nothing: compare the homes a run kept in DIR")
    args = parser.parse_args(argv)
    if args.compare is not None:
        homes = [args.compare / f"sweep{i}" for i in range(4)]
        quiet = compare("quiet pair (sweeps 1 and 2)", homes[0], homes[1])
        return 0 if compare("busy pair (sweeps 3 and 4)", homes[2], homes[3]) and quiet else 1
    if not (args.model_cache / "train").is_dir():
        raise SystemExit(f"no trained model in {args.model_cache / 'train'}: run `make quickstart` first")
    with tempfile.TemporaryDirectory(prefix="yolobench-ranking-") as temporary:
        folder = args.keep or temporary
        homes = [Path(folder) / f"sweep{i}" for i in range(4)]
        # The old release sweeps before, between and after the pairs: each quiet sweep has one of its runs beside
        # it, and the machine's drift over the run falls on both sides.
        old_walls: list[float] = []

        def old() -> None:
            if args.old_checkout is not None:
                old_walls.append(run_sweep(Path(folder) / f"old{len(old_walls)}", args.model_cache, args.old_checkout))

        old()
        walls = [run_sweep(homes[0], args.model_cache), run_sweep(homes[1], args.model_cache)]
        old()
        walls.append(run_sweep(homes[2], args.model_cache))
        neighbour = busy_loop(args.busy_at, args.busy_for)
        walls.append(run_sweep(homes[3], args.model_cache))
        neighbour.join()
        print("quickstart wall time, model cached: " + ", ".join(f"{w:.0f} s" for w in walls)
              + "  (sweep 4 with the busy neighbour)")
        quiet = compare("quiet pair (sweeps 1 and 2)", homes[0], homes[1])
        busy = compare(f"busy pair (sweeps 3 and 4; one busy core in sweep 4 from {args.busy_at:.0f} s for "
                       f"{args.busy_for:.0f} s)", homes[2], homes[3])
        if args.old_checkout is not None:
            old()
            new, before = sum(walls[:3]) / 3, sum(old_walls) / len(old_walls)
            print(f"\nwall time, model cached: this release {new:.0f} s (mean of the 3 quiet sweeps), the old one "
                  f"{before:.0f} s (mean of {', '.join(f'{w:.0f} s' for w in old_walls)}: before, between and after "
                  f"the pairs), ratio {new / before:.2f} (bar: <= 1.5)")
    return 0 if quiet and busy else 1


if __name__ == "__main__":
    sys.exit(main())

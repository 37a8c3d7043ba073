"""How far can one host be trusted between two measurements? The quickstart's variants (its ONNX models in a
kept cache, each at the three ORT levels) are confirmed the way the sweep confirms them (bursts round-robin,
those near the front longer, each round divided by its pace: confirm.paced), several times back to back in
one process. It prints, for each repetition, the machine's speed against the first (median over the variants
of their p50 ratio), Kendall tau between repetitions, and how far apart neighbouring variants are: a pair
closer than the noise cannot keep its order, whatever the method.

Then the question the front's 5% bar asks: cut the whole recording into confirmations of one, two and three
repetitions' length, level each (the sweep levels its confirmation by its first pass: here by the whole
recording), and count the pairs of confirmations in which a variant near the front lands more than 5% apart.
That is how long a confirmation this host needs for a front figure to repeat within 5%.

    .venv/bin/python benchmarks/host_drift.py --cache DIR [--rounds 19] [--repetitions 12]

DIR: a sweep's artifact cache holding the quickstart's models, e.g. a home kept by ranking_stability.py
(--keep K: K/sweep0/cache)."""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.ranking_stability import RATIO_BAR, kendall_tau  # noqa: E402
from yolobench.confirm import paced  # noqa: E402

LEVELS = ("disable", "basic", "all")
# The quickstart's usual neighbourhood of its front (confirm.near_front on its first passes), timed
# confirm_front_factor times longer, as the sweep times them.
NEAR_FRONT = ("int8-256-all", "fp16-256-all", "export-256-all")


def open_sessions(cache: Path) -> dict[str, tuple]:
    """One single-thread ORT session per model file and level, with a random input of the model's shape; a
    level whose optimised graph is byte for byte another level's is left out, as the confirmation times one
    graph once (confirm._open_group)."""
    import hashlib
    import tempfile

    import onnxruntime as ort

    by_name = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
               "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    sessions, graphs, rng = {}, set(), np.random.default_rng(0)
    for model in sorted(cache.glob("*/*/*.onnx")):
        for level in LEVELS:
            options = ort.SessionOptions()
            options.intra_op_num_threads = options.inter_op_num_threads = 1
            options.log_severity_level = 3  # not the warning that an `all` graph saved is this CPU's
            options.graph_optimization_level = by_name[level]
            with tempfile.TemporaryDirectory() as folder:
                options.optimized_model_filepath = str(Path(folder) / "optimised.onnx")
                session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
                graph = hashlib.sha256(Path(options.optimized_model_filepath).read_bytes()).hexdigest()
            if graph in graphs:
                continue
            graphs.add(graph)
            given = session.get_inputs()[0]
            shape = [d if isinstance(d, int) else 1 for d in given.shape]
            dtype = np.float16 if "float16" in given.type else np.float32
            sessions[f"{model.parent.parent.name}-{shape[-1]}-{level}"] = (
                session, given.name, rng.random(shape, dtype=np.float32).astype(dtype))
    return sessions


def burst(entry: tuple, runs: int) -> np.ndarray:
    """`runs` kept passes after one dropped (cache-cold after the other models), as retime.Retimer.burst."""
    session, name, image = entry
    times = []
    for _ in range(runs + 1):
        started = time.perf_counter()
        session.run(None, {name: image})
        times.append(time.perf_counter() - started)
    return np.asarray(times[1:]) * 1000.0


def confirmation_rounds(sessions: dict[str, tuple], rounds: int, runs: dict[str, int]) -> list[dict[str, np.ndarray]]:
    labels = list(sessions)
    return [{label: burst(sessions[label], runs[label]) for label in (labels if r % 2 == 0 else labels[::-1])}
            for r in range(rounds)]


def p50s(rounds_of: list[dict[str, np.ndarray]]) -> dict[str, float]:
    return {label: float(np.median(samples)) for label, samples in paced(rounds_of).items()}


def apart_by_length(rounds_of: list[dict[str, np.ndarray]], length: int, watched: list[str]) -> tuple[int, int, float]:
    """Confirmations of `length` rounds cut from the recording, each levelled against the whole recording:
    (pairs in which a watched variant lands more than the bar apart, pairs, the worst watched ratio)."""
    whole = p50s(rounds_of)
    figures = []
    for start in range(0, len(rounds_of) - length + 1, length):
        block = p50s(rounds_of[start:start + length])
        level = statistics.median(block[label] / whole[label] for label in block)
        figures.append({label: value / level for label, value in block.items()})
    ratios = [max(max(a[label], b[label]) / min(a[label], b[label]) for label in watched)
              for a, b in itertools.combinations(figures, 2)]
    return sum(r > 1 + RATIO_BAR for r in ratios), len(ratios), max(ratios, default=1.0)


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: must be 1 or more")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--rounds", type=positive, default=19, help="rounds of one confirmation (the quickstart's)")
    parser.add_argument("--repetitions", type=positive, default=12)
    parser.add_argument("--runs", type=positive, default=3, help="passes per burst (the quickstart's)")
    parser.add_argument("--front-factor", type=positive, default=3, help="bursts near the front are this many times as long")
    args = parser.parse_args(argv)
    if args.repetitions < 2:
        parser.error(f"argument --repetitions: {args.repetitions}: must be 2 or more, to compare them")
    sessions = open_sessions(args.cache)
    if len(sessions) < 2:
        raise SystemExit(f"no ONNX models under {args.cache}/<stage>/<key>/: give a sweep's artifact cache")
    runs = {label: args.runs * (args.front_factor if label in NEAR_FRONT else 1) for label in sessions}
    for entry in sessions.values():  # warm-up
        burst(entry, args.runs)
    recording, repetitions, began = [], [], time.monotonic()
    for index in range(args.repetitions):
        started = time.monotonic()
        recording += confirmation_rounds(sessions, args.rounds, runs)
        repetitions.append(p50s(recording[-args.rounds:]))
        speed = statistics.median(repetitions[-1][label] / repetitions[0][label] for label in sessions)
        print(f"repetition {index + 1}: {time.monotonic() - started:.0f} s, p50 against repetition 1: {speed:.3f}",
              flush=True)
    taus = [kendall_tau(a, b) for a, b in itertools.combinations(repetitions, 2)]
    spread = [max(r[label] for r in repetitions) / min(r[label] for r in repetitions) for label in sessions]
    print(f"{len(sessions)} variants; Kendall tau between repetitions: min {min(taus):.3f}, mean {np.mean(taus):.3f}; "
          f"a variant's p50 max/min over the repetitions: median {np.median(spread):.3f}, worst {max(spread):.3f}")
    # What no scalar level removes: how far the variants' ratios to one another move between two repetitions.
    shapes = []
    for a, b in itertools.combinations(repetitions, 2):
        moved = [b[label] / a[label] for label in sessions]
        shapes.append(max(moved) / min(moved))
    print(f"between two repetitions, the fastest-moving variant against the slowest-moving (1.000 = the host moved "
          f"every variant alike): median {np.median(shapes):.3f}, worst {max(shapes):.3f}")
    pooled = {label: float(np.median([r[label] for r in repetitions])) for label in sessions}
    ordered = sorted(pooled, key=pooled.get)
    gaps = [pooled[b] / pooled[a] for a, b in zip(ordered, ordered[1:])]
    print(f"neighbours (pooled p50, fastest first): {sum(g < 1.02 for g in gaps)} of {len(gaps)} adjacent pairs "
          f"within 2%: " + " ".join(f"{g:.3f}" for g in gaps))
    per_round = (time.monotonic() - began) / len(recording)
    watched = [label for label in NEAR_FRONT if label in sessions] or list(sessions)
    print(f"confirmations cut from the recording, levelled; pairs in which one of {', '.join(watched)} lands more "
          f"than {RATIO_BAR:.0%} apart:")
    for multiple in (1, 2, 3):
        apart, pairs, worst = apart_by_length(recording, multiple * args.rounds, watched)
        if pairs:
            print(f"  {multiple * args.rounds} rounds (~{multiple * args.rounds * per_round:.0f} s): {apart} of {pairs} pairs (worst ratio {worst:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

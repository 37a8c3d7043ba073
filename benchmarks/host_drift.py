"""How far can one host be trusted between two measurements? The quickstart's variants (its ONNX models in a
kept cache, each at the three ORT levels) are confirmed the way the sweep confirms them (single-pass bursts
round-robin, each round divided by its pace: confirm.paced), several times back to back in one process. It
prints, for each repetition, the machine's speed against the first (median over the variants of their p50
ratio), Kendall tau between repetitions, and how far apart neighbouring variants are: a pair closer than the
noise cannot keep its order, whatever the method.

    .venv/bin/python benchmarks/host_drift.py --cache DIR [--rounds 30] [--repetitions 4]

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

from benchmarks.ranking_stability import kendall_tau  # noqa: E402
from yolobench.confirm import paced  # noqa: E402

LEVELS = ("disable", "basic", "all")


def open_sessions(cache: Path) -> dict[str, tuple]:
    """One single-thread ORT session per model file and level, with a random input of the model's shape."""
    import onnxruntime as ort

    by_name = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
               "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    sessions, rng = {}, np.random.default_rng(0)
    for model in sorted(cache.glob("*/*/*.onnx")):
        for level in LEVELS:
            options = ort.SessionOptions()
            options.intra_op_num_threads = options.inter_op_num_threads = 1
            options.graph_optimization_level = by_name[level]
            session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
            given = session.get_inputs()[0]
            shape = [d if isinstance(d, int) else 1 for d in given.shape]
            dtype = np.float16 if "float16" in given.type else np.float32
            sessions[f"{model.parent.parent.name}-{shape[-1]}-{level}"] = (
                session, given.name, rng.random(shape, dtype=np.float32).astype(dtype))
    return sessions


def burst(entry: tuple) -> np.ndarray:
    """One kept pass after one dropped (cache-cold after the other models), as retime.Retimer.burst(1)."""
    session, name, image = entry
    times = []
    for _ in range(2):
        started = time.perf_counter()
        session.run(None, {name: image})
        times.append(time.perf_counter() - started)
    return np.asarray(times[1:]) * 1000.0


def confirmation(sessions: dict[str, tuple], rounds: int) -> dict[str, float]:
    labels = list(sessions)
    rounds_of = [{label: burst(sessions[label]) for label in (labels if r % 2 == 0 else labels[::-1])}
                 for r in range(rounds)]
    return {label: float(np.median(samples)) for label, samples in paced(rounds_of).items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--repetitions", type=int, default=4)
    args = parser.parse_args(argv)
    sessions = open_sessions(args.cache)
    if len(sessions) < 2:
        raise SystemExit(f"no ONNX models under {args.cache}/<stage>/<key>/: give a sweep's artifact cache")
    for entry in sessions.values():  # warm-up
        burst(entry)
    repetitions = []
    for index in range(args.repetitions):
        started = time.monotonic()
        repetitions.append(confirmation(sessions, args.rounds))
        speed = statistics.median(repetitions[-1][label] / repetitions[0][label] for label in sessions)
        print(f"repetition {index + 1}: {time.monotonic() - started:.0f} s, p50 against repetition 1: {speed:.3f}",
              flush=True)
    taus = [kendall_tau(a, b) for a, b in itertools.combinations(repetitions, 2)]
    spread = [max(r[label] for r in repetitions) / min(r[label] for r in repetitions) for label in sessions]
    print(f"{len(sessions)} variants; Kendall tau between repetitions: min {min(taus):.3f}, mean {np.mean(taus):.3f}; "
          f"a variant's p50 max/min over the repetitions: median {np.median(spread):.3f}, worst {max(spread):.3f}")
    pooled = {label: float(np.median([r[label] for r in repetitions])) for label in sessions}
    ordered = sorted(pooled, key=pooled.get)
    gaps = [pooled[b] / pooled[a] for a, b in zip(ordered, ordered[1:])]
    print(f"neighbours (pooled p50, fastest first): {sum(g < 1.02 for g in gaps)} of {len(gaps)} adjacent pairs "
          f"within 2%: " + " ".join(f"{g:.3f}" for g in gaps))
    return 0


if __name__ == "__main__":
    sys.exit(main())

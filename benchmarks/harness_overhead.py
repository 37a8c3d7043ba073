"""Harness overhead: yolobench's reported inference p50 (time_session, timed as a sweep times, resource
sampler on) against a bare `InferenceSession.run` loop, same ONNX, same ORT options, same process,
interleaved in many short rounds (ABBA order) so that load from other processes on a shared machine
hits both sides alike. Exits 1 if the ratio of the pooled p50s exceeds 1.05.

    .venv/bin/python benchmarks/harness_overhead.py [--home mlruns] [--imgsz 256] [--threads 1] [--rounds 30]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import bench_model  # noqa: E402
from yolobench.data.letterbox import to_input_tensor  # noqa: E402
from yolobench.measure.harness import time_session  # noqa: E402
from yolobench.measure.latency import LatencySettings  # noqa: E402
from yolobench.spec import MeasureSpec  # noqa: E402
from yolobench.measure.resources import ResourceSampler  # noqa: E402

LIMIT = 1.05
IMAGES = 8  # as the runner: distinct val images cycled through the timed loop


def bare_loop(session, input_name: str, tensors: list[np.ndarray], warmup: LatencySettings) -> np.ndarray:
    """The reference: nothing but session.run between two perf_counter calls (ms per run)."""
    for index in range(warmup.warmup_runs):
        session.run(None, {input_name: tensors[index % len(tensors)]})
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < warmup.min_runs or time.perf_counter() - started < warmup.min_seconds:
        tensor = tensors[len(times) % len(tensors)]
        before = time.perf_counter()
        session.run(None, {input_name: tensor})
        times.append(time.perf_counter() - before)
    return np.asarray(times) * 1000.0


def yolobench_session(onnx, cache, imgsz: int, ort_level: str, threads: int, work_dir: Path):
    """yolobench's side: the ONNX Runtime runtime as a sweep compiles (nothing, on the CPU provider) and opens it."""
    from yolobench.runtimes import DecodeSettings, get_runtime
    from yolobench.runtimes.options import OnnxRuntimeOptions

    runtime = get_runtime("onnxruntime")
    axes = runtime.info.resolve_axes({"scale": "n", "precision": "fp32", "imgsz": imgsz, "ort_level": ort_level,
                                      "threads": threads})
    options = OnnxRuntimeOptions(threads=threads)
    compiled = runtime.compile(onnx, axes, options, cache)
    return runtime.open(onnx, compiled, axes, options, DecodeSettings(), work_dir)


def bare_session(onnx_path: Path, ort_level: str, threads: int):
    """The reference side: an InferenceSession of its own with the same options."""
    import onnxruntime as ort

    from yolobench.runtimes.onnxruntime_runtime import graph_optimization_level

    options = ort.SessionOptions()
    options.graph_optimization_level = graph_optimization_level(ort_level)
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 0
    return ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=Path("mlruns"))
    parser.add_argument("--imgsz", type=int, default=256)
    parser.add_argument("--ort-level", default="all", choices=["disable", "basic", "extended", "all"])
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads, both sides (0: ORT's default)")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--runs", type=int, default=20, help="timed runs per side per round")
    parser.add_argument("--seconds", type=float, default=0.3, help="and at least this long per side per round")
    parser.add_argument("--verbose", action="store_true", help="print every round")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model = bench_model(args.home)
    onnx = model.onnx(args.imgsz)
    images = [cv2.imread(str(p)) for p in model.dataset.val_images[:IMAGES]]
    tensors = [to_input_tensor(image, args.imgsz)[0] for image in images]
    settings = LatencySettings(warmup_runs=3, warmup_seconds=0.0, min_runs=args.runs, min_seconds=args.seconds)
    # The sweep's own timed phase (time_session), with a CV threshold no round reaches: one attempt per round.
    measure = MeasureSpec(warmup_runs=3, warmup_seconds=0.0, min_runs=args.runs, min_seconds=args.seconds,
                          cv_threshold=1e9)
    work_dir = tempfile.TemporaryDirectory()
    session = yolobench_session(onnx, model.cache, args.imgsz, args.ort_level, args.threads, Path(work_dir.name))
    bare = bare_session(onnx.path, args.ort_level, args.threads)
    input_name = bare.get_inputs()[0].name

    harness_ms: list[np.ndarray] = []
    bare_ms: list[np.ndarray] = []
    round_ratios: list[float] = []
    print(f"model: {model.source}, ONNX at imgsz {args.imgsz}, ORT level {args.ort_level}, "
          f"threads {args.threads}, {args.rounds} rounds of >= {args.runs} runs and {args.seconds} s per side")
    for round_index in range(args.rounds):
        def harness() -> None:
            timing = time_session(session, images, args.imgsz, measure, sampler=ResourceSampler())
            harness_ms.append(timing.latency.result.inference_ms)

        def reference() -> None:
            bare_ms.append(bare_loop(bare, input_name, tensors, settings))

        for side in ((harness, reference) if round_index % 2 == 0 else (reference, harness)):  # ABBA order
            side()
        round_ratios.append(float(np.median(harness_ms[-1]) / np.median(bare_ms[-1])))
        if args.verbose:
            print(f"  round {round_index + 1}: yolobench p50 {np.median(harness_ms[-1]):.3f} ms  "
                  f"bare p50 {np.median(bare_ms[-1]):.3f} ms  ratio {round_ratios[-1]:.3f}")
    session.close()
    work_dir.cleanup()
    return report(harness_ms, bare_ms, round_ratios)


def report(harness_ms: list[np.ndarray], bare_ms: list[np.ndarray], round_ratios: list[float]) -> int:
    harness_p50 = float(np.median(np.concatenate(harness_ms)))
    bare_p50 = float(np.median(np.concatenate(bare_ms)))
    ratio = harness_p50 / bare_p50
    print(f"yolobench inference p50 {harness_p50:.3f} ms  (time_session as a sweep times, resource sampler on)")
    print(f"bare InferenceSession.run p50 {bare_p50:.3f} ms")
    low, middle, high = np.percentile(round_ratios, [25, 50, 75])
    print(f"per-round ratios: median {middle:.3f}, quartiles {low:.3f}..{high:.3f}  (spread = machine noise)")
    print(f"ratio {ratio:.3f}  (limit {LIMIT}: {'OK' if ratio <= LIMIT else 'FAIL'})")
    return 0 if ratio <= LIMIT else 1


if __name__ == "__main__":
    sys.exit(main())

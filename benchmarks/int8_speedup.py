"""Does int8 pay off on this CPU? Builds fp32, int8 (the default recipe) and fp16 of the quickstart's yolo11n at
imgsz 640 through yolobench's own cached stages, opens each on ONNX Runtime (CPU EP, level all) the way a sweep
does, times them interleaved (A, B, C, then B, C, A, ...) and scores each on the synthetic val split.

Prints the p50s, the int8 and fp16 speed-ups over fp32 and the mAP50-95 of each; exits 1 if int8 is not at least
1.3x faster than fp32 or loses more than 0.01 mAP50-95. fp16 is reported whatever it gives (on most CPUs it is
slower than fp32: the converter wraps ops without fp16 kernels in Casts).

    .venv/bin/python benchmarks/int8_speedup.py [--home mlruns] [--imgsz 640] [--rounds 30] [--runs 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python benchmarks/int8_speedup.py` from anywhere
    sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from yolobench.cache import Artifact, ArtifactCache  # noqa: E402
from yolobench.data.dataset import load_dataset  # noqa: E402
from yolobench.spec import load_spec  # noqa: E402

MIN_SPEEDUP = 1.3
MAX_MAP_DROP = 0.01
QUICKSTART = ROOT / "yolobench" / "targets" / "quickstart.yaml"


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build(home: Path, imgsz: int) -> tuple[Any, dict[str, Artifact], Any, ArtifactCache, Artifact]:
    """The quickstart's trained yolo11n (trained once, ~5 min, if not cached) and its fp32/int8/fp16 exports."""
    from yolobench.data.dataset import resolve_data_yaml
    from yolobench.stages.export import export_onnx
    from yolobench.stages.quantize import Int8Recipe, convert_fp16, quantize_int8
    from yolobench.stages.train import train_model
    from yolobench.stages.ultralytics_env import prepare_ultralytics

    spec = load_spec(QUICKSTART)
    prepare_ultralytics(home / "ultralytics")
    cache = ArtifactCache(home / "cache")
    data_yaml = resolve_data_yaml(spec.data, home)
    dataset = load_dataset(data_yaml)
    train = spec.model.train
    weights = train_model(cache, train.cfg.format(scale="n"), data_yaml, epochs=train.epochs, imgsz=train.imgsz,
                          batch=train.batch, seed=train.seed, progress=_log)  # fmt: skip
    fp32 = export_onnx(cache, weights, imgsz, spec.export)
    recipe = Int8Recipe()  # the default recipe is what this benchmark holds to its targets
    models = {
        "fp32": fp32,
        "int8": quantize_int8(cache, fp32, dataset.train_images, recipe),
        "fp16": convert_fp16(cache, fp32),
    }
    return spec, models, dataset, cache, weights


def interleaved_latency(sessions: dict[str, Any], images: list[np.ndarray], imgsz: int, rounds: int,
                        runs: int) -> dict[str, np.ndarray]:
    """Inference times (ms) per model, timed by yolobench's harness in short blocks, the order rotating each round
    so that a slow patch of a shared machine hits every model alike."""
    from yolobench.measure.latency import LatencySettings, measure_latency

    names = list(sessions)
    settings = LatencySettings(warmup_runs=1, warmup_seconds=0.0, min_runs=runs, min_seconds=0.0)
    times: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            result = measure_latency(sessions[name].infer, images, imgsz, settings)
            times[name].append(result.inference_ms)
    return {name: np.stack(blocks) for name, blocks in times.items()}  # (rounds, runs)


def spread(values: list[float]) -> str:
    """Median and interquartile range, e.g. 'median 1.71x, IQR 1.62-1.80x'."""
    low, median, high = np.percentile(values, [25, 50, 75])
    return f"median {median:.2f}x, IQR {low:.2f}-{high:.2f}x"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=ROOT / "mlruns", help="yolobench store holding the cache")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--level", default="all", choices=["disable", "basic", "extended", "all"])
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads; 0 = ORT's default")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per model per round (short: fine interleave)")
    return parser.parse_args(argv)


@dataclass
class Measured:
    info: dict[str, Any]  # the fp32 session's, as a sweep records it
    times: dict[str, np.ndarray]  # (rounds, runs) inference ms per model
    accuracy: dict[str, float]  # mAP50-95 per model
    facts: dict[str, Any]  # RunFacts per model: what ORT fused


def measure(args: argparse.Namespace, spec: Any, models: dict[str, Artifact], dataset: Any,
            cache: ArtifactCache) -> Measured:
    """Each model compiled, opened and described by the ONNX Runtime runtime as a sweep does, timed interleaved,
    then scored with the quickstart sweep's scoring settings (conf, NMS IoU, max_det, multi_label)."""
    from yolobench.measure.accuracy import evaluate
    from yolobench.runtimes import DecodeSettings, get_runtime
    from yolobench.runtimes.options import OnnxRuntimeOptions

    runtime = get_runtime("onnxruntime")
    options = OnnxRuntimeOptions(threads=args.threads)
    latency_images = [cv2.imread(str(p)) for p in dataset.val_images[:8]]
    with tempfile.TemporaryDirectory(prefix="int8-speedup-") as scratch:
        sessions, facts = {}, {}
        for name, artifact in models.items():
            axes = {"precision": name, "imgsz": args.imgsz, "ort_level": args.level}
            work_dir = Path(scratch) / name
            work_dir.mkdir()
            compiled = runtime.compile(artifact, axes, options, cache)
            sessions[name] = runtime.open(artifact, compiled, axes, options, DecodeSettings(), work_dir)
            facts[name] = runtime.facts(sessions[name], artifact, compiled, axes)
        _log(f"timing {', '.join(sessions)}: {args.rounds} interleaved rounds x {args.runs} runs ...")
        times = interleaved_latency(sessions, latency_images, args.imgsz, args.rounds, args.runs)
        _log(f"scoring on {len(dataset.val_images)} val images ...")
        scoring = spec.measure
        accuracy = {
            name: evaluate(session.infer, dataset.val_images, dataset.names, args.imgsz, conf=scoring.conf,
                           iou=scoring.iou, max_det=scoring.max_det, multi_label=scoring.multi_label).map50_95
            for name, session in sessions.items()
        }  # fmt: skip
        info = sessions["fp32"].info()
        for session in sessions.values():
            session.close()
    return Measured(info, times, accuracy, facts)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    spec, models, dataset, cache, weights = build(args.home.resolve(), args.imgsz)
    measured = measure(args, spec, models, dataset, cache)
    print(f"model: yolo11n trained by the quickstart ({weights.manifest.get('epochs')} epochs at imgsz "
          f"{weights.manifest.get('imgsz')}, synthetic shapes), measured at imgsz {args.imgsz}")
    print(f"runtime: onnxruntime {measured.info['providers']}, level {args.level}, intra-op threads "
          f"{measured.info['threads']}; {args.rounds} interleaved rounds x {args.runs} runs per model")
    describe_graphs(models, measured.facts, args.level)
    return verdict(measured.times, measured.accuracy)


def describe_graphs(models: dict[str, Artifact], facts: dict[str, Any], level: str) -> None:
    """The int8 recipe and what ORT made of the int8 and fp16 graphs."""
    from yolobench.tracking import INT8_UNFUSED_TAG

    int8_params, int8_tags = facts["int8"].params, facts["int8"].tags
    fp16_manifest = models["fp16"].manifest
    print("int8 recipe (default): " + ", ".join(f"{k}={v}" for k, v in models["int8"].manifest["recipe"].items()))
    print(f"int8 graph as ORT runs it: {int8_params.get('ort_integer_kernels')} integer kernels "
          f"({int8_params.get('ort_qlinear_conv')} QLinearConv), {int8_params.get('ort_quantize_linear')} QuantizeLinear "
          f"and {int8_params.get('ort_dequantize_linear')} DequantizeLinear left; "
          f"{INT8_UNFUSED_TAG}={int8_tags.get(INT8_UNFUSED_TAG)}")
    print(f"fp16 graph: the converter inserted {fp16_manifest.get('casts_inserted')} Cast nodes "
          f"({fp16_manifest.get('casts_inserted_inside')} inside the graph), ONNX Runtime's CPU EP "
          f"{fp16_manifest.get('casts_inserted_by_ort_cpu')} more when it loads it (around ops it has no fp16 kernel for); "
          f"{facts['fp16'].params.get('ort_cast_nodes')} Casts left at level {level}; ops ORT runs in fp32 "
          f"between Casts: {fp16_manifest.get('ort_cpu_ops_run_in_fp32')}")


def verdict(times: dict[str, np.ndarray], accuracy: dict[str, float]) -> int:
    """Speed-ups and mAP changes against fp32; 1 if int8 misses its targets."""
    p50 = {name: float(np.percentile(block, 50)) for name, block in times.items()}
    round_ratio = {name: [float(np.median(f) / np.median(x)) for f, x in zip(times["fp32"], block)]
                   for name, block in times.items()}  # fmt: skip
    int8_speedup, fp16_speedup = p50["fp32"] / p50["int8"], p50["fp32"] / p50["fp16"]
    drop = accuracy["fp32"] - accuracy["int8"]
    for name in ("fp32", "int8", "fp16"):
        print(f"{name} p50 {p50[name]:8.2f} ms   mAP50-95 {accuracy[name]:.4f}")
    print(f"int8 speed-up vs fp32: {int8_speedup:.2f}x (p50 ratio; per-round ratios {spread(round_ratio['int8'])}; "
          f"target >= {MIN_SPEEDUP}x)")
    print(f"int8 mAP50-95 drop: {drop:+.4f} ({accuracy['fp32']:.4f} -> {accuracy['int8']:.4f}; target <= {MAX_MAP_DROP})")
    low, high = np.percentile(round_ratio["fp16"], [25, 75])
    fp16_is = "slower than" if high < 1 else "faster than" if low > 1 else "no faster than (within the noise of)"
    print(f"fp16 speed-up vs fp32: {fp16_speedup:.2f}x (per-round ratios {spread(round_ratio['fp16'])}): "
          f"fp16 is {fp16_is} fp32 on this CPU; "
          f"mAP50-95 change {accuracy['fp16'] - accuracy['fp32']:+.4f}")
    failures = []
    if int8_speedup < MIN_SPEEDUP:
        failures.append(f"int8 speed-up {int8_speedup:.2f}x < {MIN_SPEEDUP}x")
    if drop > MAX_MAP_DROP:
        failures.append(f"int8 mAP50-95 drop {drop:.4f} > {MAX_MAP_DROP}")
    print("RESULT: " + ("PASS" if not failures else "FAIL: " + "; ".join(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

"""GPU check: run yolobench's GPU runtimes on prebuilt ONNX files (scripts/make_gpu_check_models.py) and
print one table: ONNX Runtime CUDA EP on fp32/fp16/int8 at three graph optimisation levels, and TensorRT
engines (fp16 and int8, builder optimisation level 3 and 5, sparsity off and on). Needs numpy and the
runtimes only (no torch, no pydantic); each part that cannot run says why in one line and the rest goes on.

    python scripts/gpu_check.py MODELS_DIR [--runs 30] [--warmup 5] [--budget-s 420] [--cache DIR]

Normally started by scripts/gpu_check.sh, which installs the runtimes first. Columns: p50 GPU compute ms is
the engine alone (CUDA events for TensorRT; ORT's IO-binding run, host clock, for ORT); p50 e2e ms is the
whole infer() call as the latency harness sees it: copy in + compute + copy out to host numpy; build s is a
TensorRT engine's recorded build time (ORT rows note their session creation time instead).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

PRECISIONS = ("fp32", "fp16", "int8")
ORT_LEVELS = ("disable", "basic", "all")
# Most informative first, so a tight time budget cuts the least useful builds.
TRT_VARIANTS = [("fp16", 3, False), ("int8", 3, False), ("fp16", 5, False), ("fp16", 3, True),
                ("int8", 5, False), ("int8", 3, True), ("fp16", 5, True), ("int8", 5, True)]  # fmt: skip
TRT_BUILD_ESTIMATE_S = {3: 30.0, 5: 60.0}  # first builds of a small model; later ones reuse the timing cache


@dataclass
class Row:
    variant: str
    compute_ms: float | None = None
    e2e_ms: float | None = None
    build_s: float | None = None
    notes: str = ""


def say(line: str = "") -> None:
    print(line, flush=True)


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:300] if text else ''}"


def version_of(module: str) -> str:
    try:
        imported = __import__(module)
        return str(getattr(imported, "__version__", "?"))
    except Exception as error:  # any import failure is a line in the header, not a crash
        return f"missing ({first_line(error)})"


def load_models(models_dir: Path) -> tuple[dict[str, Path], dict[str, Any]]:
    description_path = models_dir / "models.json"
    description = json.loads(description_path.read_text()) if description_path.is_file() else {"files": {}}
    files: dict[str, Path] = {}
    for precision in PRECISIONS:
        entry = description.get("files", {}).get(precision, {"file": f"model_{precision}.onnx"})
        path = models_dir / entry["file"]
        if not path.is_file():
            say(f"models: {precision}: {path} is missing; its variants are skipped")
            continue
        if entry.get("sha256") and hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
            say(f"models: {precision}: {path.name} does not match models.json's sha256; skipped")
            continue
        files[precision] = path
    return files, description


def reference_outputs(files: dict[str, Path], tensor: np.ndarray) -> dict[str, np.ndarray]:
    """Each file run on ONNX Runtime's CPU EP with no graph optimisation: what the GPU outputs are compared to."""
    try:
        import onnxruntime as ort
    except Exception as error:
        say(f"reference: no onnxruntime ({first_line(error)}); outputs are not compared")
        return {}
    outputs = {}
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    for precision, path in files.items():
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            outputs[precision] = session.run(None, {session.get_inputs()[0].name: tensor})[0]
        except Exception as error:
            say(f"reference: {precision}: {first_line(error)}")
    return outputs


def relative_error(output: np.ndarray, reference: np.ndarray | None) -> str:
    if reference is None:
        return "no reference"
    if output.shape != reference.shape:
        return f"shape {output.shape} != reference {reference.shape}"
    if not np.all(np.isfinite(output)):
        return "NON-FINITE output"
    error = float(np.linalg.norm(output.astype(np.float64) - reference) / max(np.linalg.norm(reference), 1e-12))
    return f"rel.err vs CPU {error:.1e}"


def time_session(session: Any, tensor: np.ndarray, warmup: int, runs: int) -> tuple[float | None, float, np.ndarray]:
    """Warm up, then time `runs` infer() calls; p50 of the session's compute phase and of the whole call."""
    output = session.infer(tensor)
    for _ in range(warmup):
        session.infer(tensor)
    timings = session.phase_timings  # a SessionBase: None where the session cannot split a call
    before = len(timings) if timings is not None else 0
    wall = []
    for _ in range(runs):
        started = time.perf_counter()
        session.infer(tensor)
        wall.append((time.perf_counter() - started) * 1e3)
    compute = None
    if timings is not None:
        compute = timings.metrics(before, runs).get("gpu_compute_ms_p50")
    return compute, float(np.percentile(wall, 50)), output


def check_cuda_python() -> Row:
    """The device-buffer code TensorRT sessions use: a pinned round trip of 4 MB, and the copy rate."""
    row = Row("cuda-python buffers (round trip 4 MB)")
    try:
        from yolobench.gpu import Cuda

        cuda = Cuda()
        stream, start, middle, end = cuda.stream(), cuda.event(), cuda.event(), cuda.event()
        host_in_pointer, host_in = cuda.pinned_array((1024, 1024), np.float32)
        host_out_pointer, host_out = cuda.pinned_array((1024, 1024), np.float32)
        host_in[...] = np.random.default_rng(0).random(host_in.shape, np.float32)
        host_out[...] = -1
        device = cuda.malloc(host_in.nbytes)
        try:
            cuda.record(start, stream)
            cuda.to_device_async(device, host_in, stream)
            cuda.record(middle, stream)
            cuda.to_host_async(host_out, device, stream)
            cuda.record(end, stream)
            cuda.synchronize(stream)
            ok = np.array_equal(host_in, host_out)
            h2d, d2h = cuda.elapsed_ms(start, middle), cuda.elapsed_ms(middle, end)
            gb = host_in.nbytes / 1e9
            row.e2e_ms = h2d + d2h
            row.notes = (f"{'OK' if ok else 'MISMATCH'}; H2D {gb / (h2d / 1e3):.1f} GB/s, D2H {gb / (d2h / 1e3):.1f} GB/s "
                         "(first copy, cold)")
        finally:
            cuda.free(device)
            cuda.free_pinned(host_in_pointer)
            cuda.free_pinned(host_out_pointer)
    except Exception as error:
        row.notes = f"SKIPPED: {first_line(error)}"
    return row


def ort_rows(files: dict[str, Path], tensor: np.ndarray, references: dict[str, np.ndarray], args: argparse.Namespace,
             work_dir: Path, deadline: float) -> list[Row]:
    try:
        import onnxruntime as ort

        from yolobench.runtimes.onnxruntime_runtime import open_ort_session
    except Exception as error:
        return [Row("ORT CUDA EP", notes=f"SKIPPED: onnxruntime not importable: {first_line(error)}")]
    available = ort.get_available_providers()
    if args.ort_provider == "cuda" and "CUDAExecutionProvider" not in available:
        return [Row("ORT CUDA EP", notes=f"SKIPPED: onnxruntime {ort.__version__} has no CUDA EP (providers: "
                                         f"{', '.join(available)}); install onnxruntime-gpu")]  # fmt: skip
    rows = []
    plan = [(args.ort_provider, precision, level) for precision in PRECISIONS for level in ORT_LEVELS]
    if args.ort_provider == "cuda" and "TensorrtExecutionProvider" in available:
        plan.append(("tensorrt", "fp16", "all"))
    names = {"cuda": "CUDA", "tensorrt": "TensorRT", "cpu": "CPU (host-bound)"}
    for provider, precision, level in plan:
        label = f"ORT {names[provider]} EP {precision} level={level}"
        if precision not in files:
            continue
        if time.monotonic() > deadline - 10:
            rows.append(Row(label, notes="SKIPPED: time budget spent"))
            continue
        row = Row(label)
        session = None
        try:
            session = open_ort_session(
                files[precision], provider=provider, level=level, precision=precision, work_dir=work_dir,
                cache_root=Path(args.cache), io_binding=True,
            )
            row.compute_ms, row.e2e_ms, output = time_session(session, tensor, args.warmup, args.runs)
            info = session.info()
            # Session creation is not a build (except the TensorRT EP's engines, built inside it): a note.
            row.notes = (f"{relative_error(output, references.get(precision))}; providers {info['providers']}; "
                         f"session open {info['session_open_s']:.2f} s")
        except Exception as error:
            row.notes = f"FAILED: {first_line(error)}"
        finally:
            if session is not None:
                session.close()
        say(format_row(row))
        rows.append(row)
    return rows


def tensorrt_rows(files: dict[str, Path], description: dict[str, Any], tensor: np.ndarray,
                  references: dict[str, np.ndarray], args: argparse.Namespace, deadline: float) -> list[Row]:
    try:
        from yolobench.cache import Artifact, ArtifactCache
        from yolobench.gpu import gpu_identity
        from yolobench.runtimes.tensorrt_runtime import TensorRTSession
        from yolobench.stages.tensorrt import EngineSettings, build_engine, import_tensorrt

        trt = import_tensorrt()
        gpu = gpu_identity()
    except Exception as error:
        return [Row("TensorRT", notes=f"SKIPPED: {first_line(error)}")]
    say(f"TensorRT {trt.__version__} on {gpu.name} (compute capability {gpu.compute_capability})")
    cache = ArtifactCache(Path(args.cache))
    rows = []
    for precision, level, sparsity in TRT_VARIANTS:
        label = f"TensorRT {precision} opt_level={level} sparsity={'on' if sparsity else 'off'}"
        if precision not in files:
            continue
        remaining = deadline - time.monotonic()
        if remaining < TRT_BUILD_ESTIMATE_S[level]:
            rows.append(Row(label, notes=f"SKIPPED: time budget ({remaining:.0f} s left)"))
            say(format_row(rows[-1]))
            continue
        row = Row(label)
        session = None
        try:
            path = files[precision]
            entry = description.get("files", {}).get(precision, {})
            manifest = {**entry.get("manifest", {}), "precision": precision}
            key = (entry.get("sha256") or hashlib.sha256(path.read_bytes()).hexdigest())[:20]
            model = Artifact(key=key, stage=precision, path=path, manifest=manifest)
            builds_before = cache.builds["tensorrt"]
            engine = build_engine(cache, model, EngineSettings(precision, level, sparsity, args.workspace_mb),
                                  trt=trt, gpu=gpu)  # fmt: skip
            from_cache = cache.builds["tensorrt"] == builds_before
            row.build_s = float(engine.manifest.get("build_s", 0.0))
            session = TensorRTSession(engine.path.read_bytes(), trt=trt, engine_manifest=engine.manifest)
            row.compute_ms, row.e2e_ms, output = time_session(session, tensor, args.warmup, args.runs)
            row.notes = "; ".join(filter(None, [
                relative_error(output, references.get(precision)),
                f"{engine.manifest['typing']} typing, flags {'+'.join(engine.manifest['builder_flags']) or 'none'}",
                sparsity_note(engine.manifest.get("sparsity", {})) if sparsity else "",
                f"timing cache {'reused' if engine.manifest['timing_cache']['loaded_bytes'] else 'new'}",
                "engine from the cache (build s is its recorded build)" if from_cache else "",
            ]))  # fmt: skip
        except Exception as error:
            row.notes = f"FAILED: {first_line(error)}"
            if args.verbose:
                traceback.print_exc()
        finally:
            if session is not None:
                session.close()
        say(format_row(row))
        rows.append(row)
    return rows


def sparsity_note(sparsity: dict[str, Any]) -> str:
    weights = sparsity.get("onnx_weights", {})
    eligible = sparsity.get("builder_eligible_layers")
    picked = sparsity.get("builder_sparse_layers")
    parts = [f"2:4-sparse conv weights {weights.get('two_four_sparse_layers', '?')}/{weights.get('dense_conv_layers', '?')}"]
    parts.append("builder: " + ("no sparsity report" if eligible is None and picked is None else
                                f"{len(eligible or [])} eligible, {len(picked or [])} sparse"))  # fmt: skip
    return ", ".join(parts)


def format_number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


COLUMNS = (("variant", 44), ("p50 GPU compute ms", 18), ("p50 e2e ms", 10), ("build s", 7))
HEADER = "| " + " | ".join(name.ljust(width) for name, width in COLUMNS) + " | notes |"
RULE = "|" + "|".join("-" * (width + 2) for _, width in COLUMNS) + "|-------|"


def format_row(row: Row) -> str:
    cells = [row.variant.ljust(COLUMNS[0][1]), format_number(row.compute_ms).rjust(COLUMNS[1][1]),
             format_number(row.e2e_ms).rjust(COLUMNS[2][1]), format_number(row.build_s, 1).rjust(COLUMNS[3][1])]
    return "| " + " | ".join(cells) + f" | {row.notes} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models_dir", type=Path)
    parser.add_argument("--runs", type=int, default=30, help="timed inferences per variant")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--budget-s", type=float, default=420.0, help="stop starting new variants after this long")
    parser.add_argument("--cache", default=None, help="artifact cache for engines and timing caches (default: a temp dir)")
    parser.add_argument("--workspace-mb", type=int, default=1024)
    parser.add_argument("--skip-ort", action="store_true")
    parser.add_argument("--ort-provider", choices=("cuda", "cpu"), default="cuda",
                        help="cpu: run the ORT part on the CPU EP (to try this script on a machine without a GPU)")
    parser.add_argument("--skip-tensorrt", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    started = time.monotonic()
    deadline = started + args.budget_s
    work_dir = Path(tempfile.mkdtemp(prefix="yolobench-gpu-check-"))
    args.cache = args.cache or str(work_dir / "cache")

    say(f"== yolobench GPU check: python {platform.python_version()}, numpy {np.__version__}, "
        f"onnxruntime {version_of('onnxruntime')}, tensorrt {version_of('tensorrt')}")  # fmt: skip
    try:
        from yolobench.gpu import gpu_identity

        gpu = gpu_identity()
        say(f"GPU: {gpu.name}, compute capability {gpu.compute_capability}, {gpu.memory_mb} MiB, driver CUDA {gpu.driver}")
    except Exception as error:
        say(f"GPU: none usable ({first_line(error)})")

    files, description = load_models(args.models_dir)
    imgsz = int(description.get("imgsz") or 320)
    say(f"models: {description.get('model', '?')}, imgsz {imgsz}: "
        + (", ".join(f"{p} {files[p].stat().st_size / 2**20:.1f} MB" for p in files) or "none found"))
    tensor = np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32)  # image-like, never zeros
    references = reference_outputs(files, tensor) if files else {}

    say(HEADER)
    rows = [check_cuda_python()]
    say(format_row(rows[0]))
    if not files:
        rows.append(Row("models", notes=f"SKIPPED: no ONNX files in {args.models_dir}"))
    if files and not args.skip_ort:
        rows += ort_rows(files, tensor, references, args, work_dir, deadline)
    if files and not args.skip_tensorrt:
        rows += tensorrt_rows(files, description, tensor, references, args, deadline)

    say()
    say(f"== summary ({time.monotonic() - started:.0f} s; {args.runs} timed runs after {args.warmup} warm-up each)")
    say(HEADER)
    say(RULE)
    for row in rows:
        say(format_row(row))
    if args.json:
        args.json.write_text(json.dumps([row.__dict__ for row in rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Repeatability: one variant measured by three separate `yolobench sweep` processes, each on a fresh
store (they share only the artifact cache, so the model is the same file); prints each p50 and the
spread max/min. Target <= 1.05 on a quiet machine; what a shared one gives is what it prints.

    .venv/bin/python benchmarks/repeatability.py [--home mlruns] [--imgsz 256] [--sweeps 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import BENCH_DATA, BENCH_TRAIN, ROOT, BenchModel, bench_model  # noqa: E402

TARGET = 1.05


def sweep_file(model: BenchModel, imgsz: int, threads: int, profile: str) -> dict:
    """A one-variant sweep whose model and data are the ones `model` was trained from (so it is a cache hit)."""
    if model.source == "quickstart":
        quickstart = yaml.safe_load((ROOT / "yolobench" / "targets" / "quickstart.yaml").read_text())
        model_section, data_section = quickstart["model"], quickstart["data"]
    else:
        model_section = {"train": {"cfg": "yolo11{scale}.yaml", **BENCH_TRAIN}}
        data_section = {"synthetic": dict(BENCH_DATA)}
    variant = {"scale": "n", "precision": "fp32", "imgsz": imgsz, "ort_level": "all"}
    return {
        "name": "repeatability",
        "target": "this machine's CPU",
        "runtime": {"name": "onnxruntime", "provider": "cpu", "threads": threads},
        "model": model_section,
        "data": {**data_section, "val_images": 8},  # accuracy is not what this benchmark is about
        "axes": {name: [value] for name, value in variant.items()},
        "baseline": variant,
        "measure": {"profile": profile},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=Path("mlruns"), help="store whose cache holds the model")
    parser.add_argument("--imgsz", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--profile", default="quick", choices=["quick", "rigorous"])
    parser.add_argument("--sweeps", type=int, default=3)
    args = parser.parse_args(argv)

    import mlflow

    from yolobench.tracking import UNSTABLE_TAG, default_tracking_uri

    model = bench_model(args.home)
    model.onnx(args.imgsz)  # built once here, so no sweep pays for the export
    shared_cache = (args.home / "cache").resolve()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    rows = []
    with tempfile.TemporaryDirectory(prefix="yolobench-repeat-") as folder:
        spec_path = Path(folder) / "repeatability.yaml"
        spec_path.write_text(yaml.safe_dump(sweep_file(model, args.imgsz, args.threads, args.profile)))
        for index in range(1, args.sweeps + 1):
            home = Path(folder) / f"home-{index}"
            home.mkdir()
            (home / "cache").symlink_to(shared_cache, target_is_directory=True)
            command = [sys.executable, "-m", "yolobench.cli", "sweep", str(spec_path), "--home", str(home)]
            done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
            if done.returncode != 0:
                print(done.stdout[-3000:], done.stderr[-3000:], sep="\n", file=sys.stderr)
                return 2
            client = mlflow.MlflowClient(default_tracking_uri(home))
            experiment = client.get_experiment_by_name("repeatability")
            (run,) = [r for r in client.search_runs([experiment.experiment_id]) if "mlflow.parentRunId" in r.data.tags]
            metrics = run.data.metrics
            rows.append((metrics["latency_ms_p50"], metrics["latency_cv"], metrics.get("latency_attempts", 1),
                         run.data.tags.get(UNSTABLE_TAG, "?"), metrics.get("sys_cpu_percent_mean", float("nan"))))
            print(f"sweep {index}: p50 {rows[-1][0]:.3f} ms  cv {rows[-1][1]:.3f}  attempts {rows[-1][2]:.0f}  "
                  f"unstable {rows[-1][3]}  host CPU busy {rows[-1][4]:.0f}%", flush=True)
    p50s = [row[0] for row in rows]
    spread = max(p50s) / min(p50s)
    print(f"model: {model.source}, imgsz {args.imgsz}, threads {args.threads}, profile {args.profile}")
    print(f"p50s (ms): {', '.join(f'{p:.3f}' for p in p50s)}")
    print(f"spread max/min {spread:.3f}  (target {TARGET}: {'met' if spread <= TARGET else 'not met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

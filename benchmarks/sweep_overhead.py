"""Per-variant harness overhead of a long sweep: a grid of 2,000 variants on a stub runtime (registered like any
runtime; its inference is instant, its builder writes a tiny file), on SQLite and on PostgreSQL (a throwaway
server on loopback, tests/postgres.py). A variant's overhead is the wall time of one loop step (from the previous
trial's tell to this one's: front update, study state, ask, build, open, measure, log, tell) less the time spent
inside the timed inference (time_session) and the accuracy evaluation (evaluate). Prints the median overhead of
the first and the last 100 variants per store; exits 1 if the last 100's exceed LIMIT times the first 100's.

    .venv/bin/python benchmarks/sweep_overhead.py [--variants 2000] [--stores sqlite,postgresql] [--home DIR]
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python benchmarks/sweep_overhead.py` from anywhere
    sys.path.insert(0, str(ROOT))

from yolobench.build import Built, model_name  # noqa: E402
from yolobench.cache import Artifact, ArtifactCache, BuildOutput  # noqa: E402
from yolobench.runtimes import (  # noqa: E402
    Availability, AxisInfo, DecodeSettings, Runtime, RuntimeInfo, SessionBase, register,
)
from yolobench.space import Variant  # noqa: E402

LIMIT = 1.2  # the last 100 variants' median overhead against the first 100's
WINDOW = 100
NUM_CLASSES = 1
BUILD_SIZES = (32, 64, 96, 128, 160)  # imgsz x precision: 10 builds shared by the stub's knob values

STUB_INFO = RuntimeInfo(
    name="stub",
    axes=(AxisInfo("stub_knob", default=0, kind=int, minimum=0, label="k{value}"),),
    options_model="yolobench.runtimes.options:RuntimeOptions",
    implementation="benchmarks.sweep_overhead:StubRuntime",
    summary="an instant runtime for measuring the harness's own overhead",
)


class StubSession(SessionBase):
    def __init__(self, imgsz: int) -> None:
        anchors = sum((imgsz // stride) ** 2 for stride in (8, 16, 32))
        self.output = np.zeros((1, 4 + NUM_CLASSES, anchors), np.float32)

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        return self.output

    def info(self) -> dict[str, Any]:
        return {"providers": "stub", "threads": 1}


class StubRuntime(Runtime):
    info = STUB_INFO

    def availability(self) -> Availability:
        return Availability(True, "a stub runs anywhere")

    def open(self, model: Artifact, compiled: Artifact | None, axes: Mapping[str, Any], options: Any,
             decode: DecodeSettings, work_dir: Path) -> SessionBase:
        return StubSession(int(axes["imgsz"]))


register(STUB_INFO, StubRuntime)


@dataclass
class StubBuilder:
    """One tiny file per build (precision x imgsz) in the real cache, as the export stage would write."""

    spec: Any
    cache: ArtifactCache

    def describe(self, variant: Variant) -> str:
        return model_name(self.spec, variant)

    def check(self, variants: Any) -> None:
        return None

    def build(self, variant: Variant) -> Built:
        def write(work_dir: Path) -> BuildOutput:
            (work_dir / "model.onnx").write_bytes(b"stub model " + variant.label.encode())
            return BuildOutput("model.onnx", {"params": 1, "gflops": 0.0, "applied_by_default": []})

        config = {k: v for k, v in variant.as_dict().items() if k not in STUB_INFO.axis_names}
        artifact = self.cache.get_or_build("export", config, None, {}, write)
        return Built(artifact, self.cache.lineage(artifact), self.describe(variant), "built")


def stub_sweep_file(variants: int) -> dict[str, Any]:
    knobs = -(-variants // (2 * len(BUILD_SIZES)))
    return {
        "name": f"overhead-{variants}", "target": "benchmark", "runtime": {"name": "stub"},
        "model": {"train": {"epochs": 1, "imgsz": 64}},
        "data": {"synthetic": {"train_images": 1, "val_images": 1, "image_size": 64, "seed": 0}},
        "axes": {"scale": ["n"], "precision": ["fp32", "fp16"], "imgsz": list(BUILD_SIZES),
                 "stub_knob": list(range(knobs))},
        "baseline": {"scale": "n", "precision": "fp32", "imgsz": BUILD_SIZES[-1], "stub_knob": 0},
        "measure": {"warmup_runs": 0, "warmup_seconds": 0.0, "min_runs": 2, "min_seconds": 0.0, "foreign_limit": 1e9,
                    "reference_every": 0, "reference_minutes": 0, "confirm": False},
    }


@dataclass
class StepClock:
    """Wall and CPU timestamps of every tell, and the time spent inside timed inference and evaluation between
    two tells (the CPU figure is the process's, threads included: what other processes do to the machine moves
    it far less than the wall time)."""

    tells: list[tuple[float, float]] = field(default_factory=list)  # (wall, cpu) at each tell
    inside: list[tuple[float, float]] = field(default_factory=list)  # per step: (wall, cpu) in time_session + evaluate
    _inside: tuple[float, float] = (0.0, 0.0)

    def timed(self, function: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                self._inside = (self._inside[0] + time.perf_counter() - wall,
                                self._inside[1] + time.process_time() - cpu)
        return wrapper

    def told(self, function: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            result = function(*args, **kwargs)
            self.tells.append((time.perf_counter(), time.process_time()))
            self.inside.append(self._inside)
            self._inside = (0.0, 0.0)
            return result
        return wrapper

    def overheads_ms(self, clock: int = 0) -> np.ndarray:
        """One figure per step after the first: its wall (clock 0) or CPU (clock 1) time less what the runtime's
        timed inference and the evaluation took of it."""
        steps = np.diff(np.asarray([tell[clock] for tell in self.tells]))
        return (steps - np.asarray([inside[clock] for inside in self.inside[1:]])) * 1000.0


@contextmanager
def clocked() -> Iterator[StepClock]:
    """Wrap the runner's tell and the harness's timed inference and evaluation with the clock's timestamps."""
    from yolobench import runner
    from yolobench.measure import harness

    clock = StepClock()
    saved = runner.close_trial, harness.time_session, harness.evaluate
    runner.close_trial = clock.told(saved[0])
    harness.time_session, harness.evaluate = clock.timed(saved[1]), clock.timed(saved[2])
    try:
        yield clock
    finally:
        runner.close_trial, harness.time_session, harness.evaluate = saved


@dataclass(frozen=True)
class Figures:
    store: str
    variants: int
    first_ms: float  # median wall overhead of the first WINDOW variants
    last_ms: float
    first_cpu_ms: float
    last_cpu_ms: float
    loop_s: float  # from the first tell to the last
    wall_s: float  # the whole sweep, its start and end (reports, descriptions) included

    @property
    def ratio(self) -> float:
        return self.last_ms / self.first_ms

    @property
    def cpu_ratio(self) -> float:
        return self.last_cpu_ms / self.first_cpu_ms


def run_stub_sweep(home: Path, variants: int, storage: str | None = None, tracking_uri: str | None = None,
                   store: str = "sqlite") -> Figures:
    """Sweep the stub grid of `variants` under `home` (stores: SQLite there unless given) and time its steps."""
    from yolobench import tracking
    from yolobench.runner import Sweep, SweepSettings
    from yolobench.spec import parse_spec

    spec = parse_spec(stub_sweep_file(variants))
    if tracking_uri is not None:  # a database store: the experiment's artifacts still go under home
        tracker = tracking.Tracker(tracking_uri)
        if tracker.existing_experiment_id(spec.name) is None:
            tracker._client.create_experiment(spec.name, artifact_location=(home / "artifacts").resolve().as_uri())
    settings = SweepSettings(home=home, storage=storage, tracking_uri=tracking_uri)
    sweep = Sweep(spec, settings, runtime=StubRuntime(), stream=io.StringIO())
    sweep.builder = StubBuilder(spec, sweep.cache)
    started = time.perf_counter()
    with clocked() as clock:
        summary = sweep.run()
    wall = time.perf_counter() - started
    if summary.measured != sweep.space.count():
        raise RuntimeError(f"{summary.measured} of {sweep.space.count()} variants measured")
    wall_ms, cpu_ms = clock.overheads_ms(0), clock.overheads_ms(1)
    return Figures(store, summary.measured, float(np.median(wall_ms[:WINDOW])), float(np.median(wall_ms[-WINDOW:])),
                   float(np.median(cpu_ms[:WINDOW])), float(np.median(cpu_ms[-WINDOW:])),
                   clock.tells[-1][0] - clock.tells[0][0], wall)


def second_database(url: str, name: str) -> str:
    """A database of its own beside `url`'s on the same server: MLflow's tables and Optuna's both have an
    alembic_version, so the two stores cannot share one database."""
    import psycopg2

    base, _, _ = url.rpartition("/")
    connection = psycopg2.connect(url.replace("postgresql+psycopg2://", "postgresql://"))
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    connection.close()
    return f"{base}/{name}"


def format_table(rows: list[Figures]) -> str:
    header = ("store", "variants", "first 100 ms", "last 100 ms", "ratio", "CPU first", "CPU last", "CPU ratio",
              "loop s", "total s")
    lines = ["  ".join(f"{h:>12}" if i else f"{h:<10}" for i, h in enumerate(header))]
    for row in rows:
        cells = (row.variants, f"{row.first_ms:.1f}", f"{row.last_ms:.1f}", f"{row.ratio:.2f}",
                 f"{row.first_cpu_ms:.1f}", f"{row.last_cpu_ms:.1f}", f"{row.cpu_ratio:.2f}", f"{row.loop_s:.0f}",
                 f"{row.wall_s:.0f}")
        lines.append("  ".join([f"{row.store:<10}", *(f"{cell:>12}" for cell in cells)]))
    return "\n".join(lines)


def default_home(stack: ExitStack) -> Path:
    """A temporary folder in memory where there is one (/dev/shm): what is timed is the harness, not how busy
    this machine's disk is with other work."""
    shm = Path("/dev/shm")
    where = shm if shm.is_dir() and shutil.disk_usage(shm).free > 2**30 else None
    return Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="yolobench-overhead-", dir=where)))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", type=int, default=2000)
    parser.add_argument("--stores", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    parser.add_argument("--home", type=Path, default=None,
                        help="where the stores go (default: a temporary folder, in /dev/shm where there is one)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows: list[Figures] = []
    with ExitStack() as stack:
        base = args.home or default_home(stack)
        print(f"{args.variants} variants of the stub runtime per store, under {base}", flush=True)
        for store in args.stores.split(","):
            home = base / store
            shutil.rmtree(home, ignore_errors=True)
            if store == "sqlite":
                rows.append(run_stub_sweep(home, args.variants))
            elif store == "postgresql":
                from tests.postgres import postgres_server

                with postgres_server() as url:
                    if url is None:
                        print("no PostgreSQL server installed here (apt-get install postgresql): skipped")
                        continue
                    rows.append(run_stub_sweep(home, args.variants, storage=url, store=store,
                                               tracking_uri=second_database(url, "mlflow")))
            else:
                raise SystemExit(f"unknown store {store!r}; known: sqlite, postgresql")
            print(format_table(rows[-1:]), flush=True)
    print(f"\nper-variant harness overhead: a loop step's wall time (CPU time: the process's) less the timed "
          f"inference and the evaluation; median of the first and of the last {WINDOW} variants; limit {LIMIT}x")
    print(format_table(rows))
    failed = [row.store for row in rows if row.ratio > LIMIT]
    print("FAIL: " + ", ".join(failed) if failed else "OK")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

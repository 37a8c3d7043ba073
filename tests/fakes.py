"""Stand-ins for the slow parts of a sweep, so the loop's every exit is tested in milliseconds: a runtime
registered through the registry like any plug-in (an instant session with YOLO11-shaped output), and a
builder that writes a tiny real ONNX model into the real cache instead of training and exporting.

MLflow, Optuna and the cache stay real (in-memory Optuna storage where a test needs no second process)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from yolobench.build import Built, model_name
from yolobench.cache import Artifact, ArtifactCache, BuildOutput
from yolobench.runtimes import (
    Availability, AxisInfo, DecodeSettings, RunFacts, Runtime, RuntimeInfo, SessionBase, register,
)
from yolobench.space import Variant

NUM_CLASSES = 3  # the synthetic data set's classes

FAKE_INFO = RuntimeInfo(
    name="fake",
    axes=(AxisInfo("knob", default=1, values=(1, 2, 3), kind=int, label="knob{value}"),),
    options_model="yolobench.runtimes.options:RuntimeOptions",
    implementation="tests.fakes:FakeRuntime",
    summary="instant fake runtime for tests",
)


class FakeSession(SessionBase):
    def __init__(self, imgsz: int, axes: Mapping[str, Any]) -> None:
        self.imgsz = imgsz
        self.axes = dict(axes)
        self.calls = 0
        self.closed = 0

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        self.calls += 1
        delay_ms = FakeRuntime.delay_ms * FakeRuntime.slowdown
        if delay_ms:
            time.sleep(delay_ms / 1000.0)
        anchors = sum((self.imgsz // stride) ** 2 for stride in (8, 16, 32))
        return np.zeros((1, 4 + NUM_CLASSES, anchors), np.float32)

    def info(self) -> dict[str, Any]:
        return {"providers": "fake", "threads": 1}

    def metrics(self) -> dict[str, float]:
        return {"fake_knob_metric": float(self.axes.get("knob", 0))}

    def close(self) -> None:
        self.closed += 1


@dataclass
class Behaviour:
    """What the fake runtime does when a variant matching `when` is opened."""

    when: Mapping[str, Any]
    action: Callable[[], Any]


class FakeRuntime(Runtime):
    info = FAKE_INFO
    behaviours: list[Behaviour] = []  # set by tests through FakeRuntime.on(...)
    opened: list[dict[str, Any]] = []  # the axes of every open, in order
    sessions: list[FakeSession] = []
    delay_ms: float = 0.0  # each inference sleeps delay_ms * slowdown (a machine that drifts, in a test)
    slowdown: float = 1.0

    @classmethod
    def reset(cls) -> None:
        cls.behaviours, cls.opened, cls.sessions = [], [], []
        cls.delay_ms, cls.slowdown = 0.0, 1.0

    @classmethod
    def on(cls, when: Mapping[str, Any], action: Callable[[], Any]) -> None:
        cls.behaviours.append(Behaviour(dict(when), action))

    def availability(self) -> Availability:
        return Availability(True, "always: a test double")

    def open(self, model: Artifact, compiled: Artifact | None, axes: Mapping[str, Any], options: Any,
             decode: DecodeSettings, work_dir: Path) -> SessionBase:
        type(self).opened.append(dict(axes))
        for behaviour in type(self).behaviours:
            if all(axes.get(k) == v for k, v in behaviour.when.items()):
                behaviour.action()
        session = FakeSession(int(axes["imgsz"]), axes)
        type(self).sessions.append(session)
        return session

    def facts(self, session: SessionBase, model: Artifact, compiled: Artifact | None,
              axes: Mapping[str, Any]) -> RunFacts:
        return RunFacts(params={"fake_fact": "yes"}, tags={"yolobench.fake": "true"})


def raise_(error: BaseException) -> Callable[[], None]:
    def action() -> None:
        raise error

    return action


def send_sigterm() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


def register_fake_runtime() -> None:
    register(FAKE_INFO, FakeRuntime)


@dataclass
class FakeBuilder:
    """Writes one tiny file per build axes into the real cache, as the export stage would."""

    spec: Any
    cache: ArtifactCache
    built: list[str] = field(default_factory=list)  # labels, in build order
    failures: dict[str, BaseException] = field(default_factory=dict)  # label -> raised by build

    def describe(self, variant: Variant) -> str:
        return model_name(self.spec, variant)

    def check(self, variants: Sequence[Variant]) -> None:
        return None

    def build(self, variant: Variant) -> Built:
        if variant.label in self.failures:
            raise self.failures[variant.label]
        self.built.append(variant.label)

        def write(work_dir: Path) -> BuildOutput:
            (work_dir / "model.onnx").write_bytes(b"fake model " + variant.label.encode())
            return BuildOutput("model.onnx", {"params": 1234, "gflops": 0.5, "applied_by_default": []})

        config = {k: v for k, v in variant.as_dict().items() if k not in FAKE_INFO.axis_names}
        artifact = self.cache.get_or_build("export", config, None, {}, write)
        return Built(artifact, self.cache.lineage(artifact), self.describe(variant), "built")


def fake_sweep_file(**changes: Any) -> dict[str, Any]:
    """A sweep file for the fake runtime: 2 precisions x 2 knob values, a tiny synthetic data set."""
    spec = {
        "name": "fake",
        "target": "tests",
        "runtime": {"name": "fake"},
        "model": {"train": {"epochs": 1, "imgsz": 64}},
        "data": {"synthetic": {"train_images": 2, "val_images": 3, "image_size": 64, "seed": 0}},
        "axes": {"scale": ["n"], "precision": ["fp32", "fp16"], "imgsz": [64], "knob": [1, 2]},
        "baseline": {"scale": "n", "precision": "fp32", "imgsz": 64, "knob": 1},
        # Other processes (a parallel test run, a build) must not slow these tests: no window is refused. The
        # drift reference and the front's confirmation are tested on their own (tests/test_ranking.py).
        "measure": {"warmup_runs": 0, "warmup_seconds": 0.0, "min_runs": 2, "min_seconds": 0.0, "foreign_limit": 1e9,
                    "reference_every": 0, "reference_minutes": 0, "confirm": False},
    }
    spec.update(changes)
    return spec


@dataclass
class TinyOnnxBuilder(FakeBuilder):
    """A real ONNX model in YOLO layout (tests/tiny_onnx.py: 32x32 input, 4 box values + 4 classes per anchor)
    as the export stage's artifact, then the real precision stages: what a runtime really opens, in ms."""

    dataset: Any = None

    def build(self, variant: Variant) -> Built:
        from tests.tiny_onnx import write_conv_model
        from yolobench.build import precision_stage

        def write(work_dir: Path) -> BuildOutput:
            write_conv_model(work_dir / "model.onnx", yolo_layout=True)
            return BuildOutput("model.onnx", {"params": 1000, "gflops": 0.01, "imgsz": 32, "num_classes": 4,
                                              "applied_by_default": [{"name": "none_tiny_model"}]})

        export = self.cache.get_or_build("export", {"tiny": 1}, None, {}, write)
        model = precision_stage(self.cache, export, str(variant["precision"]), self.spec, self.dataset)
        self.built.append(variant.label)
        return Built(model, self.cache.lineage(model), self.describe(variant), "built")


def tiny_ort_sweep(home: Path, sweep_file: dict[str, Any], storage: Any = None) -> Any:
    """A sweep of the tiny real ONNX model (TinyOnnxBuilder) on ONNX Runtime, with an in-memory study unless
    `storage` is given (a rerun that resumes needs the same one)."""
    import optuna

    from yolobench import search
    from yolobench.data.dataset import open_dataset
    from yolobench.runner import Sweep, SweepSettings
    from yolobench.space import Space
    from yolobench.spec import parse_spec

    spec = parse_spec(sweep_file)
    study = search.open_study(storage or optuna.storages.InMemoryStorage(), spec.name, Space.from_spec(spec), spec.search)
    sweep = Sweep(spec, SweepSettings(home=home), study=study)
    sweep.builder = TinyOnnxBuilder(spec, sweep.cache, dataset=open_dataset(spec.data, home))
    return sweep

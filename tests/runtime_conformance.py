"""What every runtime must do, written once and run on each registered one (tests/test_runtime_conformance.py
parametrizes over the registry, so a runtime is checked the day it is registered; Optuna's and timm's
pattern). Two kinds of checks:

- declared data (run everywhere): its axes, precisions, options model and implementation as RuntimeInfo
  describes them;
- behaviour (run where the runtime is usable, skipped with its own reason elsewhere): compile and open the
  tiny YOLO-shaped model of tests/tiny_onnx.py, infer, describe the session, close it twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.tiny_yolo11 import tiny_yolo11_export
from yolobench.cache import Artifact, ArtifactCache
from yolobench.runtimes import (
    Availability, Check, DecodeSettings, RunFacts, Runtime, RuntimeInfo, SessionBase, get_runtime, load_attribute,
    runtime_info,
)  # fmt: skip
from yolobench.runtimes.timing import PhaseTimings

KNOWN_PRECISIONS = {"fp32", "fp16", "int8"}
# tests/tiny_yolo11.py: a YOLO11 head's node names at 64 px, so runtimes that rewrite the head (OAK) take it too.
TINY_CLASSES = 4
TINY_IMGSZ = 64
TINY_ANCHORS = sum((TINY_IMGSZ // stride) ** 2 for stride in (8, 16, 32))
INPUT_SHAPE = (1, 3, TINY_IMGSZ, TINY_IMGSZ)


def tiny_model(cache: ArtifactCache) -> Artifact:
    """The tiny YOLO11-shaped model as a cached export artifact, with the manifest facts runtimes read."""
    return tiny_yolo11_export(cache, imgsz=TINY_IMGSZ, num_classes=TINY_CLASSES)


class RuntimeTestCase:
    """The checks for one registered runtime, by name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.info: RuntimeInfo = runtime_info(name)

    # --- declared data -----------------------------------------------------------------------------------

    def check_axes(self) -> None:
        names = self.info.axis_names
        assert len(set(names)) == len(names), f"{self.name}: axes repeat: {names}"
        for axis in self.info.axes:
            if axis.default is not None:
                assert axis.problem(axis.default) is None, f"{self.name}.{axis.name}: {axis.problem(axis.default)}"
            for value in axis.values or ():
                assert axis.problem(value) is None, f"{self.name}.{axis.name}: {axis.problem(value)}"
                assert axis.format_label(value), f"{self.name}.{axis.name}: empty label for {value!r}"

    def check_precisions(self) -> None:
        assert self.info.precisions, f"{self.name} declares no precision"
        assert set(self.info.precisions) <= KNOWN_PRECISIONS, self.info.precisions

    def check_options_model(self) -> Any:
        """The options model imports, is a RuntimeOptions, and takes a section that only names the runtime."""
        from yolobench.runtimes.options import RuntimeOptions

        model = load_attribute(self.info.options_model)
        assert isinstance(model, type) and issubclass(model, RuntimeOptions), self.info.options_model
        options = model.model_validate({"name": self.name})
        assert options.name == self.name
        return options

    def check_implementation(self) -> Runtime:
        runtime = get_runtime(self.name)
        assert isinstance(runtime, Runtime)
        assert runtime.info == self.info, f"{type(runtime).__name__}.info is not the registered RuntimeInfo"
        if self.info.implementation:
            assert isinstance(runtime, load_attribute(self.info.implementation))
        return runtime

    def check_availability_says_why(self) -> Availability:
        availability = self.check_implementation().availability()
        assert isinstance(availability, Availability) and isinstance(availability.usable, bool)
        assert availability.reason.strip()
        return availability

    def check_checks_have_reasons(self) -> None:
        for check in self.check_implementation().checks():
            assert isinstance(check, Check) and check.what and isinstance(check.usable, bool) and check.reason.strip()

    # --- behaviour where the runtime can run -------------------------------------------------------------

    def usable_runtime(self) -> Runtime:
        runtime = self.check_implementation()
        availability = runtime.availability()
        if not availability.usable:
            pytest.skip(f"{self.name} cannot run here: {availability.reason}")
        return runtime

    def variant_axes(self, **changes: Any) -> dict[str, Any]:
        """A variant of the tiny model: the runtime's own axis defaults, a precision it takes."""
        precision = "fp32" if "fp32" in self.info.precisions else self.info.precisions[0]
        return self.info.resolve_axes({"scale": "n", "precision": precision, "imgsz": TINY_IMGSZ, **changes})

    def open_tiny(self, tmp_path: Path, **axis_changes: Any) -> tuple[Runtime, SessionBase, Artifact, Artifact | None]:
        """compile + open the tiny model as the sweep does; the compiled artifact (if any) is a cache artifact."""
        runtime = self.usable_runtime()
        cache = ArtifactCache(tmp_path / "cache")
        model, axes, options = tiny_model(cache), self.variant_axes(**axis_changes), self.check_options_model()
        compiled = runtime.compile(model, axes, options, cache)
        if compiled is not None:
            assert cache.lookup(compiled.stage, compiled.key) == compiled, "compile must return a cache artifact"
            assert "build_s" in compiled.manifest and compiled.manifest["parent"] is not None
        work_dir = tmp_path / "work"
        work_dir.mkdir(exist_ok=True)
        session = runtime.open(model, compiled, axes, options, DecodeSettings(), work_dir)
        assert isinstance(session, SessionBase)
        return runtime, session, model, compiled

    def check_infers_describes_and_closes(self, tmp_path: Path) -> None:
        runtime, session, model, compiled = self.open_tiny(tmp_path)
        try:
            tensor = np.random.default_rng(0).random(INPUT_SHAPE, np.float32)
            output = session.infer(tensor)
            assert isinstance(output, np.ndarray) and output.dtype == np.float32
            assert output.shape == (1, 4 + TINY_CLASSES, TINY_ANCHORS), output.shape
            info = session.info()
            assert {"providers", "threads"} <= set(info), sorted(info)
            assert all(isinstance(value, float) for value in session.metrics().values())
            assert session.phase_timings is None or isinstance(session.phase_timings, PhaseTimings)
            facts = runtime.facts(session, model, compiled, self.variant_axes())
            assert isinstance(facts, RunFacts) and all(isinstance(value, str) for value in facts.tags.values())
        finally:
            session.close()
        session.close()  # twice: harmless

    def check_every_open_time_axis_value_opens(self, tmp_path: Path) -> None:
        """Each value of an axis that does not change the compiled artifact opens (those that do need a compile
        each, which the sweep's own tests cover)."""
        open_time = [axis for axis in self.info.axes if not axis.compile_input and axis.values is not None]
        if not open_time:
            pytest.skip(f"{self.name}'s listed axes all change the compiled artifact")
        for axis in open_time:
            for value in axis.values or ():
                _, session, _, _ = self.open_tiny(tmp_path / f"{axis.name}-{value}", **{axis.name: value})
                try:
                    assert session.infer(np.zeros(INPUT_SHAPE, np.float32)).shape[:2] == (1, 4 + TINY_CLASSES)
                finally:
                    session.close()

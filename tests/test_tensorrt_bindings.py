"""The TensorRT code against the real TensorRT Python API, on a host without TensorRT's libraries or a GPU.

The pip wheels `tensorrt-cu12-bindings` hold TensorRT's real Python module; only its native libraries come
in a separate package that PyPI does not host. Linked against stubs of those libraries (compiled here),
the module imports and shows its full API, though it cannot build. Two checks, for TensorRT 10.3 (what
JetPack 6 ships to the Orin Nano) and TensorRT 11:
- the fake the builder tests use (tests/fake_tensorrt.py) has only names the real module has: classes,
  methods with their parameter names, properties, enum members with their values. Code that passes
  against the fake therefore calls nothing TensorRT lacks;
- yolobench's own decisions (typing mode, builder flags, network flag bits, the logger subclass) come out
  the same with the real module as with the fake of the same generation.

`make test` downloads the wheels into .venv/tensorrt-bindings (YOLOBENCH_TRT_BINDINGS overrides).
"""

from __future__ import annotations

import enum
import inspect
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.fake_tensorrt import make_fake_tensorrt
from yolobench.stages import tensorrt as stage

REPO = Path(__file__).resolve().parents[1]
WHEEL_DIR = Path(os.environ.get("YOLOBENCH_TRT_BINDINGS") or Path(sys.prefix) / "tensorrt-bindings")
WHEELS = sorted(WHEEL_DIR.glob("tensorrt_cu*_bindings-*.whl"))
# Entry points the bindings import from TensorRT's native libraries (nm -D --undefined-only tensorrt.so).
STUB_SOURCE = """
#include <stddef.h>
void *createInferBuilder_INTERNAL(void *logger, int version) { return NULL; }
void *createInferRefitter_INTERNAL(void *engine, void *logger, int version) { return NULL; }
void *createInferRuntime_INTERNAL(void *logger, int version) { return NULL; }
void *createNvOnnxParserRefitter_INTERNAL(void *refitter, void *logger, int version) { return NULL; }
void *createNvOnnxParser_INTERNAL(void *network, void *logger, int version) { return NULL; }
void *getBuilderPluginRegistry(int capability) { return NULL; }
int getNvOnnxParserVersion(void) { return 0; }
void *getPluginRegistry(void) { return NULL; }
int initLibNvInferPlugins(void *logger, const char *namespace_) { return 0; }
"""
STUB_LIBRARIES = ("nvinfer", "nvonnxparser", "nvinfer_plugin")
# Classes yolobench constructs itself; the others only come out of TensorRT's factories.
CONSTRUCTED = {"ILogger", "Logger", "Builder", "OnnxParser", "Runtime"}
TEST_HOOKS = {"records", "device_memory", "__version__"}


def _wheel_version(wheel: Path) -> str:
    return wheel.name.split("-")[1]


def _enum_members(value: Any) -> dict[str, int] | None:
    if isinstance(value, type) and issubclass(value, enum.Enum):
        return {name: int(member.value) for name, member in value.__members__.items()}
    return None


def _params(function: Any) -> list[str]:
    return [name for name in inspect.signature(function).parameters if name != "self"]


def fake_surface(fake: Any) -> dict[str, Any]:
    """Every public name the fake module offers, as the real module would have to offer it."""
    surface: dict[str, Any] = {}
    for name, value in vars(fake).items():
        if name in TEST_HOOKS:
            continue
        if _enum_members(value) is not None:
            surface[name] = {"kind": "enum", "members": _enum_members(value)}
        elif isinstance(value, type):
            attrs: dict[str, Any] = {}
            for klass in reversed(value.__mro__[:-1]):
                for attr, member in vars(klass).items():
                    if attr.startswith("_") and not (attr == "__init__" and name in CONSTRUCTED):
                        continue
                    function = member if inspect.isfunction(member) else None
                    attrs[attr] = {"params": _params(function) if function else None, "members": _enum_members(member)}
            surface[name] = {"kind": "class", "attrs": attrs}
        elif callable(value):
            surface[name] = {"kind": "function", "params": _params(value)}
    return surface


def _matches(params: list[str], signatures: list[list[str]]) -> bool:
    """The fake's parameters are the leading parameters of one of the real overloads."""
    return any(signature[: len(params)] == params for signature in signatures)


def surface_differences(asked: dict[str, Any], real: dict[str, Any]) -> list[str]:
    problems = []
    for name, wanted in asked.items():
        found = real[name]
        if not found["exists"]:
            problems.append(f"{name}: not in the real module")
            continue
        if wanted["kind"] == "enum":
            missing = {k: v for k, v in wanted["members"].items() if (found["members"] or {}).get(k) != v}
            if missing:
                problems.append(f"{name}: members {missing} differ from the real {found['members']}")
        if wanted["kind"] == "function" and not _matches(wanted["params"], found["signatures"]):
            problems.append(f"{name}{tuple(wanted['params'])}: real signatures {found['signatures']}")
        for attr, asked_attr in wanted.get("attrs", {}).items():
            real_attr = found["attrs"][attr]
            if not real_attr["exists"]:
                problems.append(f"{name}.{attr}: not in the real module")
            elif asked_attr["params"] is not None and not _matches(asked_attr["params"], real_attr["signatures"]):
                problems.append(f"{name}.{attr}{tuple(asked_attr['params'])}: "
                                f"real signatures {real_attr['signatures']}")  # fmt: skip
            elif asked_attr["members"] and any(
                (real_attr["members"] or {}).get(k) != v for k, v in asked_attr["members"].items()
            ):
                problems.append(f"{name}.{attr}: members {asked_attr['members']} vs real {real_attr['members']}")
    return problems


@pytest.fixture(scope="module")
def stub_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.fail("a C compiler (cc) is needed to build the TensorRT link stubs")
    folder = tmp_path_factory.mktemp("trt-stubs")
    (folder / "stub.c").write_text(STUB_SOURCE)
    for major in sorted({_wheel_version(wheel).split(".")[0] for wheel in WHEELS}):
        for library in STUB_LIBRARIES:
            subprocess.run([compiler, "-shared", "-fPIC", "-o", str(folder / f"lib{library}.so.{major}"),
                            str(folder / "stub.c")], check=True)  # fmt: skip
    return folder


def probe(wheel: Path, stubs: Path, asked: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path / "bindings")
    env = {**os.environ, "LD_LIBRARY_PATH": str(stubs),
           "PYTHONPATH": os.pathsep.join([str(tmp_path / "bindings"), str(REPO)])}  # fmt: skip
    done = subprocess.run([sys.executable, str(REPO / "tests" / "tensorrt_bindings_probe.py")], input=json.dumps(asked),
                          capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_the_bindings_wheels_are_here() -> None:
    if not WHEELS:
        message = (f"no tensorrt_cu*_bindings wheels in {WHEEL_DIR}; `make test` downloads them "
                   "(pip download --no-deps tensorrt-cu12-bindings==10.3.0 / ==11.4.0.106)")  # fmt: skip
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    assert {_wheel_version(wheel).split(".")[0] for wheel in WHEELS} >= {"10", "11"}


@pytest.mark.parametrize("wheel", WHEELS, ids=[_wheel_version(wheel) for wheel in WHEELS])
def test_fake_and_yolobench_use_only_the_real_tensorrt_api(wheel: Path, stub_dir: Path, tmp_path: Path) -> None:
    version = _wheel_version(wheel)
    fake = make_fake_tensorrt(version)
    asked = fake_surface(fake)
    assert {"Builder", "IBuilderConfig", "BuilderFlag", "ICudaEngine", "IExecutionContext"} <= set(asked)

    found = probe(wheel, stub_dir, asked, tmp_path)

    assert surface_differences(asked, found["surface"]) == []
    decided = found["decisions"]
    assert decided["version"] == version
    for key, real_plan in decided["plans"].items():
        precision, sparsity = key.split("/")
        fake_plan = stage.builder_plan(fake, stage.EngineSettings(precision, 3, sparsity == "True"))
        assert (real_plan["typing"], tuple(real_plan["network_flags"]), tuple(real_plan["builder_flags"])) == (
            fake_plan.typing, fake_plan.network_flags, fake_plan.builder_flags), key
        fake_bits = stage._flag_bits(fake.NetworkDefinitionCreationFlag, fake_plan.network_flags)
        assert real_plan["network_bits"] == fake_bits, key
    assert decided["plans"]["fp16/True"]["typing"] == ("weak" if version.startswith("10.") else "strong")
    assert decided["logger_is_an_ILogger"]
    kept = [severity for severity, _ in decided["logger_kept"]]
    assert kept == ["INTERNAL_ERROR", "ERROR", "WARNING", "INFO"]  # VERBOSE is dropped
    assert decided["nptype"] == {name: str(fake.nptype(fake.DataType[name])) for name in ("FLOAT", "HALF")}


def test_a_wrong_name_in_the_fake_would_be_caught() -> None:
    """The comparison itself: a method, a parameter or an enum value the real module lacks is reported."""
    asked = {"IBuilderConfig": {"kind": "class", "attrs": {
        "set_flag": {"params": ["flag"], "members": None}, "set_flags": {"params": ["flag"], "members": None},
        "set_timing_cache": {"params": ["timing_cache"], "members": None}}},
        "BuilderFlag": {"kind": "enum", "members": {"FP16": 0, "SPARSE_WEIGHTS": 8}}}  # fmt: skip
    real = {"IBuilderConfig": {"exists": True, "members": None, "attrs": {
        "set_flag": {"exists": True, "members": None, "signatures": [["flag"]]},
        "set_flags": {"exists": False, "members": None, "signatures": None},
        "set_timing_cache": {"exists": True, "members": None, "signatures": [["cache", "ignore_mismatch"]]}}},
        "BuilderFlag": {"exists": True, "members": {"FP16": 0, "SPARSE_WEIGHTS": 7}}}  # fmt: skip
    problems = surface_differences(asked, real)
    assert len(problems) == 3
    assert any("set_flags" in p for p in problems) and any("timing_cache" in p for p in problems)
    assert any("SPARSE_WEIGHTS" in p for p in problems)

"""The DepthAI fake (tests/fake_depthai.py) against the real `depthai` 3.x module installed here: every class,
method (with its parameter names, as one of the real overloads takes them), property and enum member (with its
value) the fake offers exists in the real module. Code that passes against the fake therefore calls nothing
DepthAI 3 lacks. The real module's signatures are read from its pybind11 docstrings, the only place it states
them."""

from __future__ import annotations

import enum
import importlib.metadata
import importlib.util
import inspect
import re
from typing import Any

import pytest

from tests.fake_depthai import REAL_NAMES, make_fake_depthai

pytestmark = pytest.mark.skipif(importlib.util.find_spec("depthai") is None,
                                reason="depthai is not installed (pip install -e '.[dev]')")
_OVERLOAD = re.compile(r"^(?:\d+\. )?(\w+)\((.*)\) -> ")
# Classes yolobench constructs itself (their __init__ is checked); the others only come out of DepthAI's factories.
CONSTRUCTED = {"Pipeline", "NNArchive", "Device", "DeviceInfo", "ImgFrame", "ImgTransformation"}


def _resolve(module: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        module = getattr(module, part)
    return module


def real_overloads(function: Any) -> list[list[tuple[str, bool]]]:
    """[(parameter, has a default), ...] per overload, `self` left out, from a pybind11 docstring."""
    overloads = []
    for line in (function.__doc__ or "").splitlines():
        match = _OVERLOAD.match(line.strip())
        if not match or match.group(2).startswith("*args"):
            continue
        params = []
        for part in re.split(r",\s*(?![^\[]*\])", match.group(2)):
            name = part.split(":")[0].strip()
            if name.startswith("*"):  # *args, **kwargs: the overload takes more, as the fake may not
                break
            if name and name != "self":
                params.append((name, "=" in part))
        overloads.append(params)
    return overloads


def takes(params: list[str], overloads: list[list[tuple[str, bool]]]) -> bool:
    """The fake's parameters are a real overload's leading ones, and what follows them there has defaults."""
    for overload in overloads:
        names = [name for name, _ in overload]
        if names[:len(params)] == params and all(default for _, default in overload[len(params):]):
            return True
    return False


def fake_methods(fake_class: type, constructed: bool) -> dict[str, Any]:
    members: dict[str, Any] = {}
    for klass in reversed(fake_class.__mro__[:-1]):
        for name, member in vars(klass).items():
            if (name.startswith("_") and not (name == "__init__" and constructed)) or isinstance(member, type):
                continue
            members[name] = member
    return members


def _fake_params(function: Any, optional_tail: bool) -> list[list[str]]:
    """The call shapes a fake method allows: all its parameters, and without trailing ones that have defaults."""
    parameters = [p for p in inspect.signature(function).parameters.values() if p.name != "self"]
    shapes = [[p.name for p in parameters]]
    while optional_tail and parameters and parameters[-1].default is not inspect.Parameter.empty:
        parameters = parameters[:-1]
        shapes.append([p.name for p in parameters])
    return shapes


def class_differences(fake_class: type, real_class: Any, label: str) -> list[str]:
    problems = []
    for name, member in fake_methods(fake_class, label in CONSTRUCTED).items():
        if not hasattr(real_class, name):
            problems.append(f"{label}.{name}: not in depthai {importlib.metadata.version('depthai')}")
            continue
        real = getattr(real_class, name)
        if isinstance(member, property):
            if not isinstance(real, property):
                problems.append(f"{label}.{name}: a property here, not in the real module")
            continue
        if inspect.isfunction(member):
            for shape in _fake_params(member, optional_tail=True):
                if not takes(shape, real_overloads(real)):
                    problems.append(f"{label}.{name}{tuple(shape)}: real overloads {real_overloads(real)}")
    return problems


def enum_differences(fake_enum: type[enum.Enum], real_enum: Any, label: str) -> list[str]:
    return [f"{label}.{name} = {member.value}: real {getattr(real_enum, name, None)!r}"
            for name, member in fake_enum.__members__.items()
            if not hasattr(real_enum, name) or int(getattr(real_enum, name)) != member.value]


def surface_differences(fake: Any, dai: Any) -> list[str]:
    problems = []
    for fake_name, real_name in REAL_NAMES.items():
        fake_object, real_object = _resolve(fake, fake_name), _resolve(dai, real_name)
        if isinstance(fake_object, type) and issubclass(fake_object, enum.Enum):
            problems += enum_differences(fake_object, real_object, real_name)
        elif isinstance(fake_object, type):
            problems += class_differences(fake_object, real_object, real_name)
            for attr, member in vars(fake_object).items():
                if isinstance(member, type) and issubclass(member, enum.Enum):
                    problems += enum_differences(member, getattr(real_object, attr), f"{real_name}.{attr}")
        else:  # a namespace: its functions and enums
            for attr, member in vars(fake_object).items():
                if isinstance(member, type) and issubclass(member, enum.Enum):
                    problems += enum_differences(member, getattr(real_object, attr), f"{real_name}.{attr}")
                elif callable(member) and not takes(_fake_params(member, False)[0],
                                                    real_overloads(getattr(real_object, attr))):
                    problems.append(f"{real_name}.{attr}: not callable that way in the real module")
    return problems


def test_the_fake_offers_only_what_real_depthai_3_has() -> None:
    import depthai as dai

    assert importlib.metadata.version("depthai").startswith("3."), "the dev extra installs depthai 3.x"
    assert surface_differences(make_fake_depthai(), dai) == []


def test_the_check_catches_a_wrong_name_a_wrong_parameter_and_a_wrong_enum_value() -> None:
    """The checker itself can say no: a fake with a typo in each kind of name fails it."""
    import depthai as dai

    fake = make_fake_depthai()

    class Network(fake.node.NeuralNetwork):
        def setNumInferenceThread(self, numThreads: int) -> None:  # noqa: N802, N803 (typo: no trailing s)
            pass

        def setNumPoolFrames(self, frames: int) -> None:  # noqa: N802 (real: numFrames)
            pass

    fake.node.NeuralNetwork = Network
    fake.LogLevel = enum.IntEnum("LogLevel", {"TRACE": 5})
    problems = surface_differences(fake, dai)
    assert any("setNumInferenceThread:" in p for p in problems)
    assert any("setNumPoolFrames('frames',)" in p for p in problems)
    assert any("LogLevel.TRACE = 5" in p for p in problems)

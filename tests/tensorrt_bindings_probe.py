"""Run by test_tensorrt_bindings.py in a child process whose TensorRT is the real Python bindings (a pip
`tensorrt-cuXX-bindings` wheel) over link stubs of libnvinfer, libnvonnxparser and libnvinfer_plugin: the
module imports and shows its whole API, and nothing can be built. Reads the API surface to look up as
JSON on stdin; prints JSON: what the real module has there, and what yolobench's TensorRT logic decides
when given the real module."""

from __future__ import annotations

import inspect
import json
import re
import sys
from typing import Any

import tensorrt_bindings as trt

from yolobench.stages import tensorrt as stage


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char in "[(<{"
        depth -= char in "])>}"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [part.strip() for part in [*parts, current] if part.strip()]


def signatures(function: Any, name: str) -> list[list[str]]:
    """Parameter names (without self) of each overload, from pybind11's docstring or from Python."""
    if inspect.isfunction(function):
        return [list(inspect.signature(function).parameters)]
    found = []
    for line in (function.__doc__ or "").splitlines():
        match = re.match(rf"\s*(?:\d+\.\s*)?{re.escape(name)}\((.*)\)\s*->", line)
        if match:
            names = [part.split(":")[0].split("=")[0].strip() for part in _split_top_level(match.group(1))]
            found.append([n for n in names if n != "self" and not n.startswith("*")])
    return found


def members(value: Any) -> dict[str, int] | None:
    entries = getattr(value, "__members__", None)
    return {key: int(member) for key, member in entries.items()} if isinstance(entries, dict) else None


def look_up(asked: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, wanted in asked.items():
        value = getattr(trt, name, None)
        entry: dict[str, Any] = {"exists": value is not None, "members": members(value)}
        if wanted["kind"] == "function" and value is not None:
            entry["signatures"] = signatures(value, name)
        if wanted["kind"] == "class" and value is not None:
            entry["attrs"] = {}
            for attr, asked_attr in wanted["attrs"].items():
                real = getattr(value, attr, None)
                callable_asked = asked_attr["params"] is not None and real is not None
                entry["attrs"][attr] = {"exists": real is not None, "members": members(real),
                                        "signatures": signatures(real, attr) if callable_asked else None}
        found[name] = entry
    return found


def decisions() -> dict[str, Any]:
    """yolobench's TensorRT logic run on the real module: typing, the flags each variant sets, the logger."""
    plans = {}
    for precision in stage.PRECISIONS:
        for sparsity in (False, True):
            plan = stage.builder_plan(trt, stage.EngineSettings(precision, 3, sparsity))
            plans[f"{precision}/{sparsity}"] = {
                "typing": plan.typing,
                "network_flags": list(plan.network_flags),
                "builder_flags": list(plan.builder_flags),
                "network_bits": stage._flag_bits(trt.NetworkDefinitionCreationFlag, plan.network_flags),
            }
    logger = stage._recording_logger(trt)
    for severity in trt.ILogger.Severity.__members__.values():
        logger.log(severity, f"a {severity.name} line")
    return {
        "version": trt.__version__,
        "plans": plans,
        "logger_is_an_ILogger": isinstance(logger, trt.ILogger),
        "logger_kept": logger.messages,
        "nptype": {name: str(trt.nptype(getattr(trt.DataType, name))) for name in ("FLOAT", "HALF")},
    }


def main() -> None:
    asked = json.load(sys.stdin)
    json.dump({"surface": look_up(asked), "decisions": decisions()}, sys.stdout, default=str)


if __name__ == "__main__":
    main()

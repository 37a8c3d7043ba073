"""Run inside a venv that has ModelConverter (`modelconv`) installed: parse a command line with ModelConverter's
own CLI (without running it: no Docker) and load a config file with its own config loader, and print what they
made of them as JSON. Input on stdin: {"argv": [...without the program name], "config": path}."""

from __future__ import annotations

import importlib.metadata
import json
import os
import sys

os.environ.setdefault("LUXONIS_TELEMETRY_ENABLED", "false")


def main() -> None:
    asked = json.loads(sys.stdin.read())
    from modelconverter.__main__ import app
    from modelconverter.utils.config import Config

    launcher, bound, _ = app.meta.parse_args(asked["argv"])
    command, inner, _ = app.parse_args(list(bound.arguments["tokens"]))
    config = Config.get_config(asked["config"])
    stage = next(iter(config.stages.values()))
    print(json.dumps({
        "modelconv": importlib.metadata.version("modelconv"),
        "launcher": launcher.__name__,
        "launcher_arguments": {k: v for k, v in bound.arguments.items() if k != "tokens"},
        "command": command.__name__,
        "arguments": {k: str(v.value) if hasattr(v, "value") else v for k, v in inner.arguments.items()},
        "config": {"name": config.name, "input_model": str(stage.input_model),
                   "inputs": [json.loads(i.model_dump_json(by_alias=True)) for i in stage.inputs],
                   # what makes its RVC2 exporter add --reverse_input_channels to Model Optimizer's arguments
                   "encoding_mismatch": [i.encoding_mismatch for i in stage.inputs],
                   "rvc2": json.loads(stage.rvc2.model_dump_json())},
    }))


if __name__ == "__main__":
    main()

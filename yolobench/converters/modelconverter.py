"""`modelconverter`: Luxonis' local converter (`modelconv` on PyPI), for teams without HubAI: its CLI runs the
conversion in Docker (image luxonis/modelconverter-rvc2) and writes an NN Archive holding a superblob. yolobench
writes the config file and runs the command line in a scratch folder; the CLI puts its output under
`./output/<output dir>` there. The container gets no HubAI key: it is taken out of the command's environment."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from yolobench.cache import BuildFailed
from yolobench.converters import API_KEY_ENV, ENCODING, MEAN_VALUES, SCALE_VALUES, ConversionRequest, Converter
from yolobench.runtimes.base import Availability

PACKAGE = "modelconv"
EXECUTABLE = "modelconverter"
OUTPUT_DIR = "yolobench"  # --output-dir: the CLI writes to ./output/<this>
CONFIG_NAME = "modelconverter.yaml"
TIMEOUT_S = 3600.0


def converter_config(request: ConversionRequest) -> dict[str, Any]:
    """ModelConverter's single-stage config: the ONNX, its one image input with the preprocessing every converter
    is asked for, FP16 weights and a superblob (or one blob for `request.shaves`)."""
    rvc2: dict[str, Any] = {"superblob": request.shaves is None, "compress_to_fp16": True, "mo_args": [],
                            "compile_tool_args": []}
    if request.shaves is not None:
        rvc2["number_of_shaves"] = request.shaves
    return {
        "name": request.name,
        "input_model": str(request.onnx_path),
        "inputs": [{"name": request.input_name, "shape": list(request.input_shape), "layout": "NCHW",
                    "encoding": dict(ENCODING), "mean_values": list(MEAN_VALUES), "scale_values": list(SCALE_VALUES)}],
        "rvc2": rvc2,
    }


def converter_command(config_path: Path, tool_version: str | None, executable: str = EXECUTABLE) -> list[str]:
    """`modelconverter [--tool-version V] convert rvc2 --path CONFIG --output-dir yolobench --to nn_archive`."""
    version = ["--tool-version", tool_version] if tool_version else []
    return [executable, *version, "convert", "rvc2", "--path", str(config_path), "--output-dir", OUTPUT_DIR,
            "--to", "nn_archive"]


def converter_environment() -> dict[str, str]:
    """The command's environment: this process's, without the HubAI key (the CLI would hand it to the
    container), and with Luxonis' telemetry off unless the user chose otherwise."""
    environment = {name: value for name, value in os.environ.items() if name != API_KEY_ENV}
    environment.setdefault("LUXONIS_TELEMETRY_ENABLED", "false")
    return environment


def _docker_problem() -> str | None:
    docker = shutil.which("docker")
    if docker is None:
        return "docker is not on PATH (ModelConverter runs its conversion in a Docker image)"
    try:
        done = subprocess.run([docker, "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"docker does not answer ({type(error).__name__})"
    if done.returncode != 0:
        return f"the Docker daemon is not reachable: {(done.stderr or done.stdout).strip()[:200]}"
    return None


class ModelConverter(Converter):
    name = "modelconverter"
    superblob = True
    opsets = (11, 16)
    summary = "ModelConverter (local, modelconv + Docker): an RVC2 superblob, offline"

    def __init__(self, tool_version: str | None = None, executable: str = EXECUTABLE) -> None:
        self.tool_version = tool_version
        self.executable = executable

    @classmethod
    def from_options(cls, options: Any | None) -> ModelConverter:
        return cls(tool_version=options.tool_version if options is not None else None)

    def availability(self) -> Availability:
        if shutil.which(self.executable) is None:
            return Availability(False, f"the {self.executable} CLI is not on PATH (pipx install {PACKAGE}: it pins its own onnx)")
        problem = _docker_problem()
        if problem:
            return Availability(False, problem)
        return Availability(True, f"{PACKAGE} {self.versions()[PACKAGE]} and Docker found; the image is pulled on "
                                  "first compile unless it is already here")

    def versions(self) -> dict[str, str]:
        installed = importlib.util.find_spec("modelconverter") is not None
        return {PACKAGE: importlib.metadata.version(PACKAGE) if installed else "cli"}

    def settings(self) -> dict[str, Any]:
        return {"tool_version": self.tool_version or "modelconverter default", "superblob": True}

    def convert(self, request: ConversionRequest, work_dir: Path) -> Path:
        work_dir.mkdir(parents=True, exist_ok=True)
        config_path = work_dir / CONFIG_NAME
        config_path.write_text(yaml.safe_dump(converter_config(request), sort_keys=False))
        command = converter_command(config_path, self.tool_version, self.executable)
        try:
            done = subprocess.run(command, cwd=work_dir, env=converter_environment(), capture_output=True, text=True,
                                  timeout=TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise BuildFailed(f"{self.executable} could not run ({type(error).__name__}: {error})") from None
        if done.returncode != 0:
            tail = (done.stdout[-1500:] + done.stderr[-1500:]).strip()
            raise BuildFailed(f"{' '.join(command[:4])} exited {done.returncode}: {tail}")
        found = sorted((work_dir / "output").rglob("*.tar.xz"))
        if not found:
            raise BuildFailed(f"{self.executable} finished but wrote no NN Archive under {work_dir / 'output'}")
        return found[0]

"""`blobconverter`: the legacy blob conversion service, for teams that still run one themselves. Luxonis has
retired it and its public service is gone, so there is no default: the URL must be given
(`runtime.depthai.converter_url` or $YOLOBENCH_BLOBCONVERTER_URL). It compiles one blob per SHAVE count (no
superblob), so each SHAVE count of a sweep is a compile of its own.

The request is the one the `blobconverter` package (1.4.x) sends to the service's /compile endpoint. We send it
ourselves because that package first asks a public S3 bucket for a prebuilt blob whatever URL it is given."""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yolobench.cache import BuildFailed
from yolobench.converters import ConversionRequest, Converter
from yolobench.runtimes.base import Availability
from yolobench.stages.blob import COMPILE_PARAMS, DATA_TYPE, OPTIMIZER_PARAMS, is_blob

CONVERTER_URL_ENV = "YOLOBENCH_BLOBCONVERTER_URL"
API_VERSION = "compile-v1"


def converter_url(configured: str | None = None) -> str | None:
    """The service's URL as configured, else from the environment; None when neither gives one."""
    url = configured or os.environ.get(CONVERTER_URL_ENV)
    return url.rstrip("/") if url else None


@dataclass(frozen=True)
class BlobSettings:
    """Everything the service is told besides the model (its URL does not change the blob)."""

    shaves: int
    url: str
    openvino_version: str = "2022.1"
    data_type: str = DATA_TYPE
    optimizer_params: tuple[str, ...] = OPTIMIZER_PARAMS
    compile_params: tuple[str, ...] = COMPILE_PARAMS


def _upload_name(path: Path) -> str:
    """The service refuses names with more than one dot or any '='."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", path.stem) + ".onnx"


def _request_parts(name: str, settings: BlobSettings) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """(config.yml content, form fields, query) of one /compile request."""
    config = {
        "task_type": "detection",
        "framework": "onnx",
        "model_optimizer_args": [*settings.optimizer_params, f"--data_type={settings.data_type}",
                                 f"--input_model=$dl_dir/{settings.data_type}/{name}"],
        "files": [{"name": f"{settings.data_type}/{name}", "source": {"$type": "http", "url": f"$REQUEST/{name}"}}],
    }
    form = {"myriad_shaves": str(settings.shaves), "myriad_params_advanced": " ".join(settings.compile_params),
            "data_type": settings.data_type, "download_ir": "False", "zoo_type": "intel", "name": Path(name).stem}
    return config, form, {"version": settings.openvino_version, "no_cache": "False"}


def request_blob(onnx_path: Path, settings: BlobSettings, timeout_s: float = 900.0) -> bytes:
    """POST the model to the service's /compile endpoint and return the blob's bytes."""
    import requests
    import yaml

    name = _upload_name(onnx_path)
    config, form, query = _request_parts(name, settings)
    with open(onnx_path, "rb") as model_file:
        files = {
            "config": ("config.yml", yaml.safe_dump(config, default_flow_style=False).encode(), "application/x-yaml"),
            name: (name, model_file, "application/octet-stream"),
        }
        try:
            response = requests.post(f"{settings.url}/compile", params=query, data=form, files=files,
                                     timeout=(10.0, timeout_s))
        except requests.RequestException as error:
            raise BuildFailed(f"blob conversion service {settings.url} not reachable ({type(error).__name__}: "
                              f"{error}); check runtime.depthai.converter_url or ${CONVERTER_URL_ENV}") from None
    if response.status_code != 200:
        raise BuildFailed(f"blob conversion service {settings.url} answered {response.status_code}: "
                          f"{response.text[:2000]}")
    if not is_blob(response.content):
        raise BuildFailed(f"blob conversion service {settings.url} returned {len(response.content)} bytes that "
                          "are not a Myriad X blob")
    return response.content


class BlobConverter(Converter):
    name = "blobconverter"
    superblob = False
    opsets = (11, 16)
    summary = "a self-hosted legacy blobconverter service at an explicit URL: one blob per SHAVE count"

    def __init__(self, url: str | None = None, openvino_version: str = "2022.1") -> None:
        self.url = converter_url(url)
        self.openvino_version = openvino_version

    @classmethod
    def from_options(cls, options: Any | None) -> BlobConverter:
        if options is None:
            return cls()
        return cls(url=options.converter_url, openvino_version=options.openvino_version)

    def availability(self) -> Availability:
        if importlib.util.find_spec("requests") is None:
            return Availability(False, "package requests is not installed")
        if self.url is None:
            return Availability(False, f"no service URL: set runtime.depthai.converter_url or ${CONVERTER_URL_ENV} "
                                       "(Luxonis' public service is retired; there is no default)")
        return Availability(True, f"legacy service at {self.url}; reachability is checked on first compile")

    def versions(self) -> dict[str, str]:
        return {"openvino": self.openvino_version, "blobconverter_api": API_VERSION}

    def settings(self) -> dict[str, Any]:
        return {"data_type": DATA_TYPE, "optimizer_params": list(OPTIMIZER_PARAMS),
                "compile_params": list(COMPILE_PARAMS)}

    def convert(self, request: ConversionRequest, work_dir: Path) -> Path:
        if self.url is None:
            raise BuildFailed(self.availability().reason)
        if request.shaves is None:
            raise BuildFailed("the blobconverter service compiles one SHAVE count at a time, not a superblob")
        blob = request_blob(request.onnx_path, BlobSettings(request.shaves, self.url, self.openvino_version))
        work_dir.mkdir(parents=True, exist_ok=True)
        output = work_dir / f"{request.name}_{request.shaves}shave.blob"
        output.write_bytes(blob)
        return output

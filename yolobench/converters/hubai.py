"""`hubai`: Luxonis' online conversion through the HubAI SDK (`hubai-sdk`): upload the ONNX, ask for an RVC2
superblob, download the result. The API key comes from $HUBAI_API_KEY and goes nowhere but the SDK: it is not
logged, printed, recorded in a manifest or a cache key, nor left in an error message.

The SDK has side effects a sweep must not suffer, each contained here: on import it asks PyPI for a newer
version and exits the process if a minor one exists (skipped); it sends usage telemetry unless told not to
(off unless the user set LUXONIS_TELEMETRY_ENABLED); it deletes `./shared_with_container` in the working
directory and replaces the SIGINT/SIGTERM handlers while downloading (it runs in a scratch folder, and the
handlers are put back)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import io
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from types import ModuleType
from typing import Any

from yolobench.cache import BuildFailed
from yolobench.converters import API_KEY_ENV, ENCODING, MEAN_VALUES, SCALE_VALUES, ConversionRequest, Converter
from yolobench.runtimes.base import Availability

PACKAGE = "hubai-sdk"
URL_ENV = "HUBAI_URL"  # the SDK's own variable for another HubAI service (staging, self-hosted, a test fake)
_VERSION_CHECK_URL = "https://pypi.org/pypi/hubai-sdk/json"
_ARCHIVE_SUFFIXES = (".tar.xz", ".superblob", ".blob")


def _without_version_check() -> Any:
    """requests.get that refuses the SDK's PyPI version check (which may sys.exit) and passes the rest."""
    import requests

    real_get = requests.get

    def get(url: str, *args: Any, **kwargs: Any) -> Any:
        if url == _VERSION_CHECK_URL:
            raise requests.ConnectionError("skipped by yolobench")
        return real_get(url, *args, **kwargs)

    return real_get, get


def import_hubai() -> ModuleType:
    """hubai_sdk, imported without its version check and with telemetry off unless the user chose."""
    os.environ.setdefault("LUXONIS_TELEMETRY_ENABLED", "false")  # read when the SDK first reports, not on import
    if "hubai_sdk" in sys.modules:
        return sys.modules["hubai_sdk"]
    import requests
    from loguru import logger

    real_get, guarded = _without_version_check()
    requests.get = guarded
    logger.disable("hubai_sdk")  # quiet: its keyring notice on import is not the sweep's
    try:
        import hubai_sdk
    finally:
        requests.get = real_get
        logger.enable("hubai_sdk")
    return hubai_sdk


def scrub(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


@contextmanager
def _contained(work_dir: Path, url: str | None) -> Iterator[None]:
    """Run the SDK in `work_dir`, against `url` if given, quiet (its log lines and progress bars are not the
    sweep's), with the process's signal handlers restored."""
    from loguru import logger

    from hubai_sdk.utils.environ import environ

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    previous_dir, previous_url = Path.cwd(), environ.HUBAI_URL
    work_dir.mkdir(parents=True, exist_ok=True)
    os.chdir(work_dir)
    if url:
        environ.HUBAI_URL = url
    logger.disable("hubai_sdk")
    try:
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            yield
    finally:
        logger.enable("hubai_sdk")
        environ.HUBAI_URL = previous_url
        os.chdir(previous_dir)
        for sig, handler in handlers.items():
            if handler is not None:
                signal.signal(sig, handler)


def rvc2_arguments(request: ConversionRequest, output_dir: Path, tool_version: str | None) -> dict[str, Any]:
    """The keyword arguments of `client.convert.RVC2`: a private model, FP16, a superblob, the preprocessing."""
    arguments: dict[str, Any] = {
        "path": str(request.onnx_path), "name": request.name, "is_public": False,
        "compress_to_fp16": True, "superblob": request.shaves is None, "mo_args": [], "compile_tool_args": [],
        "opts": {"encoding": dict(ENCODING), "mean_values": list(MEAN_VALUES), "scale_values": list(SCALE_VALUES)},
        "output_dir": str(output_dir),
    }
    if request.shaves is not None:
        arguments["number_of_shaves"] = request.shaves
    if tool_version:
        arguments["tool_version"] = tool_version
    return arguments


class HubAIConverter(Converter):
    name = "hubai"
    superblob = True
    opsets = (11, 16)
    summary = "HubAI (online, hubai-sdk): an RVC2 superblob from Luxonis' service; key in $HUBAI_API_KEY"

    def __init__(self, url: str | None = None, tool_version: str | None = None) -> None:
        self.url = url or os.environ.get(URL_ENV)
        self.tool_version = tool_version

    @classmethod
    def from_options(cls, options: Any | None) -> HubAIConverter:
        if options is None:
            return cls()
        return cls(url=options.converter_url, tool_version=options.tool_version)

    def availability(self) -> Availability:
        if importlib.util.find_spec("hubai_sdk") is None:
            return Availability(False, f"package {PACKAGE} is not installed (pip install 'yolobench[oak]')")
        version = importlib.metadata.version(PACKAGE)
        if not os.environ.get(API_KEY_ENV):
            return Availability(False, f"{PACKAGE} {version} installed, but ${API_KEY_ENV} is not set")
        where = self.url or "Luxonis' HubAI"
        return Availability(True, f"{PACKAGE} {version}, ${API_KEY_ENV} set; online ({where}), checked on first compile")

    def versions(self) -> dict[str, str]:
        return {PACKAGE: importlib.metadata.version(PACKAGE) if importlib.util.find_spec("hubai_sdk") else "absent"}

    def settings(self) -> dict[str, Any]:
        return {"tool_version": self.tool_version or "service default", "superblob": True}

    def convert(self, request: ConversionRequest, work_dir: Path) -> Path:
        key = os.environ.get(API_KEY_ENV)
        if not key:
            raise BuildFailed(f"converter hubai needs a HubAI API key in ${API_KEY_ENV} (or choose "
                              "runtime.depthai.converter: modelconverter to convert locally)")
        sdk = import_hubai()
        output_dir = work_dir / "download"
        try:
            with _contained(work_dir, self.url):
                client = sdk.HubAIClient(api_key=key)
                client.convert.RVC2(**rvc2_arguments(request, output_dir, self.tool_version))
        except Exception as error:  # the SDK's own errors, requests' and its ValueError for a refused key
            detail = scrub(f"{type(error).__name__}: {error}", key)
            raise BuildFailed(f"HubAI conversion of {request.name} failed ({detail})") from None
        found = sorted(p for p in output_dir.rglob("*") if p.name.endswith(_ARCHIVE_SUFFIXES))
        if not found:
            raise BuildFailed(f"HubAI conversion of {request.name} downloaded no NN Archive, superblob or blob")
        return found[0]

"""The `hubai` converter, driven through the real `hubai-sdk` client against the loopback fake of HubAI
(tests/fake_hubai.py): the exact requests a conversion makes (key check, model, variant, instance, signed
upload, RVC2 export, download), what the archive yolobench keeps holds, failures named, and the API key kept
out of every log, output, manifest, cache key, error and MLflow param."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import signal
from pathlib import Path

import pytest

from tests.fake_hubai import fake_hubai
from tests.tiny_yolo11 import tiny_yolo11_export
from yolobench.cache import ArtifactCache, BuildFailed
from yolobench.errors import ModelMismatch

# Not importorskip: importing the SDK here, before yolobench does, would let it ask PyPI for a newer version.
pytestmark = pytest.mark.skipif(importlib.util.find_spec("hubai_sdk") is None,
                                reason="hubai-sdk is not installed (pip install -e '.[dev]')")

API_KEY = "hubai-secret-3f9a1c77e2d04b5a"
EXPORT_ROUTE = "/models/api/v1/modelInstances/{id}/export/rvc2"
# What one conversion asks of HubAI, in order (the SDK re-reads a resource after creating it).
EXPECTED_ROUTES = [
    ("GET", "/models/api/v1/models"),  # is the key valid?
    ("POST", "/models/api/v1/models"), ("GET", "/models/api/v1/models/{id}"),
    ("GET", "/models/api/v1/modelVersions"),  # the next variant version
    ("POST", "/models/api/v1/modelVersions"), ("GET", "/models/api/v1/modelVersions/{id}"),
    ("GET", "/models/api/v1/models/{id}"),
    ("POST", "/models/api/v1/modelInstances"), ("GET", "/models/api/v1/modelInstances/{id}"),
    ("GET", "/models/api/v1/models/{id}"), ("GET", "/models/api/v1/modelVersions/{id}"),
    ("POST", "/models/api/v1/modelInstances/{id}/upload_async"), ("POST", "/storage"),
    ("GET", "/jobs/api/v1/jobs/{id}"),  # the upload job
    ("POST", EXPORT_ROUTE), ("GET", "/jobs/api/v1/jobs/{id}"),  # the export job
    ("GET", "/models/api/v1/modelInstances/{id}"), ("GET", "/models/api/v1/modelInstances/{id}/download"),
    ("GET", "/models/api/v1/modelInstances/{id}/download"), ("GET", "/files/{id}/{name}"),
]


@pytest.fixture()
def head(tmp_path: Path):
    from yolobench.stages.blob import rvc2_detection_head

    cache = ArtifactCache(tmp_path / "cache")
    return cache, rvc2_detection_head(cache, tiny_yolo11_export(cache))


def compile_with(service, cache, head, **converter):
    from yolobench.converters.hubai import HubAIConverter
    from yolobench.stages.rvc2_compile import compile_archive

    return compile_archive(cache, head, HubAIConverter(url=service.url, **converter), 64, 6)


def test_a_conversion_makes_exactly_these_requests(head, monkeypatch) -> None:
    cache, model = head
    monkeypatch.setenv("HUBAI_API_KEY", API_KEY)
    with fake_hubai(API_KEY) as service:
        archive = compile_with(service, cache, model, tool_version="2022.3.0")
    routes = [(r.method, "/files/{id}/{name}" if r.path.startswith("/files/") else r.route) for r in service.requests]
    assert routes == EXPECTED_ROUTES
    api = [r for r in service.requests if "/api/v1/" in r.path]
    assert all(r.authorization == f"Bearer {API_KEY}" for r in api)
    assert all(r.authorization is None for r in service.requests if r not in api)  # storage and files: no key
    (created,) = service.recorded("POST", "/models/api/v1/models")
    assert created.json["name"] == f"yolobench-{model.key[:12]}" and created.json["is_public"] is False
    (instance,) = service.recorded("POST", "/models/api/v1/modelInstances")
    assert instance.json["model_type"] == "ONNX" and instance.json["input_shape"] == [[1, 3, 64, 64]]
    (upload,) = service.recorded("POST", "/storage")
    assert upload.files["file"] == (model.path.name, model.path.read_bytes())  # the rewritten head, as it is
    (export,) = service.recorded("POST", EXPORT_ROUTE)
    assert export.query == {"legacy": "False"}
    (image_input,) = export.json["inputs"]
    assert {k: image_input[k] for k in ("input_name", "shape", "layout", "mean_values", "scale_values", "encoding")} == {
        "input_name": "images", "shape": [1, 3, 64, 64], "layout": "NCHW", "mean_values": [0.0, 0.0, 0.0],
        "scale_values": [255.0, 255.0, 255.0], "encoding": {"from_": "BGR", "to": "RGB"}}  # the SDK's own spelling
    assert {k: export.json[k] for k in ("superblob", "number_of_shaves", "mo_args", "compile_tool_args",
                                        "ir_version")} == {
        "superblob": True, "number_of_shaves": 8, "mo_args": [], "compile_tool_args": [], "ir_version": "2022.3.0"}
    assert archive.manifest["superblob"] is True and archive.manifest["converter"] == "hubai"
    assert archive.manifest["config"]["settings"] == {"tool_version": "2022.3.0", "superblob": True}


def test_the_archive_kept_is_a_valid_nn_archive_with_the_model_s_head(head, monkeypatch) -> None:
    from luxonis_ml.nn_archive import Config

    from yolobench.stages.nn_archive import is_superblob, read_archive

    cache, model = head
    monkeypatch.setenv("HUBAI_API_KEY", API_KEY)
    with fake_hubai(API_KEY) as service:
        archive = compile_with(service, cache, model)
        again = compile_with(service, cache, model)
    assert again == archive and len(service.recorded("POST", EXPORT_ROUTE)) == 1  # cached: one conversion
    config, model_file, data = read_archive(archive.path)
    assert data == service.model_bytes and is_superblob(data) and model_file.endswith(".superblob")
    parsed = Config.model_validate(config)  # Luxonis' own schema of an NN Archive config
    head_metadata = parsed.model.heads[0].metadata
    assert parsed.model.heads[0].parser == "YOLO" and head_metadata.n_classes == 4
    assert head_metadata.yolo_outputs == list(model.manifest["outputs"]) and head_metadata.subtype == "yolov8"
    assert parsed.model.inputs[0].preprocessing.dai_type == "BGR888p"
    assert [o.name for o in parsed.model.outputs] == list(model.manifest["outputs"])


def test_failures_are_named_and_nothing_is_sent_for_a_model_that_fails_its_checks(head, monkeypatch) -> None:
    cache, model = head
    monkeypatch.setenv("HUBAI_API_KEY", API_KEY)
    with fake_hubai(API_KEY) as service:
        service.export_error = "Model Optimizer: unsupported layer"
        with pytest.raises(BuildFailed, match="HubAI conversion of yolobench-.* failed.*unsupported layer"):
            compile_with(service, cache, model)
        service.export_error, service.archive_classes = None, 80
        with pytest.raises(ModelMismatch, match=r"n_classes = 80, but the model has 4 classes"):
            compile_with(service, cache, model)
        sent = len(service.requests)
        from yolobench.converters.hubai import HubAIConverter
        from yolobench.stages.rvc2_compile import compile_archive

        with pytest.raises(ModelMismatch, match="imgsz = 70: not a multiple of the model's stride 32"):
            compile_archive(cache, model, HubAIConverter(url=service.url), 70)
        assert len(service.requests) == sent
    assert cache.builds["nn_archive"] == 0


def test_no_key_no_request_and_a_refused_key_is_a_failure_without_the_key(head, monkeypatch) -> None:
    cache, model = head
    with fake_hubai(API_KEY) as service:
        monkeypatch.delenv("HUBAI_API_KEY", raising=False)
        with pytest.raises(BuildFailed, match=r"needs a HubAI API key in \$HUBAI_API_KEY"):
            compile_with(service, cache, model)
        assert service.requests == []
        wrong = "hubai-wrong-key-98765"
        monkeypatch.setenv("HUBAI_API_KEY", wrong)
        with pytest.raises(BuildFailed) as refused:
            compile_with(service, cache, model)
    assert "Invalid API key" in str(refused.value) and wrong not in str(refused.value)


def test_the_key_appears_in_no_log_output_manifest_cache_key_error_or_mlflow_param(
        head, monkeypatch, capfd, caplog, tmp_path: Path) -> None:
    from tests.conftest import OAK_TINY_SWEEP
    from yolobench import tracking
    from yolobench.keys import identity
    from yolobench.space import Space
    from yolobench.spec import parse_spec

    cache, model = head
    monkeypatch.setenv("HUBAI_API_KEY", API_KEY)
    caplog.set_level(logging.DEBUG)
    with fake_hubai(API_KEY) as service:
        archive = compile_with(service, cache, model)
        service.export_error = f"echoing the caller's token {API_KEY}"  # a service that repeats it back
        with pytest.raises(BuildFailed) as failed:
            compile_with(service, ArtifactCache(tmp_path / "other"), model)
    out, err = capfd.readouterr()
    stored = b"".join(path.read_bytes() for path in cache.root.rglob("*") if path.is_file())
    spec = parse_spec({**OAK_TINY_SWEEP, "runtime": {"name": "depthai", "depthai": {"converter": "hubai"}}})
    variant = Space.from_spec(spec).baseline
    params = tracking.variant_params(spec, variant, "yolo11n")
    for place, text in {"stdout": out, "stderr": err, "log": caplog.text, "error": str(failed.value),
                        "manifest": json.dumps(archive.manifest), "cache key": archive.key,
                        "identity": json.dumps(identity(spec, variant)), "params": json.dumps(params, default=str)}.items():
        assert API_KEY not in text, place
    assert API_KEY.encode() not in stored and "***" in str(failed.value)


def test_the_sdk_leaves_the_process_as_it_found_it(head, monkeypatch, tmp_path: Path) -> None:
    """Working directory, signal handlers, and a ./shared_with_container the SDK would otherwise delete."""
    cache, model = head
    monkeypatch.setenv("HUBAI_API_KEY", API_KEY)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shared_with_container").mkdir()
    handler = signal.getsignal(signal.SIGTERM)
    with fake_hubai(API_KEY) as service:
        compile_with(service, cache, model)
    assert Path.cwd() == tmp_path and (tmp_path / "shared_with_container").is_dir()
    assert signal.getsignal(signal.SIGTERM) is handler and os.environ["LUXONIS_TELEMETRY_ENABLED"] == "false"


def test_the_sdk_s_pypi_version_check_is_refused_and_nothing_else() -> None:
    import requests

    from yolobench.converters.hubai import _without_version_check

    real_get, guarded = _without_version_check()
    with pytest.raises(requests.ConnectionError, match="skipped by yolobench"):
        guarded("https://pypi.org/pypi/hubai-sdk/json", timeout=2)
    assert real_get is requests.get

"""A loopback stand-in for Luxonis' HubAI service (127.0.0.1 only), driven by the real `hubai-sdk` client: the
REST resources a conversion touches (models, model versions, model instances, jobs), the signed-policy upload to
storage, the RVC2 export and the download. It records every request exactly as received (method, path, query,
bearer token, JSON body, form fields, files), refuses any other token with 401, and "converts" by answering with
an NN Archive holding a superblob DepthAI's readers accept (or the failure it was told to give)."""

from __future__ import annotations

import io
import json
import tarfile
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.fake_blobconverter import _parse_multipart, dummy_superblob
from tests.loopback import QuietHandler, loopback_server

CREATED = "2026-01-01T00:00:00"
API = "/api/v1/"


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    authorization: str | None
    json: Any = None
    form: dict[str, str] = field(default_factory=dict)
    files: dict[str, tuple[str | None, bytes]] = field(default_factory=dict)

    @property
    def route(self) -> str:
        """The path with resource ids replaced by {id}: what the SDK asked for, whatever ids the fake handed out."""
        return "/".join("{id}" if _is_id(part) else part for part in self.path.split("/"))


def _is_id(part: str) -> bool:
    try:
        uuid.UUID(part)
    except ValueError:
        return False
    return True


@dataclass
class FakeHubAI:
    api_key: str
    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    resources: dict[str, dict[str, dict[str, Any]]] = field(
        default_factory=lambda: {"models": {}, "modelVersions": {}, "modelInstances": {}, "jobs": {}})
    files: dict[str, dict[str, bytes]] = field(default_factory=dict)  # instance id -> file name -> bytes
    export_error: str | None = None  # set: the export job fails with this
    archive_classes: int | None = None  # set: the returned archive's head declares this many classes
    model_bytes: bytes = field(default_factory=dummy_superblob)

    def recorded(self, method: str, route: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.route == route]


def _archive(name: str, model_bytes: bytes, classes: int | None) -> bytes:
    """What the fake export hands back: an NN Archive with the compiled model (and a head only if asked)."""
    heads = None if classes is None else [{"parser": "YOLO", "outputs": [], "metadata": {
        "classes": [f"c{i}" for i in range(classes)], "n_classes": classes, "iou_threshold": 0.5,
        "conf_threshold": 0.5, "max_det": 300, "yolo_outputs": [], "subtype": "yolov8"}}]
    config = {"config_version": "1.0", "model": {"metadata": {"name": name, "path": f"{name}.superblob",
                                                              "precision": "float16"},
                                                 "inputs": [], "outputs": [], "heads": heads}}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as archive:
        for member, data in (("config.json", json.dumps(config).encode()), (f"{name}.superblob", model_bytes)):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class _Api:
    """The service's behaviour, one method per kind of request; the handler only routes."""

    def __init__(self, service: FakeHubAI) -> None:
        self.service = service

    def create(self, collection: str, body: dict[str, Any]) -> tuple[int, Any]:
        store = self.service.resources[collection]
        if collection == "models" and any(m["name"] == body["name"] for m in store.values()):
            return 422, {"detail": "Unique constraint error: model name"}
        resource_id = str(uuid.uuid4())
        slug = body["name"].lower().replace(" ", "-")
        resource = {**body, "id": resource_id, "created": CREATED, "updated": CREATED, "slug": slug}
        if collection == "models":
            resource.update(downloads=0, is_public=bool(body.get("is_public")))
        elif collection == "modelVersions":
            resource["variant_slug"] = slug
        else:
            version = self.service.resources["modelVersions"][body["model_version_id"]]
            resource.update(model_id=version["model_id"], is_nn_archive=False, status="available")
        store[resource_id] = resource
        return 200, resource

    def listing(self, collection: str, query: dict[str, str]) -> tuple[int, Any]:
        items = list(self.service.resources[collection].values())
        if "slug" in query:
            items = [item for item in items if item["slug"] == query["slug"]]
        if "model_id" in query:
            items = [item for item in items if item.get("model_id") == query["model_id"]]
        return 200, items

    def job(self, name: str, result: dict[str, Any] | None = None, error: str | None = None) -> dict[str, Any]:
        job = {"id": str(uuid.uuid4()), "name": name, "arguments": {}, "extra": {}, "result": result,
               "status": "FAILED" if error else "COMPLETED", "exception": error}
        self.service.resources["jobs"][job["id"]] = job
        return job

    def upload_policy(self, instance_id: str, query: dict[str, str]) -> tuple[int, Any]:
        fields = {"key": f"{instance_id}/{query['name']}", "policy": "p", "success_action_status": "201",
                  "x-goog-algorithm": "a", "x-goog-credential": "c", "x-goog-date": "d", "x-goog-signature": "s"}
        return 200, {"job": self.job("upload"), "policy": {"url": f"{self.service.url}/storage", "fields": fields}}

    def export(self, instance_id: str, body: dict[str, Any]) -> tuple[int, Any]:
        source = self.service.resources["modelInstances"][instance_id]
        if self.service.export_error:
            return 200, self.job(body["name"], error=self.service.export_error)
        exported = self.create("modelInstances", {"name": body["name"], "model_version_id": source["model_version_id"],
                                                  "parent_id": instance_id, "model_type": "RVC2"})[1]
        name = exported["slug"].split(" ")[0].replace("/", "_")
        self.service.files[exported["id"]] = {
            f"{name}.rvc2.tar.xz": _archive(name, self.service.model_bytes, self.service.archive_classes)}
        return 200, self.job(body["name"], result={"resulting_model_instance_id": exported["id"]})

    def download_urls(self, instance_id: str) -> tuple[int, Any]:
        names = self.service.files.get(instance_id, {})
        return 200, [f"{self.service.url}/files/{instance_id}/{name}" for name in names]


def _route(api: _Api, record: Recorded) -> tuple[int, Any]:
    """(status, JSON answer) for a request to one of the services' /api/v1 endpoints."""
    if record.authorization != f"Bearer {api.service.api_key}":
        return 401, {"detail": "Invalid API key"}
    _, rest = record.path.split(API, 1)
    parts = [part for part in rest.split("/") if part]
    collection, resource_id, action = parts[0], parts[1] if len(parts) > 1 else None, parts[2:]
    if resource_id is None:
        return api.create(collection, record.json) if record.method == "POST" else api.listing(collection, record.query)
    if action == ["upload_async"]:
        return api.upload_policy(resource_id, record.query)
    if action[:1] == ["export"]:
        return api.export(resource_id, record.json)
    if action == ["download"]:
        return api.download_urls(resource_id)
    found = api.service.resources[collection].get(resource_id)
    return (200, found) if found else (404, {"detail": "not found"})


def _read(handler: BaseHTTPRequestHandler) -> Recorded:
    parsed = urllib.parse.urlsplit(handler.path)
    body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
    record = Recorded(handler.command, parsed.path, dict(urllib.parse.parse_qsl(parsed.query)),
                      handler.headers.get("Authorization"))
    content_type = handler.headers.get("Content-Type") or ""
    if content_type.startswith("multipart/"):
        record.form, record.files = _parse_multipart(content_type, body)
    elif body:
        record.json = json.loads(body)
    return record


@contextmanager
def fake_hubai(api_key: str) -> Iterator[FakeHubAI]:
    service = FakeHubAI(api_key=api_key)
    api = _Api(service)

    class Handler(QuietHandler):
        def _handle(self) -> None:
            record = _read(self)
            service.requests.append(record)
            if record.path == "/storage":  # the signed-policy upload: no bearer token, like cloud storage
                instance_id, name = record.form["key"].split("/", 1)
                service.files.setdefault(instance_id, {})[f"uploaded:{name}"] = record.files["file"][1]
                self.answer(201, b"", "text/plain")
            elif record.path.startswith("/files/"):
                _, _, instance_id, name = record.path.split("/", 3)
                self.answer(200, service.files[instance_id][name], "application/octet-stream")
            else:
                status, answer = _route(api, record)
                self.answer(status, json.dumps(answer).encode(), "application/json")

        do_GET = do_POST = do_PUT = do_DELETE = _handle  # noqa: N815 (http.server's naming)

    with loopback_server(Handler) as url:
        service.url = url
        yield service

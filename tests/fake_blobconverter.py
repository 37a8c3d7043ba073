"""A local stand-in for the legacy blobconverter HTTP service (POST /compile), on 127.0.0.1: it records each
request exactly as received (query, form fields, uploaded files, the parsed config) and answers with
a small blob that has a valid Myriad X header, or with the error it was told to give. Also the compiled-model
bytes the other converters' fakes hand back (a blob and a superblob DepthAI's own readers accept)."""

from __future__ import annotations

import struct
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import default as default_policy
from typing import Any

import yaml

from tests.loopback import QuietHandler, loopback_server


# mv_blob_header (little-endian uint32 after the 52-byte ELF header): magic, file size, blob version major/minor,
# input/output/stage counts, input/output sizes, batch, BSS size, CMX slices, SHAVEs, hw/shave/dma stage flags, then
# the offsets of the input, output, stage and constant sections. Version 6.0 is what OpenVINO 2022.x writes.
_BLOB_HEADER = struct.Struct("<20I")


def dummy_blob(size: int = 256, shaves: int = 8) -> bytes:
    """Bytes with the header a compiled blob has (magic 9709 at 52, declared size at 56, version 6.0, no inputs or
    outputs), complete enough for DepthAI's own blob reader to accept."""
    data = bytearray(size)
    end = 52 + _BLOB_HEADER.size
    _BLOB_HEADER.pack_into(data, 52, 9709, size, 6, 0, 0, 0, 0, 0, 0, 1, 0, shaves, shaves, 0, 0, 0, end, end, end, end)
    return bytes(data)


def dummy_superblob(size: int = 256) -> bytes:
    """A superblob whose base blob serves every SHAVE count (16 empty patches), as DepthAI reads it."""
    blob = dummy_blob(size)
    return struct.pack(">17Q", len(blob), *([0] * 16)) + blob


@dataclass
class Recorded:
    path: str
    query: dict[str, str]
    form: dict[str, str]
    files: dict[str, tuple[str | None, bytes]]  # form field -> (file name, content)

    @property
    def config(self) -> dict[str, Any]:
        return yaml.safe_load(self.files["config"][1])


@dataclass
class FakeService:
    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    status: int = 200
    error_body: bytes = b'{"message": "Model Optimizer failed"}'
    blob: bytes = field(default_factory=dummy_blob)


def _parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, str], dict[str, tuple[str | None, bytes]]]:
    message = BytesParser(policy=default_policy).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\nMIME-Version: 1.0\r\n\r\n" + body)
    form, files = {}, {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename is None:
            form[name] = payload.decode()
        else:
            files[name] = (filename, payload)
    return form, files


@contextmanager
def fake_blobconverter() -> Iterator[FakeService]:
    service = FakeService()

    class Handler(QuietHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            parsed = urllib.parse.urlsplit(self.path)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            form, files = _parse_multipart(self.headers["Content-Type"], body)
            service.requests.append(Recorded(parsed.path, dict(urllib.parse.parse_qsl(parsed.query)), form, files))
            if service.status != 200:
                self.answer(service.status, service.error_body, "application/json")
            else:
                self.answer(200, service.blob, "application/octet-stream")

    with loopback_server(Handler) as url:
        service.url = url
        yield service

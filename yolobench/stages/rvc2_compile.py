"""OAK compile stage: the rewritten YOLO11 ONNX (stage rvc2_head) -> a converter -> the variant's NN Archive,
cached by the ONNX, the converter, its versions and settings (never its URL or key). With a superblob
converter one archive serves every SHAVE count and both decoding modes, so a sweep compiles once per
(model, imgsz); with the legacy service, once per SHAVE count too."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from yolobench.cache import Artifact, ArtifactCache, BuildFailed, BuildOutput, file_sha256
from yolobench.converters import ConversionRequest, Converter
from yolobench.converters.validation import check_archive_classes, validate_for_compile
from yolobench.stages.nn_archive import (
    YOLO_SUBTYPE, archive_classes, archive_config, converted_model, is_superblob, write_archive,
)  # fmt: skip

ARCHIVE_STAGE = "nn_archive"


def class_names(manifest: dict[str, Any]) -> list[str]:
    """The model's class names in class-id order (manifests store them as {"0": "person", ...})."""
    names = manifest.get("names") or {}
    return [str(names[key]) for key in sorted(names, key=int)]


def _request(head: Artifact, input_name: str, input_shape: tuple[int, ...], shaves: int | None) -> ConversionRequest:
    name = re.sub(r"[^A-Za-z0-9_-]", "_", f"yolobench-{head.key[:12]}")
    return ConversionRequest(onnx_path=head.path, name=name, input_name=input_name, input_shape=input_shape,
                             shaves=shaves)


def _package(data: bytes, request: ConversionRequest, head: Artifact, names: list[str], imgsz: int,
             work_dir: Path) -> Path:
    suffix = ".superblob" if is_superblob(data) else ".blob"
    config = archive_config(head.manifest, f"{request.name}{suffix}", request.input_name, imgsz, names)
    return write_archive(work_dir / f"{request.name}.rvc2.tar.xz", config, data)


def compile_archive(cache: ArtifactCache, head: Artifact, converter: Converter, imgsz: int,
                    shaves: int | None = None) -> Artifact:
    """The NN Archive for `head`: a superblob when `converter.superblob` (then `shaves` is ignored), else the blob
    for `shaves`. Checked before anything is sent anywhere (converters/validation.py)."""
    names = class_names(head.manifest)
    input_name, input_shape, opset = validate_for_compile(head.path, head.manifest, imgsz, names, converter)
    request = _request(head, input_name, input_shape, None if converter.superblob else shaves)

    def build(work_dir: Path) -> BuildOutput:
        scratch = work_dir / "converter"
        data, their_config = converted_model(converter.convert(request, scratch))
        if converter.superblob and not is_superblob(data):
            raise BuildFailed(f"converter {converter.name} returned a single blob where a superblob was asked for")
        check_archive_classes(archive_classes(their_config) if their_config else None, names, converter.name)
        archive = _package(data, request, head, names, imgsz, work_dir)
        shutil.rmtree(scratch, ignore_errors=True)
        return BuildOutput(filename=archive.name, manifest={
            "converter": converter.name, "superblob": is_superblob(data), "shaves": request.shaves,
            "model_bytes": len(data), "imgsz": imgsz, "num_classes": len(names), "names": head.manifest.get("names"),
            "outputs": head.manifest["outputs"], "input_name": input_name, "source_onnx_opset": opset,
            "source_onnx_sha256": file_sha256(head.path), "data_type": "FP16",
            "input": "BGR uint8 planar (U8); the blob scales by 1/255 and swaps to RGB",
            "applied_by_default": [{"name": "openvino_fusion",
                                    "by": "OpenVINO Model Optimizer and the Myriad X compiler (always on)"}],
        })

    config = {"converter": converter.name, "settings": converter.settings(), "shaves": request.shaves,
              "imgsz": imgsz, "archive": {"subtype": YOLO_SUBTYPE, "classes": names}}
    return cache.get_or_build(ARCHIVE_STAGE, config, head, converter.versions(), build)

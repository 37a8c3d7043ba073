"""The NN Archive an OAK runs (Luxonis' `.tar.xz`: `config.json` + the compiled model): the config yolobench
writes for a YOLO11 variant (schema 1.0, as luxonis-ml defines it and DepthAI 3 reads it), the superblob's
header, and reading what a converter hands back (an archive of its own, a superblob or a single blob).

One archive serves both decoding modes: its model has the per-level outputs DepthAI's YOLO parser reads
(stages/blob.py), and its head tells the DetectionNetwork how to decode them; the host decodes the same
outputs itself (runtimes/depthai_runtime.py)."""

from __future__ import annotations

import io
import json
import struct
import tarfile
from pathlib import Path
from typing import Any

from yolobench.cache import BuildFailed
from yolobench.runtimes.base import DecodeSettings
from yolobench.stages.blob import is_blob

CONFIG_NAME = "config.json"
CONFIG_VERSION = "1.0"
# A superblob: big-endian uint64 size of the base blob, then one uint64 patch size per SHAVE count 1..16;
# then the base blob and the patches (a patch of size 0: the base blob already is that SHAVE count's).
SUPERBLOB_PATCHES = 16
SUPERBLOB_HEADER = struct.Struct(">" + "Q" * (1 + SUPERBLOB_PATCHES))
# DepthAI's YOLO parser decodes per-level (1, 4+1+nc, h, w) outputs (DFL distances, confidence, class scores)
# as the anchor-free YOLOv8 family; YOLO11's head is the same after the rewrite.
YOLO_SUBTYPE = "yolov8"
STRIDES = (8, 16, 32)
# What the device is sent (BGR uint8 planar) and what the blob does with it: divide by 255 (scale), no mean;
# the archive says the frames are BGR, the converters are told to reverse them into the RGB the model takes.
DAI_TYPE = "BGR888p"
MEAN = (0.0, 0.0, 0.0)
SCALE = (255.0, 255.0, 255.0)
MODEL_SUFFIXES = (".superblob", ".blob")


def is_superblob(data: bytes) -> bool:
    """Whether `data` is a superblob: its header's sizes add up to the file and its base blob is a blob."""
    if len(data) < SUPERBLOB_HEADER.size:
        return False
    blob_size, *patches = SUPERBLOB_HEADER.unpack_from(data)
    base = data[SUPERBLOB_HEADER.size:SUPERBLOB_HEADER.size + blob_size]
    return SUPERBLOB_HEADER.size + blob_size + sum(patches) == len(data) and is_blob(base)


def archive_config(head: dict[str, Any], model_file: str, input_name: str, imgsz: int,
                   class_names: list[str], decode: DecodeSettings = DecodeSettings()) -> dict[str, Any]:
    """The archive's config for the rewritten YOLO11 head (`head`: the rvc2_head artifact's manifest). The
    thresholds are the host decode's defaults; a run sets its own on the device when it opens the archive."""
    outputs = list(head["outputs"])
    return {
        "config_version": CONFIG_VERSION,
        "model": {
            "metadata": {"name": Path(model_file).stem, "path": model_file, "precision": "float16"},
            "inputs": [{
                "name": input_name, "dtype": "uint8", "input_type": "image", "shape": [1, 3, imgsz, imgsz],
                "layout": "NCHW",
                "preprocessing": {"mean": list(MEAN), "scale": list(SCALE), "reverse_channels": None,
                                  "interleaved_to_planar": None, "dai_type": DAI_TYPE},
            }],
            "outputs": [{"name": name, "dtype": "float16", "shape": list(shape), "layout": "NCHW"}
                        for name, shape in head["outputs"].items()],
            "heads": [{
                "parser": "YOLO", "outputs": outputs,
                "metadata": {
                    "classes": list(class_names), "n_classes": len(class_names),
                    "iou_threshold": decode.iou, "conf_threshold": decode.conf, "max_det": decode.max_det,
                    "anchors": None, "yolo_outputs": outputs, "subtype": YOLO_SUBTYPE, "strides": list(STRIDES),
                },
            }],
        },
    }


def write_archive(destination: Path, config: dict[str, Any], model_bytes: bytes) -> Path:
    """config.json and the model file (named as config.model.metadata.path) in one `.tar.xz`."""
    members = {CONFIG_NAME: json.dumps(config, indent=2).encode(), config["model"]["metadata"]["path"]: model_bytes}
    with tarfile.open(destination, "w:xz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, io.BytesIO(data))
    return destination


def read_archive(path: Path) -> tuple[dict[str, Any], str, bytes]:
    """(config, model file name, model bytes) of an NN Archive."""
    try:
        with tarfile.open(path, "r:*") as archive:
            names = archive.getnames()
            config = json.loads(_member(archive, CONFIG_NAME).read())
            model_name = config["model"]["metadata"]["path"]
            if model_name not in names:
                raise BuildFailed(f"NN Archive {path.name} names model {model_name!r} but holds only {names}")
            return config, model_name, _member(archive, model_name).read()
    except (tarfile.TarError, json.JSONDecodeError, KeyError) as error:
        raise BuildFailed(f"{path.name} is not a readable NN Archive ({type(error).__name__}: {error})") from None


def _member(archive: tarfile.TarFile, name: str) -> Any:
    extracted = archive.extractfile(name)
    if extracted is None:
        raise BuildFailed(f"NN Archive member {name} is not a file")
    return extracted


def archive_classes(config: dict[str, Any]) -> int | None:
    """The class count an archive's first head declares, or None when it has no head."""
    heads = config.get("model", {}).get("heads") or []
    return int(heads[0]["metadata"]["n_classes"]) if heads else None


def converted_model(path: Path) -> tuple[bytes, dict[str, Any] | None]:
    """A converter's output as (compiled model bytes, the archive config it came with, if any), checked: a
    superblob or a blob, nothing else."""
    config = None
    if path.name.endswith((".tar.xz", ".tar")):
        config, _, data = read_archive(path)
    else:
        data = path.read_bytes()
    if not (is_superblob(data) or is_blob(data)):
        raise BuildFailed(f"the converter's output {path.name} ({len(data)} bytes) is neither a superblob nor a "
                          "Myriad X blob")
    return data, config

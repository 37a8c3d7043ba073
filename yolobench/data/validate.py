"""A user's data set checked once, before the first training or build, so that what would surface late (a
traceback after a variant was trained and timed) or never (a half-written JPEG scored as it is, a model scored
against classes it was not trained on) stops the sweep at once, before anything is written in the home, with one
message naming the file and the line.

The same pass yields the data's fingerprint: a hash of the scored images' and labels' content, which decides
whether a finished variant still counts on a rerun (yolobench/search.py). It is not part of the variant key:
those keys name stored studies and runs and are pinned (tests/test_pinned_identity.py)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from yolobench.data.dataset import (
    DataSet, LabelError, image_list, label_path, open_dataset, parse_labels, read_config, split_entries,
)
from yolobench.errors import DataInvalid, SweepStopped

if TYPE_CHECKING:
    from yolobench.settings import SweepSettings
    from yolobench.spec import SweepSpec

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"IEND\xaeB`\x82"  # the IEND chunk's type and CRC: the last 8 bytes of every complete PNG
JPEG_START, JPEG_END = b"\xff\xd8\xff", b"\xff\xd9"
THREADS = min(8, os.cpu_count() or 1)  # OpenCV decodes without the GIL
MORE_SHOWN = 4  # further problems listed under the first


@dataclass(frozen=True)
class Problem:
    file: Path
    what: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.file}{f', line {self.line}' if self.line else ''}: {self.what}"


@dataclass(frozen=True)
class DataUse:
    """What of the data set this host reads: the scored val images (0 = all), and of the train split the
    images and labels a training reads, or the first images an int8 calibration reads."""

    val_images: int = 0
    train: bool = False
    calibration_images: int = 0

    @classmethod
    def of(cls, spec: SweepSpec, measure_only: bool = False) -> DataUse:
        builds = not measure_only
        calibrates = builds and "int8" in spec.axes.precision and spec.data.calibration_split == "train"
        return cls(spec.data.val_images, builds and spec.model.weights is None,
                   spec.int8.calibration_images if calibrates else 0)


def image_problem(path: Path) -> tuple[str | None, str]:
    """(what is wrong with the image or None, sha256 of its bytes). A JPEG without its end marker or a PNG
    without its IEND chunk was cut short: OpenCV decodes what is there and greys the rest, so it would be
    scored (or trained on) silently; Ultralytics would rewrite it in place."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return "image listed in the split does not exist", ""
    except OSError as error:
        return f"image cannot be read ({error.strerror})", ""
    content = hashlib.sha256(data).hexdigest()
    tail = data.rstrip(b"\0")
    if not data:
        return "image file is empty (0 bytes)", content
    if data.startswith(JPEG_START) and not tail.endswith(JPEG_END):
        return "JPEG is truncated (no end-of-image marker FFD9); re-save or remove the image", content
    if data.startswith(PNG_SIGNATURE) and not tail.endswith(PNG_END):
        return "PNG is truncated (no IEND chunk); re-save or remove the image", content
    frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_8)
    if frame is None or frame.size == 0:
        return "OpenCV cannot decode this file as an image (corrupt, or not an image)", content
    return None, content


def _class_line(text: str, class_id: int) -> int | None:
    for number, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if tokens and float(tokens[0]) == class_id:
            return number
    return None


def label_problem(image: Path, names: Mapping[int, str], yaml_path: Path) -> tuple[Problem | None, str]:
    """(what is wrong with the image's label file or None, sha256 of its bytes or '-' when it has none)."""
    path = label_path(image)
    if not path.is_file():
        return None, "-"  # an image without objects
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
        rows = parse_labels(text)
    except UnicodeDecodeError:
        return Problem(path, "not a text file; a label file holds lines 'class x_center y_center width height'"), ""
    except LabelError as error:
        return Problem(path, error.problem, error.line), ""
    unknown = sorted({int(c) for c in rows[:, 0]} - set(names))
    if unknown:
        return Problem(path, f"class {unknown[0]} is not in the data set's names (ids 0-{len(names) - 1} in "
                             f"{yaml_path.name})", _class_line(text, unknown[0])), ""
    return None, hashlib.sha256(data).hexdigest()


def _missing_listed(dataset: DataSet) -> dict[Path, Problem]:
    """Images that the splits' .txt lists name but that do not exist, each reported by its list's file and line."""
    config, root = read_config(dataset.yaml_path), dataset.root or dataset.yaml_path.parent
    missing: dict[Path, Problem] = {}
    for split in ("train", "val"):
        for entry in split_entries(root, config.get(split)):
            if entry.suffix == ".txt" and entry.is_file():
                for number, image in image_list(entry, root):
                    if not image.is_file():
                        missing.setdefault(image, Problem(entry, f"lists {image}, which does not exist", number))
    return missing


def check_dataset(dataset: DataSet, use: DataUse = DataUse()) -> DataSet:
    """The data set with its fingerprint, if every image and label file this host reads is one Ultralytics reads
    as meant; else DataInvalid with the first problem (and a few more). The whole val split is checked, the
    train split as far as `use` reads it."""
    val = list(dataset.val_images)
    scored = val[: use.val_images] if use.val_images else val
    train = list(dataset.train_images) if use.train else list(dataset.train_images[: use.calibration_images])
    missing = _missing_listed(dataset)
    problems = list(missing.values())
    if (use.train or use.calibration_images) and not train:
        problems.append(Problem(dataset.yaml_path, "the train split has no images; the sweep trains or calibrates "
                                                   "int8 on it (a `train:` folder, list of folders or .txt list)"))
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # the message below says it once, better
    try:
        with ThreadPoolExecutor(THREADS) as pool:
            checked = list(pool.map(image_problem, val + train))
    finally:
        cv2.utils.logging.setLogLevel(level)
    images = dict(zip(val + train, checked))
    labelled = val + (train if use.train else [])
    labels = {image: label_problem(image, dataset.names, dataset.yaml_path) for image in dict.fromkeys(labelled)}
    for image in dict.fromkeys(val + train):
        what = images[image][0]
        if what is not None and image not in missing:
            problems.append(Problem(image, what))
        if image in labels and labels[image][0] is not None:
            problems.append(labels[image][0])
    if problems:
        more = "".join(f"\n  also {p}" for p in problems[1:1 + MORE_SHOWN])
        rest = len(problems) - 1 - MORE_SHOWN
        raise DataInvalid(f"{problems[0]}{more}" + (f"\n  ... and {rest} more" if rest > 0 else "")
                          + f"\n  (data set {dataset.yaml_path}: fix these files, then run the same command again)")
    return replace(dataset, fingerprint=data_fingerprint(dataset, scored, {i: images[i][1] for i in scored},
                                                         {i: labels[i][1] for i in scored}))


def data_fingerprint(dataset: DataSet, scored: list[Path], image_hashes: Mapping[Path, str],
                     label_hashes: Mapping[Path, str]) -> str:
    """sha256 of the class names and, per scored image, its path under the data root and its image's and label
    file's content: the same data copied to another host (a measuring device) has the same fingerprint; a
    removed, added, repaired or relabelled image changes it. The train split is left out: a measuring host
    need not have it, and the trained model is already keyed by its content (stages/train.py)."""
    root = dataset.root or dataset.yaml_path.parent
    lines = [json.dumps(dataset.names, sort_keys=True)]
    lines += [f"{os.path.relpath(image, root)}\0{image_hashes[image]}\0{label_hashes[image]}" for image in scored]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def open_checked(spec: SweepSpec, settings: SweepSettings) -> DataSet:
    """The sweep's data set, made or found (data/dataset.py) and checked as far as this host reads it."""
    return check_dataset(open_dataset(spec.data, settings.home), DataUse.of(spec, settings.measure_only))


def check_model_classes(manifest: Mapping[str, Any], names: Mapping[int, str]) -> None:
    """Refuse to score a model against a data set whose classes it does not have: mAP matches class ids, so a
    model trained on other classes scores near 0 without any error. Where the model records no names (only
    a class count, or nothing) only what is recorded is compared."""
    recorded = manifest.get("names")
    model = {int(k): str(v) for k, v in recorded.items()} if recorded else None
    count = len(model) if model else manifest.get("num_classes")
    if count is None:
        return
    beyond = sorted(i for i in names if i >= int(count))
    if beyond:
        raise SweepStopped(f"the model has {count} classes but the data set has {len(names)} (class {beyond[0]} "
                           f"{names[beyond[0]]!r} and up can never be detected); use a model trained on this data set")
    differ = [i for i in sorted(names) if model is not None and model.get(i) != names[i]]
    if differ:
        shown = ", ".join(f"{i}: model {model[i]!r}, data set {names[i]!r}" for i in differ[:3])
        raise SweepStopped(f"the model's class names differ from the data set's at {len(differ)} of {len(names)} "
                           f"ids ({shown}{', ...' if len(differ) > 3 else ''}); mAP compares class ids, so scores "
                           "would be meaningless. Use a model trained on this data set, or make the data yaml's "
                           "names those of the model")


"""Ultralytics-format data sets: read a data.yaml, list a split's images, read their labels.

Only numpy and OpenCV: a measuring host has no Ultralytics."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from yolobench.errors import DataInvalid, DataUnavailable
from yolobench.keys import digest

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class DataSet:
    """A data set as the measuring side sees it: class names and the images of each split."""

    yaml_path: Path
    names: dict[int, str]
    train_images: tuple[Path, ...]
    val_images: tuple[Path, ...]
    root: Path | None = None  # the data yaml's `path:` resolved (where relative entries start)
    fingerprint: str | None = None  # of the scored data, once validated (yolobench/data/validate.py)

    @property
    def num_classes(self) -> int:
        return len(self.names)


def read_config(yaml_path: Path) -> dict[str, Any]:
    """The data yaml as a mapping; a file that is not one stops with what it holds instead."""
    config = yaml.safe_load(Path(yaml_path).read_text(encoding="utf-8-sig"))
    if not isinstance(config, dict):
        raise DataInvalid(f"{yaml_path}: a data yaml is a mapping (path, train, val, names), "
                          f"not {type(config).__name__}")
    return config


def data_root(yaml_path: Path, config: dict[str, Any]) -> Path:
    """Where relative entries start: `path:` if given (absolute, or relative to the yaml's folder, else to the
    working directory as Ultralytics tries it), else the yaml's own folder."""
    path = config.get("path")
    if not path:
        return yaml_path.parent
    root = Path(str(path)).expanduser()
    if root.is_absolute():
        return root
    beside = (yaml_path.parent / root).resolve()
    return beside if beside.exists() or not root.exists() else root.resolve()


def class_names(yaml_path: Path, config: dict[str, Any]) -> dict[int, str]:
    """`names` as Ultralytics takes it: a list (ids 0..n-1) or a mapping {id: name} with integer ids."""
    names, count = config.get("names"), config.get("nc")
    if names is None and isinstance(count, int) and count > 0:
        return {index: f"class_{index}" for index in range(count)}  # Ultralytics' names for an `nc:` alone
    if isinstance(names, list):
        names = dict(enumerate(names))
    if not isinstance(names, dict) or not names:
        raise DataInvalid(f"{yaml_path}: `names` must be a list of class names or a mapping {{0: name, ...}}, "
                          f"not {names!r}")
    try:
        names = {int(k): str(v) for k, v in names.items()}
    except (TypeError, ValueError):
        bad = next(k for k in names if not str(k).strip().isdigit())
        raise DataInvalid(f"{yaml_path}: `names` key {bad!r} is not a class id (a whole number)") from None
    if sorted(names) != list(range(len(names))):
        raise DataInvalid(f"{yaml_path}: `names` ids are {sorted(names)}; Ultralytics numbers classes 0 to "
                          f"{len(names) - 1} without gaps")
    if count is not None and count != len(names):
        raise DataInvalid(f"{yaml_path}: `nc: {count}` but `names` has {len(names)} classes")
    return names


def split_entries(root: Path, entry: str | list[str] | None) -> list[Path]:
    """A split's entries (folders, .txt lists, image files) as paths; Ultralytics' old `../` prefix means the
    root's own folder when nothing is found above it."""
    if entry is None:
        return []
    paths = []
    for item in entry if isinstance(entry, list) else [entry]:
        path = Path(str(item)).expanduser()
        if not path.is_absolute():
            path = root / path
            if not path.exists() and str(item).startswith("../"):
                path = root / str(item)[3:]
        paths.append(path)
    return paths


def image_list(path: Path, root: Path) -> list[tuple[int, Path]]:
    """(line number, image) of a .txt list: `./x` relative to the list's folder (as Ultralytics reads it),
    other relative lines to the data root."""
    listed = []
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        text = line.strip()
        if not text:
            continue
        candidate = Path(text)
        if text.startswith("./"):
            candidate = path.parent / text[2:]
        elif not candidate.is_absolute():
            candidate = root / candidate
        listed.append((number, candidate))
    return listed


def _list_images(root: Path, entry: str | list[str] | None) -> tuple[Path, ...]:
    images: list[Path] = []
    for path in split_entries(root, entry):
        if path.is_dir():
            images.extend(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.suffix == ".txt" and path.is_file():
            images.extend(image for _, image in image_list(path, root) if image.suffix.lower() in IMAGE_SUFFIXES)
        elif path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            images.append(path)
        else:
            raise FileNotFoundError(f"data set split {str(path)!r} not found (no folder, .txt list or image there)")
    return tuple(sorted(images))


def load_dataset(yaml_path: Path) -> DataSet:
    """Read an Ultralytics data yaml that is already on disk."""
    yaml_path = Path(yaml_path).resolve()
    if not yaml_path.is_file():
        raise FileNotFoundError(f"data yaml not found: {yaml_path}")
    config = read_config(yaml_path)
    root = data_root(yaml_path, config)
    return DataSet(
        yaml_path=yaml_path,
        names=class_names(yaml_path, config),
        train_images=_list_images(root, config.get("train")),
        val_images=_list_images(root, config.get("val")),
        root=root,
    )


def label_path(image_path: Path) -> Path:
    """Ultralytics' convention: .../images/<split>/x.jpg -> .../labels/<split>/x.txt."""
    parts = list(image_path.parts)
    for index in range(len(parts) - 1, -1, -1):
        if parts[index] == "images":
            parts[index] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


# Ultralytics' tolerance for normalised coordinates (data/utils.py verify_image_label).
COORDINATE_SLACK = 0.01


class LabelError(ValueError):
    """One line of a label file that Ultralytics would not read as a box; `line` counts from 1."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(f"line {line}: {problem}")
        self.line, self.problem = line, problem


def _number(token: str, line: int) -> float:
    try:
        value = float(token)
    except ValueError:
        raise LabelError(line, f"{token!r} is not a number") from None
    if not np.isfinite(value):
        raise LabelError(line, f"{token!r} is not a finite number")
    return value


def parse_labels(text: str) -> np.ndarray:
    """Rows (class, cx, cy, w, h) of one label file's text, read as Ultralytics reads a detection label:
    boxes of 5 numbers, or polygons (class x1 y1 x2 y2 ..., 3 points or more) turned into the box of their
    points' min and max; a file mixing the two, a row of any other length, a class id that is not a whole
    number, or a coordinate outside [0, 1] (with Ultralytics' 1 % slack) raises LabelError."""
    lines = [(number, line.split()) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    polygons = any(len(tokens) > 6 for _, tokens in lines)
    rows = []
    for number, tokens in lines:
        values = [_number(token, number) for token in tokens]
        if polygons:
            if len(values) == 5:
                raise LabelError(number, "a box (5 numbers) in a file of polygons; Ultralytics ignores a label file "
                                         "that mixes boxes and polygons")
            if len(values) < 7 or len(values) % 2 == 0:
                raise LabelError(number, f"{len(values)} numbers; a polygon is 'class x1 y1 x2 y2 x3 y3 ...' "
                                         "(a class and 3 or more x y pairs)")
            points = np.asarray(values[1:]).reshape(-1, 2)
            (x_min, y_min), (x_max, y_max) = points.min(axis=0), points.max(axis=0)
            coordinates = [(x_min + x_max) / 2, (y_min + y_max) / 2, x_max - x_min, y_max - y_min]
            checked = points.ravel()
        else:
            if len(values) != 5:
                raise LabelError(number, f"{len(values)} numbers; a box is 'class x_center y_center width height' "
                                         "(5 numbers) and a polygon 'class x1 y1 x2 y2 x3 y3 ...'")
            coordinates = values[1:]
            checked = np.asarray(coordinates)
            if min(coordinates[2:]) < 0:
                raise LabelError(number, f"negative width or height {coordinates[2:]}")
        class_id = values[0]
        if class_id < 0 or class_id % 1:
            raise LabelError(number, f"class {tokens[0]!r} is not a class id (a whole number from 0)")
        outside = checked[(checked < -COORDINATE_SLACK) | (checked > 1 + COORDINATE_SLACK)]
        if outside.size:
            raise LabelError(number, f"coordinate {float(outside[0]):g} is outside [0, 1]; labels are normalised "
                                     "by the image's width and height")
        rows.append([class_id, *coordinates])
    return np.asarray(rows, np.float32).reshape(-1, 5)


def read_labels(image_path: Path) -> np.ndarray:
    """Labels of one image as float32 rows (class, cx, cy, w, h), normalised to [0, 1]; no label file or an
    empty one is an image without objects. A line that is not a label stops with its file and line."""
    path = label_path(Path(image_path))
    if not path.is_file():
        return np.zeros((0, 5), np.float32)
    try:
        return parse_labels(path.read_text(encoding="utf-8-sig"))
    except LabelError as error:
        raise DataInvalid(f"{path}, {error}") from None
    except UnicodeDecodeError:
        raise DataInvalid(f"{path}: not a text file (a label file holds lines 'class x y w h')") from None


def resolve_data_yaml(data: Any, home: Path) -> Path:
    """The sweep's data set on disk (`data` is the sweep file's data section): made here if synthetic,
    else a local file, else Ultralytics' download where the build extra and internet are there."""
    if data.synthetic is not None:
        from yolobench.data.synthetic import make_synthetic_dataset

        settings = data.synthetic.model_dump()
        return make_synthetic_dataset(Path(home) / "data" / f"synthetic-{digest(settings, length=12)}", **settings)
    path = Path(data.yaml)
    if path.is_file():
        return path.resolve()
    try:
        from ultralytics.data.utils import check_det_dataset
    except ImportError:
        raise DataUnavailable(
            f"data.yaml {data.yaml!r} is not a file here, and fetching it needs the build extra "
            "(pip install 'yolobench[build]') and internet; or point data.yaml at a local data yaml"
        ) from None
    from yolobench.stages.weights import hub_reachable

    if not hub_reachable():
        raise DataUnavailable(
            f"data set {data.yaml!r} is not on disk and cannot be downloaded (no internet). "
            "Download it on a machine with internet and point data.yaml at its local data yaml, "
            "or use data.synthetic for an offline run"
        )
    return Path(check_det_dataset(data.yaml)["yaml_file"]).resolve()


def open_dataset(data: Any, home: Path) -> DataSet:
    """The sweep's data set, checked before any store is opened: a missing split stops the sweep with
    one message naming the file, not a traceback."""
    yaml_path = resolve_data_yaml(data, home)
    try:
        dataset = load_dataset(yaml_path)
    except yaml.YAMLError as error:
        raise DataInvalid(f"{yaml_path}: not a readable yaml file: {error}") from None
    except FileNotFoundError as error:
        raise DataUnavailable(f"data set {yaml_path}: {error}") from None
    if not dataset.val_images:
        raise DataInvalid(f"{yaml_path}: the val split has no images (its `val:` entry lists none)")
    return dataset

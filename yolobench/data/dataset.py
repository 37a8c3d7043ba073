"""Ultralytics-format data sets: read a data.yaml, list a split's images, read their labels.

Only numpy and OpenCV: a measuring host has no Ultralytics."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from yolobench.errors import DataUnavailable
from yolobench.keys import digest

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class DataSet:
    """A data set as the measuring side sees it: class names and the images of each split."""

    yaml_path: Path
    names: dict[int, str]
    train_images: tuple[Path, ...]
    val_images: tuple[Path, ...]

    @property
    def num_classes(self) -> int:
        return len(self.names)


def _list_images(root: Path, entry: str | list[str] | None) -> tuple[Path, ...]:
    if entry is None:
        return ()
    entries = entry if isinstance(entry, list) else [entry]
    images: list[Path] = []
    for item in entries:
        path = (root / item) if not Path(item).is_absolute() else Path(item)
        if path.is_dir():
            images.extend(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.suffix == ".txt" and path.is_file():
            for line in path.read_text().splitlines():
                if line.strip():
                    candidate = Path(line.strip())
                    images.append(candidate if candidate.is_absolute() else (root / candidate))
        else:
            raise FileNotFoundError(f"data set split {item!r} not found at {path}")
    return tuple(sorted(images))


def load_dataset(yaml_path: Path) -> DataSet:
    """Read an Ultralytics data yaml that is already on disk."""
    yaml_path = Path(yaml_path).resolve()
    if not yaml_path.is_file():
        raise FileNotFoundError(f"data yaml not found: {yaml_path}")
    config = yaml.safe_load(yaml_path.read_text())
    root = Path(config.get("path") or yaml_path.parent)
    if not root.is_absolute():
        root = (yaml_path.parent / root).resolve()
    names = config["names"]
    if isinstance(names, list):
        names = dict(enumerate(names))
    return DataSet(
        yaml_path=yaml_path,
        names={int(k): str(v) for k, v in names.items()},
        train_images=_list_images(root, config.get("train")),
        val_images=_list_images(root, config.get("val")),
    )


def label_path(image_path: Path) -> Path:
    """Ultralytics' convention: .../images/<split>/x.jpg -> .../labels/<split>/x.txt."""
    parts = list(image_path.parts)
    for index in range(len(parts) - 1, -1, -1):
        if parts[index] == "images":
            parts[index] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def read_labels(image_path: Path) -> np.ndarray:
    """Labels of one image as float32 rows (class, cx, cy, w, h), normalised to [0, 1]."""
    path = label_path(Path(image_path))
    if not path.exists():
        return np.zeros((0, 5), np.float32)
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        return np.zeros((0, 5), np.float32)
    return np.array([[float(v) for v in row[:5]] for row in rows], np.float32)


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
    except (FileNotFoundError, KeyError, yaml.YAMLError) as error:
        raise DataUnavailable(f"data set {yaml_path}: {error}") from None
    if not dataset.val_images:
        raise DataUnavailable(f"the val split of {yaml_path} has no images")
    return dataset

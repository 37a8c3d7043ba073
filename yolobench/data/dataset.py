"""Ultralytics-format data sets: read a data.yaml, list a split's images, read their labels.

Only numpy and OpenCV: a measuring host has no Ultralytics."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

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

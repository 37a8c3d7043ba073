"""A deterministic synthetic detection data set in Ultralytics format, so that the quickstart
and the tests run offline: no data set host is reachable from many build machines."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import yaml

from yolobench.cache import write_atomically

CLASS_NAMES = ("circle", "square", "triangle", "cross")
EMPTY_IMAGE_FRACTION = 0.08  # some images carry no object: detectors must learn to say nothing


def _overlaps(box: tuple[int, int, int, int], others: list[tuple[int, int, int, int]]) -> bool:
    x0, y0, x1, y1 = box
    return any(x0 < b[2] and b[0] < x1 and y0 < b[3] and b[1] < y1 for b in others)


def _place(rng: np.random.Generator, height: int, width: int, taken: list) -> tuple[int, int, int] | None:
    """A free square (x0, y0, size) that overlaps no object already drawn, or None."""
    shorter = min(height, width)
    for _ in range(20):
        smallest = max(8, shorter // 10)
        size = int(rng.integers(smallest, max(smallest + 1, shorter // 3)))
        x0, y0 = int(rng.integers(0, width - size)), int(rng.integers(0, height - size))
        if not _overlaps((x0, y0, x0 + size, y0 + size), taken):
            return x0, y0, size
    return None


def _draw_object(image: np.ndarray, rng: np.random.Generator, class_id: int, x0: int, y0: int,
                 size: int) -> tuple[float, float, float, float]:
    """Draw one object; return its box as (x_min, y_min, x_max, y_max) in pixels."""
    # Bright objects on a darker background: colour varies, contrast stays learnable.
    raw = rng.integers(30, 256, size=3).astype(np.float64)
    colour = tuple(int(c) for c in raw * rng.integers(170, 256) / raw.max())
    if class_id == 0:
        radius = size // 2
        cv2.circle(image, (x0 + radius, y0 + radius), radius, colour, -1, cv2.LINE_AA)
        box = (x0, y0, x0 + 2 * radius, y0 + 2 * radius)
    elif class_id == 1:
        cv2.rectangle(image, (x0, y0), (x0 + size, y0 + size), colour, -1)
        box = (x0, y0, x0 + size, y0 + size)
    elif class_id == 2:
        points = np.array([[x0 + size // 2, y0], [x0, y0 + size], [x0 + size, y0 + size]], np.int32)
        cv2.fillPoly(image, [points], colour, cv2.LINE_AA)
        box = (x0, y0, x0 + size, y0 + size)
    else:
        bar = max(3, size // 4)
        middle = size // 2
        cv2.rectangle(image, (x0, y0 + middle - bar // 2), (x0 + size, y0 + middle + bar // 2), colour, -1)
        cv2.rectangle(image, (x0 + middle - bar // 2, y0), (x0 + middle + bar // 2, y0 + size), colour, -1)
        box = (x0, y0, x0 + size, y0 + size)
    return tuple(float(v) for v in box)


def _make_image(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, list[tuple[int, tuple]]]:
    base = rng.integers(0, 90, size=3)
    gradient = np.linspace(0, 1, width, dtype=np.float32)[None, :, None] * rng.integers(0, 50, size=3)
    image = (base + gradient + rng.normal(0, 8, size=(height, width, 3))).clip(0, 255).astype(np.uint8)
    objects: list[tuple[int, tuple]] = []
    if rng.random() >= EMPTY_IMAGE_FRACTION:
        for _ in range(int(rng.integers(1, 5))):
            placement = _place(rng, height, width, [box for _, box in objects])
            if placement is None:
                continue
            class_id = int(rng.integers(0, len(CLASS_NAMES)))
            objects.append((class_id, _draw_object(image, rng, class_id, *placement)))
    return image, objects


def make_synthetic_dataset(
    root: Path,
    train_images: int = 200,
    val_images: int = 50,
    image_size: int = 320,
    seed: int = 0,
) -> Path:
    """Write the data set under `root` (train/val splits and data.yaml) and return data.yaml.

    The same arguments always give the same files, so the set can be part of a cache key.
    An existing, complete set with the same arguments is left as it is. Every file is written atomically: two
    sweeps starting together on a fresh home both write the set, and each may read what the other rewrites.
    """
    root = Path(root).resolve()
    settings = {"train_images": train_images, "val_images": val_images, "image_size": image_size, "seed": seed}
    data_yaml = root / "data.yaml"
    stamp = root / "synthetic.json"
    if data_yaml.exists() and stamp.exists() and json.loads(stamp.read_text()) == settings:
        return data_yaml
    rng = np.random.default_rng(seed)
    for split, count in (("train", train_images), ("val", val_images)):
        images_dir, labels_dir = root / "images" / split, root / "labels" / split
        images_dir.mkdir(parents=True, exist_ok=True)
        labels_dir.mkdir(parents=True, exist_ok=True)
        for index in range(count):
            # Varied aspect ratios exercise the letterbox.
            height = image_size if index % 3 else int(image_size * 0.75)
            image, objects = _make_image(rng, height, image_size)
            name = f"{split}_{index:05d}"
            encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()
            write_atomically(images_dir / f"{name}.jpg", encoded)
            lines = []
            for class_id, (x_min, y_min, x_max, y_max) in objects:
                cx, cy = (x_min + x_max) / 2 / image_size, (y_min + y_max) / 2 / height
                w, h = (x_max - x_min) / image_size, (y_max - y_min) / height
                lines.append(f"{class_id} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
            write_atomically(labels_dir / f"{name}.txt", "\n".join(lines) + ("\n" if lines else ""))
    config = {"path": str(root), "train": "images/train", "val": "images/val", "names": dict(enumerate(CLASS_NAMES))}
    write_atomically(data_yaml, yaml.safe_dump(config, sort_keys=False))
    write_atomically(stamp, json.dumps(settings))
    return data_yaml

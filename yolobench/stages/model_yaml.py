"""Model yamls for width/depth pruning: Ultralytics' YOLO11 architecture with explicit multiples,
written once per (scale, width, depth) so that training keys on its content."""

from __future__ import annotations

from pathlib import Path

import yaml

from yolobench.cache import write_atomically

ARCHITECTURE = "cfg/models/11/yolo11.yaml"


def write_scaled_yaml(folder: Path, scale: str, width_multiple: float | None, depth_multiple: float | None) -> Path:
    """Write the YOLO11 yaml with the scale's multiples, overridden by the given ones; return its path.

    The file name must not look like `yolo11n.yaml`: Ultralytics would read a scale from it."""
    import ultralytics

    architecture = yaml.safe_load((Path(ultralytics.__file__).parent / ARCHITECTURE).read_text())
    depth, width, max_channels = architecture.pop("scales")[scale]
    architecture["depth_multiple"] = float(depth_multiple if depth_multiple is not None else depth)
    architecture["width_multiple"] = float(width_multiple if width_multiple is not None else width)
    architecture["max_channels"] = max_channels  # recorded; Ultralytics caps channels only through `scales`
    name = f"student-{scale}-w{architecture['width_multiple']:g}-d{architecture['depth_multiple']:g}.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    text = yaml.safe_dump(architecture, sort_keys=False)
    if not path.exists() or path.read_text() != text:
        write_atomically(path, text)
    return path

"""Accuracy evaluated once per numerics: a variant whose raw outputs on a fixed probe set of val images match
those of an already evaluated variant of the same model (same build key: threads, CPU affinity, an ORT level
that fuses without changing the arithmetic, OAK NN threads ...) takes that variant's mAP instead of scoring
the whole val split again. On a Raspberry Pi most of a grid's time is evaluation: this is where it goes.

The probe outputs of evaluated variants are kept on disk (one .npy per variant key, under its build key), so a
resumed sweep or another worker on the same home can reuse them too."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from yolobench.cache import write_atomically
from yolobench.data.letterbox import to_input_tensor

PROBE_IMAGES = 4
TOLERANCE = 1e-4  # largest |difference| allowed, relative to the largest |output| of the evaluated variant


@dataclass(frozen=True)
class ReusedAccuracy:
    """The mAP of another run whose outputs match this one's on the probe set."""

    values: dict[str, float]
    run_id: str
    probe_max_difference: float

    def metrics(self) -> dict[str, float]:
        return {**self.values, "accuracy_probe_max_difference": self.probe_max_difference}


def probe_outputs(infer: Callable[[np.ndarray], np.ndarray], images: Sequence[Path], imgsz: int) -> np.ndarray:
    frames = [cv2.imread(str(path), cv2.IMREAD_COLOR) for path in images[:PROBE_IMAGES]]
    return np.stack([np.asarray(infer(to_input_tensor(frame, imgsz)[0]), np.float32) for frame in frames if frame is not None])


@dataclass
class AccuracyReuse:
    folder: Path  # <home>/probes
    tolerance: float = TOLERANCE

    def _path(self, build_key: str, variant_key: str) -> Path:
        return self.folder / build_key / f"{variant_key}.npy"

    def save(self, build_key: str, variant_key: str, outputs: np.ndarray) -> None:
        import io

        buffer = io.BytesIO()
        np.save(buffer, outputs)
        write_atomically(self._path(build_key, variant_key), buffer.getvalue())

    def match(self, build_key: str, outputs: np.ndarray,
              results: Mapping[str, Any]) -> ReusedAccuracy | None:
        """The first sibling scored itself whose probe outputs match. `results` are the study's, by variant key
        (search.measured): only the siblings on disk are looked up in it, however large the study."""
        for path in sorted((self.folder / build_key).glob("*.npy")):
            sibling = scored(results.get(path.stem))
            if sibling is None:
                continue
            reference = np.load(path)
            if reference.shape != outputs.shape:
                continue
            scale = float(np.abs(reference).max()) or 1.0
            difference = float(np.abs(reference - outputs).max()) / scale
            if difference <= self.tolerance:
                return ReusedAccuracy(dict(sibling[1]), sibling[0], difference)
        return None

    def reuse_or_remember(self, infer: Callable[[np.ndarray], np.ndarray], images: Sequence[Path], imgsz: int,
                          build_key: str, variant_key: str, results: Mapping[str, Any]) -> ReusedAccuracy | None:
        """A matching sibling's accuracy; else None, and this variant's probe outputs are kept for later ones."""
        outputs = probe_outputs(infer, images, imgsz)
        found = self.match(build_key, outputs, results)
        if found is None:
            self.save(build_key, variant_key, outputs)
        return found


ACCURACY_METRICS = ("map50", "map50_95", "precision", "recall")


def scored(result: Any | None) -> tuple[str, dict[str, float]] | None:
    """(run id, accuracy metrics) of a study's result that was scored itself; None for one that took another's."""
    if result is None or "accuracy_probe_max_difference" in result.metrics or "map50_95" not in result.metrics:
        return None
    return result.run_id, {m: result.metrics[m] for m in ACCURACY_METRICS if m in result.metrics}

"""Shared by the benchmark scripts: a model trained and exported through yolobench's own cached stages,
so the benchmarks time and score the same kind of artifact a sweep does."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python benchmarks/x.py` from anywhere
    sys.path.insert(0, str(ROOT))

from yolobench.cache import Artifact, ArtifactCache  # noqa: E402
from yolobench.data.dataset import DataSet, load_dataset  # noqa: E402

QUICKSTART_TRAIN = {"model_cfg": "yolo11n.yaml", "epochs": 25, "imgsz": 256}  # the quickstart target's model
# A model of its own when the quickstart's is not in the cache: small, yet trained long enough that
# its mAP is far from 0 (an accuracy cross-check of a model that detects nothing would prove nothing).
BENCH_DATA = {"train_images": 160, "val_images": 32, "image_size": 160, "seed": 0}
BENCH_TRAIN = {"epochs": 60, "imgsz": 128, "batch": 16, "seed": 0}


@dataclass(frozen=True)
class BenchModel:
    cache: ArtifactCache
    weights: Artifact
    data_yaml: Path
    source: str  # "quickstart" or "bench"

    @property
    def dataset(self) -> DataSet:
        return load_dataset(self.data_yaml)

    def onnx(self, imgsz: int) -> Artifact:
        from yolobench.stages.export import export_onnx

        return export_onnx(self.cache, self.weights, imgsz)


def _cached_quickstart(cache: ArtifactCache) -> Artifact | None:
    """The quickstart's trained yolo11n, if a quickstart sweep already trained it into this cache."""
    for manifest_path in sorted((cache.root / "train").glob("*/manifest.json")):
        manifest = json.loads(manifest_path.read_text())
        if all(manifest.get(k) == v for k, v in QUICKSTART_TRAIN.items()) and Path(manifest["data_yaml"]).is_file():
            return cache.lookup("train", manifest_path.parent.name)
    return None


def bench_model(home: Path, use_quickstart: bool = True) -> BenchModel:
    """The quickstart's model if it is in `home`'s cache (and `use_quickstart`), else a small model
    trained once on a synthetic set and kept in the same cache."""
    from yolobench.stages.ultralytics_env import prepare_ultralytics

    home = Path(home)
    prepare_ultralytics(home / "ultralytics")
    cache = ArtifactCache(home / "cache")
    if use_quickstart and (weights := _cached_quickstart(cache)) is not None:
        return BenchModel(cache, weights, Path(weights.manifest["data_yaml"]), "quickstart")

    from yolobench.data.synthetic import make_synthetic_dataset
    from yolobench.stages.train import train_model

    tag = "-".join(str(v) for v in BENCH_DATA.values())
    data_yaml = make_synthetic_dataset(home / "data" / f"bench-synthetic-{tag}", **BENCH_DATA)
    print(f"training the benchmark model ({BENCH_TRAIN['epochs']} epochs, imgsz {BENCH_TRAIN['imgsz']}; "
          "cached after the first time) ...", file=sys.stderr, flush=True)
    weights = train_model(cache, "yolo11n.yaml", data_yaml, **BENCH_TRAIN)
    return BenchModel(cache, weights, data_yaml, "bench")

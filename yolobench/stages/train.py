"""Training stage: train a YOLO model (from a model yaml, optionally from initial weights) on a data set,
on CPU and deterministically, cached by the data set's content so the quickstart trains once, offline."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from yolobench.cache import Artifact, ArtifactCache, BuildFailed, BuildOutput
from yolobench.data.dataset import label_path, load_dataset
from yolobench.stages.ultralytics_env import drop_integration_callbacks, ensure_prepared, versions

STAGE = "train"
RUN_DIR_NAME = "run"  # Ultralytics' project/name inside the work dir; removed once the artifact is assembled

# Defaults a caller may override through `extra`. They are part of the cache key, so changing one here retrains.
DEFAULT_TRAIN_ARGS: dict[str, Any] = {
    "device": "cpu",
    "workers": 0,  # Ultralytics forces 0 on CPU anyway; 0 keeps data order deterministic
    "deterministic": True,
    "plots": False,  # plots need fonts and cost time; the sweep reports its own
    "val": False,  # validate once, after the last epoch (best.pt is then the last epoch's weights)
    "amp": False,  # CPU has no AMP; on GPU, amp=True runs check_amp, which downloads yolo26n.pt
    "save_period": -1,
}
# Arguments this function owns: overriding them through `extra` would break the cache key or the layout.
RESERVED_ARGS = frozenset(
    {"data", "epochs", "imgsz", "batch", "seed", "model", "project", "name", "exist_ok", "resume", "save_dir", "mode"}
)
METRIC_NAMES = {
    "metrics/precision(B)": "precision",
    "metrics/recall(B)": "recall",
    "metrics/mAP50(B)": "mAP50",
    "metrics/mAP50-95(B)": "mAP50-95",
    "fitness": "fitness",
}


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dataset_fingerprint(data_yaml: Path) -> str:
    """Hash of a data set's content, independent of where it lives.

    Covers the data yaml (without its `path`), every train/val image's relative name and size, and every
    label file's bytes (labels are small, and moving a box keeps a label file's size). Ultralytics' *.cache
    files next to the labels are ignored.
    """
    data_set = load_dataset(Path(data_yaml))
    config = yaml.safe_load(data_set.yaml_path.read_text())
    root = Path(config.pop("path", None) or data_set.yaml_path.parent)
    if not root.is_absolute():
        root = (data_set.yaml_path.parent / root).resolve()
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for split, images in (("train", data_set.train_images), ("val", data_set.val_images)):
        for image in images:
            labels = label_path(image)
            label_hash = _sha256_bytes(labels.read_bytes()) if labels.is_file() else "-"
            digest.update(f"{split}\0{os.path.relpath(image, root)}\0{image.stat().st_size}\0{label_hash}\n".encode())
    return digest.hexdigest()


def _identity(value: Any) -> Any:
    """A cache-key form of a training argument: an existing file becomes its name and content hash."""
    if isinstance(value, (str, Path)) and str(value).endswith((".pt", ".yaml", ".yml")) and Path(value).is_file():
        return {"file": Path(value).name, "sha256": _sha256_bytes(Path(value).read_bytes())}
    return value


def _train_args(extra: Mapping[str, Any] | None) -> dict[str, Any]:
    extra = dict(extra or {})
    clash = sorted(RESERVED_ARGS & extra.keys())
    if clash:
        raise ValueError(f"train_model: {clash} are set by train_model's own arguments, not through `extra`")
    return {**DEFAULT_TRAIN_ARGS, **extra}


def _metrics(raw: Mapping[str, Any]) -> dict[str, float]:
    return {METRIC_NAMES.get(k, k): round(float(v), 6) for k, v in raw.items()}


def train_model(
    cache: ArtifactCache,
    model_cfg: str,
    data_yaml: Path,
    *,
    epochs: int,
    imgsz: int,
    batch: int = 16,
    seed: int = 0,
    init_weights: Artifact | None = None,
    extra: dict | None = None,
    progress: Callable[[str], None] | None = None,
) -> Artifact:
    """Train `model_cfg` (e.g. 'yolo11n.yaml' or a yaml path) on `data_yaml`; the artifact is best.pt.

    `init_weights` starts from those weights instead of from scratch (matching layers are transferred);
    `extra` passes further Ultralytics training arguments (e.g. lr0, mosaic, distill_model).
    """
    data_yaml = Path(data_yaml).resolve()
    train_args = _train_args(extra)
    config = {
        "model_cfg": _identity(model_cfg),
        "data": dataset_fingerprint(data_yaml),
        "epochs": epochs,
        "imgsz": imgsz,
        "batch": batch,
        "seed": seed,
        "train_args": {k: _identity(v) for k, v in sorted(train_args.items())},
    }
    report = progress or (lambda message: None)

    def build(work_dir: Path) -> BuildOutput:
        ensure_prepared(cache.root / "ultralytics-home")
        from ultralytics import YOLO

        model = YOLO(model_cfg)
        if init_weights is not None:
            model.load(init_weights.path)
        dropped: list[str] = []

        def guard(trainer: Any) -> None:
            dropped.extend(drop_integration_callbacks(trainer))

        def epoch_done(trainer: Any) -> None:
            losses = trainer.label_loss_items(trainer.tloss)
            summary = " ".join(f"{name.split('/')[-1]}={float(value):.3f}" for name, value in losses.items())
            report(f"train epoch {trainer.epoch + 1}/{trainer.epochs} {summary}")

        model.add_callback("on_pretrain_routine_start", guard)
        model.add_callback("on_train_epoch_end", epoch_done)
        report(f"training {model_cfg} on {data_yaml.name}: {epochs} epochs, imgsz {imgsz}, batch {batch}")
        started = time.perf_counter()
        model.train(
            data=str(data_yaml),
            epochs=epochs,
            imgsz=imgsz,
            batch=batch,
            seed=seed,
            project=str(work_dir),
            name=RUN_DIR_NAME,
            exist_ok=True,
            **train_args,
        )
        train_s = time.perf_counter() - started
        trainer = model.trainer
        run_dir = Path(trainer.save_dir)
        best = trainer.best if trainer.best.is_file() else trainer.last
        if not best.is_file():
            raise BuildFailed(f"training wrote no checkpoint under {run_dir}")
        shutil.move(best, work_dir / "best.pt")
        for name, keep_as in (("results.csv", "results.csv"), ("args.yaml", "train_args.yaml")):
            if (run_dir / name).is_file():
                shutil.move(run_dir / name, work_dir / keep_as)
        shutil.rmtree(run_dir, ignore_errors=True)  # last.pt duplicates best.pt's size; nothing else is needed
        metrics = trainer.validator.metrics.results_dict if trainer.validator is not None else {}
        report(f"trained in {train_s:.1f}s: " + ", ".join(f"{k}={v:.4f}" for k, v in _metrics(metrics).items()))
        return BuildOutput(
            filename="best.pt",
            manifest={
                "model_cfg": model_cfg,
                "data_yaml": str(data_yaml),
                "epochs": epochs,
                "epochs_completed": int(trainer.epoch) + 1,
                "imgsz": imgsz,
                "train_s": round(train_s, 2),
                "metrics": _metrics(metrics),  # Ultralytics' final validation of best.pt on the val split
                "names": {int(k): str(v) for k, v in model.names.items()},
                "init_weights": init_weights.key if init_weights else None,
                "integration_callbacks_dropped": dropped,
            },
        )

    return cache.get_or_build(STAGE, config, init_weights, versions(("torch", "ultralytics")), build)

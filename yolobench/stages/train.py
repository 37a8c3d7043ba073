"""Training stage: train a YOLO model (from a model yaml, optionally from initial weights) on a data set,
on CPU and deterministically, cached by the data set's content so the quickstart trains once, offline."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from yolobench.cache import Artifact, ArtifactCache, BuildFailed, BuildOutput, file_sha256
from yolobench.data.dataset import label_path, load_dataset
from yolobench.keys import digest
from yolobench.stages.ultralytics_env import drop_integration_callbacks, ensure_prepared
from yolobench.versions import versions

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
    lines: list[str] = []
    for split, images in (("train", data_set.train_images), ("val", data_set.val_images)):
        for image in images:
            labels = label_path(image)
            label_hash = file_sha256(labels) if labels.is_file() else "-"
            lines.append(f"{split}\0{os.path.relpath(image, root)}\0{image.stat().st_size}\0{label_hash}\n")
    # The canonical JSON of the yaml, then one line per image, hashed as one text: full-length sha256, the value
    # stored training artifacts were keyed by.
    return digest(json.dumps(config, sort_keys=True, default=str) + "".join(lines), length=64)


def _identity(value: Any) -> Any:
    """A cache-key form of a training argument: an existing file becomes its name and content hash."""
    if isinstance(value, (str, Path)) and str(value).endswith((".pt", ".yaml", ".yml")) and Path(value).is_file():
        return {"file": Path(value).name, "sha256": file_sha256(Path(value))}
    return value


def _train_args(extra: Mapping[str, Any] | None) -> dict[str, Any]:
    extra = dict(extra or {})
    clash = sorted(RESERVED_ARGS & extra.keys())
    if clash:
        raise ValueError(f"train_model: {clash} are set by train_model's own arguments, not through `extra`")
    return {**DEFAULT_TRAIN_ARGS, **extra}


def _metrics(raw: Mapping[str, Any]) -> dict[str, float]:
    return {METRIC_NAMES.get(k, k): round(float(v), 6) for k, v in raw.items()}


@dataclass(frozen=True)
class _Training:
    """One training run as train_model was asked for it; `train_args` are the defaults merged with `extra`."""

    model_cfg: str
    data_yaml: Path
    epochs: int
    imgsz: int
    batch: int
    seed: int
    init_weights: Artifact | None
    train_args: dict[str, Any]

    def cache_config(self) -> dict[str, Any]:
        """What decides the trained weights, files by content: the stage's cache key is computed from it."""
        return {
            "model_cfg": _identity(self.model_cfg),
            "data": dataset_fingerprint(self.data_yaml),
            "epochs": self.epochs,
            "imgsz": self.imgsz,
            "batch": self.batch,
            "seed": self.seed,
            "train_args": {k: _identity(v) for k, v in sorted(self.train_args.items())},
        }


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
    training = _Training(model_cfg, Path(data_yaml).resolve(), epochs, imgsz, batch, seed, init_weights,
                         _train_args(extra))  # fmt: skip
    report = progress or (lambda message: None)

    def build(work_dir: Path) -> BuildOutput:
        ensure_prepared(cache.root / "ultralytics-home")
        return _train(training, work_dir, report)

    return cache.get_or_build(STAGE, training.cache_config(), init_weights, versions(("torch", "ultralytics")), build)


def _train(training: _Training, work_dir: Path, report: Callable[[str], None]) -> BuildOutput:
    """Run Ultralytics' trainer in `work_dir` and leave best.pt (and its results) there."""
    from ultralytics import YOLO

    model = YOLO(training.model_cfg)
    if training.init_weights is not None:
        model.load(training.init_weights.path)
    dropped = _attach_callbacks(model, report)
    report(f"training {training.model_cfg} on {training.data_yaml.name}: {training.epochs} epochs, "
           f"imgsz {training.imgsz}, batch {training.batch}")  # fmt: skip
    started = time.perf_counter()
    model.train(
        data=str(training.data_yaml),
        epochs=training.epochs,
        imgsz=training.imgsz,
        batch=training.batch,
        seed=training.seed,
        project=str(work_dir),
        name=RUN_DIR_NAME,
        exist_ok=True,
        **training.train_args,
    )
    train_s = time.perf_counter() - started
    trainer = model.trainer
    _keep_outputs(trainer, work_dir)
    metrics = _metrics(trainer.validator.metrics.results_dict if trainer.validator is not None else {})
    report(f"trained in {train_s:.1f}s: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return BuildOutput(
        filename="best.pt",
        manifest={
            "model_cfg": training.model_cfg,
            "data_yaml": str(training.data_yaml),
            "epochs": training.epochs,
            "epochs_completed": int(trainer.epoch) + 1,
            "imgsz": training.imgsz,
            "train_s": round(train_s, 2),
            "metrics": metrics,  # Ultralytics' final validation of best.pt on the val split
            "names": {int(k): str(v) for k, v in model.names.items()},
            "init_weights": training.init_weights.key if training.init_weights else None,
            "integration_callbacks_dropped": dropped,
        },
    )


def _attach_callbacks(model: Any, report: Callable[[str], None]) -> list[str]:
    """Guard against logger integrations and report each epoch's losses; returns the list the guard fills with
    the integrations it dropped."""
    dropped: list[str] = []

    def guard(trainer: Any) -> None:
        dropped.extend(drop_integration_callbacks(trainer))

    def epoch_done(trainer: Any) -> None:
        losses = trainer.label_loss_items(trainer.tloss)
        summary = " ".join(f"{name.split('/')[-1]}={float(value):.3f}" for name, value in losses.items())
        report(f"train epoch {trainer.epoch + 1}/{trainer.epochs} {summary}")

    model.add_callback("on_pretrain_routine_start", guard)
    model.add_callback("on_train_epoch_end", epoch_done)
    return dropped


def _keep_outputs(trainer: Any, work_dir: Path) -> None:
    """Move the checkpoint and its records out of Ultralytics' run dir into `work_dir`, then drop the run dir."""
    run_dir = Path(trainer.save_dir)
    best = trainer.best if trainer.best.is_file() else trainer.last
    if not best.is_file():
        raise BuildFailed(f"training wrote no checkpoint under {run_dir}")
    shutil.move(best, work_dir / "best.pt")
    for name, keep_as in (("results.csv", "results.csv"), ("args.yaml", "train_args.yaml")):
        if (run_dir / name).is_file():
            shutil.move(run_dir / name, work_dir / keep_as)
    shutil.rmtree(run_dir, ignore_errors=True)  # last.pt duplicates best.pt's size; nothing else is needed

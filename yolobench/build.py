"""Building a variant's model up to what its runtime takes: weights (or training) -> ONNX export ->
precision stage, each stage cached by content. The runtime's own compile step (engine, blob) follows
in the runner. A local builder and a prebuilt one (prebuilt.py) answer the same protocol with one record."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from yolobench.cache import Artifact, ArtifactCache
from yolobench.data.dataset import DataSet
from yolobench.errors import VariantFailed
from yolobench.runtimes import runtime_info
from yolobench.space import Variant
from yolobench.spec import SweepSpec

TRAINING_AXES = ("width_multiple", "depth_multiple", "teacher")


@dataclass(frozen=True)
class Training:
    """A model trained for a variant (its student, or a teacher), to be recorded as a training run."""

    artifact: Artifact
    description: dict[str, Any]


@dataclass(frozen=True)
class Built:
    model: Artifact  # what the runtime's compile/open receives
    lineage: list[dict[str, Any]]  # manifests back to the weights
    model_name: str
    source: str  # "built", "cache:<dir>" or "mlflow:run <id>"
    trainings: tuple[Training, ...] = field(default=())  # the student's first


class Builder(Protocol):
    def build(self, variant: Variant) -> Built: ...

    def describe(self, variant: Variant) -> str:
        """The variant's model name, without building or writing anything."""

    def check(self, variants: Sequence[Variant]) -> None:
        """Stop before the sweep starts when no variant could be built (raise a SweepStopped)."""


def scale_of(variant: Variant) -> str:
    return str(variant.get("scale", "n"))


def model_name(spec: SweepSpec, variant: Variant) -> str:
    """The model a variant starts from, for the run's `model` param: the weights' name, or what is trained
    (the model yaml, the training axes, the epochs). The same on a build host and a measuring host."""
    model = spec.model
    if model.weights is not None:
        return model.weights.format(scale=scale_of(variant))
    training = "".join(f",{axis}={variant.get(axis)}" for axis in TRAINING_AXES if variant.get(axis) is not None)
    return f"trained:{model.train.cfg.format(scale=scale_of(variant))}{training}@{model.train.epochs}ep"


def precision_stage(cache: ArtifactCache, onnx: Artifact, precision: str, spec: SweepSpec, dataset: DataSet) -> Artifact:
    """The fp32 export as it is, converted to fp16, or quantised to int8 on the sweep's calibration images."""
    from yolobench.stages.quantize import convert_fp16, quantize_int8

    if precision == "fp16":
        return convert_fp16(cache, onnx)
    if precision == "int8":
        split_name = spec.data.calibration_split
        split = dataset.train_images if split_name == "train" else dataset.val_images
        if not split:
            raise VariantFailed(f"no {split_name} images for int8 calibration (data.calibration_split)")
        return quantize_int8(cache, onnx, split[: spec.int8.calibration_images], spec.int8)
    return onnx


class LocalBuilder:
    """Builds through the cached stages here (needs the build extra)."""

    def __init__(self, spec: SweepSpec, cache: ArtifactCache, data_yaml: Path, dataset: DataSet,
                 progress: Callable[[str], None] = print, on_training_time: Callable[[float], None] = lambda _: None):
        self.spec = spec
        self.cache = cache
        self.data_yaml = data_yaml
        self.dataset = dataset
        self.progress = progress
        self.on_training_time = on_training_time  # one-off work the progress ETA leaves out
        self.precision_stage = runtime_info(spec.runtime.name).precision_stage
        # A variant is built once per sweep (its first pass, the drift reference and the confirmation all ask):
        # the stages are cached on disk, but finding them again hashes the data set each time.
        self._built: dict[tuple, Built] = {}

    def describe(self, variant: Variant) -> str:
        return model_name(self.spec, variant)

    def check(self, variants: Sequence[Variant]) -> None:
        if self.spec.model.weights is None or not variants:
            return
        from yolobench.stages.weights import check_weights

        for name in sorted({self.spec.model.weights.format(scale=scale_of(v)) for v in variants}):
            check_weights(self.cache, name)

    def build(self, variant: Variant) -> Built:
        from yolobench.stages.export import export_onnx

        key = tuple(sorted(variant.as_dict().items()))
        if key not in self._built:
            weights, trainings = self._weights(variant)
            onnx = export_onnx(self.cache, weights, int(variant["imgsz"]), self.spec.export)
            model = precision_stage(self.cache, onnx, str(variant["precision"]), self.spec, self.dataset) \
                if self.precision_stage else onnx
            self._built[key] = Built(model, self.cache.lineage(model), self.describe(variant), "built", trainings)
        return self._built[key]

    def _weights(self, variant: Variant) -> tuple[Artifact, tuple[Training, ...]]:
        """The variant's weights: resolved, or trained once (cached by content) with its training axes."""
        model = self.spec.model
        if model.weights is not None:
            from yolobench.stages.weights import resolve_weights

            return resolve_weights(self.cache, model.weights.format(scale=scale_of(variant))), ()
        trainings: list[Training] = []
        extra = {}
        teacher = str(variant.get("teacher", "none"))
        if teacher != "none":
            teacher_model, teacher_training = self._teacher(teacher)
            extra["distill_model"] = str(teacher_model.path)
            trainings += teacher_training
        multiples = {k: variant.get(k) for k in ("width_multiple", "depth_multiple") if variant.get(k) is not None}
        student = self._train(self._model_cfg(variant), {"teacher": teacher, **multiples}, extra)
        return student.artifact, (student, *trainings)

    def _teacher(self, teacher: str) -> tuple[Artifact, tuple[Training, ...]]:
        """A local .pt as it is, or an official architecture trained by yolobench on the sweep's data
        (offline there are no pretrained weights to start from)."""
        if teacher.endswith(".pt"):
            from yolobench.stages.weights import resolve_weights

            return resolve_weights(self.cache, teacher), ()
        training = self._train(f"{teacher}.yaml", {"role": "teacher"}, {})
        return training.artifact, (training,)

    def _train(self, cfg: str, description: dict[str, Any], extra: dict[str, Any]) -> Training:
        from yolobench.data.mirror import training_view
        from yolobench.stages.train import train_model

        train = self.spec.model.train
        started = time.monotonic()
        data_yaml = training_view(self.data_yaml, self.cache.root / "data-view")  # not the user's folders
        artifact = train_model(self.cache, cfg, data_yaml, epochs=train.epochs, imgsz=train.imgsz,
                               batch=train.batch, seed=train.seed, extra=extra or None, progress=self.progress)
        self.on_training_time(time.monotonic() - started)
        return Training(artifact, {**train.model_dump(), **description, "cfg": Path(cfg).name})  # the file, not the template

    def _model_cfg(self, variant: Variant) -> str:
        """The model yaml to train: the scale's own, or one written with the variant's multiples."""
        train = self.spec.model.train
        width, depth = variant.get("width_multiple"), variant.get("depth_multiple")
        if width is None and depth is None:
            return train.cfg.format(scale=scale_of(variant))
        from yolobench.stages.model_yaml import write_scaled_yaml

        return str(write_scaled_yaml(self.cache.root / "model-yaml", scale_of(variant), width, depth))

"""The sweep file: pydantic models of what a user may write, so that a bad file is refused with
one message naming the field, the value and what is allowed."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Scale = Literal["n", "s", "m", "l", "x"]
Precision = Literal["fp32", "fp16", "int8"]
OrtLevel = Literal["disable", "basic", "extended", "all"]
RuntimeName = Literal["onnxruntime", "tensorrt", "depthai"]

# Which axes belong to which runtime: hardware is data, checked here once.
RUNTIME_AXES: dict[str, set[str]] = {
    "onnxruntime": {"ort_level", "threads"},
    "tensorrt": {"trt_opt_level", "sparsity"},
    "depthai": {"shaves", "on_device_decode"},
}
COMMON_AXES = ("scale", "precision", "imgsz")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SpecError(ValueError):
    """A sweep file that cannot be used; the message is meant for the user as it is."""


class RuntimeSpec(Strict):
    name: RuntimeName = "onnxruntime"
    provider: Literal["cpu", "cuda", "tensorrt"] = "cpu"
    threads: int = Field(0, ge=0, description="intra-op threads; 0 lets the runtime choose")
    inter_op_threads: int = Field(0, ge=0)


class TrainSpec(Strict):
    """Train the model on the sweep's data set instead of downloading weights."""

    cfg: str = "yolo11{scale}.yaml"
    epochs: int = Field(25, ge=1)
    imgsz: int = Field(256, ge=32, le=1280, multiple_of=32)
    batch: int = Field(16, ge=1)
    seed: int = 0


class ModelSpec(Strict):
    """Exactly one source: `weights` (an official Ultralytics name or a local .pt; `{scale}` is
    replaced by the scale axis) or `train`."""

    weights: str | None = None
    train: TrainSpec | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if (self.weights is None) == (self.train is None):
            raise ValueError("give exactly one of model.weights (e.g. 'yolo11{scale}.pt') or model.train")
        return self


class SyntheticSpec(Strict):
    train_images: int = Field(200, ge=1)
    val_images: int = Field(50, ge=1)
    image_size: int = Field(320, ge=64)
    seed: int = 0


class DataSpec(Strict):
    """Exactly one of `yaml` (an Ultralytics data yaml: a path, or a name such as coco128.yaml)
    or `synthetic` (made by yolobench, offline)."""

    yaml: str | None = None
    synthetic: SyntheticSpec | None = None
    val_images: int = Field(0, ge=0, description="images of the val split to score; 0 = all")
    calibration_split: Literal["train", "val"] = "train"

    @model_validator(mode="after")
    def _one_source(self) -> DataSpec:
        if (self.yaml is None) == (self.synthetic is None):
            raise ValueError("give exactly one of data.yaml or data.synthetic")
        return self


class Axes(Strict):
    """Axis name -> the values (bins) to sweep. Runtime-specific axes are only allowed with their runtime."""

    scale: list[Scale] = ["n"]
    precision: list[Precision] = ["fp32"]
    imgsz: list[int] = [640]
    ort_level: list[OrtLevel] | None = None
    threads: list[int] | None = None
    trt_opt_level: list[Literal[0, 1, 2, 3, 4, 5]] | None = None
    sparsity: list[bool] | None = None
    shaves: list[Literal[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]] | None = None
    on_device_decode: list[bool] | None = None

    @field_validator("imgsz")
    @classmethod
    def _imgsz_multiple_of_32(cls, values: list[int]) -> list[int]:
        for value in values:
            if value % 32 or not 32 <= value <= 1280:
                raise ValueError(f"imgsz {value} is not allowed; use multiples of 32 from 32 to 1280")
        return values

    @field_validator("threads")
    @classmethod
    def _threads_positive(cls, values: list[int] | None) -> list[int] | None:
        if values and any(v < 0 for v in values):
            raise ValueError("threads must be >= 0")
        return values

    @field_validator("*")
    @classmethod
    def _distinct_and_not_empty(cls, values: list | None) -> list | None:
        if values is not None:
            if not values:
                raise ValueError("an axis needs at least one value")
            if len(set(values)) != len(values):
                raise ValueError(f"values repeat: {values}")
        return values

    def as_dict(self) -> dict[str, list[Any]]:
        """The axes in use, in build order."""
        return {name: list(values) for name, values in self.model_dump().items() if values is not None}


class MeasureSpec(Strict):
    warmup_runs: int = Field(10, ge=0)
    warmup_seconds: float = Field(1.0, ge=0)
    min_runs: int = Field(50, ge=1)
    min_seconds: float = Field(2.0, ge=0)
    conf: float = Field(0.001, gt=0, lt=1)
    iou: float = Field(0.7, gt=0, le=1)
    max_det: int = Field(300, ge=1)


class Int8Spec(Strict):
    """Static QDQ quantisation recipe (ONNX Runtime)."""

    activation_type: Literal["u8", "s8"] = "u8"
    weight_type: Literal["s8", "u8"] = "s8"
    per_channel: bool = True
    op_types: list[str] = ["Conv"]
    exclude_nodes: list[str] = []
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    calibration_images: int = Field(32, ge=1)


class TrackingSpec(Strict):
    experiment: str | None = None  # default: the sweep's name
    tracking_uri: str | None = None  # default: the embedded SQLite store under mlruns/


class SearchSpec(Strict):
    mode: Literal["grid"] = "grid"
    storage: str | None = None  # default: SQLite under mlruns/
    seed: int = 0


class SweepSpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    target: str = ""
    runtime: RuntimeSpec = RuntimeSpec()
    model: ModelSpec
    data: DataSpec
    axes: Axes
    baseline: dict[str, Any]
    exclude: list[dict[str, Any]] = Field(default_factory=list, description="partial variants to leave out")
    measure: MeasureSpec = MeasureSpec()
    int8: Int8Spec = Int8Spec()
    tracking: TrackingSpec = TrackingSpec()
    search: SearchSpec = SearchSpec()

    @model_validator(mode="after")
    def _axes_fit_runtime(self) -> SweepSpec:
        axes = self.axes.as_dict()
        allowed = set(COMMON_AXES) | RUNTIME_AXES[self.runtime.name]
        for name in axes:
            if name not in allowed:
                raise ValueError(
                    f"axes.{name} does not apply to runtime {self.runtime.name!r}; "
                    f"allowed axes: {', '.join(sorted(allowed))}"
                )
        if self.runtime.name == "depthai" and set(axes["precision"]) != {"fp16"}:
            raise ValueError(f"axes.precision {axes['precision']} not allowed for depthai; allowed: ['fp16']")
        return self

    @model_validator(mode="after")
    def _baseline_is_a_variant(self) -> SweepSpec:
        axes = self.axes.as_dict()
        missing = sorted(set(axes) - set(self.baseline))
        extra = sorted(set(self.baseline) - set(axes))
        if missing or extra:
            raise ValueError(
                f"baseline must give one value for each axis {sorted(axes)}; "
                + (f"missing {missing}" if missing else f"unknown {extra}")
            )
        for name, value in self.baseline.items():
            if value not in axes[name]:
                raise ValueError(f"baseline.{name} = {value!r} is not one of axes.{name} {axes[name]}")
        for entry in self.exclude:
            unknown = sorted(set(entry) - set(axes))
            if unknown:
                raise ValueError(f"exclude entry {entry} names axes not in the sweep: {unknown}")
        return self


def _allowed_keys(location: tuple) -> list[str]:
    """The keys a mapping at `location` may have, for the message about an unknown key."""
    import typing

    model: Any = SweepSpec
    for part in location[:-1]:
        field = model.model_fields.get(str(part)) if isinstance(part, str) else None
        if field is None:
            return []
        candidates = [field.annotation, *typing.get_args(field.annotation)]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return []
    return list(model.model_fields)


def _describe(error: ValidationError, source: str) -> str:
    lines = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            allowed = _allowed_keys(item["loc"])
            message = "unknown key" + (f"; allowed keys: {', '.join(allowed)}" if allowed else "")
        if item["type"] == "missing":
            lines.append(f"{source}: {location}: required field is missing")
        else:
            lines.append(f"{source}: {location} = {item['input']!r}: {message}")
    return "\n".join(lines)


def parse_spec(data: dict[str, Any], source: str = "<sweep>") -> SweepSpec:
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as error:
        raise SpecError(_describe(error, source)) from None


def load_spec(path: Path | str) -> SweepSpec:
    """Read and validate a sweep file; `name` defaults to the file's stem."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"sweep file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise SpecError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    data.setdefault("name", path.stem)
    return parse_spec(data, str(path))

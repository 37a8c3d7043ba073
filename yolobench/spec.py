"""The sweep file: pydantic models of what a user may write, so that a bad file is refused with
one message naming the field, the value and what is allowed."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from yolobench.stages.export import ExportOptions
from yolobench.stages.quantize import Int8Recipe

Scale = Literal["n", "s", "m", "l", "x"]
# The OpenVINO releases that still compile Myriad X blobs, and the newest ONNX opset they can read (ONNX 1.12's
# opset 17 came after 2022.1; OpenVINO added it later).
OPENVINO_VERSIONS = ("2021.4", "2022.1")
OPENVINO_MAX_OPSET = 16
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
# Axes that change the trained weights: they need `model.train` and are where Pareto mode pays off.
TRAINING_AXES = ("width_multiple", "depth_multiple", "teacher")
OFFICIAL_TEACHERS = ("yolo11n", "yolo11s", "yolo11m", "yolo11l", "yolo11x")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SpecError(ValueError):
    """A sweep file that cannot be used; the message is meant for the user as it is."""


class DepthaiSpec(Strict):
    """OAK (Myriad X) settings that are not axes: how the blob is compiled and how the NN node runs."""

    openvino_version: Literal[OPENVINO_VERSIONS] = "2022.1"
    converter_url: str | None = Field(
        None, description="blob conversion service; default: $YOLOBENCH_BLOBCONVERTER_URL, else Luxonis' public one")
    inference_threads: int = Field(1, ge=1, le=2, description="NN node threads; frames are sent one at a time")
    nce_per_thread: int = Field(0, ge=0, le=2, description="neural compute engines per thread; 0 = DepthAI decides")
    device: str | None = Field(None, description="MX id, IP or name of the OAK to use; default: the first found")


class RuntimeSpec(Strict):
    name: RuntimeName = "onnxruntime"
    provider: Literal["cpu", "cuda", "tensorrt"] = "cpu"
    threads: int = Field(0, ge=0, description="intra-op threads; 0 lets the runtime choose")
    inter_op_threads: int = Field(0, ge=0)
    cpu_affinity: list[int] | None = Field(
        None, min_length=1,
        description="CPU ids the measuring process (all its threads) is pinned to while latency is timed "
                    "(Linux); none leaves the affinity as it is",
    )
    depthai: DepthaiSpec | None = Field(None, description="OAK settings; only with name: depthai")
    provider_options: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="ONNX Runtime execution provider options for the provider above (e.g. trt_fp16_enable, "
                    "cudnn_conv_algo_search); they override yolobench's defaults and are recorded on each run",
    )
    trt_workspace_mb: int = Field(1024, ge=16, description="TensorRT builder workspace pool limit (MiB)")

    @model_validator(mode="after")
    def _provider_options_need_onnxruntime(self) -> RuntimeSpec:
        if self.provider_options and self.name != "onnxruntime":
            raise ValueError(f"runtime.provider_options applies to runtime 'onnxruntime' only, not {self.name!r}")
        return self

    @model_validator(mode="after")
    def _depthai_settings_need_depthai(self) -> RuntimeSpec:
        if self.depthai is not None and self.name != "depthai":
            raise ValueError(f"runtime.depthai applies to runtime 'depthai' only, not {self.name!r}")
        return self

    @field_validator("cpu_affinity")
    @classmethod
    def _cpu_ids(cls, values: list[int] | None) -> list[int] | None:
        if values is not None:
            if any(v < 0 for v in values):
                raise ValueError("CPU ids must be >= 0")
            if len(set(values)) != len(values):
                raise ValueError(f"CPU ids repeat: {values}")
        return values


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


class FloatRange(Strict):
    """A continuous axis for Pareto mode: low..high, optionally on a step grid."""

    low: float = Field(gt=0)
    high: float = Field(gt=0)
    step: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> FloatRange:
        if self.high < self.low:
            raise ValueError(f"high {self.high} is below low {self.low}")
        return self

    def contains(self, value: float) -> bool:
        if not self.low - 1e-9 <= value <= self.high + 1e-9:
            return False
        if self.step is None:
            return True
        steps = (value - self.low) / self.step
        return abs(steps - round(steps)) < 1e-6


class Axes(Strict):
    """Axis name -> the values (bins) to sweep. Runtime-specific axes are only allowed with their runtime."""

    scale: list[Scale] = ["n"]
    width_multiple: list[float] | FloatRange | None = None
    depth_multiple: list[float] | FloatRange | None = None
    teacher: list[str] | None = None
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

    @field_validator("width_multiple", "depth_multiple")
    @classmethod
    def _multiples_in_range(cls, values: list[float] | FloatRange | None) -> list[float] | FloatRange | None:
        bounds = [values.low, values.high] if isinstance(values, FloatRange) else values or []
        for value in bounds:
            if not 0 < value <= 2:
                raise ValueError(f"{value} is not allowed; multiples lie in (0, 2]")
        return values

    @field_validator("teacher")
    @classmethod
    def _teacher_known(cls, values: list[str] | None) -> list[str] | None:
        for value in values or []:
            if value != "none" and value not in OFFICIAL_TEACHERS and not value.endswith(".pt"):
                raise ValueError(
                    f"teacher {value!r} is not allowed; use 'none', one of {', '.join(OFFICIAL_TEACHERS)} "
                    "(trained by yolobench on the sweep's data) or a path to a local .pt"
                )
        return values

    @field_validator("*")
    @classmethod
    def _distinct_and_not_empty(cls, values: list | FloatRange | None) -> list | FloatRange | None:
        if isinstance(values, list):
            if not values:
                raise ValueError("an axis needs at least one value")
            if len(set(values)) != len(values):
                raise ValueError(f"values repeat: {values}")
        return values

    def as_dict(self) -> dict[str, list[Any] | FloatRange]:
        """The axes in use, in build order: a list of values, or a FloatRange (continuous)."""
        axes: dict[str, list[Any] | FloatRange] = {}
        for name in type(self).model_fields:
            values = getattr(self, name)
            if values is not None:
                axes[name] = values if isinstance(values, FloatRange) else list(values)
        return axes


# Warm-up and timed-phase defaults of each measurement profile; fields written in the sweep file win.
MEASURE_PROFILES: dict[str, dict[str, float]] = {
    "quick": {"warmup_runs": 10, "warmup_seconds": 1.0, "min_runs": 50, "min_seconds": 2.0},
    "rigorous": {"warmup_runs": 50, "warmup_seconds": 5.0, "min_runs": 1024, "min_seconds": 60.0},
}


class MeasureSpec(Strict):
    """How each variant is measured. Warm-up runs until both `warmup_runs` and `warmup_seconds` are
    reached; the timed phase until both `min_runs` and `min_seconds` are.

    `profile` gives the defaults of those four fields (any of them written explicitly wins):
    - `quick` (default, for sweeps of many variants): warm-up 10 runs and 1 s; timed >= 50 runs and >= 2 s.
    - `rigorous`, close to MLPerf SingleStream: warm-up 50 runs and 5 s; timed >= 1024 runs (MLPerf's
      minimum query count; a p99 needs >= 662 runs, a p90 >= 64) and >= 60 s.

    A variant whose inference-time CV (std/mean) exceeds `cv_threshold` is measured once more in the
    same session; the steadier attempt is kept, and if it is still above the threshold the run is
    tagged `yolobench.unstable=true`.
    """

    profile: Literal["quick", "rigorous"] = "quick"
    warmup_runs: int = Field(10, ge=0)
    warmup_seconds: float = Field(1.0, ge=0)
    min_runs: int = Field(50, ge=1)
    min_seconds: float = Field(2.0, ge=0)
    cv_threshold: float = Field(0.10, gt=0, description="inference CV above which a variant is re-measured once")
    conf: float = Field(0.001, gt=0, lt=1)
    iou: float = Field(0.7, gt=0, le=1)
    max_det: int = Field(300, ge=1)
    multi_label: bool = Field(
        True, description="accuracy NMS as Ultralytics' validator: an anchor may give one box per class above "
                          "conf; false: one label per box (its predictor). Latency always times one label per box",
    )

    @model_validator(mode="before")
    @classmethod
    def _profile_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            defaults = MEASURE_PROFILES.get(data.get("profile", "quick"))
            if defaults is not None:  # an unknown profile is refused by the field's own check
                return {**defaults, **data}
        return data


# The `int8:` and `export:` sections are the build stages' own typed configs (one definition each); importing them
# pulls in pydantic only, never onnx, onnxruntime or torch.
Int8Spec = Int8Recipe


class TrackingSpec(Strict):
    experiment: str | None = None  # default: the sweep's name
    tracking_uri: str | None = None  # default: the embedded SQLite store under mlruns/


ObjectiveMetric = Literal["latency_ms_p50", "latency_ms_p90", "e2e_ms_p50", "model_size_mb", "map50_95", "map50"]


class Objective(Strict):
    metric: ObjectiveMetric
    direction: Literal["minimize", "maximize"] | None = None  # default: maximise mAP, minimise the rest

    @property
    def resolved_direction(self) -> str:
        return self.direction or ("maximize" if self.metric.startswith("map") else "minimize")


class BudgetSpec(Strict):
    """When Pareto mode stops asking for variants: after `trials` evaluations or `minutes` of wall time."""

    trials: int | None = Field(None, ge=1)
    minutes: float | None = Field(None, gt=0)


class SearchSpec(Strict):
    """`grid` measures every variant (Optuna GridSampler); `pareto` lets a multi-objective sampler
    search the front within a budget (for spaces too costly to grid, e.g. training axes)."""

    mode: Literal["grid", "pareto"] = "grid"
    sampler: Literal["nsga2", "tpe", "gp", "random"] = "tpe"
    budget: BudgetSpec = BudgetSpec()
    objectives: list[Objective] = Field(
        default_factory=lambda: [Objective(metric="latency_ms_p50"), Objective(metric="map50_95")],
        min_length=2, max_length=3,
    )
    storage: str | None = None  # default: SQLite under mlruns/
    seed: int = 0

    @model_validator(mode="after")
    def _pareto_needs_budget(self) -> SearchSpec:
        if self.mode == "pareto" and self.budget.trials is None and self.budget.minutes is None:
            raise ValueError("search.mode 'pareto' needs a budget: search.budget.trials and/or search.budget.minutes")
        metrics = [objective.metric for objective in self.objectives]
        if len(set(metrics)) != len(metrics):
            raise ValueError(f"objectives repeat a metric: {metrics}")
        return self


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
    export: ExportOptions = ExportOptions()
    int8: Int8Recipe = Int8Recipe()
    tracking: TrackingSpec = TrackingSpec()
    search: SearchSpec = SearchSpec()

    @model_validator(mode="after")
    def _axes_fit_runtime(self) -> SweepSpec:
        axes = self.axes.as_dict()
        allowed = set(COMMON_AXES) | set(TRAINING_AXES) | RUNTIME_AXES[self.runtime.name]
        for name in axes:
            if name not in allowed:
                raise ValueError(
                    f"axes.{name} does not apply to runtime {self.runtime.name!r}; "
                    f"allowed axes: {', '.join(sorted(allowed))}"
                )
        for name in TRAINING_AXES:
            if name in axes and self.model.train is None:
                raise ValueError(f"axes.{name} changes the trained weights: it needs model.train, not model.weights")
            if isinstance(axes.get(name), FloatRange) and self.search.mode != "pareto":
                raise ValueError(f"axes.{name} is a range: a grid needs a list of values, or use search.mode 'pareto'")
        if self.runtime.name == "depthai" and set(axes["precision"]) != {"fp16"}:
            raise ValueError(f"axes.precision {axes['precision']} not allowed for depthai; allowed: ['fp16']")
        opset = self.export.opset
        if self.runtime.name == "depthai" and (opset is None or opset > OPENVINO_MAX_OPSET):
            raise ValueError(
                f"export.opset {opset} not allowed for depthai: the blob compiler's OpenVINO "
                f"({'/'.join(OPENVINO_VERSIONS)}) reads ONNX up to opset {OPENVINO_MAX_OPSET} at most, and null takes "
                f"the newest the exporter has; allowed: 11..{OPENVINO_MAX_OPSET} (Luxonis' own YOLO exports use 12)"
            )
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
            values = axes[name]
            inside = values.contains(value) if isinstance(values, FloatRange) else value in values
            if not inside:
                raise ValueError(f"baseline.{name} = {value!r} is not one of axes.{name} {values}")
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

"""The sweep file: pydantic models of what a user may write, so that a bad file is refused with
one message naming the field, the value and what is allowed."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, ValidationInfo, field_validator, model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from yolobench.overrides import OverrideError, Overrides
from yolobench.runtimes import RuntimeInfo, load_attribute, registry, runtime_info
from yolobench.runtimes.options import RuntimeOptions
from yolobench.stages.export import ExportOptions
from yolobench.stages.quantize import Int8Recipe

Scale = Literal["n", "s", "m", "l", "x"]
Precision = Literal["fp32", "fp16", "int8"]
# The runtime a sweep file without `runtime.name` runs on.
DEFAULT_RUNTIME = "onnxruntime"
# Axes every runtime has (the rest come from the runtime's RuntimeInfo.axes).
COMMON_AXES = ("scale", "precision", "imgsz")
# Axes that change the trained weights: they need `model.train` and are where Pareto mode pays off.
TRAINING_AXES = ("width_multiple", "depth_multiple", "teacher")
OFFICIAL_TEACHERS = ("yolo11n", "yolo11s", "yolo11m", "yolo11l", "yolo11x")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SpecError(ValueError):
    """A sweep file that cannot be used; the message is meant for the user as it is."""


class SweepNotFound(SpecError):
    """Neither a sweep file nor a shipped target by that name."""


def field_errors(problems: list[tuple[tuple[str | int, ...], Any, str]]) -> ValidationError:
    """One ValidationError holding a (location, value, message) per problem; raised inside a validator, pydantic
    puts the validated field's own location in front, so each message comes out as `field = value: message`."""
    return ValidationError.from_exception_data("SweepSpec", [
        InitErrorDetails(type=PydanticCustomError("value_error", "{message}", {"message": message}),
                         loc=location, input=value)
        for location, value, message in problems
    ])


def runtime_options_model(name: str) -> type[RuntimeOptions]:
    """The pydantic model of the `runtime:` section for runtime `name` (its RuntimeInfo.options_model)."""
    path = runtime_info(name).options_model
    model = load_attribute(path)
    if not (isinstance(model, type) and issubclass(model, RuntimeOptions)):
        raise TypeError(f"runtime {name!r}: options_model {path} is not a yolobench.runtimes.options.RuntimeOptions")
    return model


def parse_runtime_options(value: Any) -> Any:
    """The `runtime:` section validated by the options model of the runtime it names (default: onnxruntime)."""
    if isinstance(value, RuntimeOptions):
        if value.name in registry.names() and isinstance(value, runtime_options_model(value.name)):
            return value
        value = value.model_dump()
    if not isinstance(value, Mapping):
        return value  # refused by the field's own type check, with pydantic's message
    name = value.get("name", DEFAULT_RUNTIME)
    known = registry.names()
    if not isinstance(name, str) or name not in known:
        raise field_errors([(("name",), name, f"unknown runtime; known runtimes: {', '.join(known)}")])
    return runtime_options_model(name).model_validate({**value, "name": name})


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


class Axes(BaseModel):
    """Axis name -> the values (bins) to sweep. The common axes are the fields below; every other key is an axis
    of the sweep's runtime (its RuntimeInfo.axes), checked against that runtime by SweepSpec."""

    model_config = ConfigDict(extra="allow", frozen=True)

    scale: list[Scale] = ["n"]
    width_multiple: list[float] | FloatRange | None = None
    depth_multiple: list[float] | FloatRange | None = None
    teacher: list[str] | None = None
    precision: list[Precision] = ["fp32"]
    imgsz: list[int] = [640]

    @field_validator("imgsz")
    @classmethod
    def _imgsz_multiple_of_32(cls, values: list[int]) -> list[int]:
        for value in values:
            if value % 32 or not 32 <= value <= 1280:
                raise ValueError(f"imgsz {value} is not allowed; use multiples of 32 from 32 to 1280")
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
        if isinstance(values, list) and (problem := _list_problem(values)):
            raise ValueError(problem)
        return values

    @model_validator(mode="after")
    def _runtime_axes_are_lists(self) -> Axes:
        problems = [((name,), values, problem) for name, values in self.runtime_axes().items()
                    if (problem := _list_problem(values))]
        if problems:
            raise field_errors(problems)
        return self

    def runtime_axes(self) -> dict[str, Any]:
        """The axes that are not common ones: the runtime's, as written."""
        return dict(self.__pydantic_extra__ or {})

    def as_dict(self) -> dict[str, list[Any] | FloatRange]:
        """The axes in use, in build order (common ones, then the runtime's in its RuntimeInfo order): a list of
        values, or a FloatRange (continuous). The order names variants (labels, MLflow run names)."""
        axes: dict[str, list[Any] | FloatRange] = {}
        for name in type(self).model_fields:
            values = getattr(self, name)
            if values is not None:
                axes[name] = values if isinstance(values, FloatRange) else list(values)
        for name, values in self.runtime_axes().items():
            axes[name] = list(values)
        return axes


def _list_problem(values: Any) -> str | None:
    if not isinstance(values, list):
        return "an axis needs a list of values"
    if not values:
        return "an axis needs at least one value"
    try:
        distinct = len(set(values)) == len(values)
    except TypeError:
        return "axis values are single values (str, int, float or bool), not lists or mappings"
    return None if distinct else f"values repeat: {values}"


def check_runtime_axes(axes: Axes, info: RuntimeInfo) -> Axes:
    """Refuse what the runtime does not take (an axis it lacks, a value outside an axis, a precision it cannot
    run), then put its axes in the runtime's order, whatever order the file used."""
    allowed = sorted({*COMMON_AXES, *TRAINING_AXES, *info.axis_names})
    problems: list[tuple[tuple[str | int, ...], Any, str]] = []
    runtime_axes = axes.runtime_axes()
    for name, values in runtime_axes.items():
        axis = info.axis(name)
        if axis is None:
            problems.append(((name,), values, f"does not apply to runtime {info.name!r}; "
                                              f"allowed axes: {', '.join(allowed)}"))
            continue
        problems += [((name, index), value, problem) for index, value in enumerate(values)
                     if (problem := axis.problem(value))]
    unsupported = [precision for precision in axes.precision if precision not in info.precisions]
    if unsupported:
        problems.append((("precision",), axes.precision, f"{', '.join(map(repr, unsupported))} not allowed for "
                                                        f"runtime {info.name!r}; allowed: {', '.join(info.precisions)}"))
    if problems:
        raise field_errors(problems)
    extra = axes.__pydantic_extra__ or {}
    extra.clear()  # the validated instance's own dict: reordered in place, the model is frozen
    extra.update((name, runtime_axes[name]) for name in info.axis_names if name in runtime_axes)
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

    The timed phase runs in windows of a third of those runs and seconds. A window during which other
    processes used more than `foreign_limit` percent of one core is refused and re-taken after a back-off
    (after `contended_retries` refusals in a row one is kept, and the run tagged `yolobench.contended`); the
    phase ends when the last three windows' p50s agree within `stability` (default 5%, 2.5% for a session
    that times a device), or at `max_seconds` (default 2 x min_seconds + 2), when the run is tagged
    `yolobench.unstable=true`. A run whose inference CV exceeds `cv_threshold` is tagged `yolobench.high_cv`.

    Ranking across the sweep: the baseline is re-timed every `reference_every` variants or
    `reference_minutes` (its drift is the parent's `reference_drift` metric); variants timed while it had
    drifted more than `drift_tolerance` are re-timed. When the sweep is done, the whole grid (up to
    `confirm_all_up_to` variants), or else the front and the variants within `confirm_margin` of it, are
    re-timed with the baseline in interleaved bursts (`confirm_rounds` rounds of min_runs / rounds runs
    each, sessions held open up to `confirm_memory_mb` of models at a time; each round divided by
    its pace, what its variants say in common; in a whole grid, those near the front `confirm_front_factor`
    times as long) and that confirmed p50, at the level the sweep's first passes saw the host at, is the one reported
    (`confirm_level`: that level against the confirmation's).
    """

    profile: Literal["quick", "rigorous"] = "quick"
    warmup_runs: int = Field(10, ge=0)
    warmup_seconds: float = Field(1.0, ge=0)
    min_runs: int = Field(50, ge=1)
    min_seconds: float = Field(2.0, ge=0)
    cv_threshold: float = Field(0.10, gt=0, description="inference CV above which a run is tagged yolobench.high_cv")
    stability: float | None = Field(None, gt=0, lt=1, description="the kept windows' p50s agree within this")
    max_seconds: float | None = Field(None, gt=0, description="cap of a variant's timed phase")
    foreign_limit: float = Field(25.0, ge=0, description="percent of one core other processes may use in a window")
    contended_retries: int = Field(3, ge=0)
    reference_every: int = Field(6, ge=0, description="re-time the baseline every N variants; 0 = never")
    reference_minutes: float = Field(3.0, ge=0)
    drift_tolerance: float = Field(0.10, gt=0)
    confirm: bool = True
    confirm_margin: float = Field(0.10, ge=0)
    confirm_all_up_to: int = Field(32, ge=0, description="grids this small are confirmed whole")
    confirm_rounds: int = Field(10, ge=1)
    confirm_memory_mb: float = Field(2048.0, gt=0)
    confirm_front_factor: int = Field(3, ge=1, description="bursts near the front are this many times as long")
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
    # Validated by the named runtime's own options model (RuntimeInfo.options_model); serialised as that model.
    runtime: SerializeAsAny[RuntimeOptions] = Field(default_factory=lambda: parse_runtime_options({}))
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

    @field_validator("runtime", mode="before")
    @classmethod
    def _runtime_options(cls, value: Any) -> Any:
        return parse_runtime_options(value)

    @field_validator("axes")
    @classmethod
    def _axes_fit_runtime(cls, axes: Axes, info: ValidationInfo) -> Axes:
        runtime = info.data.get("runtime")  # absent when the runtime section was refused: said there already
        return axes if runtime is None else check_runtime_axes(axes, runtime_info(runtime.name))

    @model_validator(mode="after")
    def _training_axes_need_training(self) -> SweepSpec:
        axes = self.axes.as_dict()
        problems = []
        for name in TRAINING_AXES:
            if name not in axes:
                continue
            if self.model.train is None:
                problems.append((("axes", name), axes[name],
                                 "changes the trained weights: it needs model.train, not model.weights"))
            elif isinstance(axes[name], FloatRange) and self.search.mode != "pareto":
                problems.append((("axes", name), axes[name],
                                 "is a range: a grid needs a list of values, or use search.mode 'pareto'"))
        if problems:
            raise field_errors(problems)
        return self

    @model_validator(mode="after")
    def _one_weights_file_one_scale(self) -> SweepSpec:
        scales = self.axes.as_dict().get("scale", [])
        weights = self.model.weights
        if weights and "{scale}" not in weights and isinstance(scales, list) and len(scales) > 1:
            raise field_errors([(("model", "weights"), weights,
                                 f"is one model, but the scale axis has {', '.join(scales)}: narrow the axis to the "
                                 f"scale it was trained at (e.g. --only scale={scales[0]}), or give a pattern "
                                 "with {scale} such as 'runs/{scale}/weights/best.pt'")])
        return self

    @model_validator(mode="after")
    def _opset_fits_runtime(self) -> SweepSpec:
        info = runtime_info(self.runtime.name)
        opset = self.export.opset
        if info.max_opset is not None and (opset is None or opset > info.max_opset):
            raise field_errors([(("export", "opset"), opset,
                                 f"not allowed for runtime {info.name!r}: it reads ONNX up to opset {info.max_opset} "
                                 "at most, and null takes the newest the exporter has; "
                                 f"allowed: {_lowest_opset()}..{info.max_opset}")])
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


def _lowest_opset() -> int:
    """The oldest opset the exporter takes (ExportOptions.opset's lower bound)."""
    from annotated_types import Ge

    return next(int(rule.ge) for rule in ExportOptions.model_fields["opset"].metadata if isinstance(rule, Ge))


def _runtime_model_of(data: Any) -> type[BaseModel] | None:
    """The options model of the runtime a sweep file names, or None when it names none that is known."""
    section = data.get("runtime") if isinstance(data, Mapping) else None
    name = section.get("name", DEFAULT_RUNTIME) if isinstance(section, Mapping) else DEFAULT_RUNTIME
    try:
        return runtime_options_model(name)
    except (KeyError, TypeError):
        return None


def _model_at(location: tuple, data: Any) -> type[BaseModel] | None:
    """The pydantic model that validates the mapping at `location` of the sweep file `data`, or None."""
    import typing

    model: Any = SweepSpec
    for depth, part in enumerate(location):
        if depth == 0 and part == "runtime":
            model = _runtime_model_of(data)
        else:
            field = model.model_fields.get(part) if isinstance(part, str) else None
            candidates = [field.annotation, *typing.get_args(field.annotation)] if field is not None else []
            model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return None
    return model


def _allowed_keys(location: tuple, data: Any) -> list[str]:
    """The keys a mapping at `location` may have, for the message about an unknown key."""
    model = _model_at(location[:-1], data)
    return list(model.model_fields) if model is not None else []


def _describe(error: ValidationError, source: str, data: Any = None) -> str:
    """One line per problem: the field, the value and what is allowed. A rule across several fields (a model
    validator) names its fields in its own message: the whole section, or file, is not printed with it."""
    lines = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            allowed = _allowed_keys(item["loc"], data)
            message = "unknown key" + (f"; allowed keys: {', '.join(allowed)}" if allowed else "")
        if item["type"] == "missing":
            lines.append(f"{source}: {location}: required field is missing")
        elif not item["loc"]:
            lines.append(f"{source}: {message}")
        elif isinstance(item["input"], Mapping) and _model_at(item["loc"], data) is not None:
            lines.append(f"{source}: {location}: {message}")
        else:
            lines.append(f"{source}: {location} = {item['input']!r}: {message}")
    return "\n".join(lines)


def parse_spec(data: dict[str, Any], source: str = "<sweep>") -> SweepSpec:
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as error:
        raise SpecError(_describe(error, source, data)) from None


def load_sweep(path_or_target: Path | str, overrides: Overrides | None = None) -> tuple[SweepSpec, list[str]]:
    """Read a sweep file (a path, or the name of a shipped target), apply command-line overrides and
    validate the result; `name` defaults to the file's stem. Returns notes on what overrides changed."""
    from yolobench.targets import UnknownTarget, resolve

    try:
        path = resolve(path_or_target)
    except UnknownTarget as error:
        raise SweepNotFound(str(error)) from None
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise SpecError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    data.setdefault("name", path.stem)
    notes: list[str] = []
    if overrides:
        try:
            data, notes = overrides.apply(data)
        except OverrideError as error:
            raise SpecError(str(error)) from None
    return parse_spec(data, f"{path} with {' '.join(overrides.as_list())}" if overrides else str(path)), notes


def load_spec(path_or_target: Path | str) -> SweepSpec:
    """A sweep file or shipped target, validated, without overrides."""
    return load_sweep(path_or_target)[0]

"""The `runtime:` section of a sweep file, one pydantic model per runtime (named by its RuntimeInfo's
`options_model`), so each runtime takes only the settings it understands. The section stays flat as it
always was (`runtime: {name: tensorrt, trt_workspace_mb: 512}`), and the field names and defaults are the
ones the single section of earlier releases had: variant keys hash them.

Imported by spec.py only (pydantic): the runtimes themselves read these as plain attributes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# The OpenVINO releases that still compile Myriad X blobs.
OPENVINO_VERSIONS = ("2021.4", "2022.1")


class RuntimeOptions(BaseModel):
    """What every runtime takes: its name, and the CPUs the measuring process is pinned to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    cpu_affinity: list[int] | None = Field(
        None, min_length=1,
        description="CPU ids the measuring process (all its threads) is pinned to while latency is timed "
                    "(Linux); none leaves the affinity as it is",
    )

    @field_validator("cpu_affinity")
    @classmethod
    def _cpu_ids(cls, values: list[int] | None) -> list[int] | None:
        if values is not None:
            if any(v < 0 for v in values):
                raise ValueError("CPU ids must be >= 0")
            if len(set(values)) != len(values):
                raise ValueError(f"CPU ids repeat: {values}")
        return values


class OnnxRuntimeOptions(RuntimeOptions):
    name: str = "onnxruntime"
    provider: Literal["cpu", "cuda", "tensorrt"] = "cpu"
    threads: int = Field(0, ge=0, description="intra-op threads; 0 lets the runtime choose")
    inter_op_threads: int = Field(0, ge=0)
    provider_options: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="ONNX Runtime execution provider options for the provider above (e.g. trt_fp16_enable, "
                    "cudnn_conv_algo_search); they override yolobench's defaults and are recorded on each run",
    )


class TensorRTOptions(RuntimeOptions):
    name: str = "tensorrt"
    trt_workspace_mb: int = Field(1024, ge=16, description="TensorRT builder workspace pool limit (MiB)")


class DepthaiSpec(BaseModel):
    """OAK (RVC2) settings that are not axes: which converter compiles the NN Archive, and how the NN node runs.
    Fields keep the names and defaults of earlier releases (variant keys hash the ones a sweep sets)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    converter: str = Field(
        "hubai", description="what compiles the NN Archive: hubai (online, $HUBAI_API_KEY), modelconverter (local, "
                             "Docker) or blobconverter (a self-hosted legacy service at converter_url)")
    converter_url: str | None = Field(
        None, description="blobconverter: the service's URL (no default: Luxonis' public one is retired; else "
                          "$YOLOBENCH_BLOBCONVERTER_URL); hubai: another HubAI service (default: $HUBAI_URL)")
    tool_version: str | None = Field(
        None, description="hubai and modelconverter: the OpenVINO (IR) version to convert with; default: theirs")
    openvino_version: Literal[OPENVINO_VERSIONS] = Field(
        "2022.1", description="blobconverter: the service's OpenVINO version")
    inference_threads: int = Field(1, ge=1, le=2, description="NN node threads, where the sweep has no "
                                                              "inference_threads axis; frames are sent one at a time")
    nce_per_thread: int = Field(0, ge=0, le=2, description="neural compute engines per thread; 0 = DepthAI decides")
    device: str | None = Field(None, description="device id, IP or name of the OAK to use; default: the first found")

    @property
    def converter_name(self) -> str:
        """The converter to use. A section that gives converter_url but no converter is an earlier release's,
        written for the blobconverter service: it keeps that meaning (and its variant keys)."""
        if "converter" not in self.model_fields_set and self.converter_url is not None:
            return "blobconverter"
        return self.converter

    @field_validator("converter")
    @classmethod
    def _registered(cls, name: str) -> str:
        from yolobench.converters import converter_names

        if name not in converter_names():
            raise ValueError(f"unknown converter {name!r}; allowed: {', '.join(converter_names())}")
        return name


class DepthaiOptions(RuntimeOptions):
    name: str = "depthai"
    depthai: DepthaiSpec | None = Field(None, description="OAK settings")

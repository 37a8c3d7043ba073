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
    """OAK (Myriad X) settings that are not axes: how the blob is compiled and how the NN node runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    openvino_version: Literal[OPENVINO_VERSIONS] = "2022.1"
    converter_url: str | None = Field(
        None, description="blob conversion service; default: $YOLOBENCH_BLOBCONVERTER_URL, else Luxonis' public one")
    inference_threads: int = Field(1, ge=1, le=2, description="NN node threads; frames are sent one at a time")
    nce_per_thread: int = Field(0, ge=0, le=2, description="neural compute engines per thread; 0 = DepthAI decides")
    device: str | None = Field(None, description="MX id, IP or name of the OAK to use; default: the first found")


class DepthaiOptions(RuntimeOptions):
    name: str = "depthai"
    depthai: DepthaiSpec | None = Field(None, description="OAK settings")

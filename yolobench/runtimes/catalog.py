"""The built-in runtimes, described as data. Registered at import by yolobench.runtimes through the
same register() a plug-in uses; their implementations are imported only when a runtime is opened."""

from __future__ import annotations

from yolobench.runtimes.base import AxisInfo, RuntimeInfo

ONNXRUNTIME = RuntimeInfo(
    name="onnxruntime",
    axes=(
        AxisInfo("ort_level", default="all", values=("disable", "basic", "extended", "all")),
        # No default: a sweep without a threads axis runs with runtime.threads.
        AxisInfo("threads", default=None, kind=int, minimum=0, label="threads{value}"),
    ),
    options_model="yolobench.runtimes.options:OnnxRuntimeOptions",
    implementation="yolobench.runtimes.onnxruntime_runtime:OnnxRuntime",
    summary="ONNX Runtime: CPU, CUDA or TensorRT execution provider; graph optimisation level; threads",
)

TENSORRT = RuntimeInfo(
    name="tensorrt",
    axes=(
        AxisInfo("trt_opt_level", default=3, values=(0, 1, 2, 3, 4, 5), kind=int, label="trt_opt_level{value}",
                 compile_input=True),  # 3 is TensorRT's own default
        AxisInfo("sparsity", default=False, values=(False, True), kind=bool, compile_input=True),
    ),
    mandatory_fusion="TensorRT builder (layer fusion cannot be switched off)",
    options_model="yolobench.runtimes.options:TensorRTOptions",
    implementation="yolobench.runtimes.tensorrt_runtime:TensorRTRuntime",
    summary="TensorRT engines built on the target GPU; builder optimisation level and 2:4 sparsity",
)

# The OpenVINO releases that compile Myriad X blobs (2021.4 to 2022.3, what the RVC2 converters run) read ONNX up
# to opset 16.
OPENVINO_MAX_OPSET = 16

DEPTHAI = RuntimeInfo(
    name="depthai",
    axes=(
        # Chosen when the archive is opened: the superblob holds the model compiled for every SHAVE count. (Only
        # the legacy blobconverter compiles one blob per SHAVE count; its stage keys on it.)
        AxisInfo("shaves", default=6, values=tuple(range(1, 17)), kind=int, label="shaves{value}"),
        # One archive serves both: its head is what DepthAI's parser decodes on the device, the host decodes the
        # same outputs itself.
        AxisInfo("on_device_decode", default=False, values=(False, True), kind=bool),
        # No default: a sweep without this axis runs with runtime.depthai.inference_threads.
        AxisInfo("inference_threads", default=None, values=(1, 2), kind=int, label="nnthreads{value}"),
    ),
    precisions=("fp16",),
    precision_stage=False,  # the converter makes FP16 from the fp32 graph, as Luxonis' own tools do
    max_opset=OPENVINO_MAX_OPSET,
    mandatory_fusion="OpenVINO/Myriad X blob compiler (always fuses)",
    options_model="yolobench.runtimes.options:DepthaiOptions",
    implementation="yolobench.runtimes.depthai_runtime:DepthaiRuntime",
    summary="OAK cameras (RVC2) through DepthAI 3: an NN Archive (superblob) per model from HubAI or ModelConverter; "
            "SHAVEs chosen at run time; decoding on host or device",
)

BUILTINS = (ONNXRUNTIME, TENSORRT, DEPTHAI)

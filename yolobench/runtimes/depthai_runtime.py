"""DepthAI (OAK cameras, Myriad X VPU): the variant's ONNX compiled to a .blob with the SHAVEs axis,
run on the device with frames sent from the host (XLinkIn -> NN -> XLinkOut), so accuracy is scored
on the val split like every other runtime.

Written for the DepthAI 2.x API (pyproject pins depthai>=2.24,<3): the OAK-D Pro is an RVC2 device,
2.x is the line that runs .blob files from blobconverter with the XLinkIn/XLinkOut host-feeding
pattern and on-device YOLO decoding configured by setters; 3.x replaces those nodes with host queues
and favours NN archives, and for RVC2 brings nothing this benchmark needs.

Two modes, from the `on_device_decode` axis:
- false: a NeuralNetwork node; its raw (1, 4+nc, anchors) output is decoded and NMS'd on the host
  by yolobench.measure.postprocess, exactly as for ONNX Runtime.
- true: a YoloDetectionNetwork node decodes and runs NMS on the device (anchor-free YOLO11: classes,
  coordinate size 4, no anchors or masks, the sweep's IoU and confidence thresholds), on a blob whose
  head was rewritten into the per-level outputs its parser reads (stages/blob.py).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from yolobench.cache import Artifact, ArtifactCache
from yolobench.errors import ModelMismatch, RuntimeUnavailable
from yolobench.runtimes import catalog
from yolobench.runtimes.base import Availability, AxisValue, Check, DecodeSettings, Runtime, SessionBase

if TYPE_CHECKING:  # pydantic, which a bare measuring host may lack
    from yolobench.runtimes.options import DepthaiOptions, DepthaiSpec

INPUT_STREAM = "yolobench_in"
OUTPUT_STREAM = "yolobench_out"
STRIDES = (8, 16, 32)  # YOLO11 detection levels
# The TRACE line the RVC2 firmware logs per inference, from the NN node or the detection node that wraps it:
# payload "NeuralNetwork inference took '62.274784' ms." (DepthAI docs, "Measuring operation times").
_NN_TIME = re.compile(r"NeuralNetwork inference took\s+'?(\d+(?:\.\d+)?)'?\s*ms")


@dataclass(frozen=True)
class PipelineSettings:
    """Everything the device pipeline is built from; recorded with the run."""

    blob_path: Path
    imgsz: int
    on_device_decode: bool
    num_classes: int
    conf_threshold: float
    iou_threshold: float
    inference_threads: int = 1
    nce_per_thread: int = 0
    openvino_version: str = "2022.1"


def build_pipeline(dai: ModuleType, settings: PipelineSettings) -> Any:
    """XLinkIn (host frames) -> NeuralNetwork or YoloDetectionNetwork -> XLinkOut. `dai` is the depthai
    module, passed in so that tests can hand a recording stand-in to check what the device would get."""
    pipeline = dai.Pipeline()
    pipeline.setOpenVINOVersion(getattr(dai.OpenVINO.Version, "VERSION_" + settings.openvino_version.replace(".", "_")))

    frames_in = pipeline.create(dai.node.XLinkIn)
    frames_in.setStreamName(INPUT_STREAM)
    frames_in.setMaxDataSize(3 * settings.imgsz * settings.imgsz)  # one BGR planar uint8 frame
    frames_in.setNumFrames(2)

    if settings.on_device_decode:
        network = pipeline.create(dai.node.YoloDetectionNetwork)
        network.setNumClasses(settings.num_classes)
        network.setCoordinateSize(4)
        network.setAnchors([])  # anchor-free: YOLO11 predicts distances from grid cells
        network.setAnchorMasks({})
        network.setIouThreshold(settings.iou_threshold)
        network.setConfidenceThreshold(settings.conf_threshold)
    else:
        network = pipeline.create(dai.node.NeuralNetwork)
    network.setBlobPath(str(settings.blob_path))
    network.setNumInferenceThreads(settings.inference_threads)
    network.setNumNCEPerInferenceThread(settings.nce_per_thread)
    network.setNumPoolFrames(2)
    network.input.setBlocking(True)  # a frame is never dropped: each one is scored
    network.input.setQueueSize(1)
    frames_in.out.link(network.input)

    results_out = pipeline.create(dai.node.XLinkOut)
    results_out.setStreamName(OUTPUT_STREAM)
    network.out.link(results_out.input)
    return pipeline


def num_anchors(imgsz: int) -> int:
    return sum((imgsz // stride) ** 2 for stride in STRIDES)


def detections_as_head(detections: list[Any], num_classes: int, imgsz: int) -> np.ndarray:
    """On-device detections (normalised xyxy, label, confidence) as a (1, 4+nc, n) YOLO11-shaped output:
    one column per detection, its confidence in its class row. The host's decode then keeps them as they
    are (NMS at the same IoU over boxes the device already suppressed removes nothing), so both modes go
    through one measurement path."""
    head = np.zeros((1, 4 + num_classes, len(detections)), np.float32)
    for column, detection in enumerate(detections):
        x1, y1 = detection.xmin * imgsz, detection.ymin * imgsz
        x2, y2 = detection.xmax * imgsz, detection.ymax * imgsz
        head[0, :4, column] = ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)
        if 0 <= detection.label < num_classes:
            head[0, 4 + detection.label, column] = detection.confidence
    return head


def tensor_to_planar_bgr(tensor: np.ndarray) -> np.ndarray:
    """The host's (1, 3, h, w) RGB float tensor in [0, 1] back to the BGR uint8 planar bytes the blob takes
    (the blob scales by 1/255 and swaps channels itself). Lossless: the tensor was made from uint8."""
    return np.ascontiguousarray(np.rint(tensor[0, ::-1] * 255.0).clip(0, 255).astype(np.uint8))


class DeviceTimes:
    """Inference times the device reports in its TRACE log, collected from the log callback thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.times_ms: list[float] = []

    def __call__(self, message: Any) -> None:
        match = _NN_TIME.search(str(getattr(message, "payload", "")))
        if match:
            with self._lock:
                self.times_ms.append(float(match.group(1)))

    def metrics(self) -> dict[str, float]:
        with self._lock:
            times = np.asarray(self.times_ms, np.float64)
        if times.size == 0:
            return {}
        p50, p90, p99 = np.percentile(times, [50, 90, 99])
        return {"device_inference_ms_p50": float(p50), "device_inference_ms_p90": float(p90),
                "device_inference_ms_p99": float(p99), "device_inference_ms_mean": float(times.mean()),
                "device_inference_samples": float(times.size)}


class DepthaiSession(SessionBase):
    """One open device: `infer` sends one frame and waits for its result (host round trip)."""

    def __init__(self, dai: ModuleType, device: Any, settings: PipelineSettings, device_times: DeviceTimes,
                 shaves: int, blob_manifest: dict[str, Any] | None = None) -> None:
        self._dai = dai
        self._blob_manifest = blob_manifest or {}
        self._device = device
        self._settings = settings
        self._device_times = device_times
        self._shaves = shaves
        self._input = device.getInputQueue(INPUT_STREAM, maxSize=1, blocking=True)
        self._output = device.getOutputQueue(OUTPUT_STREAM, maxSize=1, blocking=True)
        self._sequence = 0
        self._round_trips_ms: list[float] = []

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        dai, size = self._dai, self._settings.imgsz
        frame = dai.ImgFrame()
        frame.setType(dai.ImgFrame.Type.BGR888p)
        frame.setWidth(size)
        frame.setHeight(size)
        frame.setData(tensor_to_planar_bgr(tensor).reshape(-1))
        frame.setSequenceNum(self._sequence)
        frame.setTimestamp(dai.Clock.now())
        self._sequence += 1
        started = time.perf_counter()
        self._input.send(frame)
        message = self._output.get()
        self._round_trips_ms.append((time.perf_counter() - started) * 1000.0)
        if self._settings.on_device_decode:
            return detections_as_head(list(message.detections), self._settings.num_classes, size)
        raw = np.asarray(message.getFirstLayerFp16(), np.float32)
        return raw.reshape(1, 4 + self._settings.num_classes, -1)  # (1, 4+nc, anchors), anchors from the blob

    def info(self) -> dict[str, Any]:
        device_info = self._device.getDeviceInfo()
        return {
            "providers": "depthai:" + ("YoloDetectionNetwork" if self._settings.on_device_decode else "NeuralNetwork"),
            "threads": self._settings.inference_threads,
            "nce_per_thread": self._settings.nce_per_thread,
            "shaves": self._shaves,
            "openvino_version": self._settings.openvino_version,
            "on_device_decode": self._settings.on_device_decode,
            "device": f"{self._device.getDeviceName()} {device_info.getMxId()}",
            "usb_speed": str(self._device.getUsbSpeed()),
            "device_inference_time": ("device TRACE log" if self._device_times.times_ms
                                      else "unavailable: the device logged no NN timing lines"),
            "depthai": importlib.metadata.version("depthai"),
            "blob": {k: self._blob_manifest.get(k) for k in ("key", "openvino_version", "shaves", "data_type",
                                                            "optimizer_params", "compile_params", "converter_url",
                                                            "source_onnx_opset", "build_s")},
        }

    def metrics(self) -> dict[str, float]:
        """On-device inference time where the device reported it, and the host round trip (send -> result)."""
        metrics = self._device_times.metrics()
        if self._round_trips_ms:
            metrics["host_roundtrip_ms_p50"] = float(np.percentile(self._round_trips_ms, 50))
        return metrics

    def close(self) -> None:
        if self._device is not None:
            self._device.close()
            self._device = None


def _open_device(dai: ModuleType, pipeline: Any, wanted: str | None) -> Any:
    try:
        if wanted:
            return dai.Device(pipeline, dai.DeviceInfo(wanted))
        return dai.Device(pipeline)
    except RuntimeError as error:
        raise RuntimeUnavailable(f"could not open the OAK device {wanted or '(first found)'}: {error}") from None


def _classes_of(model: Artifact) -> int:
    names = model.manifest.get("names") or {}
    num_classes = int(model.manifest.get("num_classes") or len(names))
    if num_classes <= 0:
        raise ModelMismatch(f"the model's manifest ({model.key}) does not say how many classes it has")
    return num_classes


def _oak_settings(options: DepthaiOptions) -> DepthaiSpec:
    from yolobench.runtimes.options import DepthaiSpec

    return options.depthai or DepthaiSpec()


class DepthaiRuntime(Runtime):
    info = catalog.DEPTHAI

    def availability(self) -> Availability:
        if importlib.util.find_spec("depthai") is None:
            return Availability(False, "package depthai is not installed (pip install 'yolobench[oak]')")
        import depthai as dai

        version = importlib.metadata.version("depthai")
        if not version.startswith("2."):
            return Availability(False, f"depthai {version} installed; yolobench is written for the 2.x API "
                                       "(depthai>=2.24,<3)")
        devices = dai.Device.getAllAvailableDevices()
        if not devices:
            return Availability(False, f"depthai {version} installed, but no OAK device found (USB or PoE)")
        names = ", ".join(f"{d.name} {d.getMxId()} ({d.state.name})" for d in devices)
        return Availability(True, f"depthai {version}; devices: {names}")

    def _require_device(self) -> None:
        availability = self.availability()
        if not availability.usable:
            raise RuntimeUnavailable(availability.reason)

    def checks(self) -> list[Check]:
        """What compiling a variant for the device needs besides the device itself."""
        from yolobench.stages.blob import converter_url

        onnx_here = importlib.util.find_spec("onnx") is not None
        requests_here = importlib.util.find_spec("requests") is not None
        return [
            Check("blob compiler", requests_here,
                  f"blobconverter service at {converter_url()} (set runtime.depthai.converter_url or "
                  "$YOLOBENCH_BLOBCONVERTER_URL); reachability is checked on first compile"
                  if requests_here else "package requests is not installed"),
            Check("on-device decoding", onnx_here,
                  "onnx installed: the YOLO11 head can be rewritten for YoloDetectionNetwork" if onnx_here
                  else "package onnx is not installed: on_device_decode=true variants cannot be compiled"),
        ]

    def compile(self, model: Artifact, axes: Mapping[str, AxisValue], options: DepthaiOptions,
                cache: ArtifactCache) -> Artifact:
        """The blob for the variant's SHAVE count, from the fp32 export (its head rewritten for on-device decoding
        when asked). Refused first where there is no device: a blob is of no use to a host without one."""
        from yolobench.stages.blob import BlobSettings, compile_blob, converter_url, rvc2_detection_head

        self._require_device()
        axes = self.info.resolve_axes(axes)
        _classes_of(model)  # before compiling: the device's decoder needs it
        settings = _oak_settings(options)
        source = rvc2_detection_head(cache, model) if bool(axes["on_device_decode"]) else model
        return compile_blob(cache, source, BlobSettings(shaves=int(axes["shaves"]),
                                                        openvino_version=settings.openvino_version,
                                                        url=converter_url(settings.converter_url)))

    def open(self, model: Artifact, compiled: Artifact | None, axes: Mapping[str, AxisValue],
             options: DepthaiOptions, decode: DecodeSettings, work_dir: Path) -> DepthaiSession:
        """The device, running the blob `compile` made, fed frames from the host; decoding on the device uses the
        host decode's thresholds (`decode`)."""
        if compiled is None:
            raise ValueError("DepthaiRuntime.open needs the blob its compile() made")
        self._require_device()
        import depthai as dai

        axes = self.info.resolve_axes(axes)
        settings = _oak_settings(options)
        pipeline_settings = PipelineSettings(
            blob_path=compiled.path, imgsz=int(axes["imgsz"]), on_device_decode=bool(axes["on_device_decode"]),
            num_classes=_classes_of(model), conf_threshold=decode.conf, iou_threshold=decode.iou,
            inference_threads=settings.inference_threads, nce_per_thread=settings.nce_per_thread,
            openvino_version=settings.openvino_version,
        )
        device = _open_device(dai, build_pipeline(dai, pipeline_settings), settings.device)
        device_times = DeviceTimes()
        device.setLogLevel(dai.LogLevel.TRACE)  # the NN's per-inference time is only logged at TRACE
        device.setLogOutputLevel(dai.LogLevel.WARN)  # ... and stays off the console
        device.addLogCallback(device_times)
        return DepthaiSession(dai, device, pipeline_settings, device_times, int(axes["shaves"]), compiled.manifest)

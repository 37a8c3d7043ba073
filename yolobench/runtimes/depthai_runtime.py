"""DepthAI 3 (OAK cameras on RVC2, e.g. the OAK-D Pro): the variant's NN Archive (stages/rvc2_compile.py) run on
the device with frames sent from the host (a host input queue -> NN -> a host output queue), so accuracy is
scored on the val split like every other runtime. The SHAVE count is picked from the archive's superblob when
it is opened; the NN's inference threads come from the `inference_threads` axis or the options.

Two modes, from the `on_device_decode` axis, on the same archive:
- false: a NeuralNetwork node; the host turns its per-level outputs (DFL distances, confidence, class scores)
  into Ultralytics' (1, 4+nc, anchors) layout and decodes and NMS's it like ONNX Runtime's output;
- true: a DetectionNetwork configured from the archive's YOLO head (anchor-free, its classes) decodes and runs
  NMS on the device, at the host decode's confidence and IoU thresholds.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
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

DEPTHAI_MAJOR = "3"
RVC2_PLATFORM = "X_LINK_MYRIAD_X"
QUEUE_SIZE = 1  # one frame in flight: each one is scored, none is dropped
# The TRACE line the RVC2 firmware logs per inference, from the NN node or the detection node that wraps it:
# payload "NeuralNetwork inference took '62.274784' ms." (DepthAI docs, "Measuring operation times").
_NN_TIME = re.compile(r"NeuralNetwork inference took\s+'?(\d+(?:\.\d+)?)'?\s*ms")


@dataclass(frozen=True)
class PipelineSettings:
    """Everything the device pipeline is built from; recorded with the run."""

    archive_path: Path
    imgsz: int
    on_device_decode: bool
    num_classes: int
    shaves: int
    superblob: bool = True
    conf_threshold: float = 0.001
    iou_threshold: float = 0.7
    inference_threads: int = 1
    nce_per_thread: int = 0
    outputs: dict[str, list[int]] = field(default_factory=dict)  # the archive's outputs and their shapes


def build_pipeline(dai: ModuleType, pipeline: Any, settings: PipelineSettings) -> tuple[Any, Any]:
    """NeuralNetwork or DetectionNetwork from the archive on `pipeline`; returns the host's (input queue, output
    queue). `dai` is the depthai module, passed in so that tests can hand a recording stand-in."""
    archive = dai.NNArchive(str(settings.archive_path))
    network = pipeline.create(dai.node.DetectionNetwork if settings.on_device_decode else dai.node.NeuralNetwork)
    if settings.superblob:
        network.setNNArchive(archive, settings.shaves)  # the blob compiled for that many SHAVEs
    else:
        network.setNNArchive(archive)  # a legacy single blob, compiled for its SHAVE count
    if settings.on_device_decode:
        network.setConfidenceThreshold(settings.conf_threshold)
        network.detectionParser.setIouThreshold(settings.iou_threshold)
    network.setNumInferenceThreads(settings.inference_threads)
    network.setNumNCEPerInferenceThread(settings.nce_per_thread)
    network.setNumPoolFrames(2)
    network.input.setBlocking(True)
    network.input.setMaxSize(QUEUE_SIZE)
    frames = network.input.createInputQueue(maxSize=QUEUE_SIZE, blocking=True)
    results = network.out.createOutputQueue(maxSize=QUEUE_SIZE, blocking=True)
    return frames, results


def levels_as_head(levels: list[np.ndarray], imgsz: int) -> np.ndarray:
    """Per-level (1, 4+1+nc, h, w) outputs (distances left, top, right, bottom in grid cells; confidence; class
    scores) as Ultralytics' (1, 4+nc, anchors) output: xywh in pixels, then class scores, level by level and row by
    row, the anchor order of the ONNX export."""
    boxes, scores = [], []
    for level in levels:
        _, channels, height, width = level.shape
        stride = imgsz / height
        grid_y, grid_x = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
        left, top, right, bottom = level[0, :4]
        x1, y1, x2, y2 = grid_x - left, grid_y - top, grid_x + right, grid_y + bottom
        boxes.append(np.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]).reshape(4, -1) * stride)
        scores.append(level[0, 5:].reshape(channels - 5, -1))
    return np.concatenate([np.concatenate(boxes, 1), np.concatenate(scores, 1)])[None].astype(np.float32)


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


def host_frame(dai: ModuleType, tensor: np.ndarray, sequence: int) -> Any:
    """The ImgFrame the device gets for one host tensor: BGR888p, its size as its transformation (what the
    detection parser normalises boxes by)."""
    size = tensor.shape[-1]
    frame = dai.ImgFrame()
    frame.setType(dai.ImgFrame.Type.BGR888p)
    frame.setWidth(size)
    frame.setHeight(tensor.shape[-2])
    frame.setData(tensor_to_planar_bgr(tensor).reshape(-1))
    frame.setTransformation(dai.ImgTransformation(size, tensor.shape[-2]))
    frame.setSequenceNum(sequence)
    frame.setTimestamp(dai.Clock.now())
    return frame


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
    """One running pipeline on one device: `infer` sends one frame and waits for its result (host round trip)."""

    def __init__(self, dai: ModuleType, device: Any, pipeline: Any, queues: tuple[Any, Any],
                 settings: PipelineSettings, device_times: DeviceTimes, archive_manifest: dict[str, Any] | None = None):
        self._dai, self._device, self._pipeline = dai, device, pipeline
        self._input, self._output = queues
        self._settings = settings
        self._device_times = device_times
        self._archive = archive_manifest or {}
        self._sequence = 0
        self._round_trips_ms: list[float] = []

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        frame = host_frame(self._dai, tensor, self._sequence)
        self._sequence += 1
        started = time.perf_counter()
        self._input.send(frame)
        message = self._output.get()
        self._round_trips_ms.append((time.perf_counter() - started) * 1000.0)
        if self._settings.on_device_decode:
            return detections_as_head(list(message.detections), self._settings.num_classes, self._settings.imgsz)
        order = self._dai.TensorInfo.StorageOrder.NCHW
        levels = [np.asarray(message.getTensor(name, order), np.float32).reshape(shape)
                  for name, shape in self._settings.outputs.items()]
        return levels_as_head(levels, self._settings.imgsz)

    def info(self) -> dict[str, Any]:
        settings = self._settings
        return {
            "providers": "depthai:" + ("DetectionNetwork" if settings.on_device_decode else "NeuralNetwork"),
            "threads": settings.inference_threads, "nce_per_thread": settings.nce_per_thread,
            "shaves": settings.shaves, "on_device_decode": settings.on_device_decode,
            "device": f"{self._device.getDeviceName()} {self._device.getDeviceId()}",
            "usb_speed": str(self._device.getUsbSpeed()),
            "device_inference_time": ("device TRACE log" if self._device_times.times_ms
                                      else "unavailable: the device logged no NN timing lines"),
            "depthai": importlib.metadata.version("depthai"),
            "archive": {k: self._archive.get(k) for k in ("key", "converter", "versions", "superblob", "config",
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
            self._pipeline.stop()
            self._device.close()
            self._device = None


def _open_device(dai: ModuleType, wanted: str | None) -> Any:
    try:
        return dai.Device(dai.DeviceInfo(wanted)) if wanted else dai.Device()
    except RuntimeError as error:
        raise RuntimeUnavailable(f"could not open the OAK device {wanted or '(first found)'}: {error}") from None


def _num_classes(model: Artifact) -> int:
    names = model.manifest.get("names") or {}
    num_classes = int(model.manifest.get("num_classes") or len(names))
    if num_classes <= 0 or not names:
        raise ModelMismatch(f"the model's manifest ({model.key}) does not say how many classes it has and their names")
    return num_classes


def _oak_settings(options: DepthaiOptions) -> DepthaiSpec:
    from yolobench.runtimes.options import DepthaiSpec

    return options.depthai or DepthaiSpec()


def pipeline_settings(compiled: Artifact, model: Artifact, axes: Mapping[str, AxisValue], spec: DepthaiSpec,
                      decode: DecodeSettings) -> PipelineSettings:
    """What the pipeline of a variant is built from: its archive, its axes, the options, the host's thresholds."""
    threads = axes.get("inference_threads")
    return PipelineSettings(
        archive_path=compiled.path, imgsz=int(axes["imgsz"]), on_device_decode=bool(axes["on_device_decode"]),
        num_classes=_num_classes(model), shaves=int(axes["shaves"]), superblob=bool(compiled.manifest["superblob"]),
        conf_threshold=decode.conf, iou_threshold=decode.iou,
        inference_threads=int(threads) if threads is not None else spec.inference_threads,
        nce_per_thread=spec.nce_per_thread, outputs=dict(compiled.manifest["outputs"]),
    )


def converter_checks() -> Check:
    """Every registered converter, usable here or not and why, as the doctor's one "blob compiler" line."""
    from yolobench.converters import converter_names, make_converter

    states = {name: make_converter(name).availability() for name in converter_names()}
    reason = "; ".join(f"{name}: {'usable' if s.usable else 'NOT usable'} ({s.reason})" for name, s in states.items())
    return Check("blob compiler", any(s.usable for s in states.values()),
                 f"runtime.depthai.converter picks one of these: {reason}")


class DepthaiRuntime(Runtime):
    info = catalog.DEPTHAI

    def availability(self) -> Availability:
        if importlib.util.find_spec("depthai") is None:
            return Availability(False, "package depthai is not installed (pip install 'yolobench[oak]')")
        import depthai as dai

        version = importlib.metadata.version("depthai")
        if version.split(".")[0] != DEPTHAI_MAJOR:
            return Availability(False, f"depthai {version} installed; yolobench is written for the 3.x API "
                                       "(pip install 'yolobench[oak]')")
        devices = dai.Device.getAllAvailableDevices()
        rvc2 = [d for d in devices if d.platform.name == RVC2_PLATFORM]
        names = ", ".join(f"{d.name} {d.deviceId} ({d.platform.name}, {d.state.name})" for d in devices)
        if not devices:
            return Availability(False, f"depthai {version} installed, but no OAK device found (USB or PoE)")
        if not rvc2:
            return Availability(False, f"depthai {version}; no RVC2 (Myriad X) device among: {names}")
        return Availability(True, f"depthai {version}; devices: {names}")

    def _require_device(self) -> None:
        availability = self.availability()
        if not availability.usable:
            raise RuntimeUnavailable(availability.reason)

    def checks(self) -> list[Check]:
        """What compiling a variant for the device needs besides the device itself."""
        onnx_here = importlib.util.find_spec("onnx") is not None
        return [converter_checks(), Check(
            "on-device decoding", onnx_here,
            "onnx installed: the YOLO11 head is rewritten into the per-level outputs both decoding modes read"
            if onnx_here else "package onnx is not installed: no OAK variant can be compiled")]

    def compile(self, model: Artifact, axes: Mapping[str, AxisValue], options: DepthaiOptions,
                cache: ArtifactCache) -> Artifact:
        """The variant's NN Archive from the fp32 export, its head rewritten for DepthAI's parser: one superblob per
        (model, imgsz), whatever the SHAVEs and decoding mode. Refused first where there is no device."""
        from yolobench.converters import make_converter
        from yolobench.stages.blob import rvc2_detection_head
        from yolobench.stages.rvc2_compile import compile_archive

        self._require_device()
        axes = self.info.resolve_axes(axes)
        _num_classes(model)  # before compiling: the archive's head declares them
        spec = _oak_settings(options)
        converter = make_converter(spec.converter_name, spec)
        return compile_archive(cache, rvc2_detection_head(cache, model), converter, int(axes["imgsz"]),
                               int(axes["shaves"]))

    def open(self, model: Artifact, compiled: Artifact | None, axes: Mapping[str, AxisValue],
             options: DepthaiOptions, decode: DecodeSettings, work_dir: Path) -> DepthaiSession:
        """The device, running the archive `compile` made at the variant's SHAVE count, fed frames from the host."""
        if compiled is None:
            raise ValueError("DepthaiRuntime.open needs the NN Archive its compile() made")
        self._require_device()
        import depthai as dai

        spec = _oak_settings(options)
        settings = pipeline_settings(compiled, model, self.info.resolve_axes(axes), spec, decode)
        device = _open_device(dai, spec.device)
        device_times = DeviceTimes()
        device.setLogLevel(dai.LogLevel.TRACE)  # the NN's per-inference time is only logged at TRACE
        device.setLogOutputLevel(dai.LogLevel.WARN)  # ... and stays off the console
        device.addLogCallback(device_times)
        try:
            pipeline = dai.Pipeline(device)
            queues = build_pipeline(dai, pipeline, settings)
            pipeline.start()
        except RuntimeError as error:
            device.close()
            raise RuntimeUnavailable(f"the OAK refused the pipeline for {compiled.path.name}: {error}") from None
        return DepthaiSession(dai, device, pipeline, queues, settings, device_times,
                              {**compiled.manifest, "key": compiled.key})

"""DepthAI runtime: the pipeline the OAK would receive, for both decoding modes, built through the
`build_pipeline(dai, settings)` seam with a recording stand-in for the depthai module (and, where
depthai is installed, with the real library, whose serialised pipeline is checked); the session's
frames and result handling against a fake device; compile (the blob, refused first without a device) and
open (the pipeline from the host decode's thresholds) through the Runtime interface; and a real-device
test that needs an OAK."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from tests.fake_blobconverter import fake_blobconverter
from tests.runtime_conformance import tiny_model
from yolobench.cache import Artifact, ArtifactCache
from yolobench.errors import ModelMismatch, RuntimeUnavailable
from yolobench.measure.postprocess import decode_yolo11
from yolobench.runtimes import Availability, DecodeSettings, get_runtime
from yolobench.runtimes.depthai_runtime import (
    INPUT_STREAM,
    OUTPUT_STREAM,
    DepthaiSession,
    DeviceTimes,
    PipelineSettings,
    build_pipeline,
    detections_as_head,
    num_anchors,
    tensor_to_planar_bgr,
)

HAVE_DEPTHAI = importlib.util.find_spec("depthai") is not None


# --- a recording stand-in for the depthai module ------------------------------------------------------


class FakePort:
    def __init__(self, node: FakeNode, name: str) -> None:
        self.node, self.name, self.settings = node, name, {}

    def setBlocking(self, value: bool) -> None:  # noqa: N802 (depthai's names)
        self.settings["blocking"] = value

    def setQueueSize(self, value: int) -> None:  # noqa: N802
        self.settings["queue_size"] = value

    def link(self, other: FakePort) -> None:
        self.node.pipeline.links.append(((self.node.kind, self.name), (other.node.kind, other.name)))


class FakeNode:
    """Records every setter call; hands out its ports by name."""

    PORTS = ("input", "out", "passthrough", "outNetwork")

    def __init__(self, pipeline: FakePipeline, kind: str) -> None:
        self.pipeline, self.kind, self.calls, self.ports = pipeline, kind, {}, {}

    def __getattr__(self, name: str) -> Any:
        if name in FakeNode.PORTS:
            return self.ports.setdefault(name, FakePort(self, name))
        if name.startswith("set"):
            return lambda *args: self.calls.__setitem__(name, args[0] if len(args) == 1 else args)
        raise AttributeError(name)


class FakePipeline:
    def __init__(self) -> None:
        self.nodes: list[FakeNode] = []
        self.links: list[tuple[tuple[str, str], tuple[str, str]]] = []
        self.openvino_version = None

    def setOpenVINOVersion(self, version: str) -> None:  # noqa: N802
        self.openvino_version = version

    def create(self, kind: str) -> FakeNode:
        node = FakeNode(self, kind)
        self.nodes.append(node)
        return node

    def node(self, kind: str) -> FakeNode:
        (found,) = [n for n in self.nodes if n.kind == kind]
        return found


FAKE_DAI = SimpleNamespace(
    Pipeline=FakePipeline,
    node=SimpleNamespace(XLinkIn="XLinkIn", XLinkOut="XLinkOut", NeuralNetwork="NeuralNetwork",
                         YoloDetectionNetwork="YoloDetectionNetwork"),
    OpenVINO=SimpleNamespace(Version=SimpleNamespace(VERSION_2022_1="2022.1", VERSION_2021_4="2021.4")),
)


def settings(on_device_decode: bool, **changes: Any) -> PipelineSettings:
    return PipelineSettings(**{
        "blob_path": Path("/cache/blob/k/model_6shave.blob"), "imgsz": 320, "on_device_decode": on_device_decode,
        "num_classes": 4, "conf_threshold": 0.001, "iou_threshold": 0.7, "inference_threads": 1,
        "nce_per_thread": 2, "openvino_version": "2022.1", **changes})


def test_host_decoding_pipeline_is_xlinkin_neural_network_xlinkout() -> None:
    pipeline = build_pipeline(FAKE_DAI, settings(on_device_decode=False))
    assert [n.kind for n in pipeline.nodes] == ["XLinkIn", "NeuralNetwork", "XLinkOut"]
    assert pipeline.openvino_version == "2022.1"
    frames_in, network, results_out = pipeline.nodes
    assert frames_in.calls == {"setStreamName": INPUT_STREAM, "setMaxDataSize": 3 * 320 * 320, "setNumFrames": 2}
    assert results_out.calls == {"setStreamName": OUTPUT_STREAM}
    assert network.calls == {"setBlobPath": "/cache/blob/k/model_6shave.blob", "setNumInferenceThreads": 1,
                             "setNumNCEPerInferenceThread": 2, "setNumPoolFrames": 2}
    assert network.ports["input"].settings == {"blocking": True, "queue_size": 1}
    assert pipeline.links == [(("XLinkIn", "out"), ("NeuralNetwork", "input")),
                              (("NeuralNetwork", "out"), ("XLinkOut", "input"))]


def test_on_device_decoding_pipeline_configures_yolo11_anchor_free_parsing() -> None:
    pipeline = build_pipeline(FAKE_DAI, settings(on_device_decode=True, conf_threshold=0.25, iou_threshold=0.6,
                                                 imgsz=416, openvino_version="2021.4"))
    assert [n.kind for n in pipeline.nodes] == ["XLinkIn", "YoloDetectionNetwork", "XLinkOut"]
    assert pipeline.openvino_version == "2021.4"
    network = pipeline.node("YoloDetectionNetwork")
    assert network.calls == {
        "setNumClasses": 4, "setCoordinateSize": 4, "setAnchors": [], "setAnchorMasks": {},
        "setIouThreshold": 0.6, "setConfidenceThreshold": 0.25, "setBlobPath": "/cache/blob/k/model_6shave.blob",
        "setNumInferenceThreads": 1, "setNumNCEPerInferenceThread": 2, "setNumPoolFrames": 2,
    }
    assert pipeline.node("XLinkIn").calls["setMaxDataSize"] == 3 * 416 * 416
    assert pipeline.links == [(("XLinkIn", "out"), ("YoloDetectionNetwork", "input")),
                              (("YoloDetectionNetwork", "out"), ("XLinkOut", "input"))]


@pytest.mark.skipif(not HAVE_DEPTHAI, reason="depthai is not installed (pip install 'yolobench[oak]')")
@pytest.mark.parametrize("on_device", [False, True])
def test_the_real_depthai_library_accepts_the_pipeline(on_device: bool) -> None:
    """Same seam, the real depthai 2.x module: every call exists, and the serialised pipeline (what goes
    to the device) holds our settings. Only loading the blob file is recorded instead of done."""
    import depthai as dai

    blob_paths: list[str] = []

    class Node:
        def __init__(self, real: Any) -> None:
            self._real = real

        def setBlobPath(self, path: str) -> None:  # noqa: N802
            blob_paths.append(path)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._real, name)

    class Pipeline:
        def __init__(self) -> None:
            self.real = dai.Pipeline()

        def create(self, kind: Any) -> Node:
            return Node(self.real.create(kind))

        def __getattr__(self, name: str) -> Any:
            return getattr(self.real, name)

    proxy = SimpleNamespace(Pipeline=Pipeline, node=dai.node, OpenVINO=dai.OpenVINO)
    pipeline = build_pipeline(proxy, settings(on_device_decode=on_device, conf_threshold=0.3, iou_threshold=0.55))
    serialised = pipeline.real.serializeToJson()["pipeline"]
    nodes = {node["id"]: node for _, node in serialised["nodes"]}
    by_name = {node["name"]: node for node in nodes.values()}
    assert blob_paths == ["/cache/blob/k/model_6shave.blob"]
    assert pipeline.real.getOpenVINOVersion() == dai.OpenVINO.Version.VERSION_2022_1
    network = by_name["DetectionNetwork" if on_device else "NeuralNetwork"]
    assert network["properties"]["numThreads"] == 1 and network["properties"]["numNCEPerThread"] == 2
    assert by_name["XLinkIn"]["properties"]["streamName"] == INPUT_STREAM
    assert by_name["XLinkIn"]["properties"]["maxDataSize"] == 3 * 320 * 320
    assert by_name["XLinkOut"]["properties"]["streamName"] == OUTPUT_STREAM
    network_input = next(info for (_, name), info in network["ioInfo"] if name == "in")
    assert network_input["blocking"] is True and network_input["queueSize"] == 1
    if on_device:
        parser = network["properties"]["parser"]
        assert parser["classes"] == 4 and parser["coordinates"] == 4
        assert parser["anchors"] == [] and parser["anchorMasks"] == {}
        assert parser["iouThreshold"] == pytest.approx(0.55) and parser["confidenceThreshold"] == pytest.approx(0.3)
    links = {(nodes[c["node1Id"]]["name"], c["node1Output"], nodes[c["node2Id"]]["name"], c["node2Input"])
             for c in serialised["connections"]}
    assert links == {("XLinkIn", "out", network["name"], "in"), (network["name"], "out", "XLinkOut", "in")}


# --- the session, on a fake device ---------------------------------------------------------------------


class FakeFrame:
    class Type:
        BGR888p = "BGR888p"

    def __init__(self) -> None:
        self.calls: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("set"):
            return lambda value: self.calls.__setitem__(name, value)
        raise AttributeError(name)


class FakeDevice:
    """Queues on the host side of the two streams; answers each frame with the next canned message."""

    def __init__(self, answers: list[Any]) -> None:
        self.sent: list[FakeFrame] = []
        self.answers = answers
        self.queues: dict[str, tuple[int, bool]] = {}
        self.closed = False

    def getInputQueue(self, name: str, maxSize: int, blocking: bool) -> Any:  # noqa: N802, N803
        self.queues[name] = (maxSize, blocking)
        return SimpleNamespace(send=self.sent.append)

    def getOutputQueue(self, name: str, maxSize: int, blocking: bool) -> Any:  # noqa: N802, N803
        self.queues[name] = (maxSize, blocking)
        return SimpleNamespace(get=lambda: self.answers.pop(0))

    def close(self) -> None:
        self.closed = True


SESSION_DAI = SimpleNamespace(ImgFrame=FakeFrame, Clock=SimpleNamespace(now=lambda: "t0"))


def test_session_sends_bgr_planar_uint8_frames_and_reshapes_the_raw_output() -> None:
    imgsz, num_classes = 64, 4
    raw = np.arange((4 + num_classes) * num_anchors(imgsz), dtype=np.float32) / 1000
    device = FakeDevice([SimpleNamespace(getFirstLayerFp16=lambda: raw.tolist())])
    session = DepthaiSession(SESSION_DAI, device, settings(False, imgsz=imgsz, num_classes=num_classes),
                             DeviceTimes(), shaves=6)
    assert device.queues == {INPUT_STREAM: (1, True), OUTPUT_STREAM: (1, True)}
    rgb = np.random.default_rng(1).integers(0, 256, (imgsz, imgsz, 3), dtype=np.uint8)
    tensor = (rgb.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)
    output = session.infer(tensor)
    assert output.shape == (1, 4 + num_classes, 84) and np.allclose(output.reshape(-1), raw)
    (frame,) = device.sent
    assert frame.calls["setType"] == "BGR888p"
    assert frame.calls["setWidth"] == frame.calls["setHeight"] == imgsz
    sent = np.asarray(frame.calls["setData"]).reshape(3, imgsz, imgsz)
    assert np.array_equal(sent, rgb[:, :, ::-1].transpose(2, 0, 1))  # exactly the pixels, BGR planes
    assert "host_roundtrip_ms_p50" in session.metrics()
    session.close()
    assert device.closed


def test_on_device_detections_survive_the_host_decode_unchanged() -> None:
    imgsz = 320
    detections = [SimpleNamespace(label=2, confidence=0.9, xmin=0.1, ymin=0.2, xmax=0.3, ymax=0.5),
                  SimpleNamespace(label=0, confidence=0.4, xmin=0.5, ymin=0.5, xmax=0.9, ymax=0.8),
                  SimpleNamespace(label=2, confidence=0.3, xmin=0.6, ymin=0.1, xmax=0.7, ymax=0.2)]
    device = FakeDevice([SimpleNamespace(detections=detections)])
    session = DepthaiSession(SESSION_DAI, device, settings(True, imgsz=imgsz), DeviceTimes(), shaves=6)
    head = session.infer(np.zeros((1, 3, imgsz, imgsz), np.float32))
    assert head.shape == (1, 4 + 4, 3)
    decoded = decode_yolo11(head, conf_threshold=0.001, iou_threshold=0.7)
    assert decoded.class_ids.tolist() == [2, 0, 2]
    assert np.allclose(decoded.scores, [0.9, 0.4, 0.3])
    assert np.allclose(decoded.boxes[0], [32, 64, 96, 160])
    assert len(decode_yolo11(detections_as_head([], 4, imgsz))) == 0


# TRACE lines as an RVC2 device logs them (node name apart from the payload), in the format DepthAI's docs
# show under "Measuring operation times": only the NN's inference time counts, not the parser's or others'.
DEVICE_TRACE = [
    ("NeuralNetwork(1)", "NeuralNetwork inference took '12.5' ms."),
    ("DetectionNetwork(1)", "NeuralNetwork inference took '13.5' ms."),
    ("DetectionNetwork(1)", "DetectionParser took '3.464118' ms."),
    ("StereoDepth(4)", "Stereo took '12.27392' ms."),
    ("system", "EV:0,S:1,IDS:27,IDD:10,TSS:2,TSN:602001382"),
    ("system", "Temperatures - Average: 41.2C"),
]


def test_device_times_are_read_from_nn_trace_lines_only() -> None:
    times = DeviceTimes()
    for node, payload in DEVICE_TRACE:
        times(SimpleNamespace(nodeIdName=node, payload=payload))
    assert times.metrics()["device_inference_samples"] == 2
    assert times.metrics()["device_inference_ms_p50"] == pytest.approx(13.0)


def test_frames_round_trip_losslessly() -> None:
    pixels = np.random.default_rng(2).integers(0, 256, (3, 8, 8), dtype=np.uint8)
    tensor = pixels[None].astype(np.float32) / 255.0
    assert np.array_equal(tensor_to_planar_bgr(tensor), pixels[::-1])


# --- compile and open through the Runtime interface -----------------------------------------------------


class FakeOak(FakeDevice):
    """A device opened on a pipeline: what the runtime sets on it besides the two queues."""

    def __init__(self, pipeline: FakePipeline, answers: list[Any]) -> None:
        super().__init__(answers)
        self.pipeline, self.log_levels, self.log_callbacks = pipeline, [], []

    def setLogLevel(self, level: str) -> None:  # noqa: N802
        self.log_levels.append(level)

    def setLogOutputLevel(self, level: str) -> None:  # noqa: N802
        self.log_levels.append(("output", level))

    def addLogCallback(self, callback: Any) -> None:  # noqa: N802
        self.log_callbacks.append(callback)


@pytest.fixture()
def oak_here(monkeypatch: pytest.MonkeyPatch) -> list[FakeOak]:
    """An OAK, as far as the runtime can tell: availability says so, and `import depthai` gives a fake module
    whose Device records what it was opened with."""
    from yolobench.runtimes.depthai_runtime import DepthaiRuntime

    opened: list[FakeOak] = []

    def device(pipeline: FakePipeline, *wanted: Any) -> FakeOak:
        opened.append(FakeOak(pipeline, [SimpleNamespace(getFirstLayerFp16=lambda: [0.0] * 8 * 1024)]))
        return opened[-1]

    fake = SimpleNamespace(**vars(FAKE_DAI), **vars(SESSION_DAI), Device=device, DeviceInfo=str,
                           LogLevel=SimpleNamespace(TRACE="TRACE", WARN="WARN"))
    monkeypatch.setitem(sys.modules, "depthai", fake)
    monkeypatch.setattr(DepthaiRuntime, "availability", lambda self: Availability(True, "a fake OAK"))
    return opened


def test_compile_is_refused_before_any_blob_is_made_without_a_device(tmp_path: Path) -> None:
    runtime = get_runtime("depthai")
    if runtime.availability().usable:
        pytest.skip("an OAK device is attached here")
    from yolobench.runtimes.options import DepthaiOptions

    cache = ArtifactCache(tmp_path / "cache")
    with fake_blobconverter() as service:
        options = DepthaiOptions.model_validate({"depthai": {"converter_url": service.url}})
        with pytest.raises(RuntimeUnavailable):
            runtime.compile(tiny_model(cache), {"precision": "fp16", "imgsz": 32}, options, cache)
    assert service.requests == []


def test_compile_makes_the_blob_of_the_variant_s_shaves_as_a_cached_stage(tmp_path: Path, oak_here) -> None:
    from yolobench.runtimes.options import DepthaiOptions
    from yolobench.stages.blob import BLOB_STAGE

    runtime = get_runtime("depthai")
    cache = ArtifactCache(tmp_path / "cache")
    model = tiny_model(cache)
    with fake_blobconverter() as service:
        options = DepthaiOptions.model_validate({"depthai": {"converter_url": service.url, "openvino_version": "2021.4"}})
        blob = runtime.compile(model, {"precision": "fp16", "imgsz": 32}, options, cache)  # shaves: the default
        again = runtime.compile(model, {"precision": "fp16", "imgsz": 32, "shaves": 6}, options, cache)
        other = runtime.compile(model, {"precision": "fp16", "imgsz": 32, "shaves": 8}, options, cache)
    assert [request.form["myriad_shaves"] for request in service.requests] == ["6", "8"]
    assert service.requests[0].query["version"] == "2021.4"
    assert again == blob != other and cache.lookup(BLOB_STAGE, blob.key) == blob
    assert blob.manifest["parent"] == model.key and "build_s" in blob.manifest and blob.manifest["shaves"] == 6
    no_classes = ArtifactCache(tmp_path / "other")
    unnamed = tiny_model(no_classes)
    unnamed = Artifact(unnamed.key, unnamed.stage, unnamed.path, {"precision": "fp32"})
    with pytest.raises(ModelMismatch, match="how many classes"):
        runtime.compile(unnamed, {"precision": "fp16", "imgsz": 32}, options, no_classes)


@pytest.mark.parametrize("on_device", [False, True])
def test_open_runs_the_compiled_blob_with_the_host_decode_s_thresholds(tmp_path: Path, oak_here,
                                                                       on_device: bool) -> None:
    from yolobench.runtimes.options import DepthaiOptions

    runtime = get_runtime("depthai")
    cache = ArtifactCache(tmp_path / "cache")
    model = tiny_model(cache)
    blob = Artifact("b" * 20, "blob", tmp_path / "model_6shave.blob", {"shaves": 6, "key": "b" * 20})
    options = DepthaiOptions.model_validate({"depthai": {"nce_per_thread": 1, "device": "1844301011B546F500"}})
    axes = {"precision": "fp16", "imgsz": 32, "on_device_decode": on_device}
    session = runtime.open(model, blob, axes, options, DecodeSettings(conf=0.25, iou=0.55, max_det=10), tmp_path)
    (device,) = oak_here
    kind = "YoloDetectionNetwork" if on_device else "NeuralNetwork"
    network = device.pipeline.node(kind)
    assert network.calls["setBlobPath"] == str(blob.path) and network.calls["setNumNCEPerInferenceThread"] == 1
    if on_device:
        assert network.calls["setConfidenceThreshold"] == 0.25 and network.calls["setIouThreshold"] == 0.55
        assert network.calls["setNumClasses"] == 4
    assert device.log_levels[0] == "TRACE" and len(device.log_callbacks) == 1
    if not on_device:
        assert session.infer(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 8, 1024)
    session.close()
    session.close()  # twice: harmless
    assert device.closed
    with pytest.raises(ValueError, match="needs the blob its compile"):
        runtime.open(model, None, axes, options, DecodeSettings(), tmp_path)


# --- on a real OAK -------------------------------------------------------------------------------------


@pytest.mark.oak
@pytest.mark.slow
@pytest.mark.parametrize("on_device", [False, True])
def test_real_oak_runs_both_modes(request: pytest.FixtureRequest, on_device: bool) -> None:
    runtime = get_runtime("depthai")
    availability = runtime.availability()
    if not availability.usable:
        pytest.skip(f"needs an OAK device: {availability.reason}")
    seeded_home: Path = request.getfixturevalue("seeded_home")  # trains the tiny model: only with a device
    from tests.conftest import OAK_TINY_SWEEP, variant_builder

    spec, sweep, builder = variant_builder(OAK_TINY_SWEEP, seeded_home)
    variant = sweep.space.variant_from_params({**spec.baseline, "on_device_decode": on_device})
    model = builder.build(variant).model
    axes = runtime.info.resolve_axes(variant.as_dict())
    blob = runtime.compile(model, axes, spec.runtime, sweep.cache)
    assert blob.path.suffix == ".blob" and "build_s" in blob.manifest
    session = runtime.open(model, blob, axes, spec.runtime, DecodeSettings(), seeded_home)
    output = session.infer(np.zeros((1, 3, 96, 96), np.float32))
    assert output.shape[:2] == (1, 8)
    assert "host_roundtrip_ms_p50" in session.metrics()
    session.close()

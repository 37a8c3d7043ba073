"""DepthAI runtime: the pipeline the OAK would receive, for both decoding modes, built through the
`build_pipeline(dai, settings)` seam with a recording stand-in for the depthai module (and, where
depthai is installed, with the real library, whose serialised pipeline is checked); the session's
frames and result handling against a fake device; and a real-device test that needs an OAK."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from yolobench.measure.postprocess import decode_yolo11
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


# --- on a real OAK -------------------------------------------------------------------------------------


@pytest.mark.oak
@pytest.mark.slow
@pytest.mark.parametrize("on_device", [False, True])
def test_real_oak_runs_both_modes(request: pytest.FixtureRequest, on_device: bool) -> None:
    from yolobench.runtimes import get_runtime

    runtime = get_runtime("depthai")
    usable, reason = runtime.availability()
    if not usable:
        pytest.skip(f"needs an OAK device: {reason}")
    seeded_home: Path = request.getfixturevalue("seeded_home")  # trains the tiny model: only with a device
    from tests.conftest import OAK_TINY_SWEEP, variant_builder
    from yolobench.space import Variant

    spec, sweep, builder = variant_builder(OAK_TINY_SWEEP, seeded_home)
    variant = Variant.of(list(spec.axes.as_dict()), {**spec.baseline, "on_device_decode": on_device})
    opened = runtime.open(builder.build(variant), variant, spec.runtime, seeded_home, sweep.cache)
    output = opened.session.infer(np.zeros((1, 3, 96, 96), np.float32))
    assert output.shape[:2] == (1, 8)
    assert opened.compiled_artifact.suffix == ".blob"
    assert "host_roundtrip_ms_p50" in opened.session.metrics()
    opened.session.close()

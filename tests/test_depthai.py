"""DepthAI 3 runtime: the pipelines the OAK would receive for both decoding modes, through the recording fake of
tests/fake_depthai.py (whose API test_depthai_bindings.py checks against the real module) where the real module
needs a device, and with the real depthai 3.x wherever it works without one: it opens the NN Archive the compile
stage writes (superblob, every SHAVE count), configures its detection parser from the archive's head, decodes on
the host as the device would, and builds the frames the host sends. Then compile (one archive per model and
imgsz, counted for the OAK grid) and open through the Runtime interface, and a real-device test that needs an OAK."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from tests.fake_blobconverter import fake_blobconverter
from tests.fake_depthai import make_fake_depthai
from tests.fake_hubai import fake_hubai
from tests.tiny_yolo11 import tiny_yolo11_export
from yolobench.cache import Artifact, ArtifactCache
from yolobench.errors import ModelMismatch, RuntimeUnavailable
from yolobench.measure.postprocess import decode_yolo11
from yolobench.runtimes import Availability, DecodeSettings, get_runtime
from yolobench.runtimes.depthai_runtime import (
    DepthaiSession, DeviceTimes, PipelineSettings, build_pipeline, detections_as_head, host_frame, levels_as_head,
    tensor_to_planar_bgr,
)  # fmt: skip

HAVE_DEPTHAI = importlib.util.find_spec("depthai") is not None
needs_depthai = pytest.mark.skipif(not HAVE_DEPTHAI, reason="depthai is not installed (pip install -e '.[dev]')")
API_KEY = "hubai-test-key-0123456789"
OUTPUTS = {"output1_yolov6r2": [1, 9, 8, 8], "output2_yolov6r2": [1, 9, 4, 4], "output3_yolov6r2": [1, 9, 2, 2]}


def settings(on_device_decode: bool, **changes: Any) -> PipelineSettings:
    return PipelineSettings(**{
        "archive_path": Path("/cache/nn_archive/k/model.rvc2.tar.xz"), "imgsz": 64, "on_device_decode": on_device_decode,
        "num_classes": 4, "shaves": 6, "conf_threshold": 0.001, "iou_threshold": 0.7, "inference_threads": 2,
        "nce_per_thread": 1, "outputs": OUTPUTS, **changes})


def fake_pipeline(on_device: bool, **changes: Any) -> tuple[Any, Any, tuple[Any, Any]]:
    dai = make_fake_depthai()
    pipeline = dai.Pipeline(dai.Device())
    return dai, pipeline, build_pipeline(dai, pipeline, settings(on_device, **changes))


@pytest.mark.parametrize("on_device", [False, True])
def test_pipeline_runs_the_archive_at_the_variant_s_shaves_fed_and_read_by_the_host(on_device: bool) -> None:
    _, pipeline, (frames, results) = fake_pipeline(on_device, conf_threshold=0.25, iou_threshold=0.6)
    (network,) = pipeline._nodes
    assert type(network).__name__ == ("DetectionNetwork" if on_device else "NeuralNetwork")
    expected = {"setNNArchive": ("/cache/nn_archive/k/model.rvc2.tar.xz", 6), "setNumInferenceThreads": 2,
                "setNumNCEPerInferenceThread": 1, "setNumPoolFrames": 2}
    if on_device:  # the archive's head configures the parser; the run's thresholds override its defaults
        expected["setConfidenceThreshold"] = 0.25
        assert network.detectionParser._calls == {"setIouThreshold": 0.6}
    assert network._calls == expected
    assert network.input._settings == {"blocking": True, "max_size": 1}
    assert (frames._max_size, frames._blocking) == (1, True) and network.input._queue is frames
    assert (results._max_size, results._blocking) == (1, True) and network.out._queue is results


def test_a_legacy_single_blob_archive_is_opened_without_a_shave_count() -> None:
    _, pipeline, _ = fake_pipeline(False, superblob=False)
    assert pipeline._nodes[0]._calls["setNNArchive"] == ("/cache/nn_archive/k/model.rvc2.tar.xz",)


@needs_depthai
def test_the_real_module_needs_a_device_for_network_nodes_hence_the_fake() -> None:
    import depthai as dai

    pipeline = dai.Pipeline(False)  # no device
    with pytest.raises(RuntimeError, match="host only"):
        pipeline.create(dai.node.NeuralNetwork)
    pipeline.create(dai.node.DetectionParser)  # a host-capable node is fine: the tests below use it


# --- the archive the compile stage writes, read by the real depthai ---------------------------------------


class StaticConverter:
    """A converter that hands back fixed bytes (a superblob) and counts its conversions."""

    name, superblob, opsets, summary = "static", True, (11, 16), ""

    def __init__(self, data: bytes | None = None) -> None:
        from tests.fake_blobconverter import dummy_superblob

        self.data, self.conversions = data or dummy_superblob(), []

    def versions(self) -> dict[str, str]:
        return {"static": "1"}

    def settings(self) -> dict[str, Any]:
        return {}

    def convert(self, request: Any, work_dir: Path) -> Path:
        self.conversions.append(request)
        work_dir.mkdir(parents=True, exist_ok=True)
        (work_dir / "model.superblob").write_bytes(self.data)
        return work_dir / "model.superblob"


@pytest.fixture()
def archive(tmp_path: Path) -> Artifact:
    from yolobench.stages.blob import rvc2_detection_head
    from yolobench.stages.rvc2_compile import compile_archive

    cache = ArtifactCache(tmp_path / "cache")
    return compile_archive(cache, rvc2_detection_head(cache, tiny_yolo11_export(cache)), StaticConverter(), 64)


@needs_depthai
def test_real_depthai_opens_the_archive_and_its_superblob_for_every_shave_count(archive: Artifact) -> None:
    import depthai as dai

    opened = dai.NNArchive(str(archive.path))
    assert opened.getModelType() == dai.ModelType.SUPERBLOB
    assert (opened.getInputWidth(), opened.getInputHeight()) == (64, 64)
    assert opened.getSupportedPlatforms() == [dai.Platform.RVC2]
    superblob = opened.getSuperBlob()
    assert all(superblob.getBlobWithNumShaves(shaves).version == dai.OpenVINO.Version.VERSION_2022_1
               for shaves in range(1, 17))


@needs_depthai
def test_real_depthai_configures_yolo11_anchor_free_decoding_from_the_archive(archive: Artifact) -> None:
    """What DetectionNetwork.setNNArchive hands its parser, on the parser itself (it runs without a device)."""
    import depthai as dai

    parser = dai.Pipeline(False).create(dai.node.DetectionParser)
    parser.setNNArchive(dai.NNArchive(str(archive.path)))
    assert parser.getNNFamily() == dai.DetectionNetworkType.YOLO and parser.getSubtype() == "yolov8"
    assert parser.getNumClasses() == 4 and parser.getClasses() == [f"class{i}" for i in range(4)]
    assert parser.getCoordinateSize() == 4 and parser.getAnchors() == [] and parser.getStrides() == [8, 16, 32]
    assert parser.getConfidenceThreshold() == pytest.approx(0.001) and parser.getIouThreshold() == pytest.approx(0.7)
    parser.setIouThreshold(0.6)  # what build_pipeline does with the run's threshold
    assert parser.getIouThreshold() == pytest.approx(0.6)


def planted_levels(imgsz: int = 64, num_classes: int = 4) -> list[np.ndarray]:
    """Per-level outputs with one clear detection: class 3 at level 0, cell (x=5, y=2), distances 1, 1.5, 2, 2.5."""
    levels = [np.zeros((1, 5 + num_classes, imgsz // s, imgsz // s), np.float32) for s in (8, 16, 32)]
    for level in levels:
        level[0, :4] = 1.0
    levels[0][0, :4, 2, 5] = [1.0, 1.5, 2.0, 2.5]
    levels[0][0, 4, 2, 5] = levels[0][0, 5 + 3, 2, 5] = 0.9
    return levels


def real_parser_detections(archive: Artifact, levels: list[np.ndarray], imgsz: int) -> list[Any]:
    """DepthAI's own YOLO decoding (its DetectionParser, run on the host) of per-level outputs."""
    import depthai as dai

    pipeline = dai.Pipeline(False)
    parser = pipeline.create(dai.node.DetectionParser)
    parser.setNNArchive(dai.NNArchive(str(archive.path)))
    parser.setConfidenceThreshold(0.25)
    parser.setRunOnHost(True)
    frames, results = parser.input.createInputQueue(), parser.out.createOutputQueue()
    pipeline.start()
    try:
        message = dai.NNData()
        message.setTransformation(dai.ImgTransformation(imgsz, imgsz))
        for name, level in zip(OUTPUTS, levels, strict=True):
            message.addTensor(name, level[0], dai.TensorInfo.StorageOrder.CHW)
        frames.send(message)
        return list(results.get().detections)
    finally:
        pipeline.stop()


@needs_depthai
def test_host_decoding_and_depthai_s_own_decoding_of_the_same_outputs_agree(archive: Artifact) -> None:
    levels = planted_levels()
    (detection,) = real_parser_detections(archive, levels, 64)
    decoded = decode_yolo11(levels_as_head(levels, 64), conf_threshold=0.25, iou_threshold=0.7)
    assert decoded.class_ids.tolist() == [detection.label] == [3]
    assert decoded.scores[0] == pytest.approx(detection.confidence, abs=1e-3)
    device_box = np.array([detection.xmin, detection.ymin, detection.xmax, detection.ymax]) * 64
    np.testing.assert_allclose(decoded.boxes[0], device_box, atol=1e-3)
    np.testing.assert_allclose(device_box, [(5.5 - 1.0) * 8, (2.5 - 1.5) * 8, (5.5 + 2.0) * 8, (2.5 + 2.5) * 8])


def random_levels(count: int, imgsz: int = 96, num_classes: int = 3, seed: int = 0) -> list[np.ndarray]:
    """Per-level outputs with `count` detections of random level, cell, class, size and score, all inside the
    image, on a background that scores below any threshold."""
    rng = np.random.default_rng(seed)
    levels = [np.full((1, 5 + num_classes, imgsz // s, imgsz // s), 1e-4, np.float32) for s in (8, 16, 32)]
    for _ in range(count):
        level = levels[rng.integers(3)]
        size = level.shape[-1]
        y, x, label = rng.integers(size), rng.integers(size), rng.integers(num_classes)
        level[0, :4, y, x] = [rng.uniform(0.2, x + 0.5), rng.uniform(0.2, y + 0.5),
                              rng.uniform(0.2, size - x - 0.5), rng.uniform(0.2, size - y - 0.5)]
        level[0, 5:, y, x] = 1e-4
        level[0, 4, y, x] = level[0, 5 + label, y, x] = rng.uniform(0.3, 0.95)
    return levels


def class_agnostic(detections: Any, iou: float) -> np.ndarray:
    """Indices greedy NMS keeps when boxes of any class suppress each other."""
    from yolobench.measure.accuracy import box_iou

    kept: list[int] = []
    for index in np.argsort(-detections.scores, kind="stable"):
        if not kept or box_iou(detections.boxes[[index]], detections.boxes[kept]).max() <= iou:
            kept.append(int(index))
    return np.asarray(kept)


@needs_depthai
def test_depthai_s_decoding_of_many_detections_matches_the_host_s_but_for_its_class_agnostic_nms(
        tmp_path: Path) -> None:
    """Random detections at every level, class and size: DepthAI's parser (as configured from the archive, at the
    host decode's thresholds) finds the host decoding's boxes, classes and scores (to FP16, as it reads tensors),
    except that its NMS is class-agnostic: a box overlapping a better box of another class by more than the IoU
    threshold is dropped on the device and kept on the host (Ultralytics' validator is class-aware). That is the
    one way the two modes can differ in mAP."""
    from yolobench.stages.blob import rvc2_detection_head
    from yolobench.stages.rvc2_compile import compile_archive

    cache = ArtifactCache(tmp_path / "cache")
    archive = compile_archive(cache, rvc2_detection_head(cache, tiny_yolo11_export(cache, 96, 3)), StaticConverter(), 96)
    parser, dropped = HostParser(archive, 96, DecodeSettings()), 0
    try:
        for seed in range(3):
            levels = random_levels(25, seed=seed)
            ours = decode_yolo11(levels_as_head(levels, 96), 0.001, 0.7)
            theirs = decode_yolo11(parser(levels, 3), 0.001, 0.7)
            agnostic = class_agnostic(ours, 0.7)
            dropped += len(ours) - len(agnostic)
            assert len(theirs) == len(agnostic) >= 15
            order_ours = agnostic[np.lexsort(ours.boxes[agnostic].T)]
            order_theirs = np.lexsort(theirs.boxes.T)
            np.testing.assert_allclose(ours.boxes[order_ours], theirs.boxes[order_theirs], atol=0.1)
            np.testing.assert_allclose(ours.scores[order_ours], theirs.scores[order_theirs], atol=2e-3)
            assert ours.class_ids[order_ours].tolist() == theirs.class_ids[order_theirs].tolist()
    finally:
        parser.pipeline.stop()
    assert dropped > 0  # the random boxes do overlap across classes: the difference was exercised


@needs_depthai
def test_the_host_frame_is_a_real_bgr888p_frame_with_its_size_as_transformation() -> None:
    import depthai as dai

    rgb = np.random.default_rng(1).integers(0, 256, (3, 16, 16), dtype=np.uint8)
    frame = host_frame(dai, rgb[None].astype(np.float32) / 255.0, sequence=7)
    assert frame.getType() == dai.ImgFrame.Type.BGR888p and (frame.getWidth(), frame.getHeight()) == (16, 16)
    assert np.array_equal(np.asarray(frame.getData()).reshape(3, 16, 16), rgb[::-1])  # BGR planes, exact pixels
    assert frame.getTransformation().getSize() == (16, 16) and frame.getSequenceNum() == 7


# --- the session, on a fake device ---------------------------------------------------------------------


def session_on(dai: Any, answers: list[Any], on_device: bool) -> DepthaiSession:
    dai.Device._next_answers = answers
    device = dai.Device()
    pipeline = dai.Pipeline(device)
    return DepthaiSession(dai, device, pipeline, build_pipeline(dai, pipeline, settings(on_device)),
                          settings(on_device), DeviceTimes())


@pytest.mark.parametrize("real_nndata", [False, True])
def test_host_decoding_turns_the_archive_s_outputs_into_the_export_s_layout(real_nndata: bool) -> None:
    dai, levels = make_fake_depthai(), planted_levels()
    if real_nndata:
        if not HAVE_DEPTHAI:
            pytest.skip("depthai is not installed")
        import depthai

        message = depthai.NNData()
        for name, level in zip(OUTPUTS, levels, strict=True):
            message.addTensor(name, level, depthai.TensorInfo.StorageOrder.NCHW)
        dai.TensorInfo = depthai.TensorInfo
    else:
        message = dai.NNData()
        message._tensors = {name: level.astype(np.float16) for name, level in zip(OUTPUTS, levels, strict=True)}
    session = session_on(dai, [message], on_device=False)
    head = session.infer(np.zeros((1, 3, 64, 64), np.float32))
    assert head.shape == (1, 8, 64 + 16 + 4) and head.dtype == np.float32
    np.testing.assert_allclose(head, levels_as_head(levels, 64), atol=1e-3)
    (frame,) = session._input._sent
    assert frame._calls["setType"] == dai.ImgFrame.Type.BGR888p and frame._calls["setTransformation"] == (64, 64)
    assert "host_roundtrip_ms_p50" in session.metrics()
    session.close()
    session.close()  # twice: harmless
    assert session._pipeline._stopped and dai.Device._opened[0]._closed


def test_on_device_detections_survive_the_host_decode_unchanged() -> None:
    dai = make_fake_depthai()
    detections = [SimpleNamespace(label=2, confidence=0.9, xmin=0.1, ymin=0.2, xmax=0.3, ymax=0.5),
                  SimpleNamespace(label=0, confidence=0.4, xmin=0.5, ymin=0.5, xmax=0.9, ymax=0.8),
                  SimpleNamespace(label=2, confidence=0.3, xmin=0.6, ymin=0.1, xmax=0.7, ymax=0.2)]
    message = dai.ImgDetections()
    message._detections = detections
    head = session_on(dai, [message], on_device=True).infer(np.zeros((1, 3, 64, 64), np.float32))
    assert head.shape == (1, 4 + 4, 3)
    decoded = decode_yolo11(head, conf_threshold=0.001, iou_threshold=0.7)
    assert decoded.class_ids.tolist() == [2, 0, 2] and np.allclose(decoded.scores, [0.9, 0.4, 0.3])
    assert np.allclose(decoded.boxes[0], [6.4, 12.8, 19.2, 32])
    assert len(decode_yolo11(detections_as_head([], 4, 64))) == 0


# TRACE lines as an RVC2 device logs them (node name apart from the payload), in the format DepthAI's docs
# show under "Measuring operation times": only the NN's inference time counts, not the parser's or others'.
DEVICE_TRACE = [
    ("NeuralNetwork(1)", "NeuralNetwork inference took '12.5' ms."),
    ("DetectionNetwork(1)", "NeuralNetwork inference took '13.5' ms."),
    ("DetectionNetwork(1)", "DetectionParser took '3.464118' ms."),
    ("StereoDepth(4)", "Stereo took '12.27392' ms."),
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
    assert np.array_equal(tensor_to_planar_bgr(pixels[None].astype(np.float32) / 255.0), pixels[::-1])


# --- compile and open through the Runtime interface -----------------------------------------------------


@pytest.fixture()
def oak_here(monkeypatch: pytest.MonkeyPatch) -> Any:
    """An OAK, as far as the runtime can tell: availability says so, and `import depthai` gives the fake."""
    from yolobench.runtimes.depthai_runtime import DepthaiRuntime

    fake = make_fake_depthai()
    monkeypatch.setitem(sys.modules, "depthai", fake)
    monkeypatch.setattr(DepthaiRuntime, "availability", lambda self: Availability(True, "a fake OAK"))
    return fake


def oak_options(**depthai: Any) -> Any:
    from yolobench.runtimes.options import DepthaiOptions

    return DepthaiOptions.model_validate({"depthai": depthai})


def test_compile_is_refused_before_anything_is_sent_without_a_device(tmp_path: Path, monkeypatch) -> None:
    runtime = get_runtime("depthai")
    if runtime.availability().usable:
        pytest.skip("an OAK device is attached here")
    cache = ArtifactCache(tmp_path / "cache")
    monkeypatch.setenv("HUBAI_API_KEY", API_KEY)
    with fake_hubai(API_KEY) as service:
        with pytest.raises(RuntimeUnavailable):
            runtime.compile(tiny_yolo11_export(cache), {"precision": "fp16", "imgsz": 64}, oak_options(
                converter="hubai", converter_url=service.url), cache)
    assert service.requests == []


def grid_compiles(cache: ArtifactCache, options: Any) -> tuple[int, int]:
    """(variants, archives built) for every variant of the oak-d-pro target, compiled through the runtime on
    tiny models with the real export's (scale, imgsz) layout."""
    from yolobench.space import Space
    from yolobench.spec import load_spec

    spec = load_spec("oak-d-pro")
    runtime, built_before = get_runtime("depthai"), cache.builds["nn_archive"]
    variants = list(Space.from_spec(spec).variants())
    archives = set()
    for variant in variants:
        axes = runtime.info.resolve_axes(variant.as_dict())
        model = tiny_yolo11_export(cache, int(axes["imgsz"]), scale=str(axes["scale"]))
        archives.add(runtime.compile(model, axes, options, cache).key)
    built = cache.builds["nn_archive"] - built_before
    assert len(archives) == built
    return len(variants), built


def test_the_oak_grid_compiles_one_superblob_per_model_and_imgsz(tmp_path: Path, oak_here, monkeypatch) -> None:
    """The 150-variant OAK grid (3 scales x 5 imgsz x 5 SHAVE counts x 2 decoding modes) through the real HubAI
    client and its loopback fake: 15 conversions. The legacy service, one blob per SHAVE count: 75."""
    monkeypatch.setenv("HUBAI_API_KEY", API_KEY)
    cache = ArtifactCache(tmp_path / "cache")  # one cache: the exports and heads are shared, the archives are not
    with fake_hubai(API_KEY) as service:
        variants, superblobs = grid_compiles(cache, oak_options(converter="hubai", converter_url=service.url))
    exports = service.recorded("POST", "/models/api/v1/modelInstances/{id}/export/rvc2")
    with fake_blobconverter() as legacy:
        _, blobs = grid_compiles(cache, oak_options(converter="blobconverter", converter_url=legacy.url))
    print(f"\nOAK grid: {variants} variants; compiles: {superblobs} (superblob, hubai) vs {blobs} (one blob per "
          f"SHAVE count, blobconverter) vs {2 * blobs} before (one blob per SHAVE count and decoding mode)")
    assert (variants, superblobs, len(exports), blobs, len(legacy.requests)) == (150, 15, 15, 75, 75)
    assert cache.builds["rvc2_head"] == 15  # one head per (scale, imgsz), whatever the converter


def test_compile_needs_the_model_s_class_names(tmp_path: Path, oak_here) -> None:
    cache = ArtifactCache(tmp_path / "cache")
    model = tiny_yolo11_export(cache)
    unnamed = Artifact(model.key, model.stage, model.path, {"precision": "fp32"})
    with pytest.raises(ModelMismatch, match="how many classes"):
        get_runtime("depthai").compile(unnamed, {"precision": "fp16", "imgsz": 64}, oak_options(), cache)


@pytest.mark.parametrize("on_device", [False, True])
def test_open_runs_the_archive_at_the_variant_s_shaves_and_threads(tmp_path: Path, oak_here, archive: Artifact,
                                                                    on_device: bool) -> None:
    runtime = get_runtime("depthai")
    model = tiny_yolo11_export(ArtifactCache(tmp_path / "other"))
    axes = {"precision": "fp16", "imgsz": 64, "shaves": 5, "on_device_decode": on_device, "inference_threads": 2}
    options = oak_options(nce_per_thread=1, device="14442C10D13EABCE00")
    oak_here.Device._next_answers = [oak_here.ImgDetections() if on_device else oak_here.NNData()]
    if not on_device:
        oak_here.Device._next_answers[0]._tensors = dict(zip(OUTPUTS, planted_levels(), strict=True))
    session = runtime.open(model, archive, axes, options, DecodeSettings(conf=0.25, iou=0.55, max_det=10), tmp_path)
    (device,) = oak_here.Device._opened
    (network,) = session._pipeline._nodes
    assert device._info._id == "14442C10D13EABCE00" and session._pipeline._started
    assert network._calls["setNNArchive"] == (str(archive.path), 5)
    assert network._calls["setNumInferenceThreads"] == 2 and network._calls["setNumNCEPerInferenceThread"] == 1
    if on_device:
        assert network._calls["setConfidenceThreshold"] == 0.25
        assert network.detectionParser._calls["setIouThreshold"] == 0.55
    assert device._log_levels[0] == oak_here.LogLevel.TRACE and len(device._log_callbacks) == 1
    assert session.infer(np.zeros((1, 3, 64, 64), np.float32)).shape[:2] == (1, 8)
    assert session.info()["archive"]["converter"] == "static" and session.info()["shaves"] == 5
    session.close()
    assert device._closed
    with pytest.raises(ValueError, match="needs the NN Archive"):
        runtime.open(model, None, axes, options, DecodeSettings(), tmp_path)


# --- decoding parity without a device: the archive's model on ONNX Runtime, decoded both ways ------------


class HostParser:
    """DepthAI's own detection parser, configured from the archive and run on the host: what the device's
    DetectionNetwork does with the NN's outputs, at the host decode's thresholds."""

    def __init__(self, archive: Artifact, imgsz: int, decode: DecodeSettings) -> None:
        import depthai as dai

        self.dai, self.imgsz, self.outputs = dai, imgsz, list(archive.manifest["outputs"])
        self.pipeline = dai.Pipeline(False)
        parser = self.pipeline.create(dai.node.DetectionParser)
        parser.setNNArchive(dai.NNArchive(str(archive.path)))
        parser.setConfidenceThreshold(decode.conf)
        parser.setIouThreshold(decode.iou)
        parser.setRunOnHost(True)
        self.frames, self.results = parser.input.createInputQueue(), parser.out.createOutputQueue()
        self.pipeline.start()

    def __call__(self, levels: list[np.ndarray], num_classes: int) -> np.ndarray:
        message = self.dai.NNData()
        message.setTransformation(self.dai.ImgTransformation(self.imgsz, self.imgsz))
        for name, level in zip(self.outputs, levels, strict=True):
            message.addTensor(name, np.ascontiguousarray(level[0]), self.dai.TensorInfo.StorageOrder.CHW)
        self.frames.send(message)
        return detections_as_head(list(self.results.get().detections), num_classes, self.imgsz)


def val_data(spec: Any, home: Path) -> Any:
    from yolobench.data.dataset import open_dataset
    from yolobench.measure.harness import EvalData

    return EvalData.from_dataset(open_dataset(spec.data, home), spec.data.val_images)


@pytest.mark.slow
@needs_depthai
def test_host_and_depthai_decoding_of_one_archive_agree_on_map_on_the_val_split(seeded_home: Path) -> None:
    """The trained tiny OAK model's archive, its model run by ONNX Runtime (FP32 stands in for the device's FP16):
    decoded on the host, and by DepthAI's parser as the device would; mAP50-95 within 0.01, and the host's
    decoding of the rewritten head within 0.01 of Ultralytics' own output."""
    import onnxruntime as ort

    from tests.conftest import OAK_TINY_SWEEP, variant_builder
    from yolobench.measure.accuracy import evaluate
    from yolobench.stages.blob import rvc2_detection_head
    from yolobench.stages.rvc2_compile import compile_archive

    spec, sweep, builder = variant_builder(OAK_TINY_SWEEP, seeded_home)
    model = builder.build(sweep.space.baseline).model
    data = val_data(spec, seeded_home)
    imgsz, names = int(sweep.space.baseline["imgsz"]), data.names
    head = rvc2_detection_head(sweep.cache, model)
    archive = compile_archive(sweep.cache, head, StaticConverter(), imgsz)
    rewritten = ort.InferenceSession(str(head.path), providers=["CPUExecutionProvider"])
    original = ort.InferenceSession(str(model.path), providers=["CPUExecutionProvider"])
    host = lambda t: levels_as_head(rewritten.run(None, {"images": t}), imgsz)  # noqa: E731
    parser = HostParser(archive, imgsz, DecodeSettings())
    device = lambda t: parser(rewritten.run(None, {"images": t}), len(names))  # noqa: E731
    try:
        maps = {"export": evaluate(lambda t: original.run(None, {"images": t})[0], data.val_images, names, imgsz),
                "host": evaluate(host, data.val_images, names, imgsz),
                "depthai": evaluate(device, data.val_images, names, imgsz)}
        matched, total = detection_agreement(host, device, data.val_images, imgsz)
    finally:
        parser.pipeline.stop()
    print("\noffline decoding parity, mAP50-95: " + ", ".join(f"{k} {v.map50_95:.4f}" for k, v in maps.items())
          + f"; top detections matched {matched}/{total}")
    assert abs(maps["host"].map50_95 - maps["depthai"].map50_95) <= 0.01
    assert abs(maps["host"].map50_95 - maps["export"].map50_95) <= 0.01
    # Not vacuous: the 1-epoch tiny model's mAP is ~0 either way, so its detections themselves are compared.
    assert total >= len(data.val_images) and matched >= 0.9 * total


def detection_agreement(host: Any, device: Any, images: Any, imgsz: int, top: int = 10) -> tuple[int, int]:
    """(matched, compared): each image's `top` best host detections that DepthAI's decoding also found (same
    class, IoU >= 0.9 once clipped to the image as DepthAI clips them, score within 0.01)."""
    import cv2

    from yolobench.data.letterbox import to_input_tensor
    from yolobench.measure.accuracy import box_iou

    matched = total = 0
    for path in images:
        tensor, _ = to_input_tensor(cv2.imread(str(path), cv2.IMREAD_COLOR), imgsz)
        ours, theirs = (decode_yolo11(f(tensor), 0.001, 0.7) for f in (host, device))
        best = np.argsort(-ours.scores)[:top]
        total += len(best)
        if len(theirs) == 0:
            continue
        iou = box_iou(np.clip(ours.boxes[best], 0, imgsz), theirs.boxes)
        same = (ours.class_ids[best][:, None] == theirs.class_ids[None]) & (iou >= 0.9) & (
            np.abs(ours.scores[best][:, None] - theirs.scores[None]) <= 0.01)
        matched += int(same.any(axis=1).sum())
    return matched, total


# --- on a real OAK -------------------------------------------------------------------------------------


@pytest.mark.oak
@pytest.mark.slow
def test_real_oak_host_and_device_decoding_of_one_archive_agree_on_map(request: pytest.FixtureRequest) -> None:
    """On an attached OAK: both modes of the same archive, on the val split; mAP50-95 within 0.01."""
    runtime = get_runtime("depthai")
    availability = runtime.availability()
    if not availability.usable:
        pytest.skip(f"needs an OAK device: {availability.reason}")
    seeded_home: Path = request.getfixturevalue("seeded_home")  # trains the tiny model: only with a device
    from tests.conftest import OAK_TINY_SWEEP, variant_builder
    from yolobench.measure.harness import measure_session

    spec, sweep, builder = variant_builder(OAK_TINY_SWEEP, seeded_home)
    maps, archives = {}, set()
    for on_device in (False, True):
        variant = sweep.space.variant_from_params({**spec.baseline, "on_device_decode": on_device})
        model = builder.build(variant).model
        axes = runtime.info.resolve_axes(variant.as_dict())
        compiled = runtime.compile(model, axes, spec.runtime, sweep.cache)
        archives.add(compiled.key)
        session = runtime.open(model, compiled, axes, spec.runtime, DecodeSettings(), seeded_home)
        try:
            measured = measure_session(session, val_data(spec, seeded_home), int(variant["imgsz"]), spec.measure, None)
            maps[on_device] = measured.accuracy.map50_95
        finally:
            session.close()
    print(f"\nOAK parity: mAP50-95 host {maps[False]:.4f}, device {maps[True]:.4f}")
    assert len(archives) == 1 and abs(maps[False] - maps[True]) <= 0.01

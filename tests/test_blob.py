"""OAK compile stage: the exact request the blob conversion service receives (checked on a local fake of
the service, and against the request the `blobconverter` package itself sends), caching by content, and
the YOLO11 head rewritten for on-device decoding, checked numerically against Ultralytics' own output, and
what the service would compile, converted by OpenVINO's own Model Optimizer and run on the device's frames."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.fake_blobconverter import dummy_blob, fake_blobconverter
from yolobench.cache import Artifact, ArtifactCache, BuildFailed, BuildOutput
from yolobench.stages.blob import (
    OPTIMIZER_PARAMS,
    RVC2_OUTPUT_NAMES,
    BlobSettings,
    compile_blob,
    is_blob,
    request_blob,
)


def write_tiny_onnx(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.full((2, 3, 1, 1), 0.5, np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["images", "w"], ["output0"], name="conv")], "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 2, 8, 8])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


@pytest.fixture()
def onnx_artifact(tmp_path: Path):
    cache = ArtifactCache(tmp_path / "cache")

    def build(work_dir: Path) -> BuildOutput:
        write_tiny_onnx(work_dir / "model_fp16.onnx")
        return BuildOutput("model_fp16.onnx", {"precision": "fp16"})

    return cache, cache.get_or_build("fp16", {"test": 1}, None, {}, build)


def test_the_service_receives_model_shaves_fp16_optimizer_parameters_and_openvino_version(tmp_path: Path) -> None:
    model = write_tiny_onnx(tmp_path / "model_fp16.onnx")
    with fake_blobconverter() as service:
        blob = request_blob(model, BlobSettings(shaves=6, openvino_version="2022.1", url=service.url))
    assert blob == service.blob
    (request,) = service.requests
    assert request.path == "/compile"
    assert request.query == {"version": "2022.1", "no_cache": "False"}
    assert request.form == {"myriad_shaves": "6", "myriad_params_advanced": "-ip U8", "data_type": "FP16",
                            "download_ir": "False", "zoo_type": "intel", "name": "model_fp16"}
    assert request.files["model_fp16.onnx"] == ("model_fp16.onnx", model.read_bytes())
    config = request.config
    assert config["framework"] == "onnx" and config["task_type"] == "detection"
    assert config["model_optimizer_args"] == [
        "--mean_values=[0,0,0]", "--scale_values=[255,255,255]", "--reverse_input_channels",
        "--data_type=FP16", "--input_model=$dl_dir/FP16/model_fp16.onnx"]
    assert config["files"] == [{"name": "FP16/model_fp16.onnx",
                                "source": {"$type": "http", "url": "$REQUEST/model_fp16.onnx"}}]


def test_our_request_is_the_one_the_blobconverter_package_sends(tmp_path: Path, monkeypatch) -> None:
    blobconverter = pytest.importorskip("blobconverter")
    model = write_tiny_onnx(tmp_path / "model_fp16.onnx")
    # The package first asks a public S3 bucket for a prebuilt blob; here that host does not exist, so it
    # answers as S3 does for an unknown blob (FileNotFoundError) and the package goes on to the service.
    monkeypatch.setitem(vars(blobconverter), "__download_from_s3_bucket",
                        lambda key, path: (_ for _ in ()).throw(FileNotFoundError(key)))
    monkeypatch.setitem(vars(blobconverter)["__defaults"], "output_dir", tmp_path / "bc-cache")
    monkeypatch.setitem(vars(blobconverter)["__defaults"], "silent", True)
    with fake_blobconverter() as service:
        reference = Path(blobconverter.from_onnx(
            model=str(model), data_type="FP16", shaves=5, version=blobconverter.Versions.v2022_1,
            optimizer_params=list(OPTIMIZER_PARAMS), url=service.url, output_dir=tmp_path / "out", use_cache=True))
        request_blob(model, BlobSettings(shaves=5, openvino_version="2022.1", url=service.url))
    assert reference.read_bytes() == service.blob
    theirs, ours = service.requests
    assert ours.path == theirs.path and ours.query == theirs.query and ours.form == theirs.form
    assert ours.config == theirs.config
    assert ours.files["model_fp16.onnx"] == theirs.files["model_fp16.onnx"]
    assert set(ours.files) == set(theirs.files)


def test_blob_is_cached_by_content_and_records_openvino_version_and_shaves(onnx_artifact) -> None:
    cache, model = onnx_artifact
    with fake_blobconverter() as service:
        first = compile_blob(cache, model, BlobSettings(shaves=4, url=service.url))
        again = compile_blob(cache, model, BlobSettings(shaves=4, url=service.url + "/"))  # another URL, same blob
        other = compile_blob(cache, model, BlobSettings(shaves=8, url=service.url))
        older = compile_blob(cache, model, BlobSettings(shaves=4, openvino_version="2021.4", url=service.url))
    assert len(service.requests) == 3 and cache.builds["blob"] == 3
    assert first.key == again.key and len({first.key, other.key, older.key}) == 3
    assert first.path.suffix == ".blob" and is_blob(first.path.read_bytes())
    assert first.manifest["openvino_version"] == "2022.1" and first.manifest["shaves"] == 4
    assert older.manifest["openvino_version"] == "2021.4" and other.manifest["shaves"] == 8
    assert first.manifest["parent"] == model.key and first.manifest["source_onnx_opset"] == 13
    assert [r.form["myriad_shaves"] for r in service.requests] == ["4", "8", "4"]
    assert [r.query["version"] for r in service.requests] == ["2022.1", "2022.1", "2021.4"]


def test_a_refused_conversion_is_a_failed_build_with_the_service_s_message(onnx_artifact) -> None:
    cache, model = onnx_artifact
    with fake_blobconverter() as service:
        service.status = 400
        with pytest.raises(BuildFailed, match="answered 400: .*Model Optimizer failed"):
            compile_blob(cache, model, BlobSettings(shaves=6, url=service.url))
        service.status, service.blob = 200, b"<html>not a blob</html>"
        with pytest.raises(BuildFailed, match="not a Myriad X blob"):
            compile_blob(cache, model, BlobSettings(shaves=6, url=service.url))
    assert cache.lookup("blob", "anything") is None and cache.builds["blob"] == 0


def test_an_unreachable_service_is_named(onnx_artifact) -> None:
    import socket

    cache, model = onnx_artifact
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with pytest.raises(BuildFailed, match=f"{url} not reachable.*converter_url"):
        compile_blob(cache, model, BlobSettings(shaves=6, url=url))


def test_the_head_is_rewritten_on_the_fp32_export_only(tmp_path: Path) -> None:
    from yolobench.stages.blob import rvc2_detection_head

    fp16 = Artifact("b" * 20, "fp16", tmp_path / "model_fp16.onnx", {"precision": "fp16"})
    with pytest.raises(BuildFailed, match="fp32 export, not a fp16 model"):
        rvc2_detection_head(ArtifactCache(tmp_path / "cache"), fp16)


def test_blob_header_check() -> None:
    assert is_blob(dummy_blob()) and not is_blob(dummy_blob()[:100]) and not is_blob(b"\0" * 300)


# --- the head for on-device decoding, on a real YOLO11 export ----------------------------------------


def _decode_like_the_device(outputs: list[np.ndarray], imgsz: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-level (1, 4+1+nc, h, w) -> xywh boxes (A, 4) and class scores (A, nc), anchors in Ultralytics order."""
    boxes, scores = [], []
    for output in outputs:
        _, channels, height, width = output.shape
        stride = imgsz / height
        grid_y, grid_x = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
        left, top, right, bottom = output[0, :4]
        x1, y1 = (grid_x - left) * stride, (grid_y - top) * stride
        x2, y2 = (grid_x + right) * stride, (grid_y + bottom) * stride
        boxes.append(np.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]).reshape(4, -1).T)
        scores.append(output[0, 5:].reshape(channels - 5, -1).T)
        np.testing.assert_allclose(output[0, 4], output[0, 5:].max(axis=0), rtol=1e-6)
    return np.concatenate(boxes), np.concatenate(scores)


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["depthai", "onnxruntime"])  # the OAK's opset 12; the exporter's newest
def test_rewritten_head_decodes_to_the_same_boxes_and_scores(seeded_home: Path, runtime: str) -> None:
    import onnxruntime as ort

    from tests.conftest import OAK_TINY_SWEEP, TINY_SWEEP, variant_builder
    from yolobench.stages.blob import rvc2_detection_head

    _, sweep, builder = variant_builder(OAK_TINY_SWEEP if runtime == "depthai" else TINY_SWEEP, seeded_home)
    imgsz = 96
    model = builder.build(sweep.space.baseline).model  # baselines: fp16 (OAK) and fp32 (ORT), both at 96
    # The OAK's fp16 variant is the fp32 export: the blob compiler makes it FP16.
    assert model.manifest["precision"] == "fp32"
    # opset 12: Softmax before opset 13 and ReduceMax's axes attribute; >= 18: ReduceMax's axes input.
    assert model.manifest["opset"] == 12 if runtime == "depthai" else model.manifest["opset"] >= 18
    head = rvc2_detection_head(sweep.cache, model)
    assert rvc2_detection_head(sweep.cache, model).key == head.key and sweep.cache.builds["rvc2_head"] == 1
    num_classes = len(model.manifest["names"])

    tensor = np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32)
    original = ort.InferenceSession(str(model.path), providers=["CPUExecutionProvider"])
    rewritten = ort.InferenceSession(str(head.path), providers=["CPUExecutionProvider"])
    assert [o.name for o in rewritten.get_outputs()] == list(RVC2_OUTPUT_NAMES)
    assert [o.shape for o in rewritten.get_outputs()] == [[1, 5 + num_classes, imgsz // s, imgsz // s]
                                                          for s in (8, 16, 32)]
    assert all(o.type == "tensor(float)" for o in rewritten.get_outputs())
    reference = original.run(None, {"images": tensor})[0][0]  # (4+nc, anchors): xywh then class scores
    boxes, scores = _decode_like_the_device(rewritten.run(None, {"images": tensor}), imgsz)
    np.testing.assert_allclose(boxes, reference[:4].T, atol=1e-3 * imgsz)
    np.testing.assert_allclose(scores, reference[4:].T, atol=1e-3)
    assert head.manifest["num_classes"] == num_classes and head.manifest["levels"] == 3


OPENVINO_PYTHON = Path(sys.prefix) / "openvino-check" / "bin" / "python"


@pytest.mark.slow
def test_model_optimizer_takes_the_oak_export_and_the_device_frames_give_the_host_s_outputs(seeded_home: Path) -> None:
    """scripts/openvino_check.py on the tiny OAK export (opset 12): OpenVINO's Model Optimizer with the exact
    parameters of the blob request, run on BGR uint8 frames, matches ONNX Runtime on RGB floats, for host and
    on-device decoding, fp32 and FP16 weights. `make test` sets up its venv (.venv/openvino-check)."""
    from tests.conftest import OAK_TINY_SWEEP, variant_builder

    if not OPENVINO_PYTHON.exists():
        message = f"no OpenVINO venv at {OPENVINO_PYTHON.parent.parent}; `make test` creates it"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    _, sweep, builder = variant_builder(OAK_TINY_SWEEP, seeded_home)
    model = builder.build(sweep.space.baseline).model

    done = subprocess.run([str(OPENVINO_PYTHON), str(REPO / "scripts" / "openvino_check.py"), str(model.path),
                           "--images", "4"], capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    verdicts = [line for line in done.stdout.splitlines() if "compress_to_fp16=" in line]
    assert len(verdicts) == 4 and all(line.endswith("ok") for line in verdicts), done.stdout

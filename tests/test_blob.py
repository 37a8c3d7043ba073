"""The RVC2 pieces every OAK converter shares: the YOLO11 head rewritten for DepthAI's parser, checked
numerically against Ultralytics' own output through the runtime's host decoding of it, the blob header check,
and what a converter compiles, converted by OpenVINO's own Model Optimizer and run on the device's frames.
(The legacy blob service's request is tested in test_converters.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.fake_blobconverter import dummy_blob, dummy_superblob
from yolobench.cache import Artifact, ArtifactCache, BuildFailed
from yolobench.runtimes.depthai_runtime import levels_as_head
from yolobench.stages.blob import RVC2_OUTPUT_NAMES, is_blob
from yolobench.stages.nn_archive import is_superblob


def test_the_head_is_rewritten_on_the_fp32_export_only(tmp_path: Path) -> None:
    from yolobench.stages.blob import rvc2_detection_head

    fp16 = Artifact("b" * 20, "fp16", tmp_path / "model_fp16.onnx", {"precision": "fp16"})
    with pytest.raises(BuildFailed, match="fp32 export, not a fp16 model"):
        rvc2_detection_head(ArtifactCache(tmp_path / "cache"), fp16)


def test_blob_and_superblob_header_checks() -> None:
    assert is_blob(dummy_blob()) and not is_blob(dummy_blob()[:100]) and not is_blob(b"\0" * 300)
    assert is_superblob(dummy_superblob()) and not is_superblob(dummy_blob())
    assert not is_superblob(dummy_superblob()[:-1])  # sizes that do not add up


# --- the head for on-device decoding, on a real YOLO11 export ----------------------------------------


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
    reference = original.run(None, {"images": tensor})[0]  # (1, 4+nc, anchors): xywh then class scores
    levels = rewritten.run(None, {"images": tensor})
    for level in levels:  # the confidence channel is the best class score, as DepthAI's parser reads it
        np.testing.assert_allclose(level[0, 4], level[0, 5:].max(axis=0), rtol=1e-6)
    host = levels_as_head(levels, imgsz)  # what the runtime's host decoding makes of the archive's outputs
    np.testing.assert_allclose(host[0, :4], reference[0, :4], atol=1e-3 * imgsz)
    np.testing.assert_allclose(host[0, 4:], reference[0, 4:], atol=1e-3)
    assert head.manifest["num_classes"] == num_classes and head.manifest["levels"] == 3


OPENVINO_PYTHON = Path(sys.prefix) / "openvino-check" / "bin" / "python"


@pytest.mark.slow
def test_model_optimizer_takes_the_oak_export_and_the_device_frames_give_the_host_s_outputs(seeded_home: Path) -> None:
    """scripts/openvino_check.py on the tiny OAK export (opset 12): OpenVINO's Model Optimizer with the exact
    parameters of the blob request, run on BGR uint8 frames, matches ONNX Runtime on RGB floats, for host and
    on-device decoding, fp32 and FP16 weights, and the host's decoding of the head against the export's output. `make test` sets up its venv (.venv/openvino-check)."""
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
    assert len(verdicts) == 6 and all(line.endswith("ok") for line in verdicts), done.stdout

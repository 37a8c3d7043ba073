"""The GPU check script, run for real on this host: with no GPU it must still print its table, one clear line
per missing piece, and run the ORT path end to end when pointed at the CPU provider."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.tiny_onnx import INPUT_SHAPE, write_conv_model

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fp32, fp16 and int8 (Q/DQ) versions of the tiny model, laid out as make_gpu_check_models.py lays them."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
    from onnxruntime.transformers import float16

    folder = tmp_path_factory.mktemp("gpu-check-models")
    fp32 = write_conv_model(folder / "model_fp32.onnx")
    onnx.save(float16.convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True), str(folder / "model_fp16.onnx"))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.left = [{"images": np.random.default_rng(i).random(INPUT_SHAPE, np.float32)} for i in range(2)]

        def get_next(self) -> dict | None:
            return self.left.pop() if self.left else None

    quantize_static(str(fp32), str(folder / "model_int8.onnx"), Reader(), quant_format=QuantFormat.QDQ)
    (folder / "models.json").write_text(json.dumps({"model": "tiny conv", "imgsz": INPUT_SHAPE[-1], "files": {
        precision: {"file": f"model_{precision}.onnx", "manifest": {"precision": precision}}
        for precision in ("fp32", "fp16", "int8")}}))  # fmt: skip
    return folder


def test_gpu_check_runs_the_ort_path_and_says_what_is_missing(models_dir: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gpu_check.py"), str(models_dir), "--ort-provider", "cpu",
         "--runs", "2", "--warmup", "1", "--json", str(tmp_path / "rows.json")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {row["variant"]: row for row in json.loads((tmp_path / "rows.json").read_text())}
    ort_rows = [row for name, row in rows.items() if name.startswith("ORT CPU")]
    assert len(ort_rows) == 9  # fp32/fp16/int8 x three ORT levels
    for row in ort_rows:
        assert row["compute_ms"] > 0 and row["e2e_ms"] >= row["compute_ms"] and "rel.err vs CPU" in row["notes"]
    if "TensorRT" in rows:  # absent here: one row that says why
        assert rows["TensorRT"]["notes"].startswith("SKIPPED:")
    assert "== summary" in result.stdout and "p50 GPU compute ms" in result.stdout


def test_gpu_check_sh_installs_from_a_wheel_folder_and_degrades(models_dir: Path, tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "not_a_package-0.0.0-py3-none-any.whl").write_bytes(b"not a zip")
    environment = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_SITE": str(tmp_path / "site")}
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_check.sh"), str(models_dir), str(wheels), "--", "--skip-ort"],
        capture_output=True, text=True, timeout=300, env=environment,
    )  # fmt: skip
    output = result.stdout
    assert result.returncode == 0, output
    assert "installing from" in output and "did not install" in output  # a broken wheel is a warning, not the end
    assert "== summary" in output and "cuda-python buffers" in output


def test_gpu_check_sh_needs_a_models_dir() -> None:
    result = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh")], capture_output=True, text=True)
    assert result.returncode == 2 and "usage:" in result.stdout


@pytest.mark.slow
def test_make_gpu_check_models_writes_three_precisions_small(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import make_gpu_check_models
    finally:
        sys.path.remove(str(REPO / "scripts"))
    assert make_gpu_check_models.main([str(tmp_path / "out"), "--imgsz", "64", "--home", str(tmp_path / "home")]) == 0
    description = json.loads((tmp_path / "out" / "models.json").read_text())
    assert description["imgsz"] == 64 and set(description["files"]) == {"fp32", "fp16", "int8"}
    int8 = description["files"]["int8"]["manifest"]
    assert int8["precision"] == "int8" and int8["op_counts"]["QuantizeLinear"] > 0
    from yolobench.stages.tensorrt import tensorrt_qdq_problems

    assert tensorrt_qdq_problems(tmp_path / "out" / "model_int8.onnx") == []  # TensorRT takes it
    total = sum(entry["bytes"] for entry in description["files"].values())
    assert total < 40 * 2**20

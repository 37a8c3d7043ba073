"""Checks what an OAK archive is compiled from, with no OAK and no converter: OpenVINO's Model Optimizer converts
a variant's ONNX export and its rewritten head (what every converter compiles) with the preprocessing every
converter is asked for (scale 255, BGR frames reversed to RGB), and OpenVINO's CPU plugin runs the result on the
BGR uint8 planar frames the device gets. Its outputs must match ONNX Runtime on the host's RGB float tensor; and
the runtime's host decoding of the head's outputs (what `on_device_decode: false` measures) must give the
export's own decoded output.

The service runs OpenVINO 2022.1, which has no wheel for this Python; openvino-dev 2024.6 is the last
release with the `mo` tool (its FP16 switch is --compress_to_fp16, where 2022.1 takes --data_type=FP16).
It pins numpy below 2.2, so it lives in its own venv:

    python3 -m venv /tmp/ov && /tmp/ov/bin/pip install "openvino-dev==2024.6.0" onnx onnxruntime
    PYTHONPATH=. /tmp/ov/bin/python scripts/openvino_check.py PATH/TO/model.onnx [--images 8]

PATH/TO/model.onnx is an fp32 export from a depthai sweep's cache (cache/export/<key>/*.onnx, opset 12).
Exits 1 when a conversion fails or an output differs by more than the tolerance.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

from yolobench.runtimes.depthai_runtime import levels_as_head, tensor_to_planar_bgr
from yolobench.stages.blob import OPTIMIZER_PARAMS, rewrite_rvc2_head  # the converters' preprocessing, in MO's words

# Largest |OpenVINO - ONNX Runtime| relative to the largest |ONNX Runtime| output, per output tensor.
TOLERANCE = {False: 1e-4, True: 5e-3}  # fp32 IR; weights compressed to FP16


def model_optimizer(onnx_path: Path, output_dir: Path, fp16: bool) -> Path:
    mo = Path(sys.executable).with_name("mo")
    command = [str(mo), "--input_model", str(onnx_path), "--output_dir", str(output_dir), *OPTIMIZER_PARAMS,
               f"--compress_to_fp16={fp16}"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"mo failed on {onnx_path.name}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return output_dir / f"{onnx_path.stem}.xml"


def compare_decoded(export: Path, head: Path, frames_rgb: np.ndarray, fp16: bool, work: Path) -> list[float]:
    """Worst relative difference of boxes and of class scores: the host's decoding of OpenVINO's head outputs
    (on BGR uint8 frames) vs the export's own output on ONNX Runtime (RGB floats)."""
    import onnxruntime as ort
    import openvino as ov

    xml = model_optimizer(head, work / f"{head.stem}_decoded_{'fp16' if fp16 else 'fp32'}", fp16)
    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    session = ort.InferenceSession(str(export), providers=["CPUExecutionProvider"])
    input_name, size = session.get_inputs()[0].name, frames_rgb.shape[-1]
    worst = [0.0, 0.0]
    for frame in frames_rgb:
        expected = session.run(None, {input_name: frame[None]})[0]
        results = compiled(tensor_to_planar_bgr(frame[None])[None].astype(np.float32))
        decoded = levels_as_head([results[output] for output in compiled.outputs], size)
        for index, rows in enumerate((slice(0, 4), slice(4, None))):
            difference = np.abs(decoded[0, rows] - expected[0, rows]).max() / np.abs(expected[0, rows]).max()
            worst[index] = max(worst[index], float(difference))
    return worst


def compare(onnx_path: Path, frames_rgb: np.ndarray, fp16: bool, work: Path) -> list[float]:
    """Worst relative difference per output, OpenVINO on BGR uint8 frames vs ONNX Runtime on RGB floats."""
    import onnxruntime as ort
    import openvino as ov

    xml = model_optimizer(onnx_path, work / f"{onnx_path.stem}_{'fp16' if fp16 else 'fp32'}", fp16)
    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    worst = [0.0] * len(session.get_outputs())
    for frame in frames_rgb:
        reference = session.run(None, {input_name: frame[None]})
        device_frame = tensor_to_planar_bgr(frame[None])[None].astype(np.float32)  # what the OAK receives
        results = compiled(device_frame)
        for index, expected in enumerate(reference):
            got = results[compiled.outputs[index]]
            worst[index] = max(worst[index], float(np.abs(got - expected).max() / np.abs(expected).max()))
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("onnx", type=Path, help="fp32 ONNX export of a depthai sweep")
    parser.add_argument("--images", type=int, default=8, help="random frames to compare on")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        head = work / f"{args.onnx.stem}_rvc2head.onnx"
        rewrite_rvc2_head(args.onnx, head)
        graph_input = onnx.load(str(args.onnx), load_external_data=False).graph.input[0]
        size = int(graph_input.type.tensor_type.shape.dim[2].dim_value)
        pixels = np.random.default_rng(0).integers(0, 256, (args.images, 3, size, size), dtype=np.uint8)
        frames_rgb = pixels.astype(np.float32) / 255.0  # the host's tensor: RGB in [0, 1]
        failed = False
        print(f"Model Optimizer parameters: {' '.join(OPTIMIZER_PARAMS)}; {args.images} frames of {size}x{size}")
        for model, mode in ((args.onnx, "host decoding"), (head, "on-device decoding head")):
            for fp16 in (False, True):
                worst = compare(model, frames_rgb, fp16, work)
                ok = max(worst) <= TOLERANCE[fp16]
                failed |= not ok
                print(f"{mode:24s} compress_to_fp16={fp16!s:5s} worst relative difference per output: "
                      f"{', '.join(f'{w:.1e}' for w in worst)}  {'ok' if ok else 'TOO LARGE'}")
        for fp16 in (False, True):
            worst = compare_decoded(args.onnx, head, frames_rgb, fp16, work)
            ok = max(worst) <= TOLERANCE[fp16]
            failed |= not ok
            print(f"{'head decoded on the host':24s} compress_to_fp16={fp16!s:5s} worst relative difference of boxes, "
                  f"scores: {', '.join(f'{w:.1e}' for w in worst)}  {'ok' if ok else 'TOO LARGE'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

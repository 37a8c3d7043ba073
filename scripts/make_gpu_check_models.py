"""Make the folder scripts/gpu_check.sh runs on: one small YOLO11 model at one input size as fp32, fp16 and
int8 (Q/DQ) ONNX files, built here (CPU, offline) with yolobench's own cached stages, so the GPU machine
needs neither torch nor Ultralytics.

    .venv/bin/python scripts/make_gpu_check_models.py gpu-check-models [--imgsz 320] [--home mlruns]

The model is yolo11n trained briefly on yolobench's synthetic data set (its weights only need to be real,
not good: the check times the runtimes and compares their outputs). Training and export are cached under
--home, so a second call is quick. The folder also holds models.json: what each file is, its manifest
facts and its sha256.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SIZE_LIMIT_MB = 40  # the folder travels to an offline GPU machine with the repo
MANIFEST_KEYS = ("precision", "imgsz", "input_name", "input_shape", "output_name", "output_shape", "num_classes",
                 "names", "params", "gflops", "op_counts", "opset", "recipe")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--imgsz", type=int, default=320, help="ONNX input size (multiple of 32)")
    parser.add_argument("--home", type=Path, default=REPO / "mlruns", help="yolobench home whose cache is used")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-imgsz", type=int, default=64)
    parser.add_argument("--calibration-images", type=int, default=8)
    args = parser.parse_args(argv)

    from yolobench.stages.ultralytics_env import prepare_ultralytics

    prepare_ultralytics(args.home / "ultralytics")
    from yolobench.cache import ArtifactCache
    from yolobench.data.dataset import load_dataset
    from yolobench.data.synthetic import make_synthetic_dataset
    from yolobench.stages.export import export_onnx
    from yolobench.stages.quantize import Int8Recipe, convert_fp16, quantize_int8
    from yolobench.stages.train import train_model

    cache = ArtifactCache(args.home / "cache")
    data_yaml = make_synthetic_dataset(args.home / "data" / "gpu-check-synthetic", train_images=16, val_images=8,
                                       image_size=args.imgsz, seed=0)  # fmt: skip
    dataset = load_dataset(data_yaml)
    print(f"training yolo11n for {args.epochs} epoch(s) on {data_yaml} (cached after the first time)", flush=True)
    weights = train_model(cache, "yolo11n.yaml", data_yaml, epochs=args.epochs, imgsz=args.train_imgsz, batch=8,
                          seed=0)  # fmt: skip
    fp32 = export_onnx(cache, weights, args.imgsz)
    fp16 = convert_fp16(cache, fp32)
    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    calibration = dataset.train_images[: args.calibration_images]
    # TensorRT takes signed, symmetric int8 only (and it is what ORT's GPU EPs prefer too): s8/s8 symmetric.
    if "symmetric" in Int8Recipe.model_fields:
        recipe = Int8Recipe(activation_type="s8", weight_type="s8", symmetric=True, calibration_images=len(calibration))
        int8_path, int8_key, int8_manifest = _from_artifact(quantize_int8(cache, fp32, calibration, recipe))
    else:  # the int8 stage has no symmetric option yet: the same static QDQ, made here with it
        int8_path = _symmetric_int8(fp32.path, out_dir / "model_int8.onnx", calibration, args.imgsz)
        int8_key = hashlib.sha256(int8_path.read_bytes()).hexdigest()[:20]
        int8_manifest = {**_from_artifact(fp32)[2], "precision": "int8", "op_counts": _op_counts(int8_path),
                         "recipe": {"activation_type": "s8", "weight_type": "s8", "symmetric": True, "per_channel": True,
                                    "op_types": ["Conv"], "calibration_images": len(calibration),
                                    "made_by": "scripts/make_gpu_check_models.py"}}  # fmt: skip

    files = {}
    sources = (("fp32", *_from_artifact(fp32)), ("fp16", *_from_artifact(fp16)), ("int8", int8_path, int8_key, int8_manifest))
    for precision, path, key, manifest in sources:
        target = out_dir / f"model_{precision}.onnx"
        if path.resolve() != target.resolve():
            shutil.copyfile(path, target)
        files[precision] = {
            "file": target.name,
            "sha256": hashlib.sha256(target.read_bytes()).hexdigest(),
            "bytes": target.stat().st_size,
            "cache_key": key,
            "manifest": manifest,
        }
    description = {
        "model": f"yolo11n trained {args.epochs} epoch(s) at {args.train_imgsz}px on yolobench's synthetic set",
        "imgsz": args.imgsz,
        "files": files,
    }
    (out_dir / "models.json").write_text(json.dumps(description, indent=2, sort_keys=True))
    total_mb = sum(f["bytes"] for f in files.values()) / 2**20
    for precision, entry in files.items():
        print(f"  {entry['file']:<18} {entry['bytes'] / 2**20:6.2f} MB  {precision}")
    print(f"wrote {out_dir} ({total_mb:.1f} MB); run on a GPU machine: bash scripts/gpu_check.sh {out_dir} [WHEELS_DIR]")
    if total_mb > SIZE_LIMIT_MB:
        print(f"WARNING: more than {SIZE_LIMIT_MB} MB; use a smaller --imgsz", file=sys.stderr)
        return 1
    return 0


def _from_artifact(artifact: Any) -> tuple[Path, str, dict[str, Any]]:
    return artifact.path, artifact.key, {key: artifact.manifest[key] for key in MANIFEST_KEYS if key in artifact.manifest}


def _op_counts(path: Path) -> dict[str, int]:
    import onnx

    from yolobench.stages.export import op_counts

    return op_counts(onnx.load(str(path)))


def _symmetric_int8(source: Path, target: Path, images: list[Path], imgsz: int) -> Path:
    """Static s8/s8 symmetric QDQ of the Convs, calibrated on letterboxed images, the detection head kept float."""
    import cv2
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from yolobench.data.letterbox import to_input_tensor

    prepared = target.with_suffix(".prepared.onnx")
    quant_pre_process(str(source), str(prepared), skip_optimization=True)
    input_name = onnx.load(str(prepared)).graph.input[0].name
    try:
        from yolobench.stages.quantize import detection_head_nodes

        head = detection_head_nodes(onnx.load(str(prepared)))
    except ImportError:
        head = []

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.left = list(images)

        def get_next(self) -> dict[str, Any] | None:
            if not self.left:
                return None
            return {input_name: to_input_tensor(cv2.imread(str(self.left.pop())), imgsz)[0]}

    quantize_static(str(prepared), str(target), Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"],
                    per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    nodes_to_exclude=head, extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})  # fmt: skip
    prepared.unlink()
    return target


if __name__ == "__main__":
    sys.exit(main())

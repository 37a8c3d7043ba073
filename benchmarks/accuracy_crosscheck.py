"""Cross-check yolobench's mAP against Ultralytics' own validator on the same exported ONNX and data set:
the two must agree within 0.02 mAP50-95, or one of them is not measuring what it claims.

    .venv/bin/python benchmarks/accuracy_crosscheck.py [--home mlruns] [--imgsz 128]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import bench_model  # noqa: E402
from yolobench.cache import Artifact, ArtifactCache  # noqa: E402

TOLERANCE = 0.02  # |mAP50-95 difference| allowed
CONF, IOU, MAX_DET = 0.001, 0.7, 300  # the validation settings both sides use


@dataclass(frozen=True)
class CrossCheck:
    yolobench_map50_95: float
    yolobench_map50: float
    ultralytics_map50_95: float
    ultralytics_map50: float
    images: int

    @property
    def delta(self) -> float:
        return self.yolobench_map50_95 - self.ultralytics_map50_95


def yolobench_accuracy(cache: ArtifactCache, onnx: Artifact, data_yaml: Path, imgsz: int, multi_label: bool):
    """yolobench's accuracy path, as a sweep runs it: the ONNX Runtime runtime (CPU, level all), then evaluate."""
    from yolobench.data.dataset import load_dataset
    from yolobench.measure.accuracy import evaluate
    from yolobench.runtimes import DecodeSettings, get_runtime
    from yolobench.runtimes.options import OnnxRuntimeOptions

    dataset = load_dataset(data_yaml)
    runtime = get_runtime("onnxruntime")
    axes = {"scale": "n", "precision": "fp32", "imgsz": imgsz, "ort_level": "all"}
    options = OnnxRuntimeOptions()
    with tempfile.TemporaryDirectory() as work_dir:
        compiled = runtime.compile(onnx, axes, options, cache)
        session = runtime.open(onnx, compiled, axes, options, DecodeSettings(CONF, IOU, MAX_DET), Path(work_dir))
        try:
            return evaluate(session.infer, dataset.val_images, dataset.names, imgsz,
                            conf=CONF, iou=IOU, max_det=MAX_DET, multi_label=multi_label)
        finally:
            session.close()


def ultralytics_accuracy(onnx_path: Path, data_yaml: Path, imgsz: int) -> tuple[float, float]:
    """(mAP50-95, mAP50) from Ultralytics' validator on the same ONNX (prepare_ultralytics must have run)."""
    from ultralytics import YOLO

    with tempfile.TemporaryDirectory() as project:
        metrics = YOLO(str(onnx_path), task="detect").val(
            data=str(data_yaml), imgsz=imgsz, batch=1, conf=CONF, iou=IOU, max_det=MAX_DET, plots=False,
            device="cpu", project=project, name="val", verbose=False,
        )
    return float(metrics.box.map), float(metrics.box.map50)


def cross_check(cache: ArtifactCache, onnx: Artifact, data_yaml: Path, imgsz: int,
                multi_label: bool = True) -> CrossCheck:
    ours = yolobench_accuracy(cache, onnx, data_yaml, imgsz, multi_label)
    theirs_map50_95, theirs_map50 = ultralytics_accuracy(onnx.path, data_yaml, imgsz)
    return CrossCheck(ours.map50_95, ours.map50, theirs_map50_95, theirs_map50, ours.num_images)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=Path("mlruns"), help="store whose cache holds the model")
    parser.add_argument("--imgsz", type=int, default=None, help="export size (default: the model's training size)")
    parser.add_argument("--no-quickstart", action="store_true", help="use the benchmark model even if the "
                        "quickstart's is cached")
    args = parser.parse_args(argv)

    model = bench_model(args.home, use_quickstart=not args.no_quickstart)
    imgsz = args.imgsz or int(model.weights.manifest["imgsz"])
    onnx = model.onnx(imgsz)
    check = cross_check(model.cache, onnx, model.data_yaml, imgsz)
    single = yolobench_accuracy(model.cache, onnx, model.data_yaml, imgsz, multi_label=False)
    print(f"model: {model.source} ({model.weights.manifest.get('model_cfg')}, "
          f"{model.weights.manifest.get('epochs')} epochs), ONNX at imgsz {imgsz}, {check.images} val images")
    print(f"yolobench   mAP50-95 {check.yolobench_map50_95:.4f}  mAP50 {check.yolobench_map50:.4f}  "
          f"(COCO evaluator, multi-label NMS as Ultralytics' validator)")
    print(f"yolobench   mAP50-95 {single.map50_95:.4f}  mAP50 {single.map50:.4f}  (one label per box)")
    print(f"ultralytics mAP50-95 {check.ultralytics_map50_95:.4f}  mAP50 {check.ultralytics_map50:.4f}  "
          f"(YOLO(onnx).val, batch 1, conf {CONF}, iou {IOU})")
    verdict = "OK" if abs(check.delta) <= TOLERANCE else "FAIL"
    print(f"delta mAP50-95 {check.delta:+.4f}  (|delta| <= {TOLERANCE}: {verdict})")
    return 0 if verdict == "OK" else 1


if __name__ == "__main__":
    sys.exit(main())

"""COCO-standard accuracy of a variant: mAP50 and mAP50-95 from faster-coco-eval, precision and
recall the way Ultralytics reports them, and the COCO json so any result can be re-scored."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from faster_coco_eval import COCO, COCOeval_faster

from yolobench.data.dataset import read_labels
from yolobench.data.letterbox import to_input_tensor
from yolobench.errors import DataInvalid
from yolobench.measure.postprocess import Detections, decode_yolo11

logger = logging.getLogger(__name__)

CATEGORY_ID_OFFSET = 1  # COCO category id = class id + 1, as Ultralytics writes json for non-COCO sets
PR_IOU_THRESHOLD = 0.5
_EPS = 1e-16


@dataclass(frozen=True)
class AccuracyResult:
    """Accuracy over a split, and the COCO json it was computed from."""

    map50: float
    map50_95: float
    precision: float
    recall: float
    num_images: int
    num_detections: int
    _ground_truth: dict = field(default_factory=dict, repr=False, compare=False)
    _predictions: tuple[dict, ...] = field(default=(), repr=False, compare=False)

    def metrics(self) -> dict[str, float]:
        """The four accuracy metrics, named as they are logged."""
        return {
            "map50": float(self.map50),
            "map50_95": float(self.map50_95),
            "precision": float(self.precision),
            "recall": float(self.recall),
        }

    def coco_ground_truth(self) -> dict:
        """COCO ground-truth json (images, annotations, categories)."""
        return copy.deepcopy(self._ground_truth)

    def coco_predictions(self) -> list[dict]:
        """COCO results json: image_id, category_id, bbox [x, y, w, h], score."""
        return [dict(p, bbox=list(p["bbox"])) for p in self._predictions]


GROUND_TRUTH_FILE = "ground_truth.json"
PREDICTIONS_FILE = "predictions.json"


def write_coco_json(result: Any, folder: Path) -> tuple[Path, ...]:
    """Write the ground truth and the detections that were scored as COCO json (compact; floats as
    Python writes them, so a re-score reads back exactly what was scored). Returns both paths; none for
    an accuracy taken from another run (measure/reuse.py), whose own files are in that run."""
    if not isinstance(result, AccuracyResult):
        return ()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ground_truth, predictions = folder / GROUND_TRUTH_FILE, folder / PREDICTIONS_FILE
    ground_truth.write_text(json.dumps(result.coco_ground_truth(), separators=(",", ":")))
    predictions.write_text(json.dumps(result.coco_predictions(), separators=(",", ":")))
    return ground_truth, predictions


def box_iou(a_xyxy: np.ndarray, b_xyxy: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of two sets of xyxy boxes."""
    a = np.asarray(a_xyxy, np.float64)[:, None, :]
    b = np.asarray(b_xyxy, np.float64)[None, :, :]
    inter_wh = (np.minimum(a[..., 2:], b[..., 2:]) - np.maximum(a[..., :2], b[..., :2])).clip(0)
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / (area_a + area_b - inter + 1e-7)


def match_predictions(
    pred_boxes: np.ndarray,
    pred_classes: np.ndarray,
    gt_boxes: np.ndarray,
    gt_classes: np.ndarray,
    iou_threshold: float = PR_IOU_THRESHOLD,
) -> np.ndarray:
    """True-positive flag per prediction (predictions ordered best score first), matched as
    Ultralytics (8.4) and COCO do: in score order, each prediction claims the same-class object it
    overlaps most among those not yet claimed, if that IoU reaches the threshold."""
    tp = np.zeros(len(pred_boxes), bool)
    if len(pred_boxes) == 0 or len(gt_boxes) == 0:
        return tp
    iou = box_iou(gt_boxes, pred_boxes) * (np.asarray(gt_classes)[:, None] == np.asarray(pred_classes)[None, :])
    claimed = np.zeros(len(gt_boxes), bool)
    for j in np.flatnonzero((iou >= iou_threshold).any(axis=0)):
        available = np.where(claimed, 0.0, iou[:, j])
        best = int(available.argmax())
        if available[best] >= iou_threshold:
            tp[j] = claimed[best] = True
    return tp


def _box_smooth(values: np.ndarray, fraction: float) -> np.ndarray:
    """Moving average over a window of `fraction` of the curve on each side, edges held."""
    width = round(len(values) * fraction * 2) // 2 + 1
    pad = width // 2
    padded = np.concatenate([np.full(pad, values[0]), values, np.full(pad, values[-1])])
    return np.convolve(padded, np.ones(width) / width, mode="valid")


def precision_recall_at_best_f1(
    tp: np.ndarray, conf: np.ndarray, pred_classes: np.ndarray, target_classes: np.ndarray
) -> tuple[float, float]:
    """Mean-over-classes precision and recall at the confidence that maximises mean F1.

    As Ultralytics: per-class P and R curves on a 1000-point confidence grid, classes being those
    with ground truth; the mean F1 curve is smoothed before its peak is taken."""
    classes, counts = np.unique(np.asarray(target_classes, np.int64), return_counts=True)
    if classes.size == 0:
        return 0.0, 0.0
    order = np.argsort(-np.asarray(conf, np.float64), kind="stable")
    tp = np.asarray(tp, bool)[order]
    conf = np.asarray(conf, np.float64)[order]
    pred_classes = np.asarray(pred_classes)[order]
    grid = np.linspace(0, 1, 1000)
    precision = np.zeros((classes.size, grid.size))
    recall = np.zeros((classes.size, grid.size))
    for row, (class_id, num_labels) in enumerate(zip(classes, counts)):
        selected = pred_classes == class_id
        if not selected.any():
            continue
        true_pos = np.cumsum(tp[selected])
        false_pos = np.cumsum(~tp[selected])
        recall[row] = np.interp(-grid, -conf[selected], true_pos / (num_labels + _EPS), left=0)
        precision[row] = np.interp(-grid, -conf[selected], true_pos / (true_pos + false_pos), left=1)
    f1 = 2 * precision * recall / (precision + recall + _EPS)
    best = int(_box_smooth(f1.mean(axis=0), 0.1).argmax())
    return float(precision[:, best].mean()), float(recall[:, best].mean())


def coco_map(ground_truth: dict, predictions: Sequence[dict]) -> tuple[float, float]:
    """(mAP50, mAP50-95) of COCO json with faster-coco-eval, bbox; 0.0 when nothing to score."""
    if not ground_truth.get("annotations") or not predictions:
        return 0.0, 0.0
    gt = COCO(copy.deepcopy(ground_truth), print_function=logger.debug)
    dt = gt.loadRes([dict(p, bbox=list(p["bbox"])) for p in predictions])
    evaluator = COCOeval_faster(gt, dt, iouType="bbox", print_function=logger.debug)
    evaluator.run()
    map50_95, map50 = float(evaluator.stats[0]), float(evaluator.stats[1])
    return max(map50, 0.0), max(map50_95, 0.0)  # -1 means "no ground truth": score 0


class CocoAccumulator:
    """Collects ground truth and detections image by image, then scores them."""

    def __init__(self, names: dict[int, str]) -> None:
        self.names = {int(k): str(v) for k, v in names.items()}
        self._images: list[dict] = []
        self._annotations: list[dict] = []
        self._predictions: list[dict] = []
        self._image_ids: set[int] = set()
        self._tp: list[np.ndarray] = []
        self._conf: list[np.ndarray] = []
        self._pred_classes: list[np.ndarray] = []
        self._target_classes: list[np.ndarray] = []

    def add(
        self,
        image_id: int,
        original_shape: tuple[int, int],
        labels: np.ndarray,
        detections_original_xyxy: Detections,
        file_name: str | None = None,
    ) -> None:
        """Add one image: labels rows (class, cx, cy, w, h) normalised, detections in original pixels."""
        image_id = int(image_id)
        if image_id in self._image_ids:
            raise ValueError(f"image id {image_id} added twice")
        self._image_ids.add(image_id)
        height, width = int(original_shape[0]), int(original_shape[1])
        image = {"id": image_id, "width": width, "height": height}
        if file_name is not None:
            image["file_name"] = file_name
        self._images.append(image)

        labels = np.asarray(labels, np.float64).reshape(-1, 5)
        gt_classes = labels[:, 0].astype(np.int64)
        unknown = sorted(set(gt_classes.tolist()) - set(self.names))
        if unknown:
            raise DataInvalid(f"{file_name or f'image {image_id}'}: label classes {unknown} are not in the data "
                              f"set's names (ids 0-{len(self.names) - 1})")
        centre, size = labels[:, 1:3] * (width, height), labels[:, 3:5] * (width, height)
        gt_boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
        for class_id, (x1, y1, x2, y2) in zip(gt_classes.tolist(), gt_boxes.tolist()):
            self._annotations.append(
                {
                    "id": len(self._annotations) + 1,
                    "image_id": image_id,
                    "category_id": class_id + CATEGORY_ID_OFFSET,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )

        order = np.argsort(-np.asarray(detections_original_xyxy.scores, np.float64), kind="stable")
        boxes = np.asarray(detections_original_xyxy.boxes, np.float64).reshape(-1, 4)[order]
        scores = np.asarray(detections_original_xyxy.scores, np.float64)[order]
        classes = np.asarray(detections_original_xyxy.class_ids, np.int64)[order]
        for class_id, (x1, y1, x2, y2), score in zip(classes.tolist(), boxes.tolist(), scores.tolist()):
            self._predictions.append(
                {
                    "image_id": image_id,
                    "category_id": class_id + CATEGORY_ID_OFFSET,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": score,
                }
            )
        self._tp.append(match_predictions(boxes, classes, gt_boxes, gt_classes))
        self._conf.append(scores)
        self._pred_classes.append(classes)
        self._target_classes.append(gt_classes)

    def coco_ground_truth(self) -> dict:
        """COCO ground-truth json of what was added so far."""
        return {
            "info": {"description": "yolobench ground truth"},
            "images": copy.deepcopy(self._images),
            "annotations": copy.deepcopy(self._annotations),
            "categories": [
                {"id": class_id + CATEGORY_ID_OFFSET, "name": name} for class_id, name in sorted(self.names.items())
            ],
        }

    def result(self) -> AccuracyResult:
        """Score everything added so far."""
        ground_truth = self.coco_ground_truth()
        predictions = tuple(copy.deepcopy(self._predictions))
        map50, map50_95 = coco_map(ground_truth, predictions)
        if self._tp:
            precision, recall = precision_recall_at_best_f1(
                np.concatenate(self._tp),
                np.concatenate(self._conf),
                np.concatenate(self._pred_classes),
                np.concatenate(self._target_classes),
            )
        else:
            precision, recall = 0.0, 0.0
        return AccuracyResult(
            map50=map50,
            map50_95=map50_95,
            precision=precision,
            recall=recall,
            num_images=len(self._images),
            num_detections=len(predictions),
            _ground_truth=ground_truth,
            _predictions=predictions,
        )


def evaluate(
    infer: Callable[[np.ndarray], np.ndarray],
    image_paths: Sequence[Path],
    names: dict[int, str],
    imgsz: int,
    conf: float = 0.001,
    iou: float = 0.7,
    max_det: int = 300,
    multi_label: bool = False,
) -> AccuracyResult:
    """Run `infer` (one (1, 3, imgsz, imgsz) tensor -> raw YOLO11 output) over the images and
    score it against their Ultralytics labels. Image ids are 1, 2, ... in the given order."""
    accumulator = CocoAccumulator(names)
    for image_id, path in enumerate(image_paths, start=1):
        image = read_image(path)
        tensor, transform = to_input_tensor(image, imgsz)
        detections = decode_yolo11(infer(tensor), conf, iou, max_det, multi_label=multi_label)
        original_shape = image.shape[:2]
        detections = detections.with_boxes(transform.boxes_to_original(detections.boxes, original_shape))
        accumulator.add(image_id, original_shape, read_labels(Path(path)), detections, file_name=Path(path).name)
    return accumulator.result()


def read_image(path: Path) -> np.ndarray:
    """An image as BGR, whatever it is stored as (grayscale, alpha, 16 bit); one OpenCV cannot decode stops the
    sweep naming it (data/validate.py finds these before a sweep starts; this is for a file changed since)."""
    if not Path(path).is_file():
        raise DataInvalid(f"{path}: image of the val split does not exist")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DataInvalid(f"{path}: OpenCV cannot decode this file as an image (corrupt, or not an image)")
    return image

"""COCO accuracy: known answers, agreement with pycocotools, empty cases, and the letterbox
geometry that maps detections back to the original image."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from yolobench.data.dataset import load_dataset, read_labels
from yolobench.data.letterbox import letterbox, to_input_tensor
from yolobench.data.synthetic import make_synthetic_dataset
from yolobench.errors import DataInvalid
from yolobench.measure.accuracy import (
    AccuracyResult,
    CocoAccumulator,
    coco_map,
    evaluate,
    match_predictions,
    precision_recall_at_best_f1,
)
from yolobench.measure.postprocess import Detections

NAMES = {0: "circle", 1: "square", 2: "triangle"}


def labels_to_xyxy(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    height, width = shape
    centre, size = labels[:, 1:3] * (width, height), labels[:, 3:5] * (width, height)
    return np.concatenate([centre - size / 2, centre + size / 2], axis=1)


def random_scene(rng: np.random.Generator, count: int, shape: tuple[int, int] = (480, 640)) -> np.ndarray:
    """Label rows (class, cx, cy, w, h), normalised, boxes inside the image."""
    size = rng.uniform(0.05, 0.4, (count, 2))
    centre = size / 2 + rng.uniform(0, 1, (count, 2)) * (1 - size)
    classes = rng.integers(0, len(NAMES), (count, 1))
    return np.concatenate([classes, centre, size], axis=1).astype(np.float32)


def detections(boxes: np.ndarray, scores: np.ndarray | list[float], classes: np.ndarray | list[int]) -> Detections:
    return Detections(
        np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32), np.asarray(classes, np.int64)
    )


def perfect(labels: np.ndarray, shape: tuple[int, int]) -> Detections:
    return detections(labels_to_xyxy(labels, shape), np.full(len(labels), 0.9), labels[:, 0].astype(int))


def scenes(seed: int = 0, images: int = 8) -> list[tuple[tuple[int, int], np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [((480, 640), random_scene(rng, int(rng.integers(1, 6)))) for _ in range(images)]


def test_perfect_predictions_score_one() -> None:
    accumulator = CocoAccumulator(NAMES)
    for image_id, (shape, labels) in enumerate(scenes(), start=1):
        accumulator.add(image_id, shape, labels, perfect(labels, shape))
    result = accumulator.result()
    assert result.map50 == pytest.approx(1.0)
    assert result.map50_95 == pytest.approx(1.0)
    assert result.precision == pytest.approx(1.0)
    assert result.recall == pytest.approx(1.0)
    assert result.num_images == 8
    assert result.num_detections == sum(len(labels) for _, labels in scenes())


def test_shifted_boxes_lose_map50_95_but_not_map50() -> None:
    accumulator = CocoAccumulator(NAMES)
    for image_id, (shape, labels) in enumerate(scenes(), start=1):
        boxes = labels_to_xyxy(labels, shape)
        shift = 0.1 * (boxes[:, 2] - boxes[:, 0])  # IoU = 0.9 / 1.1, about 0.82
        boxes[:, [0, 2]] += shift[:, None]
        accumulator.add(image_id, shape, labels, detections(boxes, np.full(len(labels), 0.9), labels[:, 0].astype(int)))
    result = accumulator.result()
    assert result.map50 == pytest.approx(1.0)
    assert 0.3 < result.map50_95 < 0.9


def test_missing_predictions_lower_map50_and_recall() -> None:
    accumulator = CocoAccumulator(NAMES)
    for image_id, (shape, labels) in enumerate(scenes(images=12), start=1):
        kept = labels[: len(labels) // 2]
        accumulator.add(image_id, shape, labels, perfect(kept, shape))
    result = accumulator.result()
    assert result.map50 < 0.8
    assert result.recall < 0.8
    assert result.precision == pytest.approx(1.0)


def test_wrong_class_is_not_a_match() -> None:
    accumulator = CocoAccumulator(NAMES)
    labels = np.array([[0, 0.5, 0.5, 0.2, 0.2]], np.float32)
    wrong = detections(labels_to_xyxy(labels, (100, 100)), [0.9], [1])
    accumulator.add(1, (100, 100), labels, wrong)
    result = accumulator.result()
    assert result.map50 == 0.0 and result.precision == 0.0 and result.recall == 0.0


def test_precision_recall_at_best_f1_known_answers() -> None:
    # Widely separated confidences: a true positive at 0.95, a false positive at 0.05, two objects.
    # From 0.95 down towards 0.05, R = 0.5 and P falls linearly from 1 (the curves are interpolated
    # between detections); F1 is 0 above 0.95. The smoothed F1 (101-point window) peaks 50 grid
    # points below 0.95, where P is still almost 1.
    precision, recall = precision_recall_at_best_f1(
        np.array([True, False]), np.array([0.95, 0.05]), np.array([0, 0]), np.array([0, 0])
    )
    assert recall == pytest.approx(0.5)
    assert 0.95 < precision < 1.0
    # Reference values from Ultralytics 8.4 ap_per_class on the same input.
    precision, recall = precision_recall_at_best_f1(
        np.array([True, False]), np.array([0.9, 0.8]), np.array([0, 0]), np.array([0, 0])
    )
    assert (precision, recall) == pytest.approx((0.7492492492, 0.5))
    # a class with objects but no predictions counts as P = R = 0 in the mean
    precision, recall = precision_recall_at_best_f1(
        np.array([True, False]), np.array([0.9, 0.8]), np.array([0, 0]), np.array([0, 0, 1])
    )
    assert (precision, recall) == pytest.approx((0.7492492492 / 2, 0.25))
    # predictions of a class without objects do not count
    precision, recall = precision_recall_at_best_f1(
        np.array([True, False, False]), np.array([0.9, 0.8, 0.99]), np.array([0, 0, 2]), np.array([0, 0])
    )
    assert (precision, recall) == pytest.approx((0.7492492492, 0.5))


def test_higher_scoring_prediction_takes_the_object() -> None:
    gt = np.array([[0, 0, 100, 100]], np.float64)
    preds = np.array([[0, 0, 100, 160], [0, 0, 100, 102]], np.float64)  # IoU 0.625 (score 0.9), 0.98 (0.8)
    assert match_predictions(preds, np.array([0, 0]), gt, np.array([0])).tolist() == [True, False]
    assert match_predictions(preds, np.array([0, 0]), gt, np.array([1])).tolist() == [False, False]


def test_a_claimed_object_leaves_the_next_best_one() -> None:
    gt = np.array([[0, 0, 100, 100], [0, 10, 100, 110]], np.float64)  # the two objects overlap (IoU 0.82)
    preds = np.array([[0, 0, 100, 100], [0, 2, 100, 102], [0, 1, 100, 101]], np.float64)
    # the second prediction overlaps object 0 most, but it is taken: it gets object 1 (IoU 0.87)
    assert match_predictions(preds, np.array([0, 0, 0]), gt, np.array([0, 0])).tolist() == [True, True, False]


def test_empty_cases_score_zero() -> None:
    assert CocoAccumulator(NAMES).result().metrics() == {"map50": 0.0, "map50_95": 0.0, "precision": 0.0, "recall": 0.0}

    nothing = CocoAccumulator(NAMES)
    nothing.add(1, (64, 64), np.zeros((0, 5), np.float32), Detections.empty())
    nothing.add(2, (64, 64), np.zeros((0, 5), np.float32), Detections.empty())
    assert nothing.result().metrics() == {"map50": 0.0, "map50_95": 0.0, "precision": 0.0, "recall": 0.0}

    no_predictions = CocoAccumulator(NAMES)
    no_predictions.add(1, (64, 64), np.array([[0, 0.5, 0.5, 0.5, 0.5]], np.float32), Detections.empty())
    result = no_predictions.result()
    assert result.map50 == 0.0 and result.recall == 0.0 and result.num_detections == 0

    no_objects = CocoAccumulator(NAMES)
    no_objects.add(1, (64, 64), np.zeros((0, 5), np.float32), detections([[1, 1, 20, 20]], [0.5], [0]))
    assert no_objects.result().map50 == 0.0


def test_empty_image_among_others_costs_only_its_false_positives() -> None:
    accumulator = CocoAccumulator(NAMES)
    labels = np.array([[0, 0.5, 0.5, 0.2, 0.2]], np.float32)
    accumulator.add(1, (100, 100), labels, perfect(labels, (100, 100)))
    accumulator.add(2, (100, 100), np.zeros((0, 5), np.float32), Detections.empty())
    assert accumulator.result().map50 == pytest.approx(1.0)
    accumulator.add(3, (100, 100), np.zeros((0, 5), np.float32), detections([[10, 10, 30, 30]], [0.95], [0]))
    assert accumulator.result().map50 < 1.0


def test_duplicate_image_ids_and_unknown_classes_are_rejected() -> None:
    accumulator = CocoAccumulator(NAMES)
    accumulator.add(1, (64, 64), np.zeros((0, 5), np.float32), Detections.empty())
    with pytest.raises(ValueError, match="twice"):
        accumulator.add(1, (64, 64), np.zeros((0, 5), np.float32), Detections.empty())
    with pytest.raises(DataInvalid, match=r"x\.jpg: label classes \[7\] are not in the data set's names"):
        accumulator.add(2, (64, 64), np.array([[7, 0.5, 0.5, 0.1, 0.1]], np.float32), Detections.empty(), "x.jpg")


def test_coco_json_is_complete_and_serialisable() -> None:
    accumulator = CocoAccumulator(NAMES)
    labels = np.array([[2, 0.5, 0.25, 0.5, 0.5]], np.float32)
    accumulator.add(5, (200, 100), labels, detections([[1, 2, 11, 22]], [0.7], [1]))
    result = accumulator.result()
    gt = json.loads(json.dumps(result.coco_ground_truth()))
    preds = json.loads(json.dumps(result.coco_predictions()))
    assert gt["images"] == [{"id": 5, "width": 100, "height": 200}]
    (annotation,) = gt["annotations"]
    assert annotation["id"] == 1 and annotation["iscrowd"] == 0 and annotation["image_id"] == 5
    assert annotation["category_id"] == 3  # class id + 1
    np.testing.assert_allclose(annotation["bbox"], [25, 0, 50, 100])
    assert annotation["area"] == pytest.approx(5000)
    assert [c["id"] for c in gt["categories"]] == [1, 2, 3]
    assert [c["name"] for c in gt["categories"]] == ["circle", "square", "triangle"]
    assert preds == [{"image_id": 5, "category_id": 2, "bbox": [1.0, 2.0, 10.0, 20.0], "score": pytest.approx(0.7)}]
    # the accessors return copies: the result cannot be changed through them
    result.coco_predictions()[0]["bbox"][0] = 99.0
    assert result.coco_predictions()[0]["bbox"][0] == 1.0


def test_matches_pycocotools_on_noisy_predictions(tmp_path: Path) -> None:
    pycoco = pytest.importorskip("pycocotools.coco")
    pycoco_eval = pytest.importorskip("pycocotools.cocoeval")
    rng = np.random.default_rng(11)
    accumulator = CocoAccumulator(NAMES)
    for image_id in range(1, 31):
        shape = (480, 640)
        labels = random_scene(rng, int(rng.integers(0, 8)))
        boxes = labels_to_xyxy(labels, shape)
        keep = rng.uniform(0, 1, len(boxes)) > 0.2  # some objects missed
        boxes = boxes[keep] + rng.normal(0, 6, (int(keep.sum()), 4))  # the rest jittered
        classes = labels[keep, 0].astype(int)
        flip = rng.uniform(0, 1, len(classes)) < 0.1  # some wrong classes
        classes[flip] = (classes[flip] + 1) % len(NAMES)
        false_pos = labels_to_xyxy(random_scene(rng, int(rng.integers(0, 4))), shape)
        boxes = np.concatenate([boxes, false_pos])
        classes = np.concatenate([classes, rng.integers(0, len(NAMES), len(false_pos))])
        scores = rng.uniform(0.01, 1, len(boxes))
        accumulator.add(image_id, shape, labels, detections(boxes, scores, classes))
    result = accumulator.result()
    assert 0.2 < result.map50_95 < result.map50 < 0.95

    gt_file, dt_file = tmp_path / "gt.json", tmp_path / "dt.json"
    gt_file.write_text(json.dumps(result.coco_ground_truth()))
    dt_file.write_text(json.dumps(result.coco_predictions()))
    gt = pycoco.COCO(str(gt_file))
    evaluator = pycoco_eval.COCOeval(gt, gt.loadRes(str(dt_file)), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert result.map50_95 == pytest.approx(evaluator.stats[0], abs=1e-6)
    assert result.map50 == pytest.approx(evaluator.stats[1], abs=1e-6)
    assert coco_map(json.loads(gt_file.read_text()), json.loads(dt_file.read_text())) == pytest.approx(
        (result.map50, result.map50_95), abs=1e-12
    )


def test_letterbox_round_trip_maps_boxes_back() -> None:
    shape = (200, 300)
    image = np.zeros((*shape, 3), np.uint8)
    box = np.array([[60.0, 40.0, 180.0, 120.0]])
    cv2.rectangle(image, (60, 40), (179, 119), (255, 255, 255), -1)
    boxed, transform = letterbox(image, 128)
    assert boxed.shape == (128, 128, 3)
    in_input = box * transform.scale + [transform.pad_x, transform.pad_y] * 2
    # the white rectangle is where the mapped box says it is
    ys, xs = np.nonzero(boxed[:, :, 0] > 128)
    np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], in_input[0], atol=1.0)
    np.testing.assert_allclose(transform.boxes_to_original(in_input, shape), box, atol=1e-4)
    # and boxes running off the input are clipped to the original image
    off_the_input = np.array([[-5.0, -5.0, 200.0, 200.0]])
    np.testing.assert_allclose(transform.boxes_to_original(off_the_input, shape), [[0, 0, 300, 200]])


def test_evaluate_with_a_perfect_model_on_the_synthetic_set(tmp_path: Path) -> None:
    data = load_dataset(make_synthetic_dataset(tmp_path, train_images=4, val_images=6, image_size=128))
    imgsz, num_classes = 96, len(data.names)
    expected: list[np.ndarray] = []
    for path in data.val_images:
        image = cv2.imread(str(path))
        _, transform = to_input_tensor(image, imgsz)
        labels = read_labels(path)
        boxes = labels_to_xyxy(labels, image.shape[:2]) * transform.scale + [transform.pad_x, transform.pad_y] * 2
        output = np.zeros((1, 4 + num_classes, 8), np.float32)  # 8 anchors, unused ones score 0
        output[0, 0:2, : len(labels)] = ((boxes[:, :2] + boxes[:, 2:]) / 2).T
        output[0, 2:4, : len(labels)] = (boxes[:, 2:] - boxes[:, :2]).T
        output[0, 4 + labels[:, 0].astype(int), np.arange(len(labels))] = 0.9
        expected.append(output)
    calls = iter(expected)

    def infer(tensor: np.ndarray) -> np.ndarray:
        assert tensor.shape == (1, 3, imgsz, imgsz) and tensor.dtype == np.float32
        return next(calls)

    result = evaluate(infer, data.val_images, data.names, imgsz)
    assert isinstance(result, AccuracyResult)
    assert result.num_images == len(data.val_images)
    assert result.num_detections == sum(len(read_labels(p)) for p in data.val_images) > 0
    assert result.map50 == pytest.approx(1.0)
    assert result.map50_95 == pytest.approx(1.0)
    assert result.precision == pytest.approx(1.0) and result.recall == pytest.approx(1.0)
    assert set(result.metrics()) == {"map50", "map50_95", "precision", "recall"}


def test_measuring_needs_neither_torch_nor_ultralytics() -> None:
    import subprocess
    import sys

    code = (
        "import sys, yolobench.measure.accuracy, yolobench.measure.latency, yolobench.measure.postprocess; "
        "heavy = {'torch', 'ultralytics'} & set(sys.modules); assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

"""Decoding and NMS of YOLO11 outputs on hand-built tensors, checked against a plain reference."""

from __future__ import annotations

import time

import numpy as np
import pytest

from yolobench.measure import postprocess
from yolobench.measure.postprocess import Detections, decode_yolo11, nms


def make_output(boxes_cxcywh: list[list[float]], scores: list[list[float]]) -> np.ndarray:
    """(1, 4+nc, A) from per-anchor boxes and per-anchor class scores."""
    boxes = np.asarray(boxes_cxcywh, np.float32).reshape(-1, 4)
    class_scores = np.asarray(scores, np.float32).reshape(len(boxes), -1)
    return np.concatenate([boxes, class_scores], axis=1).T[None].copy()


def reference_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Textbook greedy NMS, one box at a time."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    keep: list[int] = []
    for i in order:
        suppressed = False
        for j in keep:
            x1, y1 = max(boxes[i, 0], boxes[j, 0]), max(boxes[i, 1], boxes[j, 1])
            x2, y2 = min(boxes[i, 2], boxes[j, 2]), min(boxes[i, 3], boxes[j, 3])
            inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
            area_i = (boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1])
            area_j = (boxes[j, 2] - boxes[j, 0]) * (boxes[j, 3] - boxes[j, 1])
            if inter / (area_i + area_j - inter) > iou_threshold:
                suppressed = True
                break
        if not suppressed:
            keep.append(i)
    return keep


def test_boxes_are_converted_to_xyxy() -> None:
    detections = decode_yolo11(make_output([[50, 40, 20, 10]], [[0.9, 0.1]]))
    np.testing.assert_allclose(detections.boxes, [[40, 35, 60, 45]])
    assert detections.boxes.dtype == np.float32
    assert detections.class_ids.tolist() == [0]
    np.testing.assert_allclose(detections.scores, [0.9])


def test_overlapping_boxes_of_one_class_are_suppressed() -> None:
    output = make_output([[50, 50, 20, 20], [51, 50, 20, 20], [150, 150, 20, 20]], [[0.8, 0], [0.9, 0], [0.7, 0]])
    detections = decode_yolo11(output, iou_threshold=0.7)
    assert len(detections) == 2
    np.testing.assert_allclose(detections.scores, [0.9, 0.7])  # best first, the weaker twin gone
    np.testing.assert_allclose(detections.boxes[0], [41, 40, 61, 60])


def test_overlapping_boxes_of_different_classes_are_kept() -> None:
    output = make_output([[50, 50, 20, 20], [51, 50, 20, 20]], [[0.8, 0.0], [0.0, 0.9]])
    detections = decode_yolo11(output)
    assert sorted(detections.class_ids.tolist()) == [0, 1]
    assert detections.class_ids.tolist() == [1, 0]


def test_iou_threshold_decides() -> None:
    # IoU of these two = 10*20 / (2*400 - 200) = 1/3
    output = make_output([[50, 50, 20, 20], [50, 60, 20, 20]], [[0.9], [0.8]])
    assert len(decode_yolo11(output, iou_threshold=0.3)) == 1
    assert len(decode_yolo11(output, iou_threshold=0.4)) == 2


def test_conf_threshold_is_strict() -> None:
    output = make_output([[10, 10, 5, 5], [100, 100, 5, 5], [200, 200, 5, 5]], [[0.25], [0.5], [0.24]])
    detections = decode_yolo11(output, conf_threshold=0.25)
    np.testing.assert_allclose(detections.scores, [0.5])
    assert len(decode_yolo11(output, conf_threshold=0.9)) == 0


def test_max_det_keeps_the_best() -> None:
    boxes = [[30.0 * i + 10, 10, 8, 8] for i in range(20)]
    scores = [[0.01 * (i + 1)] for i in range(20)]
    detections = decode_yolo11(make_output(boxes, scores), max_det=5)
    np.testing.assert_allclose(detections.scores, [0.2, 0.19, 0.18, 0.17, 0.16], rtol=1e-6)


def test_best_class_only_unless_multi_label() -> None:
    output = make_output([[50, 50, 20, 20]], [[0.6, 0.3, 0.0005]])
    single = decode_yolo11(output)
    assert single.class_ids.tolist() == [0]
    multi = decode_yolo11(output, multi_label=True)
    assert multi.class_ids.tolist() == [0, 1]
    np.testing.assert_allclose(multi.scores, [0.6, 0.3])


def test_candidates_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postprocess, "MAX_CANDIDATES", 3)
    boxes = [[30.0 * i + 10, 10, 8, 8] for i in range(10)]
    scores = [[0.05 * (i + 1)] for i in range(10)]
    detections = decode_yolo11(make_output(boxes, scores))
    np.testing.assert_allclose(detections.scores, [0.5, 0.45, 0.4], rtol=1e-6)


def test_nothing_above_threshold_gives_empty_detections() -> None:
    detections = decode_yolo11(make_output([[10, 10, 5, 5]], [[0.0005, 0.0]]))
    assert len(detections) == 0
    assert detections.boxes.shape == (0, 4)
    assert detections.class_ids.dtype == np.int64


def test_rejects_batches_and_bad_shapes() -> None:
    with pytest.raises(ValueError, match="one image"):
        decode_yolo11(np.zeros((2, 6, 10), np.float32))
    with pytest.raises(ValueError, match="shape"):
        decode_yolo11(np.zeros((1, 4, 10), np.float32))


def test_with_boxes_replaces_only_boxes() -> None:
    detections = decode_yolo11(make_output([[50, 50, 20, 20]], [[0.9]]))
    moved = detections.with_boxes(detections.boxes * 2)
    np.testing.assert_allclose(moved.boxes, detections.boxes * 2)
    assert moved.scores is detections.scores
    assert isinstance(Detections.empty(), Detections)


def test_nms_matches_reference_on_random_boxes() -> None:
    rng = np.random.default_rng(3)
    corners = rng.uniform(0, 200, (300, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(5, 60, (300, 2))], axis=1)
    scores = rng.permutation(300).astype(np.float32) / 300 + 0.001  # distinct scores: order is defined
    for threshold in (0.3, 0.5, 0.7):
        assert nms(boxes, scores, threshold).tolist() == reference_nms(boxes, scores, threshold)


def test_nms_with_max_keep_equals_the_head_of_full_nms() -> None:
    rng = np.random.default_rng(5)
    corners = rng.uniform(0, 600, (5000, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(5, 80, (5000, 2))], axis=1)
    scores = rng.uniform(0, 1, 5000).astype(np.float32)
    full = nms(boxes, scores, 0.5)
    assert len(full) > 1000  # many survivors: the prefix has to grow
    for max_keep in (1, 300, 1500, 10000):
        assert nms(boxes, scores, 0.5, max_keep=max_keep).tolist() == full[:max_keep].tolist()


def test_class_aware_decode_matches_per_class_reference() -> None:
    rng = np.random.default_rng(7)
    anchors, classes = 400, 3
    centres = rng.uniform(20, 300, (anchors, 2))
    sizes = rng.uniform(10, 80, (anchors, 2))
    class_scores = np.zeros((anchors, classes), np.float32)
    best_class = rng.integers(0, classes, anchors)
    best_score = (rng.permutation(anchors) + 1) / (anchors + 1)
    class_scores[np.arange(anchors), best_class] = best_score
    output = make_output(np.concatenate([centres, sizes], 1).tolist(), class_scores.tolist())
    detections = decode_yolo11(output, conf_threshold=0.2, iou_threshold=0.5, max_det=1000)

    xyxy = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1).astype(np.float32)
    expected: list[tuple[float, int]] = []
    for c in range(classes):
        members = np.flatnonzero((best_class == c) & (best_score > 0.2))
        for k in reference_nms(xyxy[members].astype(np.float64), best_score[members], 0.5):
            expected.append((float(best_score[members[k]]), c))
    expected.sort(reverse=True)
    got = list(zip(detections.scores.tolist(), detections.class_ids.tolist()))
    assert len(got) == len(expected)
    np.testing.assert_allclose([s for s, _ in got], [s for s, _ in expected], rtol=1e-6)
    assert [c for _, c in got] == [c for _, c in expected]


def test_decode_is_fast_on_a_full_size_output() -> None:
    rng = np.random.default_rng(0)
    anchors, classes = 8400, 80
    output = np.empty((1, 4 + classes, anchors), np.float32)
    output[0, :2] = rng.uniform(0, 640, (2, anchors))
    output[0, 2:4] = rng.uniform(8, 120, (2, anchors))
    output[0, 4:] = rng.uniform(0, 1, (classes, anchors)) ** 8  # most scores tiny, like a real head
    decode_yolo11(output)
    start = time.perf_counter()
    detections = decode_yolo11(output)
    assert len(detections) == 300
    assert time.perf_counter() - start < 0.2  # generous: it is on the timed path, typically < 10 ms

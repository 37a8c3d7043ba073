"""Decode a YOLO11 detection head and run NMS on the host, with numpy and OpenCV only, because
measuring hosts have no torch; the rules follow Ultralytics so accuracy matches theirs."""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

MAX_CANDIDATES = 30000  # boxes that enter NMS at most, the highest scores first (as Ultralytics)
CLASS_OFFSET = 7680.0  # boxes of different classes are moved this far apart: one NMS, per-class effect


@dataclass(frozen=True, eq=False)
class Detections:
    """Detections of one image, highest score first: xyxy boxes, scores and class ids."""

    boxes: np.ndarray  # (n, 4) float32 x1, y1, x2, y2
    scores: np.ndarray  # (n,) float32
    class_ids: np.ndarray  # (n,) int64

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def with_boxes(self, boxes: np.ndarray) -> Detections:
        """The same detections with other boxes, e.g. mapped back to the original image."""
        return replace(self, boxes=np.asarray(boxes, np.float32).reshape(-1, 4))


def _as_head_output(output: np.ndarray) -> np.ndarray:
    """(1, 4+nc, A) or (4+nc, A) -> (4+nc, A)."""
    output = np.asarray(output)
    if output.ndim == 3:
        if output.shape[0] != 1:
            raise ValueError(f"decode_yolo11 takes one image, got a batch of {output.shape[0]}")
        output = output[0]
    if output.ndim != 2 or output.shape[0] < 5:
        raise ValueError(f"expected a YOLO11 output of shape (1, 4+nc, anchors), got {np.shape(output)}")
    return output


def _greedy_nms(boxes_xyxy: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    xywh = np.concatenate([boxes_xyxy[:, :2], boxes_xyxy[:, 2:] - boxes_xyxy[:, :2]], axis=1)
    keep = cv2.dnn.NMSBoxes(xywh, scores, 0.0, float(iou_threshold))
    return np.asarray(keep, np.int64).reshape(-1)


def nms(boxes_xyxy: np.ndarray, scores: np.ndarray, iou_threshold: float, max_keep: int | None = None) -> np.ndarray:
    """Greedy NMS; indices of the kept boxes, highest score first (ties: lower index first).

    With `max_keep`, only the first `max_keep` survivors are wanted. Greedy NMS decides a box by
    the higher-scoring boxes alone, so NMS over the best-scoring prefix is exact for that prefix:
    run it on a growing prefix until it yields enough. This bounds the cost by about
    candidates x max_keep, where one NMS over thousands of scattered low scores is quadratic."""
    scores = np.asarray(scores, np.float32)
    if scores.size == 0:
        return np.zeros(0, np.int64)
    boxes = np.asarray(boxes_xyxy, np.float64)
    order = np.argsort(-scores, kind="stable")
    if max_keep is None:
        return order[_greedy_nms(boxes[order], scores[order], iou_threshold)]
    prefix = max(4 * max_keep, 1024)
    while True:
        head = order[:prefix]
        keep = head[_greedy_nms(boxes[head], scores[head], iou_threshold)]
        if len(keep) >= max_keep or prefix >= len(order):
            return keep[:max_keep]
        prefix *= 4


def decode_yolo11(
    output: np.ndarray,
    conf_threshold: float = 0.001,
    iou_threshold: float = 0.7,
    max_det: int = 300,
    multi_label: bool = False,
) -> Detections:
    """Raw YOLO11 output of one image -> detections in network-input pixels.

    Rows 0..3 of `output` are cx, cy, w, h; the rest are per-class scores (already sigmoid).
    Candidates scoring above `conf_threshold` (at most MAX_CANDIDATES, best first) go through one
    class-aware NMS; the best `max_det` survive. With `multi_label`, an anchor may yield one
    candidate per class above the threshold (what Ultralytics' validator does), otherwise only its
    best class (what its predictor does).
    """
    head = _as_head_output(output)
    class_scores = head[4:]
    if multi_label:
        class_index, anchor_index = np.nonzero(class_scores > conf_threshold)
        scores = class_scores[class_index, anchor_index]
    else:
        best = class_scores.max(axis=0)
        anchor_index = np.flatnonzero(best > conf_threshold)
        scores = best[anchor_index]
        class_index = class_scores[:, anchor_index].argmax(axis=0)
    if scores.size == 0:
        return Detections.empty()
    if scores.size > MAX_CANDIDATES:
        top = np.argsort(-scores, kind="stable")[:MAX_CANDIDATES]
        anchor_index, class_index, scores = anchor_index[top], class_index[top], scores[top]

    cxcywh = head[:4, anchor_index].T.astype(np.float32)
    half = cxcywh[:, 2:] / 2
    boxes = np.concatenate([cxcywh[:, :2] - half, cxcywh[:, :2] + half], axis=1)
    shifted = boxes.astype(np.float64) + (class_index.astype(np.float64) * CLASS_OFFSET)[:, None]
    keep = nms(shifted, scores, iou_threshold, max_keep=max_det)
    return Detections(
        boxes=boxes[keep],
        scores=scores[keep].astype(np.float32),
        class_ids=class_index[keep].astype(np.int64),
    )

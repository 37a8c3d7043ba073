"""Letterbox pre-processing, the same geometry Ultralytics uses, so exported models see what
they were trained on and boxes map back exactly."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

PAD_VALUE = 114


@dataclass(frozen=True)
class LetterboxTransform:
    """How an original image was placed in the network input: scale, then pad."""

    scale: float
    pad_x: float
    pad_y: float

    def boxes_to_original(self, boxes_xyxy: np.ndarray, original_shape: tuple[int, int]) -> np.ndarray:
        """Map boxes from network-input pixels back to original-image pixels, clipped."""
        boxes = boxes_xyxy.copy()
        boxes[:, [0, 2]] = (boxes[:, [0, 2]] - self.pad_x) / self.scale
        boxes[:, [1, 3]] = (boxes[:, [1, 3]] - self.pad_y) / self.scale
        height, width = original_shape
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
        return boxes


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, LetterboxTransform]:
    """Resize keeping aspect ratio and pad to size x size (grey 114)."""
    height, width = image.shape[:2]
    scale = min(size / height, size / width)
    new_width, new_height = int(round(width * scale)), int(round(height * scale))
    if (new_width, new_height) != (width, height):
        image = cv2.resize(image, (new_width, new_height), interpolation=cv2.INTER_LINEAR)
    pad_x, pad_y = (size - new_width) / 2, (size - new_height) / 2
    top, bottom = int(round(pad_y - 0.1)), int(round(pad_y + 0.1))
    left, right = int(round(pad_x - 0.1)), int(round(pad_x + 0.1))
    image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    return image, LetterboxTransform(scale=scale, pad_x=float(left), pad_y=float(top))


def to_input_tensor(image_bgr: np.ndarray, size: int) -> tuple[np.ndarray, LetterboxTransform]:
    """BGR uint8 image -> float32 NCHW RGB tensor in [0, 1] and the letterbox transform."""
    boxed, transform = letterbox(image_bgr, size)
    tensor = np.ascontiguousarray(boxed[:, :, ::-1].transpose(2, 0, 1), dtype=np.float32)
    tensor *= 1.0 / 255.0
    return tensor[None], transform

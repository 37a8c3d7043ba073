"""Measuring a variant: latency, COCO accuracy and YOLO11 decoding, with numpy and OpenCV only."""

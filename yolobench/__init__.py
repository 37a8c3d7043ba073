"""yolobench: build every optimised variant of a YOLO11 detector, measure it on the target
runtime the same way every time, and log each variant as one MLflow run."""

__version__ = "0.1.0"

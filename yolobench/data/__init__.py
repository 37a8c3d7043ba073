"""Data sets: Ultralytics-format loading, letterbox pre-processing, the synthetic set."""

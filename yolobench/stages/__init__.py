"""Build stages: weights, training, ONNX export, fp16/int8 conversion. Each stage is a function that
returns a content-addressed cache Artifact; torch, Ultralytics and onnx are imported inside the
functions so that importing a stage module stays cheap (a measuring host never needs them)."""

"""ONNX Runtime: execution provider, graph optimisation level and threads; the model ORT
optimised at that level (optimized_model_filepath) is the variant's compiled artifact."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from yolobench.cache import Artifact, ArtifactCache
from yolobench.runtimes import OpenedSession, RuntimeUnavailable, register
from yolobench.space import Variant
from yolobench.spec import RuntimeSpec

PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def graph_optimization_level(name: str) -> Any:
    import onnxruntime as ort

    return {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[name]


class OrtSession:
    def __init__(self, session: Any, level: str, threads: int, inter_op_threads: int) -> None:
        self._session = session
        self._input_name = session.get_inputs()[0].name
        self._output_names = [session.get_outputs()[0].name]
        self._level = level
        self._threads = threads
        self._inter_op_threads = inter_op_threads

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        return self._session.run(self._output_names, {self._input_name: tensor})[0]

    def info(self) -> dict[str, Any]:
        return {
            "providers": ",".join(self._session.get_providers()),
            # 0 means ORT's default: one intra-op thread per physical core.
            "threads": self._threads or (psutil.cpu_count(logical=False) or 1),
            "threads_requested": self._threads,
            "inter_op_threads": self._inter_op_threads,
            "ort_level": self._level,
        }

    def close(self) -> None:
        self._session = None


class OnnxRuntime:
    name = "onnxruntime"

    def availability(self) -> tuple[bool, str]:
        try:
            import onnxruntime as ort
        except ImportError:
            return False, "package onnxruntime is not installed"
        return True, f"onnxruntime {ort.__version__}; providers here: {', '.join(ort.get_available_providers())}"

    def open(self, model: Artifact, variant: Variant, options: RuntimeSpec, work_dir: Path,
             cache: ArtifactCache) -> OpenedSession:
        import onnxruntime as ort

        wanted = PROVIDERS[options.provider]
        available = ort.get_available_providers()
        if wanted[0] not in available:
            # Falling back silently would log CPU numbers under a GPU provider's name.
            raise RuntimeUnavailable(
                f"provider {wanted[0]} is not available here (available: {', '.join(available)}); "
                "install onnxruntime-gpu on a machine with an NVIDIA GPU"
            )
        level = str(variant.get("ort_level", "all"))
        threads = int(variant.get("threads", options.threads))
        session_options = ort.SessionOptions()
        session_options.graph_optimization_level = graph_optimization_level(level)
        session_options.intra_op_num_threads = threads
        session_options.inter_op_num_threads = options.inter_op_threads
        session_options.log_severity_level = 3
        compiled = Path(work_dir) / f"model.ort-{level}.onnx"
        session_options.optimized_model_filepath = str(compiled)
        started = time.perf_counter()
        session = ort.InferenceSession(str(model.path), sess_options=session_options, providers=wanted)
        compile_s = time.perf_counter() - started
        return OpenedSession(
            session=OrtSession(session, level, threads, options.inter_op_threads),
            compiled_artifact=compiled if compiled.exists() else None,
            compile_s=compile_s,
        )


@register("onnxruntime")
def _factory() -> OnnxRuntime:
    return OnnxRuntime()

"""ONNX Runtime on GPU: which providers get IO binding, the provider options each provider gets (and that the
sweep's own win), the IO-binding path itself (run for real on the CPU provider, where it must give the same
output as a plain run), the phase timings the sweep reports, and the real CUDA EP where there is one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.tiny_onnx import INPUT_SHAPE, OUTPUT_SHAPE, write_conv_model
from yolobench.gpu import gpu_unavailable_reason
from yolobench.runtimes import RuntimeUnavailable
from yolobench.runtimes.onnxruntime_runtime import (
    PROVIDERS, io_binding_device, open_ort_session, ort_tensorrt_cache_dir, provider_options,
)  # fmt: skip
from yolobench.runtimes.timing import (
    CUDA_EVENTS, HOST_CLOCK_SYNCHRONIZED, PhaseTimings,
)  # fmt: skip


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_conv_model(tmp_path_factory.mktemp("ort") / "tiny.onnx")


@pytest.mark.parametrize(
    ("providers_in_use", "device"),
    [
        (["CPUExecutionProvider"], None),
        (["CUDAExecutionProvider", "CPUExecutionProvider"], "cuda"),
        (["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"], "cuda"),
        ([], None),
    ],
)
def test_io_binding_is_chosen_by_the_provider_ort_actually_uses(providers_in_use: list[str], device: str | None) -> None:
    assert io_binding_device(providers_in_use) == device


def test_cuda_provider_options_name_the_device_and_take_the_sweeps_options() -> None:
    options = provider_options("cuda", "fp16", {"cudnn_conv_algo_search": "HEURISTIC"})
    assert options == [{"device_id": 0, "cudnn_conv_algo_search": "HEURISTIC"}, {}]
    assert provider_options("cpu", "fp32", {}) == [{}]


@pytest.mark.parametrize(("precision", "fp16", "int8"), [("fp32", False, False), ("fp16", True, False), ("int8", True, True)])
def test_tensorrt_ep_options_cache_engines_and_follow_the_precision(tmp_path: Path, precision: str, fp16: bool,
                                                                    int8: bool) -> None:
    options = provider_options("tensorrt", precision, {}, tmp_path)
    assert len(options) == len(PROVIDERS["tensorrt"]) == 3
    trt = options[0]
    assert trt["trt_engine_cache_enable"] is True and trt["trt_engine_cache_path"] == str(tmp_path)
    assert trt["trt_timing_cache_enable"] is True and trt["trt_timing_cache_path"] == str(tmp_path)
    assert (trt["trt_fp16_enable"], trt["trt_int8_enable"]) == (fp16, int8)
    assert options[1] == {"device_id": 0} and options[2] == {}  # CUDA EP for what TensorRT cannot take, then CPU


def test_sweep_provider_options_override_the_defaults(tmp_path: Path) -> None:
    options = provider_options("tensorrt", "fp16", {"trt_fp16_enable": False, "trt_builder_optimization_level": 5},
                               tmp_path)  # fmt: skip
    assert options[0]["trt_fp16_enable"] is False and options[0]["trt_builder_optimization_level"] == 5
    with pytest.raises(ValueError, match="engine cache directory"):
        provider_options("tensorrt", "fp16", {})


def test_ort_tensorrt_cache_dir_lives_in_the_artifact_cache(tmp_path: Path) -> None:
    directory = ort_tensorrt_cache_dir(tmp_path)
    assert directory.parent == tmp_path / "ort-tensorrt" and len(directory.name) == 20
    assert ort_tensorrt_cache_dir(tmp_path) == directory  # stable for the same GPU and versions


def test_io_binding_path_matches_plain_run_and_times_each_phase(tiny_model: Path, tmp_path: Path) -> None:
    plain = open_ort_session(tiny_model, provider="cpu", level="all", threads=1, work_dir=tmp_path,
                             cache_root=tmp_path)  # fmt: skip
    bound = open_ort_session(tiny_model, provider="cpu", level="all", threads=1, work_dir=tmp_path,
                             cache_root=tmp_path, io_binding=True)  # fmt: skip
    assert plain.binding_device is None and plain.phase_timings is None and "phase_timing" not in plain.info()
    assert plain.output_path == tmp_path / "model.ort-all.onnx" and plain.output_path.is_file()
    assert bound.binding_device == "cpu" and bound.info()["io_binding"] == "cpu"
    rng = np.random.default_rng(0)
    for _ in range(3):  # the bound input is overwritten in place: each call must see its own tensor
        tensor = rng.random(INPUT_SHAPE, np.float32)
        expected = plain.infer(tensor)
        got = bound.infer(tensor)
        assert got.shape == OUTPUT_SHAPE
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert len(bound.phase_timings) == 3 and plain.phase_timings is None
    assert bound.info()["phase_timing"] == HOST_CLOCK_SYNCHRONIZED
    metrics = bound.phase_timings.metrics(1, 2)
    assert metrics["gpu_timed_calls"] == 2 and metrics["gpu_compute_ms_p50"] > 0


def test_phase_metrics_cover_exactly_the_timed_calls_the_sweep_kept(tmp_path: Path) -> None:
    """Through the sweep's own timing (measure.harness.time_session): warm-up and refused windows are left out."""
    from yolobench.measure.harness import time_session
    from yolobench.spec import MeasureSpec

    model = write_conv_model(tmp_path / "yolo_layout.onnx", yolo_layout=True)
    session = open_ort_session(model, provider="cpu", level="all", threads=1, work_dir=tmp_path,
                               cache_root=tmp_path, io_binding=True)  # fmt: skip
    images = [np.random.default_rng(i).integers(0, 255, (48, 40, 3), np.uint8) for i in range(3)]
    session.infer(np.zeros(INPUT_SHAPE, np.float32))  # calls before the harness must not be counted
    measure = MeasureSpec(warmup_runs=3, warmup_seconds=0, min_runs=21, min_seconds=0, foreign_limit=1e9,
                          stability=0.99)
    timing = time_session(session, images, INPUT_SHAPE[-1], measure)
    kept = timing.latency.result.inference_ms
    assert timing.phases["gpu_timed_calls"] == kept.size >= 21  # the three kept windows, not the refused or warm-up
    assert len(session.phase_timings) == 1 + 3 + sum(w.inference.size for w in timing.latency.windows)
    # The harness times the whole infer() call, which holds the three phases plus Python around them.
    assert timing.phases["gpu_e2e_ms_p50"] <= float(np.percentile(kept, 50)) * 1.5 + 0.5


def test_a_gpu_provider_missing_here_is_unavailable_not_a_silent_cpu_fallback(tiny_model: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA EP; the GPU test below covers it")
    with pytest.raises(RuntimeUnavailable, match="CUDAExecutionProvider is not available here"):
        open_ort_session(tiny_model, provider="cuda", level="all", work_dir=tmp_path, cache_root=tmp_path)


def test_phase_metrics_summarise_exactly_the_calls_asked_for() -> None:
    timings = PhaseTimings(CUDA_EVENTS)
    for call in range(10):
        timings.add(0.1, float(call), 0.2)
    metrics = timings.metrics(first=4, count=3)  # calls 4, 5, 6
    assert metrics["gpu_compute_ms_p50"] == pytest.approx(5.0)
    assert metrics["gpu_compute_ms_mean"] == pytest.approx(5.0)
    assert metrics["gpu_e2e_ms_p50"] == pytest.approx(5.3)
    assert metrics["gpu_h2d_ms_mean"] == pytest.approx(0.1) and metrics["gpu_d2h_ms_mean"] == pytest.approx(0.2)
    assert metrics["gpu_timed_calls"] == 3


@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_provider_options_are_onnxruntime_options(provider: str) -> None:
    from pydantic import ValidationError

    from yolobench.runtimes.options import OnnxRuntimeOptions, TensorRTOptions

    options = OnnxRuntimeOptions(provider=provider, provider_options={"trt_fp16_enable": True, "gpu_mem_limit": 2**30})
    assert options.provider_options == {"trt_fp16_enable": True, "gpu_mem_limit": 2**30}
    with pytest.raises(ValidationError, match="provider_options"):
        TensorRTOptions(provider_options={"trt_fp16_enable": True})


def test_the_runtime_opens_with_the_variant_s_axes_and_falls_back_to_the_options_threads(tiny_model: Path,
                                                                                        tmp_path: Path) -> None:
    from yolobench.cache import Artifact
    from yolobench.runtimes import DecodeSettings, get_runtime
    from yolobench.runtimes.options import OnnxRuntimeOptions

    runtime = get_runtime("onnxruntime")
    model = Artifact("k" * 20, "fp32", tiny_model, {"precision": "fp32"})
    options = OnnxRuntimeOptions(threads=2, inter_op_threads=1)
    assert runtime.compile(model, {"precision": "fp32"}, options, None) is None  # ORT takes the ONNX itself
    session = runtime.open(model, None, {"precision": "fp32"}, options, DecodeSettings(), tmp_path)
    info = session.info()
    # No ort_level axis: the runtime's declared default; no threads axis: runtime.threads.
    assert (info["ort_level"], info["threads_requested"], info["inter_op_threads"]) == ("all", 2, 1)
    assert session.output_path == tmp_path / "model.ort-all.onnx"
    session.close()
    session = runtime.open(model, None, {"precision": "fp32", "ort_level": "basic", "threads": 1}, options,
                           DecodeSettings(), tmp_path)  # fmt: skip
    assert (session.info()["ort_level"], session.info()["threads_requested"]) == ("basic", 1)
    session.close()


def test_the_tensorrt_ep_s_engines_are_compiled_once_into_the_cache(tiny_model: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Under the TensorRT EP, compile opens the model once with the engine cache in a new cached artifact (the
    engines TensorRT writes there), and open loads them from that artifact. The EP itself is faked: not here."""
    from yolobench.cache import Artifact, ArtifactCache
    from yolobench.runtimes import DecodeSettings, get_runtime, onnxruntime_runtime
    from yolobench.runtimes.options import OnnxRuntimeOptions

    opened: list[dict] = []

    class Session:
        session_open_s = 1.5

        def close(self) -> None:
            pass

    def fake_open(model_path: Path, **kwargs) -> Session:
        opened.append(kwargs)
        (kwargs["engine_cache_dir"] / "TensorrtExecutionProvider_TRTKernel_sm90.engine").write_bytes(b"engine")
        return Session()

    monkeypatch.setattr(onnxruntime_runtime, "open_ort_session", fake_open)
    cache = ArtifactCache(tmp_path / "cache")
    model = Artifact("k" * 20, "fp16", tiny_model, {"precision": "fp16", "imgsz": 32})
    options = OnnxRuntimeOptions(provider="tensorrt", provider_options={"trt_builder_optimization_level": 5})
    runtime = get_runtime("onnxruntime")
    engines = runtime.compile(model, {"precision": "fp16", "ort_level": "basic"}, options, cache)
    assert engines.stage == onnxruntime_runtime.ORT_TENSORRT_STAGE and engines.manifest["parent"] == model.key
    assert engines.manifest["engine_files"] == ["TensorrtExecutionProvider_TRTKernel_sm90.engine"]
    assert (engines.directory / "TensorrtExecutionProvider_TRTKernel_sm90.engine").is_file()
    assert engines.manifest["config"]["provider_options"] == {"trt_builder_optimization_level": 5}
    assert "build_s" in engines.manifest and "onnxruntime" in engines.manifest["versions"]
    assert (opened[0]["provider"], opened[0]["level"], opened[0]["precision"]) == ("tensorrt", "basic", "fp16")
    assert opened[0]["cache_root"] == cache.root  # timing caches shared per GPU in the artifact cache
    assert runtime.compile(model, {"precision": "fp16", "ort_level": "basic"}, options, cache) == engines
    assert len(opened) == 1  # built once
    runtime.open(model, engines, {"precision": "fp16", "ort_level": "basic"}, options, DecodeSettings(), tmp_path)
    assert opened[1]["engine_cache_dir"] == engines.directory


def test_the_tensorrt_ep_missing_here_is_unavailable_at_compile(tiny_model: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    from yolobench.cache import Artifact, ArtifactCache
    from yolobench.runtimes import get_runtime
    from yolobench.runtimes.options import OnnxRuntimeOptions

    if "TensorrtExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the TensorRT EP")
    cache = ArtifactCache(tmp_path / "cache")
    model = Artifact("k" * 20, "fp16", tiny_model, {"precision": "fp16"})
    with pytest.raises(RuntimeUnavailable, match="TensorrtExecutionProvider is not available here"):
        get_runtime("onnxruntime").compile(model, {"precision": "fp16"}, OnnxRuntimeOptions(provider="tensorrt"), cache)
    assert not any((cache.root / "ort_tensorrt").glob("*/manifest.json"))


# --- real GPU (skipped where absent) -------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("level", ["disable", "all"])
def test_cuda_ep_io_binding_matches_cpu(tiny_model: Path, tmp_path: Path, level: str) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip(f"this onnxruntime has no CUDA EP (providers: {ort.get_available_providers()})")
    if reason := gpu_unavailable_reason():
        pytest.skip(f"no NVIDIA GPU here: {reason}")
    session = open_ort_session(tiny_model, provider="cuda", level=level, work_dir=tmp_path, cache_root=tmp_path)
    assert session.binding_device == "cuda"
    info = session.info()
    assert info["providers"].startswith("CUDAExecutionProvider") and "CUDAExecutionProvider" in info["provider_options"]
    tensor = np.random.default_rng(3).random(INPUT_SHAPE, np.float32)
    reference = ort.InferenceSession(str(tiny_model), providers=["CPUExecutionProvider"]).run(None, {"images": tensor})[0]
    output = session.infer(tensor)
    assert np.linalg.norm(output - reference) / np.linalg.norm(reference) < 1e-2
    metrics = session.phase_timings.metrics()
    assert metrics["gpu_compute_ms_p50"] > 0

"""TensorRT: the exact builder settings each variant gets (through a fake `tensorrt` that records them, since
this host has no TensorRT), the engine's cache key (GPU, compute capability, TensorRT version), the timing
cache, the sparsity record; and, where TensorRT and a GPU exist, a real build and run."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.fake_tensorrt import make_fake_tensorrt
from tests.tiny_onnx import INPUT_SHAPE, OUTPUT_SHAPE, write_conv_model
from yolobench.cache import Artifact, ArtifactCache, BuildFailed
from yolobench.errors import ModelMismatch
from yolobench.gpu import GpuIdentity, gpu_unavailable_reason
from yolobench.runtimes import DecodeSettings, RuntimeUnavailable, get_runtime, registry
from yolobench.runtimes.options import TensorRTOptions
from yolobench.stages import tensorrt as trt_stage
from yolobench.stages.tensorrt import (
    EngineSettings, TensorRTUnavailable, build_engine, builder_sparsity_report, import_tensorrt,
    is_two_four_sparse, onnx_weight_sparsity, timing_cache_path,
)  # fmt: skip

H100 = GpuIdentity("NVIDIA H100 80GB HBM3", "9.0", driver="13.0")
ORIN = GpuIdentity("Orin", "8.7", driver="12.6")
WORKSPACE_MB = 256


def onnx_artifact(tmp_path: Path, precision: str, *, sparse: bool = False) -> Artifact:
    """A real tiny ONNX file wrapped as the precision stage's artifact (its manifest says the precision)."""
    path = write_conv_model(tmp_path / f"model_{precision}.onnx", sparse_pointwise=sparse)
    key = hashlib.sha256(path.read_bytes() + precision.encode()).hexdigest()[:20]
    op_counts = {"Conv": 3, "Relu": 1}
    if precision == "int8":
        op_counts.update({"QuantizeLinear": 3, "DequantizeLinear": 6})
    manifest = {"precision": precision, "op_counts": op_counts, "imgsz": 32, "names": {"0": "thing"},
                "applied_by_default": [{"name": "onnxslim_simplification"}]}  # fmt: skip
    return Artifact(key=key, stage=precision, path=path, manifest=manifest)


# --- the exact builder settings per variant ------------------------------------------------------

# TensorRT 10: int8 also allows fp16, so layers outside Q/DQ pairs need not fall back to fp32.
WEAK_FLAGS = {"fp32": [], "fp16": ["FP16"], "int8": ["INT8", "FP16"]}


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
@pytest.mark.parametrize("level", [3, 5])
@pytest.mark.parametrize("sparsity", [False, True])
def test_tensorrt10_builder_gets_precision_flags_level_sparsity_pool_and_timing_cache(
    tmp_path: Path, precision: str, level: int, sparsity: bool
) -> None:
    fake = make_fake_tensorrt("10.3.0")
    model = onnx_artifact(tmp_path, precision)
    engine = build_engine(ArtifactCache(tmp_path / "cache"), model,
                          EngineSettings(precision, level, sparsity, WORKSPACE_MB), trt=fake, gpu=ORIN)  # fmt: skip

    (built,) = fake.records.builds
    expected_flags = sorted(["TF32", *WEAK_FLAGS[precision], *(["SPARSE_WEIGHTS"] if sparsity else [])])
    assert built["builder_flags"] == expected_flags
    assert built["network_flags"] == []  # TensorRT 10: explicit batch is implied; no EXPLICIT_BATCH, no strong typing
    assert built["builder_optimization_level"] == level
    assert built["pool_limits"] == {"WORKSPACE": WORKSPACE_MB * 2**20}
    assert built["timing_cache_set"] is True and built["timing_cache_ignore_mismatch"] is False
    assert fake.records.parsed == [str(model.path)]
    manifest = engine.manifest
    assert manifest["typing"] == "weak"
    assert manifest["builder_flags"] == [*WEAK_FLAGS[precision], *(["SPARSE_WEIGHTS"] if sparsity else [])]
    assert manifest["tf32"] is True
    assert engine.path.read_bytes().startswith(b"fake-engine:")
    assert (manifest["quantization"] is not None) == (precision == "int8")
    if precision == "int8":
        assert "Q/DQ" in manifest["quantization"] and "calibrator" in manifest["quantization"]


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
@pytest.mark.parametrize("sparsity", [False, True])
def test_tensorrt11_builds_strongly_typed_networks_without_precision_flags(
    tmp_path: Path, precision: str, sparsity: bool
) -> None:
    fake = make_fake_tensorrt("11.4.0")
    engine = build_engine(ArtifactCache(tmp_path / "cache"), onnx_artifact(tmp_path, precision),
                          EngineSettings(precision, 5, sparsity, WORKSPACE_MB), trt=fake, gpu=H100)  # fmt: skip

    (built,) = fake.records.builds
    # The precision is the ONNX artifact's own types: fp16 weights, or int8 through its Q/DQ nodes.
    assert built["network_flags"] == ["STRONGLY_TYPED"]
    assert built["builder_flags"] == sorted(["TF32", *(["SPARSE_WEIGHTS"] if sparsity else [])])
    assert built["builder_optimization_level"] == 5
    assert engine.manifest["typing"] == "strong"
    assert engine.manifest["network_flags"] == ["STRONGLY_TYPED"]


def test_engine_settings_refuse_what_tensorrt_would_not_take() -> None:
    with pytest.raises(ValueError, match="builder_optimization_level"):
        EngineSettings("fp16", 6)
    with pytest.raises(ValueError, match="precision"):
        EngineSettings("bf16")


def test_int8_engine_needs_the_qdq_artifact_and_precision_must_match(tmp_path: Path) -> None:
    fake = make_fake_tensorrt("10.3.0")
    cache = ArtifactCache(tmp_path / "cache")
    fp32 = onnx_artifact(tmp_path, "fp32")
    with pytest.raises(ValueError, match="'int8' asked of a 'fp32'"):
        build_engine(cache, fp32, EngineSettings("int8"), trt=fake, gpu=ORIN)
    no_qdq = Artifact(fp32.key, "int8", fp32.path, {**fp32.manifest, "precision": "int8"})
    with pytest.raises(ValueError, match="Q/DQ"):
        build_engine(cache, no_qdq, EngineSettings("int8"), trt=fake, gpu=ORIN)
    assert fake.records.builds == []


def _quantize(source: Path, target: Path, **options: object) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.left = [{"images": np.random.default_rng(i).random(INPUT_SHAPE, np.float32)} for i in range(2)]

        def get_next(self) -> dict | None:
            return self.left.pop() if self.left else None

    quantize_static(str(source), str(target), Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"],
                    **options)  # fmt: skip
    return target


def test_int8_from_the_cpu_recipe_is_refused_before_building_with_how_to_fix(tmp_path: Path) -> None:
    from onnxruntime.quantization import QuantType

    from yolobench.stages.tensorrt import tensorrt_qdq_problems

    source = write_conv_model(tmp_path / "fp32.onnx")
    cpu_recipe = _quantize(source, tmp_path / "u8.onnx", activation_type=QuantType.QUInt8)  # the x86 CPU recipe
    signed_asymmetric = _quantize(source, tmp_path / "s8.onnx", activation_type=QuantType.QInt8,
                                  weight_type=QuantType.QInt8)  # fmt: skip
    tensorrt_recipe = _quantize(source, tmp_path / "s8sym.onnx", activation_type=QuantType.QInt8,
                                weight_type=QuantType.QInt8, extra_options={"ActivationSymmetric": True})  # fmt: skip
    assert any("uint8" in problem for problem in tensorrt_qdq_problems(cpu_recipe))
    assert any("non-zero zero points" in problem for problem in tensorrt_qdq_problems(signed_asymmetric))
    assert tensorrt_qdq_problems(tensorrt_recipe) == []

    fake = make_fake_tensorrt("10.3.0")
    cache = ArtifactCache(tmp_path / "cache")
    manifest = {"precision": "int8", "op_counts": {"QuantizeLinear": 1, "DequantizeLinear": 1}}
    with pytest.raises(BuildFailed, match="activation_type: s8, weight_type: s8, symmetric: true"):
        build_engine(cache, Artifact("a" * 20, "int8", cpu_recipe, manifest), EngineSettings("int8"), trt=fake, gpu=ORIN)
    assert fake.records.builds == []
    built = build_engine(cache, Artifact("b" * 20, "int8", tensorrt_recipe, manifest), EngineSettings("int8"),
                         trt=fake, gpu=ORIN)  # fmt: skip
    assert built.manifest["builder_flags"] == ["INT8", "FP16"]


def test_failed_build_is_buildfailed_with_tensorrt_errors_and_nothing_cached(tmp_path: Path) -> None:
    fake = make_fake_tensorrt("10.3.0", build_fails=True)
    cache = ArtifactCache(tmp_path / "cache")
    with pytest.raises(BuildFailed, match="no implementation for layer conv1"):
        build_engine(cache, onnx_artifact(tmp_path, "fp16"), EngineSettings("fp16"), trt=fake, gpu=ORIN)
    assert not any((cache.root / trt_stage.STAGE).glob("*/manifest.json"))


# --- cache key: engines only run where they were built -------------------------------------------

def test_engine_cache_key_includes_gpu_compute_capability_and_tensorrt_version(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "cache")
    model = onnx_artifact(tmp_path, "fp16")
    settings = EngineSettings("fp16", 3, False, WORKSPACE_MB)

    first = build_engine(cache, model, settings, trt=make_fake_tensorrt("10.3.0"), gpu=ORIN)
    again_fake = make_fake_tensorrt("10.3.0")
    again = build_engine(cache, model, settings, trt=again_fake, gpu=ORIN)
    assert again.key == first.key and again_fake.records.builds == []  # same GPU and TensorRT: cached, not rebuilt
    assert cache.builds[trt_stage.STAGE] == 1

    other_gpu = build_engine(cache, model, settings, trt=make_fake_tensorrt("10.3.0"),
                             gpu=GpuIdentity("NVIDIA GeForce RTX 4070 Laptop GPU", "8.9"))  # fmt: skip
    other_capability = build_engine(cache, model, settings, trt=make_fake_tensorrt("10.3.0"),
                                    gpu=GpuIdentity(ORIN.name, "8.6"))  # fmt: skip
    other_tensorrt = build_engine(cache, model, settings, trt=make_fake_tensorrt("10.7.0"), gpu=ORIN)
    keys = {first.key, other_gpu.key, other_capability.key, other_tensorrt.key}
    assert len(keys) == 4
    assert first.manifest["versions"] == {"tensorrt": "10.3.0", "gpu": "Orin", "compute_capability": "8.7"}
    assert first.manifest["parent"] == model.key
    # The driver is recorded but not keyed: a driver update does not invalidate engines.
    same_but_driver = build_engine(cache, model, settings, trt=make_fake_tensorrt("10.3.0"),
                                   gpu=GpuIdentity(ORIN.name, ORIN.compute_capability, driver="12.8"))  # fmt: skip
    assert same_but_driver.key == first.key


@pytest.mark.parametrize("changed", [{"builder_optimization_level": 5}, {"sparsity": True}, {"workspace_mb": 512}])
def test_each_builder_setting_is_part_of_the_key(tmp_path: Path, changed: dict) -> None:
    cache = ArtifactCache(tmp_path / "cache")
    model = onnx_artifact(tmp_path, "fp16")
    base = EngineSettings("fp16", 3, False, WORKSPACE_MB)
    first = build_engine(cache, model, base, trt=make_fake_tensorrt(), gpu=ORIN)
    other = build_engine(cache, model, EngineSettings(**{**base.__dict__, **changed}), trt=make_fake_tensorrt(), gpu=ORIN)
    assert other.key != first.key


# --- timing cache ---------------------------------------------------------------------------------

def test_timing_cache_is_persisted_in_the_cache_dir_and_reused_by_the_next_build(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "cache")
    model = onnx_artifact(tmp_path, "fp16")
    fake = make_fake_tensorrt("10.3.0")
    first = build_engine(cache, model, EngineSettings("fp16", 3), trt=fake, gpu=ORIN)
    path = timing_cache_path(cache.root, {"tensorrt": "10.3.0", "gpu": ORIN.name, "compute_capability": "8.7"})
    assert path.is_file() and path.is_relative_to(cache.root)
    assert fake.records.timing_caches_created_from[0] == b""  # nothing to reuse the first time
    assert first.manifest["timing_cache"]["loaded_bytes"] == 0
    saved = path.read_bytes()
    assert saved and first.manifest["timing_cache"]["saved_bytes"] == len(saved)

    second = build_engine(cache, model, EngineSettings("fp16", 5), trt=fake, gpu=ORIN)
    assert fake.records.timing_caches_created_from[1] == saved  # the second build starts from the first's timings
    assert second.manifest["timing_cache"]["loaded_bytes"] == len(saved)
    assert set(saved.decode().split(";")) < set(path.read_bytes().decode().split(";"))  # merged, nothing lost

    other_gpu = build_engine(cache, model, EngineSettings("fp16", 3), trt=fake, gpu=H100)
    assert other_gpu.manifest["timing_cache"]["loaded_bytes"] == 0  # timings of another GPU are never reused


# --- sparsity ---------------------------------------------------------------------------------------

def test_two_four_pattern() -> None:
    dense = np.ones((2, 8, 1, 1), np.float32)
    assert not is_two_four_sparse(dense)
    sparse = dense.copy()
    sparse[:, [1, 3, 4, 6]] = 0
    assert is_two_four_sparse(sparse)
    shifted = dense.copy()
    shifted[:, [0, 1, 2]] = 0  # 1 non-zero in the first four, 4 in the second four
    assert not is_two_four_sparse(shifted)
    odd = np.ones((2, 3, 3, 3), np.float32)  # 3 channels pad to 4: 3 non-zeros > 2
    assert not is_two_four_sparse(odd)


def test_sparsity_is_recorded_with_what_can_benefit(tmp_path: Path) -> None:
    fake = make_fake_tensorrt("10.3.0")
    cache = ArtifactCache(tmp_path / "cache")
    engine = build_engine(cache, onnx_artifact(tmp_path, "fp16", sparse=True), EngineSettings("fp16", 3, True),
                          trt=fake, gpu=ORIN)  # fmt: skip
    sparsity = engine.manifest["sparsity"]
    assert sparsity["requested"] is True
    assert "2:4" in sparsity["note"]
    # conv1 (3 input channels, dense) and conv2 (2:4 after pruning) count; the depthwise conv does not.
    assert sparsity["onnx_weights"] == {"checked": True, "dense_conv_layers": 2, "two_four_sparse_layers": 1,
                                        "two_four_sparse_examples": ["conv2"]}  # fmt: skip
    assert sparsity["builder_eligible_layers"] == ["conv1", "conv2"]
    assert sparsity["builder_sparse_layers"] == ["conv2"]

    dense = build_engine(cache, onnx_artifact(tmp_path / "dense", "fp16"), EngineSettings("fp16", 3, False),
                         trt=fake, gpu=ORIN)  # fmt: skip
    assert dense.manifest["sparsity"]["requested"] is False
    assert dense.manifest["sparsity"]["onnx_weights"]["two_four_sparse_layers"] == 0
    assert "builder_eligible_layers" not in dense.manifest["sparsity"]


def test_builder_sparsity_report_says_none_when_the_builder_is_silent() -> None:
    report = builder_sparsity_report([("INFO", "Total Activation Memory: 123"), ("WARNING", "something else")])
    assert report == {"builder_eligible_layers": None, "builder_sparse_layers": None, "builder_messages": []}


def test_weight_sparsity_follows_dequantize_to_int8_weights(tmp_path: Path) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    source = write_conv_model(tmp_path / "fp32.onnx", sparse_pointwise=True)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.left = [{"images": np.random.default_rng(i).random(INPUT_SHAPE, np.float32)} for i in range(2)]

        def get_next(self) -> dict | None:
            return self.left.pop() if self.left else None

    quantized = tmp_path / "int8.onnx"
    quantize_static(str(source), str(quantized), Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"])
    report = onnx_weight_sparsity(quantized)
    assert report["dense_conv_layers"] == 2 and report["two_four_sparse_layers"] == 1


# --- the runtime, registered and honest about what is missing ---------------------------------------

def test_tensorrt_runtime_is_registered_and_compile_fails_as_unavailable_without_it(tmp_path: Path) -> None:
    assert "tensorrt" in registry.names()
    runtime = get_runtime("tensorrt")
    if runtime.availability().usable:
        pytest.skip("TensorRT and a GPU are usable here; the real test below covers them")
    axes = {"precision": "fp16", "trt_opt_level": 3, "sparsity": False}
    cache = ArtifactCache(tmp_path / "cache")
    with pytest.raises(RuntimeUnavailable) as raised:
        runtime.compile(onnx_artifact(tmp_path, "fp16"), axes, TensorRTOptions(), cache)
    assert "tensorrt" in str(raised.value).lower() or "gpu" in str(raised.value).lower()
    assert not (cache.root / trt_stage.STAGE).exists()  # nothing was built


def test_engine_settings_come_from_the_variant_axes_and_runtime_options() -> None:
    from yolobench.runtimes.tensorrt_runtime import engine_settings

    axes = {"precision": "int8", "trt_opt_level": 5, "sparsity": True}
    assert engine_settings(axes, TensorRTOptions(trt_workspace_mb=512)) == EngineSettings("int8", 5, True, 512)
    # Axes the sweep does not vary take the runtime's declared defaults (TensorRT's own level 3, no sparsity).
    assert engine_settings({"precision": "fp16"}, TensorRTOptions()) == EngineSettings("fp16", 3, False, 1024)


def test_measuring_modules_import_without_pydantic_or_torch() -> None:
    """scripts/gpu_check.py runs these on a GPU host that has numpy and the runtimes but no pydantic or torch."""
    import subprocess

    code = ("import sys, yolobench.runtimes.tensorrt_runtime, yolobench.runtimes.onnxruntime_runtime, "
            "yolobench.stages.tensorrt, yolobench.gpu; "
            "print(sorted(m for m in ('pydantic', 'yaml', 'torch', 'ultralytics', 'mlflow', 'optuna') if m in sys.modules))")  # fmt: skip
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"


# --- the session's contract with CUDA (a fake CUDA: this host has no GPU) -------------------------------

class FakeDeviceMemory(dict):
    """address -> array, plus the ordered log of what was put on the stream."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple] = []


class FakeCuda:
    """Stands in for yolobench.gpu.Cuda: device buffers are numpy arrays at fake addresses; every stream
    operation is logged in order, and events "elapse" by fixed amounts so phase times can be checked."""

    STREAM = 0xC0FFEE

    def __init__(self, memory: FakeDeviceMemory) -> None:
        self.memory = memory
        self.next_address = 0x1000
        self.event_times: dict[int, float] = {}
        self.freed: list[int] = []

    def _address(self) -> int:
        self.next_address += 0x1000
        return self.next_address

    def malloc(self, nbytes: int) -> int:
        address = self._address()
        self.memory[address] = np.zeros(nbytes // 4, np.float32)
        return address

    def free(self, pointer: int) -> None:
        self.freed.append(pointer)

    def pinned_array(self, shape: tuple[int, ...], dtype: np.dtype) -> tuple[int, np.ndarray]:
        return self._address(), np.zeros(shape, dtype)

    def free_pinned(self, pointer: int) -> None:
        self.freed.append(pointer)

    def stream(self) -> int:
        return self.STREAM

    def destroy_stream(self, stream: int) -> None:
        self.memory.log.append(("destroy_stream", stream))

    def event(self) -> int:
        return self._address()

    def destroy_event(self, event: int) -> None:
        pass

    def record(self, event: int, stream: int) -> None:
        self.event_times[event] = 1.5 * len(self.memory.log)  # later operations, later times
        self.memory.log.append(("record", event, stream))

    def elapsed_ms(self, start: int, end: int) -> float:
        return self.event_times[end] - self.event_times[start]

    def synchronize(self, stream: int) -> None:
        self.memory.log.append(("synchronize", stream))

    def to_device_async(self, device: int, host: np.ndarray, stream: int) -> None:
        self.memory[device][...] = host.reshape(-1)  # device buffers are flat, as real ones are
        self.memory.log.append(("h2d", device, stream))

    def to_host_async(self, host: np.ndarray, device: int, stream: int) -> None:
        host[...] = self.memory[device].reshape(host.shape)
        self.memory.log.append(("d2h", device, stream))


def test_session_copies_in_runs_and_copies_out_on_one_stream_timing_each_phase() -> None:
    from yolobench.runtimes.tensorrt_runtime import TensorRTSession

    fake = make_fake_tensorrt("10.3.0")
    memory = FakeDeviceMemory()
    fake.device_memory = memory
    cuda = FakeCuda(memory)
    session = TensorRTSession(b"fake-engine:{}", trt=fake, cuda=cuda, engine_manifest={"gpu": "Orin", "typing": "weak"})
    tensor = np.random.default_rng(0).random((1, 3, 4, 4), np.float32)
    output = session.infer(tensor)
    np.testing.assert_array_equal(output, tensor * 2)  # in through the input buffer, out through the output's
    operations = [entry[0] for entry in memory.log]
    assert operations == ["record", "h2d", "record", "execute", "record", "d2h", "record", "synchronize"]
    assert {entry[-1] for entry in memory.log} == {FakeCuda.STREAM}  # everything on the session's one stream
    assert fake.records.executions == [FakeCuda.STREAM]  # execute_async_v3 got the raw stream handle
    # Events 1.5 ms apart per logged operation: copy in, compute, copy out each span two operations.
    assert session.phase_timings.metrics() == pytest.approx({
        "gpu_compute_ms_p50": 3.0, "gpu_compute_ms_p90": 3.0, "gpu_compute_ms_p99": 3.0, "gpu_compute_ms_mean": 3.0,
        "gpu_h2d_ms_mean": 3.0, "gpu_d2h_ms_mean": 3.0, "gpu_e2e_ms_p50": 9.0, "gpu_e2e_ms_p90": 9.0,
        "gpu_e2e_ms_p99": 9.0, "gpu_timed_calls": 1.0})  # fmt: skip
    second = session.infer(tensor + 1)
    np.testing.assert_array_equal(output, tensor * 2)  # the first result is a copy, not the reused buffer
    np.testing.assert_array_equal(second, (tensor + 1) * 2)
    with pytest.raises(ModelMismatch, match="does not match"):
        session.infer(np.zeros((1, 3, 8, 8), np.float32))
    info = session.info()
    assert info["gpu"] == "Orin" and info["phase_timing"] == "cuda_events"
    assert info["io"] == {"images": {"shape": [1, 3, 4, 4], "dtype": "float32"},
                          "output0": {"shape": [1, 3, 4, 4], "dtype": "float32"}}  # fmt: skip
    session.close()
    assert len(cuda.freed) == 4 and ("destroy_stream", FakeCuda.STREAM) in memory.log  # 2 device + 2 pinned buffers
    session.close()  # twice: nothing more is released
    assert len(cuda.freed) == 4


def test_runtime_compiles_the_variants_engine_through_the_cache_and_open_runs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from yolobench.runtimes import tensorrt_runtime

    fake = make_fake_tensorrt("10.3.0")
    fake.device_memory = FakeDeviceMemory()
    # Only what this host lacks is replaced: the tensorrt module, the GPU and its memory.
    monkeypatch.setattr(tensorrt_runtime, "import_tensorrt", lambda: fake)
    monkeypatch.setattr(tensorrt_runtime, "gpu_identity", lambda: ORIN)
    monkeypatch.setattr(tensorrt_runtime, "Cuda", lambda: FakeCuda(fake.device_memory))
    cache = ArtifactCache(tmp_path / "cache")
    runtime = get_runtime("tensorrt")
    model = onnx_artifact(tmp_path, "int8")
    axes = {"precision": "int8", "trt_opt_level": 5, "sparsity": True}
    options = TensorRTOptions(trt_workspace_mb=256)
    engine = runtime.compile(model, axes, options, cache)
    (built,) = fake.records.builds
    assert built["builder_flags"] == ["FP16", "INT8", "SPARSE_WEIGHTS", "TF32"]
    assert built["builder_optimization_level"] == 5 and built["pool_limits"] == {"WORKSPACE": 256 * 2**20}
    # The engine is a cached build stage of the model, with its build time in its manifest (the compile step's).
    assert cache.lookup(trt_stage.STAGE, engine.key) == engine and engine.manifest["parent"] == model.key
    assert engine.manifest["build_s"] >= 0 and engine.path.is_relative_to(cache.root / "tensorrt")
    assert runtime.compile(model, axes, options, cache) == engine and len(fake.records.builds) == 1  # cached
    session = runtime.open(model, engine, axes, options, DecodeSettings(), tmp_path)
    tensor = np.ones((1, 3, 4, 4), np.float32)
    np.testing.assert_array_equal(session.infer(tensor), tensor * 2)
    assert session.info()["builder_flags"] == ["INT8", "FP16", "SPARSE_WEIGHTS"]
    assert session.info()["engine_key"] == engine.key and session.output_path is None
    session.close()
    with pytest.raises(ValueError, match="needs the engine its compile"):
        runtime.open(model, None, axes, options, DecodeSettings(), tmp_path)


def test_session_refuses_an_engine_tensorrt_cannot_deserialise() -> None:
    from yolobench.runtimes.tensorrt_runtime import TensorRTSession

    fake = make_fake_tensorrt("10.3.0")
    fake.device_memory = FakeDeviceMemory()
    with pytest.raises(BuildFailed, match="deserialise"):
        TensorRTSession(b"an engine from another GPU", trt=fake, cuda=FakeCuda(fake.device_memory))


# --- real TensorRT on a real GPU (skipped where absent) -------------------------------------------

def _tensorrt_or_skip():
    try:
        trt = import_tensorrt()
    except TensorRTUnavailable as error:
        pytest.skip(f"TensorRT is not installed here: {error}")
    reason = gpu_unavailable_reason()
    if reason:
        pytest.skip(f"no NVIDIA GPU here: {reason}")
    return trt


def test_every_cuda_call_is_one_the_real_cuda_python_takes() -> None:
    """Without a GPU the real cuda-python still checks each call's arguments before the driver answers: every
    call the session makes must come back as CUDA's own error (CudaError), never a TypeError or AttributeError."""
    from yolobench.gpu import Cuda, CudaError, GpuUnavailable, cuda_runtime, stream_handle

    if gpu_unavailable_reason() is None:
        pytest.skip("a GPU is here: test_cuda_python_buffers_round_trip_and_time_with_events runs these for real")
    try:
        runtime = cuda_runtime()
    except GpuUnavailable as error:
        pytest.skip(str(error))
    cuda, host = Cuda(runtime), np.zeros(4, np.float32)
    stream, event = runtime.cudaStream_t(0), runtime.cudaEvent_t(0)
    calls = {
        "malloc": lambda: cuda.malloc(16), "free": lambda: cuda.free(0x1000),
        "pinned_array": lambda: cuda.pinned_array((2, 2), np.float32), "free_pinned": lambda: cuda.free_pinned(0x1000),
        "stream": cuda.stream, "destroy_stream": lambda: cuda.destroy_stream(stream),
        "event": cuda.event, "destroy_event": lambda: cuda.destroy_event(event),
        "record": lambda: cuda.record(event, stream), "elapsed_ms": lambda: cuda.elapsed_ms(event, event),
        "synchronize": lambda: cuda.synchronize(stream),
        "to_device_async": lambda: cuda.to_device_async(0x1000, host, stream),
        "to_host_async": lambda: cuda.to_host_async(host, 0x1000, stream),
    }  # fmt: skip
    answered = {}
    for name, call in calls.items():
        with pytest.raises(CudaError) as raised:
            call()
        answered[name] = str(raised.value).split(" failed:")[0]
    assert set(answered) == {name for name in vars(Cuda) if not name.startswith("_")}  # every public call tried
    assert answered["to_device_async"] == answered["to_host_async"] == "cudaMemcpyAsync"
    assert stream_handle(stream) == 0  # what execute_async_v3 gets: the raw handle


@pytest.mark.gpu
def test_cuda_python_buffers_round_trip_and_time_with_events() -> None:
    reason = gpu_unavailable_reason()
    if reason:
        pytest.skip(f"no NVIDIA GPU here: {reason}")
    from yolobench.gpu import Cuda

    cuda = Cuda()
    stream, start, end = cuda.stream(), cuda.event(), cuda.event()
    source_pointer, source = cuda.pinned_array((1, 3, 64, 64), np.float32)
    target_pointer, target = cuda.pinned_array((1, 3, 64, 64), np.float32)
    source[...] = np.random.default_rng(0).random(source.shape, np.float32)
    target[...] = -1.0
    device = cuda.malloc(source.nbytes)
    try:
        cuda.record(start, stream)
        cuda.to_device_async(device, source, stream)
        cuda.to_host_async(target, device, stream)
        cuda.record(end, stream)
        cuda.synchronize(stream)
        assert np.array_equal(source, target)
        assert cuda.elapsed_ms(start, end) > 0
    finally:
        cuda.free(device)
        cuda.free_pinned(source_pointer)
        cuda.free_pinned(target_pointer)


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_real_engine_builds_runs_and_matches_onnxruntime(tmp_path: Path, precision: str) -> None:
    trt = _tensorrt_or_skip()
    import onnxruntime as ort

    from yolobench.gpu import gpu_identity
    from yolobench.runtimes.tensorrt_runtime import TensorRTSession

    model = onnx_artifact(tmp_path, "fp32")
    if precision == "fp16":
        import onnx
        from onnxruntime.transformers import float16

        fp16_path = tmp_path / "model_fp16_converted.onnx"
        onnx.save(float16.convert_float_to_float16(onnx.load(str(model.path)), keep_io_types=True), str(fp16_path))
        model = Artifact(model.key + "16", "fp16", fp16_path, {**model.manifest, "precision": "fp16"})
    cache = ArtifactCache(tmp_path / "cache")
    engine = build_engine(cache, model, EngineSettings(precision, 3, False, WORKSPACE_MB), trt=trt, gpu=gpu_identity())
    session = TensorRTSession(engine.path.read_bytes(), trt=trt, engine_manifest=engine.manifest)
    try:
        tensor = np.random.default_rng(1).random(INPUT_SHAPE, np.float32)
        output = session.infer(tensor)
        reference = ort.InferenceSession(str(model.path), providers=["CPUExecutionProvider"]).run(None, {"images": tensor})[0]
        assert output.shape == OUTPUT_SHAPE
        error = np.linalg.norm(output - reference) / np.linalg.norm(reference)
        assert error < (1e-2 if precision == "fp32" else 3e-2)  # fp32 may use TF32 tensor cores
        for _ in range(5):
            session.infer(tensor)
        phases = session.phase_timings.metrics()
        assert phases["gpu_compute_ms_p50"] > 0 and phases["gpu_e2e_ms_p50"] >= phases["gpu_compute_ms_p50"]
        assert session.info()["gpu"] == gpu_identity().name
    finally:
        session.close()
    rebuilt = build_engine(cache, model, EngineSettings(precision, 3, False, WORKSPACE_MB), trt=trt, gpu=gpu_identity())
    assert rebuilt.key == engine.key and cache.builds[trt_stage.STAGE] == 1

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from yolobench.keys import variant_key
from yolobench.space import Space
from yolobench.spec import SpecError, load_spec, parse_spec

SWEEPS = Path(__file__).resolve().parent.parent / "yolobench" / "targets"

SEED_GRIDS = {
    "rtx4070-ort": 135,
    "cpu-ort": 135,
    "oak-d-pro": 150,
    "orin-nano-ort": 135,
    "orin-nano-trt": 180,
}
SEED_BASELINES = {
    "rtx4070-ort": {"scale": "m", "precision": "fp32", "imgsz": 640, "ort_level": "disable"},
    "cpu-ort": {"scale": "m", "precision": "fp32", "imgsz": 640, "ort_level": "disable"},
    "oak-d-pro": {"scale": "m", "precision": "fp16", "imgsz": 640},
    "orin-nano-ort": {"scale": "m", "precision": "fp16", "imgsz": 640, "ort_level": "disable"},
    "orin-nano-trt": {"scale": "m", "precision": "fp16", "imgsz": 640},
    "rpi4-ort": {"scale": "n", "precision": "fp32", "imgsz": 640, "ort_level": "disable"},
}


def minimal(**overrides):
    spec = {
        "name": "t",
        "model": {"weights": "yolo11{scale}.pt"},
        "data": {"yaml": "coco128.yaml"},
        "axes": {"scale": ["n"], "precision": ["fp32", "int8"], "imgsz": [320], "ort_level": ["all"]},
        "baseline": {"scale": "n", "precision": "fp32", "imgsz": 320, "ort_level": "all"},
    }
    spec.update(overrides)
    return spec


@pytest.mark.parametrize("name,count", sorted(SEED_GRIDS.items()))
def test_seed_grid_counts(name: str, count: int) -> None:
    assert Space.from_spec(load_spec(SWEEPS / f"{name}.yaml")).count() == count


@pytest.mark.parametrize("name,expected", sorted(SEED_BASELINES.items()))
def test_seed_baselines(name: str, expected: dict) -> None:
    space = Space.from_spec(load_spec(SWEEPS / f"{name}.yaml"))
    baseline = space.baseline.as_dict()
    assert {k: baseline[k] for k in expected} == expected
    assert space.baseline in set(space.variants())


def test_every_sweep_file_validates() -> None:
    files = sorted(SWEEPS.glob("*.yaml"))
    assert {f.stem for f in files} >= set(SEED_BASELINES) | {"quickstart"}
    for path in files:
        assert Space.from_spec(load_spec(path)).count() > 0


def test_quickstart_is_small_and_offline() -> None:
    spec = load_spec(SWEEPS / "quickstart.yaml")
    assert spec.data.synthetic is not None and spec.model.train is not None
    assert 18 <= Space.from_spec(spec).count() <= 27


def test_unknown_key_is_refused_with_allowed_keys() -> None:
    with pytest.raises(SpecError) as error:
        parse_spec(minimal(runtime={"name": "onnxruntime", "provder": "cpu"}), "f.yaml")
    message = str(error.value)
    assert "runtime.provder" in message and "allowed keys" in message and "provider" in message


def test_bad_value_names_field_value_and_allowed() -> None:
    with pytest.raises(SpecError) as error:
        parse_spec(minimal(axes={"precision": ["fp32", "fp8"], "imgsz": [320], "ort_level": ["all"]}))
    message = str(error.value)
    assert "axes.precision" in message and "'fp8'" in message and "'int8'" in message


def test_imgsz_must_be_multiple_of_32() -> None:
    with pytest.raises(SpecError, match="imgsz 300"):
        parse_spec(minimal(axes={"imgsz": [320, 300], "ort_level": ["all"]}))


def test_axis_of_another_runtime_is_refused() -> None:
    axes = {"scale": ["n"], "precision": ["fp32"], "imgsz": [320], "shaves": [4]}
    with pytest.raises(SpecError, match="shaves.*does not apply to runtime 'onnxruntime'"):
        parse_spec(minimal(axes=axes, baseline={"scale": "n", "precision": "fp32", "imgsz": 320, "shaves": 4}))


def oak(**overrides):
    return minimal(**{"runtime": {"name": "depthai"},
                      "axes": {"scale": ["n"], "precision": ["fp16"], "imgsz": [320], "shaves": [6]},
                      "baseline": {"scale": "n", "precision": "fp16", "imgsz": 320, "shaves": 6}, **overrides})


def test_depthai_needs_an_opset_openvino_reads() -> None:
    for opset in (None, 17):
        with pytest.raises(SpecError, match=rf"export\.opset = {opset}: not allowed for runtime 'depthai'.*"
                                            r"allowed: 11\.\.16"):
            parse_spec(oak(export={"opset": opset}))
    assert parse_spec(oak(export={"opset": 12})).export.opset == 12


def test_a_precision_the_runtime_cannot_run_is_refused() -> None:
    spec = oak(export={"opset": 12})
    with pytest.raises(SpecError, match=r"axes\.precision = \['fp16', 'fp32'\]: 'fp32' not allowed for runtime "
                                        r"'depthai'; allowed: fp16"):
        parse_spec({**spec, "axes": {**spec["axes"], "precision": ["fp16", "fp32"]}})


def test_a_runtime_axis_value_is_refused_by_name_value_and_what_is_allowed() -> None:
    spec = oak(export={"opset": 12})
    with pytest.raises(SpecError) as error:
        parse_spec({**spec, "axes": {**spec["axes"], "shaves": [6, 17], "on_device_decode": [True, "off"]}})
    lines = str(error.value).splitlines()
    assert lines[0].startswith("<sweep>: axes.shaves.1 = 17: 17 is not allowed; allowed: 1, 2, 3, ")
    assert lines[1] == "<sweep>: axes.on_device_decode.1 = 'off': 'off' is not a bool"
    with pytest.raises(SpecError, match=r"^<sweep>: axes\.on_device_decode = 'yes': an axis needs a list of values$"):
        parse_spec({**spec, "axes": {**spec["axes"], "on_device_decode": "yes"}})
    with pytest.raises(SpecError, match=r"axes\.threads\.0 = -1: -1 is not allowed; it must be >= 0"):
        parse_spec(minimal(axes={**minimal()["axes"], "threads": [-1]}))
    with pytest.raises(SpecError, match=r"axes\.ort_level = \['all', 'all'\]: values repeat"):
        parse_spec(minimal(axes={**minimal()["axes"], "ort_level": ["all", "all"]}))


def test_runtime_axes_take_the_runtime_s_order_whatever_the_file_s() -> None:
    spec = oak(export={"opset": 12})
    spec = parse_spec({**spec, "axes": {"on_device_decode": [False], **spec["axes"]},
                       "baseline": {**spec["baseline"], "on_device_decode": False}})
    assert list(spec.axes.as_dict()) == ["scale", "precision", "imgsz", "shaves", "on_device_decode"]
    assert spec.axes.shaves == [6]  # a runtime axis reads like a field


def test_an_unknown_runtime_is_refused_with_the_registered_ones() -> None:
    from yolobench.runtimes import registry

    with pytest.raises(SpecError) as error:
        parse_spec(minimal(runtime={"name": "hailo8"}), "f.yaml")
    message = str(error.value)
    assert message.startswith("f.yaml: runtime.name = 'hailo8': unknown runtime; known runtimes: ")
    assert all(name in message for name in registry.names())


def test_each_runtime_takes_only_its_own_options() -> None:
    from yolobench.runtimes.options import DepthaiOptions, OnnxRuntimeOptions, TensorRTOptions

    ort = parse_spec(minimal(runtime={"name": "onnxruntime", "provider": "cuda",
                                      "provider_options": {"gpu_mem_limit": 2**30}}))
    assert isinstance(ort.runtime, OnnxRuntimeOptions) and ort.runtime.provider_options == {"gpu_mem_limit": 2**30}
    assert isinstance(parse_spec(minimal()).runtime, OnnxRuntimeOptions)  # no runtime section: ONNX Runtime
    trt = {"scale": ["n"], "precision": ["fp16"], "imgsz": [320]}
    trt_spec = minimal(runtime={"name": "tensorrt", "trt_workspace_mb": 512}, axes=trt,
                       baseline={"scale": "n", "precision": "fp16", "imgsz": 320})
    assert isinstance(parse_spec(trt_spec).runtime, TensorRTOptions)
    with pytest.raises(SpecError, match=r"runtime\.provider_options = \{'trt_fp16_enable': True\}: unknown key; "
                                        r"allowed keys: name, cpu_affinity, trt_workspace_mb"):
        parse_spec({**trt_spec, "runtime": {"name": "tensorrt", "provider_options": {"trt_fp16_enable": True}}})
    with pytest.raises(SpecError, match=r"runtime\.trt_workspace_mb = 8: Input should be greater than or equal to 16"):
        parse_spec({**trt_spec, "runtime": {"name": "tensorrt", "trt_workspace_mb": 8}})
    with pytest.raises(SpecError, match=r"runtime\.depthai\.inference_threads = 3: .*less than or equal to 2"):
        parse_spec(oak(runtime={"name": "depthai", "depthai": {"inference_threads": 3}}, export={"opset": 12}))
    assert isinstance(parse_spec(oak(export={"opset": 12})).runtime, DepthaiOptions)
    dumped = parse_spec(trt_spec).model_dump(mode="json")["runtime"]  # the named runtime's model, not the base's
    assert dumped == {"name": "tensorrt", "cpu_affinity": None, "trt_workspace_mb": 512}


def test_a_cross_field_error_names_the_fields_without_printing_the_file() -> None:
    with pytest.raises(SpecError) as error:
        parse_spec(minimal(baseline={"scale": "n", "precision": "fp32", "imgsz": 320}), "f.yaml")
    assert str(error.value) == ("f.yaml: baseline must give one value for each axis ['imgsz', 'ort_level', "
                                "'precision', 'scale']; missing ['ort_level']")
    with pytest.raises(SpecError) as error:
        parse_spec(minimal(data={"yaml": "coco128.yaml", "synthetic": {}}), "f.yaml")
    assert str(error.value) == "f.yaml: data: give exactly one of data.yaml or data.synthetic"
    with pytest.raises(SpecError) as error:
        parse_spec({**minimal(axes={**minimal()["axes"], "width_multiple": [0.5]}),
                    "baseline": {**minimal()["baseline"], "width_multiple": 0.5}}, "f.yaml")
    assert str(error.value) == ("f.yaml: axes.width_multiple = [0.5]: changes the trained weights: it needs "
                                "model.train, not model.weights")


def test_baseline_must_cover_every_axis() -> None:
    with pytest.raises(SpecError, match="missing \\['ort_level'\\]"):
        parse_spec(minimal(baseline={"scale": "n", "precision": "fp32", "imgsz": 320}))


def test_baseline_must_be_in_the_grid() -> None:
    with pytest.raises(SpecError, match="baseline.imgsz = 640 is not one of axes.imgsz"):
        parse_spec(minimal(baseline={"scale": "n", "precision": "fp32", "imgsz": 640, "ort_level": "all"}))


def test_model_needs_exactly_one_source() -> None:
    with pytest.raises(SpecError, match="exactly one of model.weights"):
        parse_spec(minimal(model={}))


def test_exclusions_reduce_the_count() -> None:
    spec = parse_spec(minimal(exclude=[{"precision": "int8"}]))
    space = Space.from_spec(spec)
    assert space.count() == 1
    assert [v["precision"] for v in space.variants()] == ["fp32"]


def test_variant_key_depends_on_variant_and_model() -> None:
    spec = parse_spec(minimal())
    variants = list(Space.from_spec(spec).variants())
    keys = {variant_key(spec, v) for v in variants}
    assert len(keys) == len(variants) == 2
    other = parse_spec(minimal(model={"weights": "mine.pt"}))
    assert variant_key(other, variants[0]) != variant_key(spec, variants[0])
    assert len(variant_key(spec, variants[0])) >= 16


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "yolobench.cli", *args], capture_output=True, text=True)


@pytest.mark.parametrize("name,count", sorted(SEED_GRIDS.items()))
def test_plan_prints_variant_count(name: str, count: int) -> None:
    result = run_cli("plan", str(SWEEPS / f"{name}.yaml"))
    assert result.returncode == 0, result.stderr
    assert f"variants: {count}\n" in result.stdout
    assert "baseline: m-" in result.stdout


def test_plan_list_and_dry_run_agree() -> None:
    plan = run_cli("plan", str(SWEEPS / "quickstart.yaml"), "--list")
    dry = run_cli("sweep", str(SWEEPS / "quickstart.yaml"), "--dry-run", "--list")
    assert plan.stdout == dry.stdout
    listed = [line for line in plan.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert len(listed) == Space.from_spec(load_spec(SWEEPS / "quickstart.yaml")).count()


def test_bad_file_exits_nonzero_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {weights: a.pt}\ndata: {yaml: d.yaml}\naxes: {precision: [fp8]}\nbaseline: {}\n")
    result = run_cli("plan", str(bad))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "axes.precision.0 = 'fp8'" in result.stderr


@pytest.mark.parametrize("image_size", [48, 64, 320])
def test_synthetic_dataset_is_deterministic_and_varied(tmp_path: Path, image_size: int) -> None:
    from yolobench.data.dataset import load_dataset, read_labels
    from yolobench.data.synthetic import CLASS_NAMES, make_synthetic_dataset

    first = make_synthetic_dataset(tmp_path / "a", train_images=24, val_images=6, image_size=image_size, seed=3)
    second = make_synthetic_dataset(tmp_path / "b", train_images=24, val_images=6, image_size=image_size, seed=3)
    data = load_dataset(first)
    assert len(data.train_images) == 24 and len(data.val_images) == 6 and data.names == dict(enumerate(CLASS_NAMES))
    for a, b in zip(data.train_images, load_dataset(second).train_images):
        assert a.read_bytes() == b.read_bytes()
    labels = [read_labels(p) for p in data.train_images]
    assert any(len(l) == 0 for l in labels) or image_size != 320  # some images carry no object
    classes = {int(c) for l in labels for c in l[:, 0]}
    assert len(classes) >= 3
    boxes = [row for l in labels for row in l]
    assert all(0 <= row[1] <= 1 and 0 < row[3] <= 1 for row in boxes)

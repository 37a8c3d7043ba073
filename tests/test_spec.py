from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from yolobench.space import Space, variant_key
from yolobench.spec import SpecError, load_spec, parse_spec

SWEEPS = Path(__file__).resolve().parent.parent / "sweeps"

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


def test_depthai_needs_an_opset_openvino_reads() -> None:
    axes = {"scale": ["n"], "precision": ["fp16"], "imgsz": [320], "shaves": [6]}
    oak = minimal(runtime={"name": "depthai"}, axes=axes, baseline={"scale": "n", "precision": "fp16", "imgsz": 320,
                                                                    "shaves": 6})  # fmt: skip
    for opset in (None, 17):
        with pytest.raises(SpecError, match=f"export.opset {opset} not allowed for depthai.*allowed: 11..16"):
            parse_spec({**oak, "export": {"opset": opset}})
    assert parse_spec({**oak, "export": {"opset": 12}}).export.opset == 12


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

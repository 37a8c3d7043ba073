"""The converters' one interface: the registry (every converter is a choice of the sweep file, an unknown one is
refused with the known ones, a plug-in registers the same way and is tested by the same checks), the checks made
before anything is sent, the compile stage's caching, and the legacy blobconverter service's exact request
(checked on a local fake of the service and against the request the `blobconverter` package itself sends)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.fake_blobconverter import dummy_blob, fake_blobconverter
from tests.tiny_yolo11 import tiny_yolo11_export, write_tiny_yolo11
from yolobench.cache import ArtifactCache, BuildFailed
from yolobench.converters import (
    ConversionRequest, Converter, converter_class, converter_names, make_converter, register_converter,
)  # fmt: skip
from yolobench.converters.blobconverter import BlobConverter, BlobSettings, request_blob
from yolobench.errors import ModelMismatch
from yolobench.stages.blob import OPTIMIZER_PARAMS

BUILT_IN = ["blobconverter", "hubai", "modelconverter"]


@pytest.fixture()
def head(tmp_path: Path):
    from yolobench.stages.blob import rvc2_detection_head

    cache = ArtifactCache(tmp_path / "cache")
    return cache, rvc2_detection_head(cache, tiny_yolo11_export(cache))


@pytest.mark.parametrize("name", BUILT_IN)
def test_each_converter_describes_itself_and_says_why_it_cannot_run(name: str) -> None:
    converter = make_converter(name)
    assert isinstance(converter, Converter) and converter.name == name and converter.summary
    low, high = converter.opsets
    assert 7 <= low <= 12 <= high  # the OAK exports' opset 12 is in every range
    availability = converter.availability()
    assert isinstance(availability.usable, bool) and availability.reason.strip()
    assert all(isinstance(v, str) for v in converter.versions().values()) and converter.versions()
    assert "url" not in str(converter.settings()).lower()  # where it runs is not what it makes


def test_the_sweep_file_picks_a_registered_converter_and_an_unknown_one_is_refused() -> None:
    from yolobench.spec import SpecError, parse_spec
    from tests.conftest import OAK_TINY_SWEEP

    assert converter_names() == BUILT_IN
    spec = parse_spec({**OAK_TINY_SWEEP, "runtime": {"name": "depthai", "depthai": {"converter": "modelconverter"}}})
    assert spec.runtime.depthai.converter == "modelconverter"
    with pytest.raises(SpecError, match=r"runtime\.depthai\.converter = 'blobserver': .*unknown converter "
                                        r"'blobserver'; allowed: blobconverter, hubai, modelconverter"):
        parse_spec({**OAK_TINY_SWEEP, "runtime": {"name": "depthai", "depthai": {"converter": "blobserver"}}})
    with pytest.raises(KeyError, match="known converters: blobconverter, hubai, modelconverter"):
        converter_class("blobserver")
    # An earlier release's section (a service URL, no converter) still means the blobconverter service.
    legacy = parse_spec({**OAK_TINY_SWEEP, "runtime": {"name": "depthai", "depthai": {"converter_url": "http://bc:8"}}})
    assert legacy.runtime.depthai.converter_name == "blobconverter"
    assert legacy.runtime.model_dump(mode="json", exclude_defaults=True) == {"depthai": {"converter_url": "http://bc:8"}}
    assert spec.runtime.depthai.converter_name == "modelconverter"


def test_a_plug_in_converter_registers_through_the_same_door(head, monkeypatch) -> None:
    from yolobench import converters
    from yolobench.stages.rvc2_compile import compile_archive
    from tests.test_depthai import StaticConverter

    monkeypatch.setattr(converters, "_REGISTRY", dict(converters._REGISTRY))
    register_converter("static", StaticConverter)
    assert "static" in converter_names() and converter_class("static") is StaticConverter
    cache, model = head
    converter = StaticConverter()
    first = compile_archive(cache, model, converter, 64, 4)
    assert compile_archive(cache, model, converter, 64, 8) == first  # a superblob serves every SHAVE count
    assert len(converter.conversions) == 1 and cache.builds["nn_archive"] == 1


# --- checks before anything is sent ---------------------------------------------------------------------


def checked(cache: ArtifactCache, **model: Any) -> None:
    from yolobench.stages.blob import rvc2_detection_head
    from yolobench.stages.rvc2_compile import compile_archive
    from tests.test_depthai import StaticConverter

    imgsz = model.pop("compile_imgsz", 64)
    converter = StaticConverter()
    try:
        compile_archive(cache, rvc2_detection_head(cache, tiny_yolo11_export(cache, **model)), converter, imgsz)
    finally:
        assert converter.conversions == []


def test_each_check_names_the_field_and_its_value(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "cache")
    with pytest.raises(ModelMismatch, match=r"^imgsz = 80: not a multiple of the model's stride 32"):
        checked(cache, imgsz=80, compile_imgsz=80)
    with pytest.raises(ModelMismatch, match=r"^input 'images' shape = \[1, 3, 64, 64\]: the variant's imgsz is 96"):
        checked(cache, compile_imgsz=96)
    with pytest.raises(ModelMismatch, match=r"^opset = 17: converter 'static' reads ONNX opsets 11\.\.16"):
        checked(cache, opset=17)


def test_a_dynamic_input_shape_and_a_class_count_mismatch_are_refused(tmp_path: Path) -> None:
    import onnx

    from yolobench.converters.validation import check_classes, check_static_input

    path = write_tiny_yolo11(tmp_path / "m.onnx")
    model = onnx.load(str(path))
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "height"
    onnx.save(model, str(tmp_path / "dynamic.onnx"))
    with pytest.raises(ModelMismatch, match=r"input 'images' shape = \[1, 3, 'height', 64\]: not static"):
        check_static_input(tmp_path / "dynamic.onnx", 64)
    head = {"outputs": {"output1_yolov6r2": [1, 9, 8, 8]}}
    check_classes(head, ["a", "b", "c", "d"])
    with pytest.raises(ModelMismatch, match=r"model\.heads\[0\]\.metadata\.n_classes = 80 .* \{'output1_yolov6r2': 4\}"):
        check_classes(head, [str(i) for i in range(80)])


# --- the legacy blobconverter service -------------------------------------------------------------------


def test_the_service_receives_model_shaves_fp16_optimizer_parameters_and_openvino_version(tmp_path: Path) -> None:
    model = write_tiny_yolo11(tmp_path / "model_rvc2head.onnx")
    with fake_blobconverter() as service:
        blob = request_blob(model, BlobSettings(shaves=6, url=service.url))
    assert blob == service.blob
    (request,) = service.requests
    assert request.path == "/compile" and request.query == {"version": "2022.1", "no_cache": "False"}
    assert request.form == {"myriad_shaves": "6", "myriad_params_advanced": "-ip U8", "data_type": "FP16",
                            "download_ir": "False", "zoo_type": "intel", "name": "model_rvc2head"}
    assert request.files["model_rvc2head.onnx"] == ("model_rvc2head.onnx", model.read_bytes())
    assert request.config["model_optimizer_args"] == [
        "--mean_values=[0,0,0]", "--scale_values=[255,255,255]", "--reverse_input_channels",
        "--data_type=FP16", "--input_model=$dl_dir/FP16/model_rvc2head.onnx"]
    assert request.config["files"] == [{"name": "FP16/model_rvc2head.onnx",
                                        "source": {"$type": "http", "url": "$REQUEST/model_rvc2head.onnx"}}]


def test_our_request_is_the_one_the_blobconverter_package_sends(tmp_path: Path, monkeypatch) -> None:
    blobconverter = pytest.importorskip("blobconverter")
    model = write_tiny_yolo11(tmp_path / "model_rvc2head.onnx")
    # The package first asks a public S3 bucket for a prebuilt blob; here that host does not exist, so it
    # answers as S3 does for an unknown blob (FileNotFoundError) and the package goes on to the service.
    monkeypatch.setitem(vars(blobconverter), "__download_from_s3_bucket",
                        lambda key, path: (_ for _ in ()).throw(FileNotFoundError(key)))
    monkeypatch.setitem(vars(blobconverter)["__defaults"], "output_dir", tmp_path / "bc-cache")
    monkeypatch.setitem(vars(blobconverter)["__defaults"], "silent", True)
    with fake_blobconverter() as service:
        reference = Path(blobconverter.from_onnx(
            model=str(model), data_type="FP16", shaves=5, version=blobconverter.Versions.v2022_1,
            optimizer_params=list(OPTIMIZER_PARAMS), url=service.url, output_dir=tmp_path / "out", use_cache=True))
        request_blob(model, BlobSettings(shaves=5, url=service.url))
    assert reference.read_bytes() == service.blob
    theirs, ours = service.requests
    assert (ours.path, ours.query, ours.form, ours.config) == (theirs.path, theirs.query, theirs.form, theirs.config)
    name = "model_rvc2head.onnx"  # the config part's file name is a temp name on their side; its content is compared above
    assert ours.files[name] == theirs.files[name] and set(ours.files) == set(theirs.files)


def test_there_is_no_default_service_and_refusals_are_named(head, monkeypatch) -> None:
    from yolobench.stages.rvc2_compile import compile_archive

    cache, model = head
    monkeypatch.delenv("YOLOBENCH_BLOBCONVERTER_URL", raising=False)
    assert "no service URL" in BlobConverter().availability().reason
    with pytest.raises(BuildFailed, match="no service URL"):
        compile_archive(cache, model, BlobConverter(), 64, 6)
    with fake_blobconverter() as service:
        service.status = 400
        with pytest.raises(BuildFailed, match="answered 400: .*Model Optimizer failed"):
            compile_archive(cache, model, BlobConverter(service.url), 64, 6)
        service.status, service.blob = 200, b"<html>not a blob</html>"
        with pytest.raises(BuildFailed, match="not a Myriad X blob"):
            compile_archive(cache, model, BlobConverter(service.url), 64, 6)
    assert cache.builds["nn_archive"] == 0


def test_the_legacy_service_makes_one_archive_per_shave_count(head, monkeypatch) -> None:
    from yolobench.stages.nn_archive import read_archive
    from yolobench.stages.rvc2_compile import compile_archive

    cache, model = head
    with fake_blobconverter() as service:
        monkeypatch.setenv("YOLOBENCH_BLOBCONVERTER_URL", service.url + "/")
        four = compile_archive(cache, model, BlobConverter(), 64, 4)
        again = compile_archive(cache, model, BlobConverter(service.url), 64, 4)  # another spelling, same archive
        eight = compile_archive(cache, model, BlobConverter(), 64, 8)
        older = compile_archive(cache, model, BlobConverter(openvino_version="2021.4"), 64, 4)
    assert [r.form["myriad_shaves"] for r in service.requests] == ["4", "8", "4"]
    assert [r.query["version"] for r in service.requests] == ["2022.1", "2022.1", "2021.4"]
    assert four == again and len({four.key, eight.key, older.key}) == 3
    assert four.manifest["superblob"] is False and four.manifest["shaves"] == 4
    config, model_file, data = read_archive(four.path)
    assert data == dummy_blob() and model_file.endswith(".blob")


def test_requests_name_the_model_and_nothing_else(head) -> None:
    from yolobench.stages.rvc2_compile import _request

    _, model = head
    request = _request(model, "images", (1, 3, 64, 64), None)
    assert request == ConversionRequest(model.path, f"yolobench-{model.key[:12]}", "images", (1, 3, 64, 64), None)

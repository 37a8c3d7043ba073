"""The `modelconverter` converter: the config file and command line yolobench hands Luxonis' ModelConverter,
read back by ModelConverter's own CLI parser and config loader (in their own venv, as `make test` sets it up:
modelconv pins an onnx older than the project's), and the run itself through a stand-in `modelconverter`
executable that records what it got (no Docker here): the scratch folder, the environment without the HubAI key,
the output it leaves under ./output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.fake_blobconverter import dummy_superblob
from tests.tiny_yolo11 import tiny_yolo11_export
from yolobench.cache import ArtifactCache, BuildFailed
from yolobench.converters import ConversionRequest
from yolobench.converters.modelconverter import (
    CONFIG_NAME, OUTPUT_DIR, ModelConverter, converter_command, converter_config,
)  # fmt: skip

REPO = Path(__file__).resolve().parents[1]
CHECK_PYTHON = Path(sys.prefix) / "modelconverter-check" / "bin" / "python"
API_KEY = "hubai-secret-for-modelconverter-test"


@pytest.fixture()
def head(tmp_path: Path):
    from yolobench.stages.blob import rvc2_detection_head

    cache = ArtifactCache(tmp_path / "cache")
    return cache, rvc2_detection_head(cache, tiny_yolo11_export(cache))


def request_for(head_artifact) -> ConversionRequest:
    return ConversionRequest(head_artifact.path, "yolobench-test", "images", (1, 3, 64, 64))


@pytest.mark.slow  # a second Python that imports ModelConverter (seconds); CI's `make test` runs it
def test_modelconverter_s_own_cli_and_config_loader_read_what_yolobench_writes(head, tmp_path: Path) -> None:
    if not CHECK_PYTHON.exists():
        message = f"no ModelConverter venv at {CHECK_PYTHON.parent.parent}; `make test` creates it"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    _, model = head
    config_path = tmp_path / CONFIG_NAME
    config_path.write_text(yaml.safe_dump(converter_config(request_for(model)), sort_keys=False))
    argv = converter_command(config_path, "2022.3.0")
    done = subprocess.run([str(CHECK_PYTHON), str(REPO / "tests" / "modelconverter_probe.py")], capture_output=True,
                          text=True, timeout=300, check=False, input=json.dumps({"argv": argv[1:], "config": str(config_path)}))
    assert done.returncode == 0, done.stderr[-3000:]
    read = json.loads(done.stdout.strip().splitlines()[-1])
    assert argv[0] == "modelconverter" and read["launcher_arguments"] == {"tool_version": "2022.3.0"}
    assert read["command"] == "convert"
    assert read["arguments"] == {"platform": "rvc2", "path": str(config_path), "output_dir": OUTPUT_DIR, "to": "nn_archive"}
    config = read["config"]
    assert config["name"] == "yolobench-test" and config["input_model"] == str(model.path)
    (image,) = config["inputs"]
    assert {k: image[k] for k in ("name", "shape", "layout", "mean_values", "scale_values", "encoding")} == {
        "name": "images", "shape": [1, 3, 64, 64], "layout": "NCHW", "mean_values": [0.0, 0.0, 0.0],
        "scale_values": [255.0, 255.0, 255.0], "encoding": {"from": "BGR", "to": "RGB"}}
    assert config["encoding_mismatch"] == [True]  # so its exporter reverses the channels, as the blob must
    assert {k: config["rvc2"][k] for k in ("superblob", "number_of_shaves", "compress_to_fp16", "mo_args",
                                            "compile_tool_args")} == {
        "superblob": True, "number_of_shaves": 8, "compress_to_fp16": True, "mo_args": [], "compile_tool_args": []}


FAKE_CLI = textwrap.dedent('''\
    #!{python}
    """Stands in for ModelConverter's CLI: records its call, writes an NN Archive where the real one does."""
    import json, os, sys, tarfile, io
    from pathlib import Path
    argv = sys.argv[1:]
    config = Path(argv[argv.index("--path") + 1]).read_text()
    Path(os.environ["FAKE_MODELCONVERTER_RECORD"]).write_text(json.dumps({{
        "argv": argv, "cwd": os.getcwd(), "config": config, "has_key": "HUBAI_API_KEY" in os.environ,
        "telemetry": os.environ.get("LUXONIS_TELEMETRY_ENABLED")}}))
    if os.environ.get("FAKE_MODELCONVERTER_EXIT"):
        print("ERROR: Model Optimizer failed"); sys.exit(int(os.environ["FAKE_MODELCONVERTER_EXIT"]))
    out = Path("output") / argv[argv.index("--output-dir") + 1]
    out.mkdir(parents=True)
    data = bytes.fromhex(os.environ["FAKE_MODELCONVERTER_MODEL"])
    cfg = {{"config_version": "1.0", "model": {{"metadata": {{"name": "m", "path": "m.superblob",
           "precision": "float16"}}, "inputs": [], "outputs": [], "heads": None}}}}
    with tarfile.open(out / "m.rvc2.tar.xz", "w:xz") as t:
        for name, blob in (("config.json", json.dumps(cfg).encode()), ("m.superblob", data)):
            info = tarfile.TarInfo(name); info.size = len(blob); t.addfile(info, io.BytesIO(blob))
''')


@pytest.fixture()
def fake_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    cli = folder / "modelconverter"
    cli.write_text(FAKE_CLI.format(python=sys.executable))
    cli.chmod(0o755)
    record = tmp_path / "record.json"
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_MODELCONVERTER_RECORD", str(record))
    monkeypatch.setenv("FAKE_MODELCONVERTER_MODEL", dummy_superblob().hex())
    monkeypatch.setenv("HUBAI_API_KEY", API_KEY)
    monkeypatch.delenv("LUXONIS_TELEMETRY_ENABLED", raising=False)
    return record


def test_the_command_runs_in_a_scratch_folder_without_the_hubai_key(head, fake_cli: Path) -> None:
    from yolobench.stages.nn_archive import read_archive
    from yolobench.stages.rvc2_compile import compile_archive

    cache, model = head
    archive = compile_archive(cache, model, ModelConverter(tool_version="2022.3.0"), 64)
    called = json.loads(fake_cli.read_text())
    assert called["argv"] == converter_command(Path(called["cwd"]) / CONFIG_NAME, "2022.3.0")[1:]
    assert yaml.safe_load(called["config"])["input_model"] == str(model.path)
    assert called["has_key"] is False and called["telemetry"] == "false"
    assert not Path(called["cwd"]).exists()  # the scratch folder went with the build
    config, _, data = read_archive(archive.path)
    assert data == dummy_superblob() and config["model"]["heads"][0]["metadata"]["n_classes"] == 4
    assert archive.manifest["converter"] == "modelconverter" and archive.manifest["config"]["settings"] == {
        "tool_version": "2022.3.0", "superblob": True}


def test_a_failed_run_is_a_failed_build_with_its_output(head, fake_cli: Path, monkeypatch) -> None:
    from yolobench.stages.rvc2_compile import compile_archive

    cache, model = head
    monkeypatch.setenv("FAKE_MODELCONVERTER_EXIT", "2")
    with pytest.raises(BuildFailed, match=r"modelconverter convert rvc2 --path exited 2: ERROR: Model Optimizer"):
        compile_archive(cache, model, ModelConverter(), 64)
    assert cache.builds["nn_archive"] == 0


def test_it_is_not_usable_without_its_cli(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    availability = ModelConverter().availability()
    assert not availability.usable and "modelconverter CLI is not on PATH (pipx install modelconv" in availability.reason

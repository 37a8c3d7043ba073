"""`yolobench build` on a build host, `yolobench sweep --measure-only` on a measuring host: the models go
as a bundle folder or through the MLflow store; the measuring side builds nothing and the sweep's
experiment holds only its measurements."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.fakes import FakeBuilder, FakeRuntime, fake_sweep_file, register_fake_runtime
from yolobench import tracking
from yolobench.bundle import BUNDLE_SWEEP, build_for_host
from yolobench.cache import ArtifactCache
from yolobench.cli import main
from yolobench.keys import build_key, variant_key
from yolobench.prebuilt import INDEX_DIR
from yolobench.settings import SweepSettings
from yolobench.space import Space
from yolobench.spec import load_spec, parse_spec


@pytest.fixture()
def fake_spec():
    register_fake_runtime()
    FakeRuntime.reset()
    yield parse_spec(fake_sweep_file())
    FakeRuntime.reset()


def runs_of(home: Path, experiment: str) -> list:
    tracker = tracking.Tracker(tracking.default_tracking_uri(home))
    experiment_id = tracker.existing_experiment_id(experiment)
    return [] if experiment_id is None else tracker._client.search_runs([experiment_id])


def test_a_bundle_holds_one_model_per_build_key_and_the_sweep_a_device_measures_without_building(
        fake_spec, tmp_path: Path, fresh_home: Path, capsys) -> None:
    build_home, bundle = fresh_home, tmp_path / "bundle"
    builder = FakeBuilder(fake_spec, ArtifactCache(build_home / "cache"))
    summary = build_for_host(fake_spec, SweepSettings(home=build_home), bundle, publish=False, builder=builder)
    space = Space.from_spec(fake_spec)
    keys = {build_key(fake_spec, v) for v in space.variants()}
    assert summary.succeeded and summary.models == len(keys) == 2 and summary.variants == 4
    assert sorted(p.stem for p in (bundle / INDEX_DIR).glob("*.json")) == sorted(keys)
    assert not runs_of(build_home, "fake")  # nothing measured, no run logged
    shipped = load_spec(bundle / BUNDLE_SWEEP)
    assert [variant_key(shipped, v) for v in space.variants()] == [variant_key(fake_spec, v) for v in space.variants()]

    device_home = tmp_path / "device"
    code = main(["sweep", str(bundle / BUNDLE_SWEEP), "--home", str(device_home), "--measure-only",
                 "--cache-dir", str(bundle)])
    assert code == 0 and "measured now 4" in capsys.readouterr().out
    measured = [r for r in runs_of(device_home, "fake") if tracking.PARENT_TAG in r.data.tags]
    assert len(measured) == 4 and {r.info.status for r in measured} == {"FINISHED"}
    assert all(r.data.params["model_source"] == f"cache:{bundle}" for r in measured)


def test_published_models_reach_a_device_through_the_store_and_stay_out_of_the_sweeps_experiment(
        fake_spec, tmp_path: Path, fresh_home: Path, capsys) -> None:
    build_home = fresh_home
    builder = FakeBuilder(fake_spec, ArtifactCache(build_home / "cache"))
    settings = SweepSettings(home=build_home)
    build_for_host(fake_spec, settings, None, publish=True, builder=builder)
    again = build_for_host(fake_spec, settings, None, publish=True, builder=builder)  # a rerun adds nothing
    builds = runs_of(build_home, "fake-builds")
    assert len(builds) == 2 and again.succeeded
    assert all(tracking.MODEL_LOGGED_TAG in r.data.tags and r.info.status == "FINISHED" for r in builds)
    assert not runs_of(build_home, "fake")

    path = tmp_path / "fake.yaml"
    path.write_text(yaml.safe_dump(fake_sweep_file()))
    device_home = tmp_path / "device"
    code = main(["sweep", str(path), "--home", str(device_home), "--measure-only",
                 "--tracking-uri", settings.resolved_tracking_uri])
    assert code == 0 and "measured now 4" in capsys.readouterr().out
    measured = [r for r in runs_of(build_home, "fake") if tracking.PARENT_TAG in r.data.tags]
    assert len(measured) == 4
    sources = [r.data.params["model_source"] for r in measured]
    # Each model comes through the store once; its sibling (another knob) then finds it in the device's cache.
    assert sum(s.startswith("mlflow:run ") for s in sources) == 2
    assert all(s.startswith("mlflow:run ") or s == f"cache:{device_home / 'cache'}" for s in sources)
    assert len(builder.built) == 4  # two models, built once each by the two build runs above, none on the device


def test_build_refuses_without_a_destination_and_a_failed_model_exits_1(fake_spec, tmp_path: Path, capsys) -> None:
    assert main(["build", "quickstart", "--home", str(tmp_path / "h")]) == 2
    assert "--bundle DIR" in capsys.readouterr().err
    builder = FakeBuilder(fake_spec, ArtifactCache(tmp_path / "h" / "cache"))
    builder.failures["n-fp16-64-knob1"] = RuntimeError("exporter crashed")
    summary = build_for_host(fake_spec, SweepSettings(home=tmp_path / "h"), tmp_path / "b", False, builder=builder)
    assert not summary.succeeded and list(summary.failures) == ["n-fp16-64"]
    assert len(list((tmp_path / "b" / INDEX_DIR).glob("*.json"))) == 1

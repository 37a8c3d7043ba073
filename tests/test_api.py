"""The Python door: yolobench.sweep() runs what `yolobench sweep` runs and yolobench.results() reads the
sweep's rows back as a DataFrame, the same numbers the MLflow runs hold."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import yolobench
from tests.fakes import FakeBuilder, FakeRuntime, fake_sweep_file, register_fake_runtime
from yolobench import tracking
from yolobench.bundle import BUNDLE_SWEEP, build_for_host
from yolobench.cache import ArtifactCache
from yolobench.settings import SweepSettings
from yolobench.spec import SpecError, parse_spec


@pytest.fixture()
def bundle(tmp_path: Path, fresh_home: Path) -> Path:
    """Every fake variant's model, built into a bundle, so the API measures without building."""
    register_fake_runtime()
    FakeRuntime.reset()
    spec = parse_spec(fake_sweep_file())
    folder = tmp_path / "bundle"
    build_for_host(spec, SweepSettings(home=fresh_home), folder, False,
                   builder=FakeBuilder(spec, ArtifactCache(fresh_home / "cache")))
    yield folder
    FakeRuntime.reset()


def test_sweep_and_results_through_the_api_with_overrides(bundle: Path, tmp_path: Path) -> None:
    home = tmp_path / "device"
    options = dict(home=home, set={"measure.min_runs": 3})
    summary = yolobench.sweep(bundle / BUNDLE_SWEEP, measure_only=True, cache_dir=bundle, **options)
    assert summary.measured == 4 and summary.failed == 0
    frame = yolobench.results(bundle / BUNDLE_SWEEP, **options)
    assert isinstance(frame, pd.DataFrame) and len(frame) == 4
    assert list(frame.columns[:3]) == ["label", "latency_ms_p50", "latency_ms_p50_ci_low"]
    assert frame["latency_ms_p50"].is_monotonic_increasing and frame["pareto"].dtype == bool
    assert sorted(frame["axis.knob"]) == ["1", "1", "2", "2"]
    client = tracking.Tracker(tracking.default_tracking_uri(home))._client
    for row in frame.itertuples():
        run = client.get_run(row.run_id)
        assert run.info.run_name == row.label
        assert run.data.metrics["latency_ms_p50"] == row.latency_ms_p50
        assert (run.data.tags.get(tracking.PARETO_TAG) == "true") == row.pareto
        assert run.data.params["imgsz"] == "64"


def test_the_api_refuses_a_bad_override_as_the_command_line_does(bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="measure.min_runs"):
        yolobench.sweep(bundle / BUNDLE_SWEEP, home=tmp_path / "x", set={"measure.min_runs": 0})
    with pytest.raises(SpecError, match="--only knob=7: 7 not among the axis' values"):
        yolobench.results(bundle / BUNDLE_SWEEP, home=tmp_path / "x", only={"knob": [7]})
    assert not (tmp_path / "x").exists()

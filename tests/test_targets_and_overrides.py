"""Targets ship inside the package and every command takes a target's name or a sweep file, with the
command line's overrides validated as the file is; the effective sweep is what the parent run logs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.fakes import FakeBuilder, FakeRuntime, fake_sweep_file, register_fake_runtime
from yolobench import targets, tracking
from yolobench.cli import main
from yolobench.keys import variant_key
from yolobench.space import Space
from yolobench.spec import load_spec, load_sweep
from yolobench.overrides import Overrides


def test_targets_are_the_package_files_with_their_counts_and_baselines(capsys) -> None:
    shipped = targets.shipped()
    assert {"quickstart", "cpu-ort", "oak-d-pro", "orin-nano-trt"} <= set(shipped)
    assert all(path.parent == Path(targets.__file__).parent for path in shipped.values())
    assert main(["targets"]) == 0
    out = capsys.readouterr().out
    for name, path in shipped.items():
        space = Space.from_spec(load_spec(path))
        line = next(line for line in out.splitlines() if line.split()[:1] == [name])
        assert str(space.count() if space.count() is not None else "pareto") in line.split()
        assert space.baseline.label in line


def test_a_target_name_works_where_a_file_does_and_an_unknown_one_lists_the_targets(capsys) -> None:
    assert main(["plan", "cpu-ort"]) == 0
    assert "variants: 135" in capsys.readouterr().out
    assert main(["plan", "no-such-target"]) == 2
    err = capsys.readouterr().err
    assert "no sweep file or target named 'no-such-target'" in err and "quickstart" in err


def test_init_writes_an_editable_copy_that_means_the_same_sweep_and_never_overwrites(tmp_path: Path, capsys) -> None:
    copy = tmp_path / "quickstart.yaml"
    assert main(["init", "quickstart", str(copy)]) == 0
    text = copy.read_text()
    assert text.startswith("# Copied from yolobench's target 'quickstart'") and "# One intra-op thread" in text
    mine, shipped = load_spec(copy), load_spec("quickstart")
    baseline = Space.from_spec(shipped).baseline
    assert variant_key(mine, baseline) == variant_key(shipped, baseline)
    copy.write_text(text + "\n# my edit\n")
    assert main(["init", "quickstart", str(copy)]) == 2
    assert "exists" in capsys.readouterr().err and copy.read_text().endswith("# my edit\n")
    assert main(["init", "quickstart", str(copy), "--force"]) == 0 and "# my edit" not in copy.read_text()


def test_a_file_here_wins_over_a_target_named_like_it_and_a_bare_name_is_the_target(tmp_path: Path,
                                                                                    monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert targets.resolve("quickstart.yaml") == targets.shipped()["quickstart"]  # no such file here
    Path("quickstart.yaml").write_text(targets.shipped()["quickstart"].read_text().replace("imgsz: [320, 256]",
                                                                                            "imgsz: [320]"))
    assert Space.from_spec(load_spec("quickstart.yaml")).count() == 9  # the user's edited copy
    assert Space.from_spec(load_spec("quickstart")).count() == 18  # the shipped target


def test_only_narrows_an_axis_and_moves_a_baseline_it_left_out(capsys) -> None:
    spec, notes = load_sweep("quickstart", Overrides(only=("imgsz=256", "precision=fp32,int8")))
    axes = spec.axes.as_dict()
    assert axes["imgsz"] == [256] and axes["precision"] == ["fp32", "int8"]
    assert spec.baseline["imgsz"] == 256 and notes == [
        "baseline imgsz is now 256: --only left out the file's baseline value"]
    assert main(["plan", "quickstart", "--only", "imgsz=256"]) == 0
    captured = capsys.readouterr()
    assert "variants: 9" in captured.out and "baseline imgsz is now 256" in captured.err


@pytest.mark.parametrize("flags, message", [
    (["--only", "imgsz=999"], "--only imgsz=999: 999 not among the axis' values (320, 256)"),
    (["--only", "colour=red"], "the sweep has no axis 'colour'"),
    (["--only", "imgsz"], "--only imgsz: expected AXIS=V1,V2"),
    (["--set", "measure.min_runs=0"], "measure.min_runs"),
    (["--set", "measure.nonsense=1"], "measure.nonsense"),
    (["--set", "runtime.threads=[1"], "--set runtime.threads: '[1' is not a YAML value"),
    (["--weights", "best.pt", "--only", "precision=fp32"], None),
])
def test_overrides_meet_the_sweep_files_checks_with_the_field_and_value_named(flags, message, capsys) -> None:
    code = main(["plan", "quickstart", *flags])
    if message is None:
        assert code == 0 and "variants: 6" in capsys.readouterr().out
    else:
        assert code == 2 and message in capsys.readouterr().err


def test_one_weights_file_with_several_scales_is_refused_with_what_to_do(capsys) -> None:
    assert main(["plan", "cpu-ort", "--weights", "runs/best.pt"]) == 2
    err = capsys.readouterr().err
    assert "model.weights = 'runs/best.pt': is one model, but the scale axis has n, s, m" in err
    assert "--only scale=n" in err
    assert main(["plan", "cpu-ort", "--weights", "runs/best.pt", "--only", "scale=s"]) == 0
    assert main(["plan", "cpu-ort", "--weights", "runs/{scale}/best.pt"]) == 0


def test_set_and_data_change_the_fields_and_the_variant_keys() -> None:
    plain = load_spec("cpu-ort")
    spec, _ = load_sweep("cpu-ort", Overrides(data="my/data.yaml", sets=("measure.min_runs=77", "runtime.threads=2")))
    assert spec.data.yaml == "my/data.yaml" and spec.data.synthetic is None
    assert spec.measure.min_runs == 77 and spec.runtime.threads == 2
    baseline = Space.from_spec(plain).baseline
    assert variant_key(spec, baseline) != variant_key(plain, baseline)


def test_the_parent_run_logs_the_effective_sweep(tmp_path: Path, fresh_home: Path) -> None:
    register_fake_runtime()
    FakeRuntime.reset()
    path = tmp_path / "fake.yaml"
    path.write_text(yaml.safe_dump(fake_sweep_file()))
    home = fresh_home
    spec, _ = load_sweep(path, Overrides(only=("knob=2",), sets=("measure.min_runs=3",)))
    from yolobench.runner import Sweep, SweepSettings

    sweep = Sweep(spec, SweepSettings(home=home))
    sweep.builder = FakeBuilder(spec, sweep.cache)
    summary = sweep.run()
    assert summary.measured == 2
    client = tracking.Tracker(tracking.default_tracking_uri(home))._client
    parent = client.get_run(summary.parent_run_id)
    logged = json.loads(Path(client.download_artifacts(parent.info.run_id, "sweep.json", str(tmp_path))).read_text())
    assert logged["axes"]["knob"] == [2] and logged["measure"]["min_runs"] == 3
    assert logged["baseline"]["knob"] == 2
    FakeRuntime.reset()

"""`yolobench sweep` as a user runs it: its exit code, what it prints when variants failed or when it is
stopped. The command runs for real (--measure-only, on models a first sweep published to the cache),
with the fake runtime the registry knows, so it takes seconds."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from tests.fakes import FakeBuilder, FakeRuntime, fake_sweep_file, raise_, register_fake_runtime
from yolobench import search
from yolobench.cli import main
from yolobench.errors import VariantFailed
from yolobench.runner import Sweep, SweepSettings
from yolobench.space import Space
from yolobench.spec import parse_spec


@pytest.fixture()
def published(tmp_path: Path, fresh_home: Path) -> tuple[Path, Path]:
    """A home whose cache holds every variant's model (published by a first sweep) and the sweep file."""
    register_fake_runtime()
    FakeRuntime.reset()
    home = fresh_home
    spec = parse_spec(fake_sweep_file())
    study = search.open_study(optuna.storages.InMemoryStorage(), spec.name, Space.from_spec(spec), spec.search)
    sweep = Sweep(spec, SweepSettings(home=home), study=study)
    sweep.builder = FakeBuilder(spec, sweep.cache)
    assert sweep.run().measured == 4
    path = tmp_path / "fake.yaml"
    path.write_text(yaml.safe_dump(fake_sweep_file()))
    yield home, path
    FakeRuntime.reset()


def measure_only(home: Path, path: Path, *extra: str) -> int:
    return main(["sweep", str(path), "--home", str(home), "--measure-only",
                 "--storage", f"sqlite:///{home / 'agent.db'}", "--experiment", "agent", *extra])


def test_a_sweep_with_a_failed_variant_exits_1_and_says_how_to_retry(published, capsys) -> None:
    home, path = published
    FakeRuntime.on({"knob": 2, "precision": "fp16"}, raise_(VariantFailed("device unplugged")))
    assert measure_only(home, path) == 1
    out = capsys.readouterr().out
    assert "FAILED n-fp16-64-knob2: VariantFailed: device unplugged" in out
    assert "1 variant(s) failed" in out and "--retry-failed" in out
    assert measure_only(home, path) == 1  # still failed: a rerun says so too, and how to retry
    out = capsys.readouterr().out
    assert "1 failed (--retry-failed runs them again)" in out and "1 variant(s) failed" in out
    FakeRuntime.reset()
    assert measure_only(home, path, "--retry-failed") == 0
    assert "measured now 1" in capsys.readouterr().out


def test_ctrl_c_stops_with_one_line_and_a_rerun_resumes(published, capsys) -> None:
    home, path = published
    FakeRuntime.on({"knob": 2, "precision": "fp16"}, raise_(KeyboardInterrupt()))
    assert measure_only(home, path) == 130
    err = capsys.readouterr().err
    assert "stopped (interrupted); run the same command again to resume" in err and "Traceback" not in err
    FakeRuntime.reset()
    assert measure_only(home, path) == 0
    assert "failed 0" in capsys.readouterr().out


def test_a_sweep_that_cannot_start_exits_1_with_the_reason(published, capsys) -> None:
    home, path = published
    path.write_text(yaml.safe_dump(fake_sweep_file(exclude=[{"precision": "fp32"}, {"precision": "fp16"}])))
    assert measure_only(home, path) == 1
    assert "exclude" in capsys.readouterr().err


def test_every_command_has_its_handler_and_the_store_commands_share_the_store_options() -> None:
    """The parser is put together by one helper per kind of command; this pins what they build together."""
    import argparse

    from yolobench.cli import build_parser

    def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return dict(action.choices)

    commands = subcommands(build_parser())
    assert list(commands) == ["targets", "init", "plan", "sweep", "build", "report", "promote", "compare", "ui",
                              "doctor", "data"]
    handlers = {name: command.get_default("handler") for name, command in commands.items() if name != "data"}
    handlers["data synth"] = subcommands(commands["data"])["synth"].get_default("handler")
    assert all(callable(handler) for handler in handlers.values()), handlers
    assert len({handler.__name__ for handler in handlers.values()}) == len(handlers)  # no command runs another's
    store = {"--home", "--tracking-uri", "--storage", "--experiment", "--study"}
    for name in ("sweep", "build", "report", "promote", "compare"):
        options = {option for action in commands[name]._actions for option in action.option_strings}
        assert store <= options, (name, store - options)
    args = build_parser().parse_args(["report", "quickstart", "--only", "precision=fp32", "--study", "s"])
    assert (args.file, args.only, args.study, args.handler.__name__) == ("quickstart", ["precision=fp32"], "s",
                                                                         "_report")

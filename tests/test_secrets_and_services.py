"""Credentials never leave the process, and a store that is not there stops the sweep within the timeout
with one message naming it."""

from __future__ import annotations

import socket
import time

import pytest

from yolobench.services import ServiceUnreachable, check_database, check_tracking_server
from yolobench.urls import DriverMissing, redact, redacted, with_installed_driver

SECRET = "Pa55-w0rd"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("text, shown", [
    (f"http://alice:{SECRET}@mlflow.lan:5000", "http://alice:***@mlflow.lan:5000"),
    (f"study: 'q' in postgresql+psycopg2://optuna:{SECRET}@db/optuna", "study: 'q' in postgresql+psycopg2://optuna:***@db/optuna"),
    (f"postgresql://db/optuna?user=o&password={SECRET}&sslmode=require", "postgresql://db/optuna?user=o&password=***&sslmode=require"),
    ("sqlite:////home/me/mlruns/optuna.db", "sqlite:////home/me/mlruns/optuna.db"),
    ("http://mlflow.lan:5000", "http://mlflow.lan:5000"),
])
def test_a_url_keeps_user_and_host_and_loses_its_password(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_a_sweep_files_mapping_is_redacted_everywhere_in_it() -> None:
    payload = {"search": {"storage": f"postgresql://o:{SECRET}@db/x"}, "tracking": {"tracking_uri": None},
               "axes": {"imgsz": [320]}, "notes": [f"see https://u:{SECRET}@h/"]}
    assert SECRET not in str(redacted(payload))
    assert redacted(payload)["axes"] == {"imgsz": [320]} and redacted(payload)["tracking"]["tracking_uri"] is None


def test_postgresql_gets_the_installed_driver_and_other_urls_stay() -> None:
    assert with_installed_driver("postgresql://o@db/x") == "postgresql+psycopg2://o@db/x"  # psycopg2 is what dev installs
    assert with_installed_driver("postgresql+pg8000://o@db/x") == "postgresql+pg8000://o@db/x"
    assert with_installed_driver("sqlite:///x.db") == "sqlite:///x.db"


def test_no_driver_installed_says_what_to_install(monkeypatch) -> None:
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DriverMissing, match="pip install psycopg2-binary") as raised:
        with_installed_driver(f"postgresql://o:{SECRET}@db/x")
    assert SECRET not in str(raised.value)


@pytest.mark.parametrize("check, url, named, why", [
    (check_tracking_server, "http://alice:{secret}@127.0.0.1:{port}", "MLflow tracking server http://alice:***@127.0.0.1",
     "ConnectionError"),
    (check_database, "postgresql+psycopg2://optuna:{secret}@127.0.0.1:{port}/optuna",
     "the Optuna database postgresql+psycopg2://optuna:***@127.0.0.1", "Connection refused"),
], ids=["tracking-server", "database"])
def test_an_unreachable_service_fails_at_once_naming_it_with_the_url_redacted(check, url, named, why) -> None:
    started = time.monotonic()
    with pytest.raises(ServiceUnreachable) as raised:
        check(url.format(secret=SECRET, port=free_port()), timeout_s=5)
    assert time.monotonic() - started < 5
    message = str(raised.value)
    assert named in message and why in message and SECRET not in message


def test_a_sweep_on_an_unreachable_server_or_database_exits_1_fast_with_one_redacted_line(tmp_path, capsys) -> None:
    from yolobench.cli import main

    for flags, service in [(["--tracking-uri", f"http://alice:{SECRET}@127.0.0.1:{free_port()}"], "MLflow tracking server"),
                           (["--storage", f"postgresql://optuna:{SECRET}@127.0.0.1:{free_port()}/optuna"], "Optuna database")]:
        started = time.monotonic()
        code = main(["sweep", "quickstart", "--home", str(tmp_path / "home"), "--only", "precision=fp32",
                     "--only", "imgsz=320", "--only", "ort_level=disable", *flags])
        took = time.monotonic() - started
        captured = capsys.readouterr()
        assert code == 1 and took < 30, (code, took)
        assert service in captured.err and "Traceback" not in captured.err
        assert SECRET not in captured.out + captured.err
        assert len([line for line in captured.err.splitlines() if line.startswith("yolobench:")]) == 1


def test_credentials_in_params_tags_and_json_artifacts_are_hidden(tmp_path) -> None:
    from yolobench import tracking

    tracker = tracking.Tracker(tracking.default_tracking_uri(tmp_path))
    experiment = tracker.experiment_id("secrets")
    run_id = tracker.start_run(experiment, "r", tags={"where": f"http://u:{SECRET}@h"}, params={"storage": f"postgresql://o:{SECRET}@db/x"})
    tracker.log_json(run_id, {"search": {"storage": f"postgresql://o:{SECRET}@db/x"}}, "sweep.json")
    run = tracker.run(run_id)
    assert run.data.params["storage"] == "postgresql://o:***@db/x" and run.data.tags["where"] == "http://u:***@h"
    text = (tracker.download(run_id, "sweep.json", tmp_path)).read_text()
    assert SECRET not in text and "postgresql://o:***@db/x" in text

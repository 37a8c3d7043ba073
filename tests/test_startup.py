"""Start-up on a fresh local store: two `yolobench sweep` processes started at the same moment on a home with no
mlflow.db and no optuna.db both create the stores (MLflow's schema under a file lock, tracking.Tracker; Optuna's
with retries, search._create_or_load), settle on one parent run and measure each variant once between them.
Ten times, since a race that loses one time in three must not hide."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlflow
import optuna
import pytest
import yaml

from tests.fakes import fake_sweep_file
from yolobench import tracking

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TIMES = 10
VARIANTS = 4  # fake_sweep_file's grid


def start_two(home: Path, sweep_file: Path) -> list[tuple[int, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")} | {
        "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "tests.fake_yolobench", "sweep", str(sweep_file), "--home", str(home)]
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
               for _ in range(2)]
    return [(worker.wait(timeout=300), worker.communicate()[0]) for worker in workers]


def problems(home: Path, results: list[tuple[int, str]]) -> list[str]:
    """What went wrong in one start (empty: nothing)."""
    found = [f"worker {n} exited {code}:\n{output[-2000:]}" for n, (code, output) in enumerate(results) if code != 0]
    if found:
        return found
    client = mlflow.MlflowClient(tracking.default_tracking_uri(home))
    runs = client.search_runs([client.get_experiment_by_name("fake").experiment_id], max_results=100)
    children = [r for r in runs if tracking.PARENT_TAG in r.data.tags]
    keys = [r.data.tags[tracking.VARIANT_KEY_TAG] for r in children]
    if len(keys) != VARIANTS or len(set(keys)) != VARIANTS or {r.info.status for r in children} != {"FINISHED"}:
        found.append(f"child runs: {len(keys)} runs of {len(set(keys))} variants, {[r.info.status for r in children]}")
    parents = [r for r in runs if tracking.PARENT_TAG not in r.data.tags]
    if len(parents) != 1:
        found.append(f"{len(parents)} parent runs")
    study = optuna.load_study(study_name="fake", storage=f"sqlite:///{home / 'optuna.db'}")
    measured = [t.user_attrs["variant_key"] for t in study.trials if t.user_attrs.get("outcome") == "measured"]
    if len(measured) != VARIANTS or len(set(measured)) != VARIANTS:
        found.append(f"study: {len(measured)} measured trials of {len(set(measured))} variants")
    lines = sum(output.count("mAP50-95") for _, output in results)
    if lines != VARIANTS:
        found.append(f"the workers printed {lines} measured variants, not {VARIANTS}")
    if found:  # what each trial and worker did, to tell which race it was
        found += [f"trial {t.number} {t.state.name} {t.datetime_start} {t.datetime_complete} "
                  f"{ {k: t.user_attrs.get(k) for k in ('variant_key', 'worker', 'outcome', 'reused_from')} }"
                  for t in study.trials]
        found += [f"worker {n}:\n{output[-1500:]}" for n, (_, output) in enumerate(results)]
    return found


def test_two_workers_started_together_on_a_fresh_store_both_work_ten_times(tmp_path: Path) -> None:
    sweep_file = tmp_path / "fake.yaml"
    sweep_file.write_text(yaml.safe_dump(fake_sweep_file()))
    homes = [tmp_path / f"home-{n}" for n in range(TIMES)]  # not there yet: no mlflow.db, no optuna.db
    with ThreadPoolExecutor(max_workers=2) as pool:  # two pairs at a time, each pair started together
        outcomes = list(pool.map(lambda home: (home, start_two(home, sweep_file)), homes))
    failed = {home.name: found for home, results in outcomes if (found := problems(home, results))}
    assert not failed, failed

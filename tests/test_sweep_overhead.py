"""A long sweep keeps the per-variant harness overhead flat: 600 variants of the stub runtime (benchmarks/
sweep_overhead.py, which runs 2,000 on SQLite and on PostgreSQL) on SQLite, the last 100 variants' median
overhead within 1.3 times the first 100's; and each variant's run stays compact for the MLflow UI."""

from __future__ import annotations

from contextlib import ExitStack

import mlflow
import pytest

from yolobench import tracking

pytestmark = pytest.mark.slow


def test_six_hundred_variants_keep_the_per_variant_overhead_flat() -> None:
    from benchmarks.sweep_overhead import default_home, format_table, run_stub_sweep

    with ExitStack() as stack:
        home = default_home(stack) / "sqlite"
        figures = run_stub_sweep(home, 600)
        print(format_table([figures]))
        assert figures.ratio <= 1.3, figures  # wall time, the measure
        assert figures.cpu_ratio <= 1.3, figures  # the same in CPU time, which other work on the machine moves less

        client = mlflow.MlflowClient(tracking.default_tracking_uri(home))
        experiment = client.get_experiment_by_name("overhead-600")
        [run] = client.search_runs([experiment.experiment_id], "tags.`yolobench.label` = 'n-fp16-96-k7'")
        # One value per metric, none a series over steps: per-call times are an artifact, not metrics. (The end
        # of the sweep logs a metric again, with its logged model, when it links the figures to it.)
        assert 20 < len(run.data.metrics) < 80
        for name in run.data.metrics:
            history = client.get_metric_history(run.info.run_id, name)
            assert {m.step for m in history} == {0} and len({m.value for m in history}) == 1, (name, history)
        assert [a.path for a in client.list_artifacts(run.info.run_id, "latency")] == ["latency/samples.json"]

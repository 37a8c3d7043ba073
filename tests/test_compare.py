"""`yolobench compare` on a real store: two small real sweeps (MLflow in SQLite, Optuna, cache and synthetic data
set all real) whose fake-runtime sessions answer the val images with their true boxes, shifted on knob 2, and take
a set time per variant, so each sweep has a known front; then the command as a user runs it, its table read back
against the runs in MLflow, and the plot files."""

from __future__ import annotations

import io
import re
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import mlflow
import numpy as np
import optuna
import pytest
import yaml

from tests.fakes import FakeBuilder, FakeRuntime, FakeSession, fake_sweep_file, register_fake_runtime
from yolobench import compare, search, tracking
from yolobench.cli import main
from yolobench.data.dataset import open_dataset, read_labels
from yolobench.data.letterbox import to_input_tensor
from yolobench.runner import Sweep, SweepSettings
from yolobench.space import Space
from yolobench.spec import parse_spec

SHIFT_PX = 2.0  # knob 2 answers with every true box moved this far: the same detections, a lower mAP50-95
BASELINE = "n-fp32-64-knob1"
# Per sweep: (target, ms per inference of each (precision, knob)), and the front that follows from them.
SWEEPS: dict[str, tuple[str, dict[tuple[str, int], float]]] = {
    "fake-a": ("tests: device A", {("fp16", 2): 1.0, ("fp16", 1): 3.0, ("fp32", 2): 6.0, ("fp32", 1): 10.0}),
    "fake-b": ("tests: device B", {("fp16", 2): 2.0, ("fp32", 1): 4.0, ("fp32", 2): 6.0, ("fp16", 1): 9.0}),
}
# A's baseline is beaten by fp16 knob 1 (faster, as accurate); B's baseline is the fastest exact variant.
FRONTS = {"fake-a": ["n-fp16-64-knob2", "n-fp16-64-knob1"], "fake-b": ["n-fp16-64-knob2", BASELINE]}


class OracleSession(FakeSession):
    """Answers each val image with its true boxes as YOLO11's raw output (cx, cy, w, h, class scores)."""

    def __init__(self, imgsz: int, axes: Mapping[str, Any], truth: list[tuple[np.ndarray, np.ndarray]],
                 num_classes: int, shift_px: float, delay_ms: float) -> None:
        super().__init__(imgsz, axes)
        self.truth, self.num_classes, self.shift_px, self.delay_ms = truth, num_classes, shift_px, delay_ms

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        self.calls += 1
        time.sleep(self.delay_ms / 1000.0)
        anchors = sum((self.imgsz // stride) ** 2 for stride in (8, 16, 32))
        output = np.zeros((1, 4 + self.num_classes, anchors), np.float32)
        for image, boxes in self.truth:
            if image.shape == tensor.shape and float(np.abs(image - tensor).mean()) < 1e-4:
                for anchor, (class_id, cx, cy, w, h) in enumerate(boxes):
                    output[0, :4, anchor] = (cx + self.shift_px, cy + self.shift_px, w, h)
                    output[0, 4 + int(class_id), anchor] = 0.9
        return output


class OracleRuntime(FakeRuntime):
    def __init__(self, truth: list[tuple[np.ndarray, np.ndarray]], num_classes: int,
                 delays: Mapping[tuple[str, int], float]) -> None:
        self.truth, self.num_classes, self.delays = truth, num_classes, dict(delays)

    def open(self, model, compiled, axes, options, decode, work_dir) -> OracleSession:
        return OracleSession(int(axes["imgsz"]), axes, self.truth, self.num_classes,
                             SHIFT_PX if axes["knob"] == 2 else 0.0, self.delays[(axes["precision"], axes["knob"])])


def true_boxes(dataset: Any, imgsz: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(input tensor, rows of class, cx, cy, w, h in input pixels) of each val image."""
    truth = []
    for path in dataset.val_images:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        tensor, transform = to_input_tensor(image, imgsz)
        height, width = image.shape[:2]
        labels = read_labels(path).astype(np.float64)
        boxes = np.stack([labels[:, 0], labels[:, 1] * width * transform.scale + transform.pad_x,
                          labels[:, 2] * height * transform.scale + transform.pad_y,
                          labels[:, 3] * width * transform.scale, labels[:, 4] * height * transform.scale], axis=1)
        truth.append((tensor, boxes))
    return truth


def sweep_file(name: str) -> dict[str, Any]:
    base = fake_sweep_file()
    # Sleeps agree with themselves: a loose agreement ends each variant's timing after its first windows.
    return fake_sweep_file(name=name, target=SWEEPS[name][0], measure={**base["measure"], "stability": 0.5})


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory, empty_mlflow_db: Path) -> tuple[Path, dict[str, Path]]:
    """A home holding both sweeps' runs, and their sweep files."""
    register_fake_runtime()
    home = tmp_path_factory.mktemp("compare") / "home"
    home.mkdir()
    shutil.copyfile(empty_mlflow_db, home / "mlflow.db")
    files = {}
    for name, (_, delays) in SWEEPS.items():
        spec = parse_spec(sweep_file(name))
        dataset = open_dataset(spec.data, home)
        runtime = OracleRuntime(true_boxes(dataset, 64), len(dataset.names), delays)
        study = search.open_study(optuna.storages.InMemoryStorage(), spec.name, Space.from_spec(spec), spec.search)
        sweep = Sweep(spec, SweepSettings(home=home), runtime=runtime, study=study, stream=io.StringIO())
        sweep.builder = FakeBuilder(spec, sweep.cache)
        summary = sweep.run()
        assert (summary.measured, summary.failed) == (4, 0)
        files[name] = home.parent / f"{name}.yaml"
        files[name].write_text(yaml.safe_dump(sweep_file(name)))
    return home, files


def parse_table(out: str) -> list[dict[str, str]]:
    """The printed table's lines as {column title: cell}, cut at the header's column starts (cells may be empty)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("target"))
    header = lines[start]
    titles = [title for title, _, _ in compare.COLUMNS]
    starts, position = [], 0
    for title in titles:
        position = header.index(title, position)
        starts.append(position)
        position += len(title)
    rows = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        ends = [*starts[1:], None]
        rows.append({title: line[begin:end].strip() for title, begin, end in zip(titles, starts, ends)})
    return rows


def logged_metrics(home: Path, sweep: str) -> dict[str, dict[str, float]]:
    """The sweep's variant runs' metrics by label, read through MLflow's own client."""
    client = mlflow.MlflowClient(tracking.default_tracking_uri(home))
    experiment = client.get_experiment_by_name(sweep)
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    return {run.data.tags[tracking.LABEL_TAG]: run.data.metrics for run in runs if tracking.PARENT_TAG in run.data.tags}


def run_compare(home: Path, files: list[Path | str], out: Path) -> int:
    return main(["compare", *map(str, files), "--home", str(home), "--out", str(out)])


def test_the_table_holds_each_targets_front_and_baseline_with_the_numbers_mlflow_holds(swept, tmp_path, capsys):
    home, files = swept
    assert run_compare(home, [files["fake-a"], files["fake-b"]], tmp_path / "out") == 0
    out = capsys.readouterr().out
    rows = parse_table(out)
    # Each target's front, fastest first, and its baseline whether on the front or not; the targets in the order given.
    assert [(row["target"], row["variant"]) for row in rows] == [
        ("fake-a", "n-fp16-64-knob2"), ("fake-a", "n-fp16-64-knob1"), ("fake-a", BASELINE),
        ("fake-b", "n-fp16-64-knob2"), ("fake-b", BASELINE)]
    for row in rows:
        assert row["front"] == ("*" if row["variant"] in FRONTS[row["target"]] else "")
        assert row["baseline"] == ("baseline" if row["variant"] == BASELINE else "")
    for sweep in SWEEPS:
        metrics = logged_metrics(home, sweep)
        assert len(metrics) == 4
        for row in (r for r in rows if r["target"] == sweep):
            logged = metrics[row["variant"]]
            assert row["p50 ms"] == f"{logged['latency_ms_p50']:.2f}"
            assert row["mAP50-95"] == f"{logged['map50_95']:.3f}"
            assert row["mAP50"] == f"{logged['map50']:.3f}"
            assert row["speed-up"] == f"{logged['speedup_vs_baseline']:.2f}x"
            assert row["mAP delta"] == f"{logged['map50_95_delta_vs_baseline']:+.3f}"
    by_key = {(row["target"], row["variant"]): row for row in rows}
    # The oracle scores what it should: true boxes exactly, shifted boxes lower (so the fronts are the expected ones).
    assert by_key[("fake-a", "n-fp16-64-knob1")]["mAP50-95"] == "1.000"
    assert float(by_key[("fake-a", "n-fp16-64-knob2")]["mAP50-95"]) < 0.9
    assert by_key[("fake-a", BASELINE)]["speed-up"] == "1.00x"
    assert float(by_key[("fake-a", "n-fp16-64-knob2")]["speed-up"].rstrip("x")) > 3
    assert "on the front: fake-a 2 of 4, fake-b 2 of 4" in out
    assert f"wrote {tmp_path / 'out' / 'compare.png'}" in out and f"wrote {tmp_path / 'out' / 'compare.html'}" in out


def test_the_plot_is_written_as_png_and_self_contained_html(swept, tmp_path, capsys):
    home, files = swept
    out = tmp_path / "plots"
    assert run_compare(home, [files["fake-a"], files["fake-b"]], out) == 0
    png = (out / "compare.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    for bgr in ((180, 119, 31), (14, 127, 255)):  # matplotlib's C0 and C1: one colour per sweep, both drawn
        assert (np.abs(image.astype(int) - bgr).sum(axis=2) < 30).sum() > 100
    page = (out / "compare.html").read_text(encoding="utf-8")
    assert "<svg" in page and "</svg>" in page and "<?xml" not in page
    for name, (target, _) in SWEEPS.items():
        assert name in page and target in page
        for label in FRONTS[name]:
            assert f"<td>{label}</td>" in page
    # Nothing fetched from elsewhere: no script, no stylesheet or image from a URL.
    assert "<script" not in page and re.search(r'(src|href)="(https?:)?//', page) is None


def test_a_sweep_without_runs_is_named_and_the_others_still_compared(swept, tmp_path, capsys):
    home, files = swept
    # A shipped target by name, as the other commands take it; this store holds no run of it.
    assert run_compare(home, [files["fake-b"], "quickstart"], tmp_path / "out") == 1
    out = capsys.readouterr().out
    assert "no finished runs of sweep 'quickstart' in experiment 'quickstart'" in out
    assert [(row["target"], row["variant"]) for row in parse_table(out)] == [
        ("fake-b", "n-fp16-64-knob2"), ("fake-b", BASELINE)]


def test_without_matplotlib_the_table_is_still_printed(swept, tmp_path, capsys, monkeypatch):
    home, files = swept
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what a measuring host without it sees: ImportError
    assert run_compare(home, [files["fake-a"]], tmp_path / "out") == 0
    out = capsys.readouterr().out
    assert "matplotlib is missing" in out and len(parse_table(out)) == 3
    assert not (tmp_path / "out").exists()

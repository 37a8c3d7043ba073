from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from yolobench.cache import ArtifactCache, BuildOutput, cache_key


def writer(content: str, calls: list[int]):
    def build(work_dir: Path) -> BuildOutput:
        calls.append(1)
        (work_dir / "out.txt").write_text(content)
        return BuildOutput("out.txt", {"applied_by_default": ["nothing"]})

    return build


def test_key_changes_with_every_input() -> None:
    base = cache_key("export", {"imgsz": 320}, "parent", {"torch": "2"})
    assert len(base) >= 16
    assert cache_key("export", {"imgsz": 256}, "parent", {"torch": "2"}) != base
    assert cache_key("export", {"imgsz": 320}, "other", {"torch": "2"}) != base
    assert cache_key("export", {"imgsz": 320}, "parent", {"torch": "3"}) != base
    assert cache_key("fp16", {"imgsz": 320}, "parent", {"torch": "2"}) != base
    assert cache_key("export", {"imgsz": 320}, "parent", {"torch": "2"}) == base


def test_built_once_and_reused(tmp_path: Path) -> None:
    cache, calls = ArtifactCache(tmp_path), []
    first = cache.get_or_build("stage", {"a": 1}, None, {}, writer("x", calls))
    second = cache.get_or_build("stage", {"a": 1}, None, {}, writer("y", calls))
    assert first == second and len(calls) == 1 and cache.builds["stage"] == 1
    assert second.path.read_text() == "x"
    manifest = json.loads((first.directory / "manifest.json").read_text())
    assert manifest["key"] == first.key and manifest["applied_by_default"] == ["nothing"]
    # A fresh cache object on the same folder (another process) finds it too.
    assert ArtifactCache(tmp_path).lookup("stage", first.key) == first


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)

    def crash(work_dir: Path) -> BuildOutput:
        (work_dir / "half.onnx").write_text("half")
        raise RuntimeError("crashed mid-build")

    with pytest.raises(RuntimeError):
        cache.get_or_build("stage", {"a": 1}, None, {}, crash)
    assert [p for p in (tmp_path / "stage").iterdir() if not p.name.endswith(".lock")] == []
    assert cache.builds["stage"] == 0
    calls: list[int] = []
    assert cache.get_or_build("stage", {"a": 1}, None, {}, writer("ok", calls)).path.read_text() == "ok"


def test_concurrent_workers_build_once(tmp_path: Path) -> None:
    calls: list[int] = []
    start = threading.Barrier(4)
    results = []

    def worker() -> None:
        cache = ArtifactCache(tmp_path)
        start.wait()
        results.append(cache.get_or_build("stage", {"a": 1}, None, {}, writer("x", calls)).key)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len(set(results)) == 1


def test_lineage_follows_parents(tmp_path: Path) -> None:
    cache, calls = ArtifactCache(tmp_path), []
    root = cache.get_or_build("weights", {"sha": "1"}, None, {}, writer("w", calls))
    child = cache.get_or_build("export", {"imgsz": 64}, root, {}, writer("e", calls))
    assert [m["stage"] for m in cache.lineage(child)] == ["export", "weights"]


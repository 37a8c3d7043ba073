from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from yolobench import cache as cache_module
from yolobench import keys
from yolobench.cache import ArtifactCache, BuildOutput, cache_key, write_atomically

REPO = Path(__file__).parents[1]
# A worker whose build writes half an artifact, then waits until the file argv[2] exists.
SLOW_BUILD = """
import sys, time
from pathlib import Path
from yolobench.cache import ArtifactCache, BuildOutput

release = Path(sys.argv[2])

def build(work_dir):
    (work_dir / "half.onnx").write_text("half")
    while not release.exists():
        time.sleep(0.02)
    (work_dir / "out.txt").write_text("done")
    return BuildOutput("out.txt", {})

ArtifactCache(Path(sys.argv[1])).get_or_build("stage", {"a": 1}, None, {}, build)
"""


def writer(content: str, calls: list[int]):
    def build(work_dir: Path) -> BuildOutput:
        calls.append(1)
        (work_dir / "out.txt").write_text(content)
        return BuildOutput("out.txt", {"applied_by_default": ["nothing"]})

    return build


def test_the_cache_key_is_the_one_keys_defines() -> None:
    assert cache_module.cache_key is keys.cache_key


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



def _work_dirs(stage_dir: Path) -> list[Path]:
    return sorted(p for p in stage_dir.glob(".*") if p.is_dir())


def _wait_for_work_dir(stage_dir: Path, worker: subprocess.Popen | None = None) -> Path:
    """The work dir of the build under way, once its half-written file is there."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        started = [d for d in _work_dirs(stage_dir) if (d / "half.onnx").is_file()]
        if started:
            return started[0]
        if worker is not None and worker.poll() is not None:
            raise AssertionError(f"the worker exited ({worker.returncode}) before its build started")
        time.sleep(0.02)
    raise AssertionError("the build never started")


def _slow_worker(root: Path, release: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SLOW_BUILD, str(root), str(release)], cwd=REPO)


def test_a_killed_build_leaves_a_work_dir_that_the_next_cache_removes(tmp_path: Path) -> None:
    calls: list[int] = []
    kept = ArtifactCache(tmp_path).get_or_build("stage", {"a": 2}, None, {}, writer("kept", calls))
    worker = _slow_worker(tmp_path, tmp_path / "never")
    try:
        work_dir = _wait_for_work_dir(tmp_path / "stage", worker)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
    assert worker.returncode == -signal.SIGKILL
    assert work_dir.is_dir() and (work_dir / "half.onnx").is_file()  # what kill -9 leaves behind
    key = work_dir.name.split(".")[1]

    reopened = ArtifactCache(tmp_path)
    assert not work_dir.exists()
    assert _work_dirs(tmp_path / "stage") == []
    # Nothing else is touched: the other artifact and the lock files stay.
    assert reopened.lookup("stage", kept.key) == kept and kept.path.read_text() == "kept"
    assert (tmp_path / "stage" / f".{key}.lock").is_file()
    # The killed build's key builds normally now.
    assert reopened.get_or_build("stage", {"a": 1}, None, {}, writer("again", calls)).key == key
    assert len(calls) == 2


def test_a_live_build_in_another_process_keeps_its_work_dir(tmp_path: Path) -> None:
    release = tmp_path / "release"
    worker = _slow_worker(tmp_path, release)
    try:
        work_dir = _wait_for_work_dir(tmp_path / "stage", worker)
        opened = ArtifactCache(tmp_path)
        assert opened.remove_stale_work_dirs() == []
        assert work_dir.is_dir() and (work_dir / "half.onnx").is_file()
        release.touch()
        assert worker.wait(timeout=60) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert not work_dir.exists() and _work_dirs(tmp_path / "stage") == []  # renamed into place by the worker
    built = opened.lookup("stage", cache_key("stage", {"a": 1}, None, {}))
    assert built is not None and built.path.read_text() == "done"


def test_a_live_build_in_another_thread_keeps_its_work_dir(tmp_path: Path) -> None:
    started, release = threading.Event(), threading.Event()
    results: list[str] = []

    def slow(work_dir: Path) -> BuildOutput:
        (work_dir / "half.onnx").write_text("half")
        started.set()
        release.wait(timeout=60)
        (work_dir / "out.txt").write_text("done")
        return BuildOutput("out.txt", {})

    thread = threading.Thread(
        target=lambda: results.append(ArtifactCache(tmp_path).get_or_build("stage", {"a": 1}, None, {}, slow).key)
    )
    thread.start()
    try:
        assert started.wait(timeout=60)
        work_dir = _wait_for_work_dir(tmp_path / "stage")
        ArtifactCache(tmp_path)  # same process, another open of the lock file: the lock is still seen as held
        assert work_dir.is_dir()
    finally:
        release.set()
        thread.join(timeout=60)
    assert results == [cache_key("stage", {"a": 1}, None, {})]


def test_only_work_dirs_are_candidates(tmp_path: Path) -> None:
    """Hidden folders that are not `.<key>.<random>` work dirs, and work dirs outside a stage folder, stay."""
    stage_dir = tmp_path / "stage"
    stale = stage_dir / ".0123456789abcdef0123.k2j4h_x1"
    not_a_key = stage_dir / ".settings.abc"
    at_root = tmp_path / ".0123456789abcdef0123.zzzz"
    for folder in (stale, not_a_key, at_root):
        folder.mkdir(parents=True)
    assert ArtifactCache(tmp_path).remove_stale_work_dirs() == []  # the first one went when the cache opened
    assert not stale.exists() and not_a_key.is_dir() and at_root.is_dir()


def test_write_atomically_replaces_whole_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "settings.json"
    write_atomically(path, "first")
    write_atomically(path, b"\x00second")
    assert path.read_bytes() == b"\x00second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["settings.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # like open(), unlike mkstemp's 0600


def test_a_failed_atomic_write_keeps_the_old_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "manifest.json"
    path.write_text("old")

    def refuse(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(cache_module.os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        write_atomically(path, "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["manifest.json"]

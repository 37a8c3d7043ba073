"""Content-addressed artifact store: each build stage's output is keyed by a hash of its parent's
key, the stage, its config and the tool versions, built once, and written atomically so a crash
never leaves half an artifact and concurrent workers never build the same thing twice. What a killed
build leaves (its work dir) is removed the next time the cache is opened."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yolobench.keys import KEY_LENGTH, cache_key  # noqa: F401  (re-exported: the cache's keys are defined in keys)

MANIFEST_NAME = "manifest.json"
# A build's work dir, `.<key>.<random>` (tempfile.mkdtemp) inside its stage's folder.
_WORK_DIR_NAME = re.compile(r"\.([0-9a-f]{16,64})\.[a-z0-9_]+")


def write_atomically(path: Path, data: str | bytes) -> None:
    """Write `data` (str as UTF-8) to `path` through a temporary file in the same folder and os.replace, so a
    reader, or another writer at the same time, sees the old content or the new one, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(temporary, "xb") as handle:  # plain open, not mkstemp: the file gets the usual permissions
            handle.write(data.encode() if isinstance(data, str) else data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def file_sha256(path: Path) -> str:
    """Content hash of a file, read in blocks (weights and models can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock across processes (and threads) for as long as the block runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def _lock_if_free(path: Path) -> Iterator[bool]:
    """Take the lock at `path` if nobody holds it right now: True inside the block if taken, False if held."""
    try:
        handle = open(path, "a")
    except OSError:  # e.g. a read-only cache: nothing can be cleaned there anyway
        yield False
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            taken = True
        except BlockingIOError:
            taken = False
        try:
            yield taken
        finally:
            if taken:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _work_dir_keys(stage_dir: Path) -> set[str]:
    """Keys of the build work dirs in a stage's folder (not of its artifacts or lock files)."""
    try:
        entries = list(stage_dir.iterdir())
    except OSError:
        return set()
    return {match[1] for path in entries if (match := _WORK_DIR_NAME.fullmatch(path.name)) and path.is_dir()}


@dataclass(frozen=True)
class Artifact:
    """One built thing in the cache: its key, its main file and the manifest that says how it was made."""

    key: str
    stage: str
    path: Path
    manifest: dict[str, Any]

    @property
    def directory(self) -> Path:
        return self.path.parent


@dataclass(frozen=True)
class BuildOutput:
    """What a stage's build function returns: the main file's name inside the work dir, and what to record."""

    filename: str
    manifest: dict[str, Any]


class BuildFailed(RuntimeError):
    """A stage that ran and could not produce its artifact (as opposed to a bug)."""


class ArtifactCache:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.builds: Counter[str] = Counter()  # stage -> builds done by this process; tests count them
        self.remove_stale_work_dirs()

    def remove_stale_work_dirs(self) -> list[Path]:
        """Remove the work dirs of builds that died without cleaning up (kill -9, power loss); return them.

        A build holds its key's lock from before it creates its work dir until after it renames or removes it,
        so a work dir whose key's lock can be taken at once belongs to no live build. Artifacts and lock files
        are left alone.
        """
        removed: list[Path] = []
        for stage_dir in (path for path in self.root.iterdir() if path.is_dir()):
            for key in sorted(_work_dir_keys(stage_dir)):
                with _lock_if_free(stage_dir / f".{key}.lock") as free:
                    if not free:
                        continue
                    for work_dir in stage_dir.glob(f".{key}.*"):  # listed again under the lock: none is live
                        if _WORK_DIR_NAME.fullmatch(work_dir.name) and work_dir.is_dir():
                            shutil.rmtree(work_dir, ignore_errors=True)
                            removed.append(work_dir)
        return removed

    def _directory(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def lookup(self, stage: str, key: str) -> Artifact | None:
        directory = self._directory(stage, key)
        manifest_path = directory / MANIFEST_NAME
        if not manifest_path.is_file():
            return None
        manifest = json.loads(manifest_path.read_text())
        return Artifact(key=key, stage=stage, path=directory / manifest["filename"], manifest=manifest)

    def _lock(self, stage: str, key: str):
        return file_lock(self.root / stage / f".{key}.lock")

    def get_or_build(
        self,
        stage: str,
        config: Mapping[str, Any],
        parent: Artifact | None,
        versions: Mapping[str, str],
        build: Callable[[Path], BuildOutput],
    ) -> Artifact:
        """Return the cached artifact, or build it once in a temp dir and move it into place."""
        key = cache_key(stage, config, parent.key if parent else None, versions)
        found = self.lookup(stage, key)
        if found is not None:
            return found
        with self._lock(stage, key):
            found = self.lookup(stage, key)  # another worker may have built it while we waited
            if found is not None:
                return found
            work_dir = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=self.root / stage))
            try:
                started = time.perf_counter()
                output = build(work_dir)
                if not (work_dir / output.filename).is_file():
                    raise BuildFailed(f"stage {stage!r} did not write {output.filename}")
                manifest = {
                    "stage": stage,
                    "key": key,
                    "parent": parent.key if parent else None,
                    "filename": output.filename,
                    "config": dict(config),
                    "versions": dict(versions),
                    "build_s": round(time.perf_counter() - started, 3),
                    "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    **output.manifest,
                }
                # The manifest is written last inside the temp dir, then the whole dir is renamed:
                # a reader sees either nothing or a complete artifact.
                write_atomically(work_dir / MANIFEST_NAME, json.dumps(manifest, indent=2, sort_keys=True, default=str))
                os.replace(work_dir, self._directory(stage, key))
            except BaseException:
                shutil.rmtree(work_dir, ignore_errors=True)
                raise
            self.builds[stage] += 1
        artifact = self.lookup(stage, key)
        assert artifact is not None
        return artifact

    def adopt(self, stage: str, key: str, source: Path) -> Artifact:
        """Put an artifact built elsewhere (a folder holding its files and manifest) in place under its
        own key, atomically like a build; the first copy wins."""
        if not (Path(source) / MANIFEST_NAME).is_file():
            raise BuildFailed(f"{source} has no {MANIFEST_NAME}: not an artifact folder")
        with self._lock(stage, key):
            if self.lookup(stage, key) is None:
                work_dir = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=self.root / stage))
                try:
                    shutil.copytree(source, work_dir, dirs_exist_ok=True)
                    os.replace(work_dir, self._directory(stage, key))
                except BaseException:
                    shutil.rmtree(work_dir, ignore_errors=True)
                    raise
        artifact = self.lookup(stage, key)
        assert artifact is not None
        return artifact

    def lineage(self, artifact: Artifact) -> list[dict[str, Any]]:
        """Manifests from the artifact back to its root, so a run can show how it was made."""
        chain = [artifact.manifest]
        parent_key = artifact.manifest.get("parent")
        while parent_key:
            parent = next((a for a in self._find(parent_key)), None)
            if parent is None:
                break
            chain.append(parent.manifest)
            parent_key = parent.manifest.get("parent")
        return chain

    def _find(self, key: str) -> Iterator[Artifact]:
        for stage_dir in self.root.iterdir():
            if stage_dir.is_dir():
                found = self.lookup(stage_dir.name, key)
                if found:
                    yield found

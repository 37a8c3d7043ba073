"""Weights stage: turn `model.weights` (an official name such as yolo11n.pt, or a local .pt) into a cached
copy keyed by its sha256, so every later stage depends on the bytes, not on a name or a path.

A missing download fails in seconds with a message that says what to do: many build machines are offline.
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

from yolobench.cache import Artifact, ArtifactCache, BuildOutput, file_sha256
from yolobench.errors import SweepStopped
from yolobench.stages.ultralytics_env import ensure_prepared

STAGE = "weights"
DOWNLOAD_HOST = ("github.com", 443)  # Ultralytics' official weights are GitHub release assets
REACHABILITY_TIMEOUT_S = 3.0


class WeightsUnavailable(SweepStopped):
    """The weights are neither on disk nor downloadable from here: no variant can do better, so the sweep stops."""


def _is_official_name(weights: str) -> bool:
    """A bare file name (no directory) ending in .pt, the way Ultralytics names its release assets."""
    path = Path(weights)
    return path.suffix == ".pt" and path.name == weights


def _cache_file(cache: ArtifactCache, source: Path, origin: str, official_name: str | None) -> Artifact:
    sha256 = file_sha256(source)

    def build(work_dir: Path) -> BuildOutput:
        shutil.copyfile(source, work_dir / source.name)
        return BuildOutput(
            filename=source.name,
            manifest={
                "sha256": sha256,
                "size_bytes": source.stat().st_size,
                "origin": origin,
                "official_name": official_name,
            },
        )

    # The bytes decide everything downstream; no library version changes a copied file.
    return cache.get_or_build(STAGE, {"sha256": sha256}, None, {}, build)


def _cached_official(cache: ArtifactCache, name: str) -> Artifact | None:
    """An official weight already in the cache under this name (the newest, if several)."""
    stage_dir = cache.root / STAGE
    if not stage_dir.is_dir():
        return None
    found: list[Artifact] = []
    for manifest_path in stage_dir.glob("*/manifest.json"):
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            continue
        if manifest.get("official_name") == name:
            artifact = cache.lookup(STAGE, manifest_path.parent.name)
            if artifact is not None:
                found.append(artifact)
    return max(found, key=lambda a: a.manifest.get("built_at", ""), default=None)


def _download_endpoint() -> tuple[str, int]:
    """The host a download connects to first: the HTTPS proxy when one is configured, else GitHub."""
    proxy = urllib.request.getproxies().get("https")
    if proxy and not urllib.request.proxy_bypass(DOWNLOAD_HOST[0]):
        parsed = urllib.parse.urlparse(proxy if "://" in proxy else f"http://{proxy}")
        if parsed.hostname:
            return parsed.hostname, parsed.port or 80
    return DOWNLOAD_HOST


def _unreachable_reason(timeout_s: float = REACHABILITY_TIMEOUT_S) -> str | None:
    """None if a TCP connection to the download host opens within the timeout, else why not."""
    host, port = _download_endpoint()
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except OSError as error:
        return f"cannot reach {host}:{port} ({error.__class__.__name__}: {error})"


def hub_reachable(timeout_s: float = REACHABILITY_TIMEOUT_S) -> bool:
    """Whether Ultralytics' download host (GitHub releases: weights and data sets) answers within the timeout."""
    return _unreachable_reason(timeout_s) is None


def _what_to_do(name: str, reason: str) -> str:
    return (
        f"weights {name!r} are not on disk and cannot be downloaded: {reason}. Either put the file at "
        f"{Path.cwd() / name} (copy it from a machine with internet), or point `model.weights` at a local .pt file, "
        "or use a `model.train` source so that yolobench trains its own model."
    )


def _download_official(cache: ArtifactCache, name: str) -> Artifact:
    reason = _unreachable_reason()
    if reason is not None:
        raise WeightsUnavailable(_what_to_do(name, reason))
    ensure_prepared(cache.root / "ultralytics-home")
    from ultralytics.utils.downloads import attempt_download_asset

    with tempfile.TemporaryDirectory(prefix=".download.", dir=cache.root) as tmp:
        target = Path(tmp) / name
        try:
            # Ultralytics' normal path: the right release tag, size checks, atomic publish.
            attempt_download_asset(target)
        except Exception as error:  # ConnectionError, HTTP errors: all mean "not downloadable from here"
            raise WeightsUnavailable(_what_to_do(name, f"download failed ({error})")) from error
        if not target.is_file():
            raise WeightsUnavailable(_what_to_do(name, "Ultralytics does not publish an asset with this name"))
        return _cache_file(cache, target, origin=f"download:{name}", official_name=name)


def resolve_weights(cache: ArtifactCache, weights: str) -> Artifact:
    """A local .pt path, or an official name (file in cwd, already cached, or downloaded), as a cached artifact."""
    path = Path(weights).expanduser()
    if path.is_file():
        official = weights if _is_official_name(weights) else None
        return _cache_file(cache, path.resolve(), origin=str(path.resolve()), official_name=official)
    if not _is_official_name(weights):
        raise WeightsUnavailable(
            f"weights file {weights!r} not found (resolved to {path.resolve()}). Point `model.weights` at an "
            "existing .pt file, use an official name such as 'yolo11n.pt', or use a `model.train` source."
        )
    cached = _cached_official(cache, weights)
    if cached is not None:
        return cached
    return _download_official(cache, weights)


def check_weights(cache: ArtifactCache, weights: str) -> None:
    """Before a sweep starts: raise WeightsUnavailable where `resolve_weights` would, without downloading."""
    path = Path(weights).expanduser()
    if path.is_file():
        return
    if not _is_official_name(weights):
        resolve_weights(cache, weights)  # raises with what to do
    if _cached_official(cache, weights) is None and (reason := _unreachable_reason()) is not None:
        raise WeightsUnavailable(_what_to_do(weights, reason))

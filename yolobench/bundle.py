"""Building for another host: `yolobench build` makes each variant's model up to what the measuring host's
runtime takes (the runtime's own compile step, a TensorRT engine or an OAK archive, stays for the device),
writes them as a bundle folder that `--measure-only --cache-dir` takes, and/or publishes them to the MLflow
store for `--measure-only` to fetch. Nothing is measured and no measurement run is logged: build runs go to
an experiment of their own (`<experiment>-builds`), so the sweep's experiment holds only the device's
numbers."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from yolobench.build import Builder, Built, LocalBuilder
from yolobench.cache import ArtifactCache, write_atomically
from yolobench.errors import SweepStopped, VariantFailed, is_bug
from yolobench.keys import build_key
from yolobench.prebuilt import build_axes, record_build, record_provenance
from yolobench.settings import SweepSettings
from yolobench.space import Space, Variant
from yolobench.spec import SweepSpec

BUNDLE_SWEEP = "sweep.yaml"  # the effective sweep file, overrides applied, for the measuring host
BUILD_RUN_PREFIX = "build "


@dataclass
class BuildSummary:
    sweep: str
    models: int  # distinct models the grid needs (variants differing only in runtime knobs share one)
    variants: int
    built: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    bundle: Path | None = None
    experiment: str | None = None  # where the models were published

    @property
    def succeeded(self) -> bool:
        return not self.failures


def models_of(spec: SweepSpec, space: Space) -> dict[str, Variant]:
    """One variant per build key, in grid order: the models the grid needs."""
    if not space.is_finite:
        raise SweepStopped("yolobench build needs a grid (search.mode: grid); a Pareto search decides its "
                           "variants while it measures")
    models: dict[str, Variant] = {}
    for variant in space.variants():
        models.setdefault(build_key(spec, variant), variant)
    return models


def write_bundle_sweep(spec: SweepSpec, bundle: Path) -> Path:
    """The effective sweep file beside the models, so the device runs exactly what was built."""
    path = bundle / BUNDLE_SWEEP
    text = yaml.safe_dump(json.loads(spec.model_dump_json()), sort_keys=False)
    write_atomically(path, f"# Written by `yolobench build` for sweep '{spec.name}'; measure it with\n"
                           f"#   yolobench sweep {path} --measure-only --cache-dir {bundle}\n" + text)
    return path


def build_for_host(spec: SweepSpec, settings: SweepSettings, bundle: Path | None, publish: bool,
                   say: Callable[[str], None] = print, builder: Builder | None = None) -> BuildSummary:
    """Build every model of the grid (cached: a rerun builds nothing twice), put each in the bundle and/or
    the MLflow store as soon as it is built, and carry on past a variant that fails to build. `builder`
    replaces the local one (on the same cache folder) where models come from elsewhere, as in tests."""
    from yolobench.data.validate import open_checked
    from yolobench.stages.ultralytics_env import prepare_ultralytics

    space = Space.from_spec(spec)
    models = models_of(spec, space)
    summary = BuildSummary(spec.name, len(models), space.count() or 0, bundle=bundle)
    dataset = open_checked(spec, settings)  # a broken data set stops here, before anything is written
    if builder is None:  # Ultralytics' settings and downloads stay in the home, as in a sweep
        prepare_ultralytics(settings.home / "ultralytics")
    cache = ArtifactCache(settings.resolved_cache_dir)
    builder = builder or LocalBuilder(spec, cache, dataset.yaml_path, dataset, say)
    builder.check(list(models.values()))
    publisher = _Publisher(spec, settings, cache) if publish else None
    bundle_cache = ArtifactCache(bundle) if bundle is not None else None
    if bundle is not None:
        write_bundle_sweep(spec, bundle)
    for index, (key, variant) in enumerate(models.items(), 1):
        name = model_label(spec, variant)
        say(f"[{index}/{len(models)}] {name} ...")
        try:
            built = builder.build(variant)
        except VariantFailed as error:
            summary.failures[name] = str(error)
            say(f"[{index}/{len(models)}] {name} FAILED: {str(error).splitlines()[0][:300]}")
            continue
        except Exception as error:
            if is_bug(error):
                raise
            summary.failures[name] = f"{type(error).__name__}: {error}"
            say(f"[{index}/{len(models)}] {name} FAILED: {type(error).__name__}: {str(error)[:300]}")
            continue
        record_build(cache, key, built, build_axes(spec, variant))
        if bundle_cache is not None:
            _into_bundle(bundle_cache, cache, key, built, build_axes(spec, variant))
        if publisher is not None:
            publisher.publish(variant, built, name)
        summary.built.append(name)
        say(f"[{index}/{len(models)}] {name} {built.model.path.name} "
            f"({built.model.path.stat().st_size / 2**20:.1f} MB)")
    summary.experiment = publisher.experiment if publisher is not None else None
    return summary


def model_label(spec: SweepSpec, variant: Variant) -> str:
    """The variant's label without the runtime's knobs: what names a model."""
    axes = build_axes(spec, variant)
    return "-".join(str(v) for v in axes.values())


def _into_bundle(bundle: ArtifactCache, cache: ArtifactCache, key: str, built: Built, axes: dict) -> None:
    """The runtime's input model and its build-key index entry; ancestors stay behind (their manifests go
    with the index entry's lineage), which keeps a bundle to the models a device takes."""
    if bundle.lookup(built.model.stage, built.model.key) is None:
        bundle.adopt(built.model.stage, built.model.key, built.model.directory)
    record_build(bundle, key, built, axes)


class _Publisher:
    """Logs each built model once to a build run in `<experiment>-builds`, tagged with its build key, where
    `--measure-only` looks for it; a rerun finds the run again instead of adding one."""

    def __init__(self, spec: SweepSpec, settings: SweepSettings, cache: ArtifactCache) -> None:
        from yolobench import tracking

        self.spec, self.cache = spec, cache
        self.tracker = tracking.Tracker(settings.resolved_tracking_uri, artifact_root=settings.home / "artifacts")
        self.experiment = f"{settings.experiment or spec.tracking.experiment or spec.name}-builds"
        self.experiment_id = self.tracker.experiment_id(self.experiment)

    def publish(self, variant: Variant, built: Built, name: str) -> None:
        from yolobench import tracking

        key = build_key(self.spec, variant)
        runs = self.tracker.find_runs([self.experiment_id], tags={tracking.BUILD_KEY_TAG: key}, limit=1)
        run_id = runs[0].info.run_id if runs else self.tracker.start_run(
            self.experiment_id, BUILD_RUN_PREFIX + name, tags={tracking.BUILD_KEY_TAG: key},
            params={"model": built.model_name, **{f"axis.{k}": v for k, v in build_axes(self.spec, variant).items()}})
        record_provenance(self.tracker, self.cache, self.experiment_id, run_id, self.spec, variant, built)
        self.tracker.finish(run_id)

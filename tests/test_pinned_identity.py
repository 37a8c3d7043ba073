"""Keys written by the release before the redesign (commit bac0601), pinned by value: studies, caches,
published models and MLflow runs on disk are found by them, so a refactor must compute the same ones.
tests/pinned/identity.json was written once by that release (variant key, build key per label), from the
sweep files kept as they were then in tests/pinned/sweeps (the shipped targets may change since)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import OAK_TINY_SWEEP, TINY_SWEEP
from yolobench.keys import build_key, cache_key, study_identity, variant_key
from yolobench.space import Space
from yolobench.spec import load_spec, parse_spec

PINNED = json.loads((Path(__file__).parent / "pinned" / "identity.json").read_text())
SWEEPS = Path(__file__).parent / "pinned" / "sweeps"


def spec_of(name: str):
    if name == "tiny":
        return parse_spec(TINY_SWEEP)
    if name == "oak_tiny":
        return parse_spec(OAK_TINY_SWEEP)
    return load_spec(SWEEPS / f"{name}.yaml")


@pytest.mark.parametrize("name", sorted(k for k in PINNED if k != "cache_key"))
def test_variant_and_build_keys_are_those_the_previous_release_wrote(name: str) -> None:
    spec = spec_of(name)
    space = Space.from_spec(spec)
    variants = {v.label: v for v in space.variants()}
    pinned = PINNED[name]
    assert len(variants) == pinned["count"]
    assert space.baseline.label == pinned["baseline"]
    for label, (pinned_variant_key, pinned_build_key) in pinned["variants"].items():
        variant = variants[label]  # the label (the MLflow run name) is pinned too
        assert variant_key(spec, variant) == pinned_variant_key, label
        assert build_key(spec, variant) == pinned_build_key, label


def test_cache_and_study_keys_are_those_the_previous_release_wrote() -> None:
    assert cache_key("export", {"imgsz": 320, "opset": None}, "abc", {"torch": "2.14.1"}) == PINNED["cache_key"]
    # The previous release hashed the plain string "<storage>#<sweep name>".
    assert study_identity("sqlite:///x/optuna.db", "quickstart") == "8e55b43882db0dbc49fc"


def test_a_setting_that_changes_the_model_changes_both_keys_and_a_runtime_knob_only_the_variant_key() -> None:
    spec = parse_spec(TINY_SWEEP)
    other = parse_spec({**TINY_SWEEP, "export": {"simplify": False}})
    variant = Space.from_spec(spec).baseline
    assert variant_key(spec, variant) != variant_key(other, variant)
    assert build_key(spec, variant) != build_key(other, variant)
    faster = Space.from_spec(spec).variant_from_params({**variant.as_dict(), "ort_level": "all"})
    assert variant_key(spec, faster) != variant_key(spec, variant)
    assert build_key(spec, faster) == build_key(spec, variant)

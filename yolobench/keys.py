"""Every identity yolobench stores: one digest function and one identity payload of a variant, of
which the variant key (what was measured) and the build key (what was built) are two views.

These keys name studies' trials, MLflow runs, cache folders and published models on disk, so their
values are pinned by tests (tests/test_pinned_identity.py): a change here orphans every stored sweep."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from yolobench.urls import redact

if TYPE_CHECKING:
    from yolobench.space import Variant
    from yolobench.spec import SweepSpec

KEY_LENGTH = 20  # hex characters; 80 bits is plenty against accidental collisions
# Before runtimes described themselves, one runtime section served every runtime and its `name` defaulted
# to onnxruntime: a measured-settings view leaves that default out, so keys of older stores stay valid.
_LEGACY_DEFAULT_RUNTIME = "onnxruntime"


def digest(payload: Any, length: int = KEY_LENGTH) -> str:
    """sha256 of a canonical serialisation (sorted keys; a str is hashed as it is), cut to `length` hex."""
    text = payload if isinstance(payload, str) else json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _built(section: Any) -> dict[str, Any]:
    """What is built counts in full, defaults included: a new default recipe is a new model."""
    return section.model_dump(mode="json")


def _measured(section: Any) -> dict[str, Any]:
    """How it is measured counts by the settings that differ from their defaults, so a newer yolobench
    that adds a measurement setting does not make every finished variant look new."""
    return section.model_dump(mode="json", exclude_defaults=True)


def _runtime_settings(spec: SweepSpec) -> dict[str, Any]:
    settings = _measured(spec.runtime)
    settings.pop("name", None)
    if spec.runtime.name != _LEGACY_DEFAULT_RUNTIME:
        settings["name"] = spec.runtime.name
    return settings


def identity(spec: SweepSpec, variant: Variant) -> dict[str, Any]:
    """Everything that decides a variant's result, by section; the keys below are views of it. Logged
    with each run (`identity.json`) so a key can be explained later."""
    from yolobench.runtimes import runtime_info

    info = runtime_info(spec.runtime.name)
    axes = variant.as_dict()
    return {
        "model": _built(spec.model),
        "data": _built(spec.data),
        "export": _built(spec.export),
        "int8": _built(spec.int8) if axes.get("precision") == "int8" else None,
        "runtime": _runtime_settings(spec),
        "measure": _measured(spec.measure),
        "variant": axes,
        # The variant's axes that shape the built model: everything but the runtime's own knobs.
        "build_axes": {name: value for name, value in axes.items() if name not in info.axis_names},
    }


def variant_key(spec: SweepSpec, variant: Variant) -> str:
    """Identity of a measured variant: what is built (model, data) and how it is run. Computable before
    building, so a resumed sweep knows what it has done without touching the cache."""
    payload = identity(spec, variant)
    return digest({name: payload[name] for name in ("model", "data", "export", "int8", "runtime", "measure",
                                                    "variant")})


def build_key(spec: SweepSpec, variant: Variant) -> str:
    """Identity of the model the runtime receives, from the sweep file alone (no tool versions), so a
    build host and a measuring host compute the same one. How much of the val split is scored and how
    the model is run do not change the model."""
    payload = identity(spec, variant)
    data = dict(payload["data"])
    data.pop("val_images", None)
    return digest({"model": payload["model"], "data": data, "export": payload["export"],
                   "int8": payload["int8"], "axes": payload["build_axes"]})


def key_of_params(spec: SweepSpec, space: Any, params: dict[str, Any]) -> str | None:
    """The variant key the sweep file gives a stored trial's params now; None for an axis it no longer has."""
    try:
        return variant_key(spec, space.variant_from_params(params))
    except KeyError:
        return None


@dataclass(frozen=True, eq=True)
class KeyOfParams:
    """`key_of_params` of one sweep file as a value: two are equal for the same spec and space, so what is counted
    per key function (search.evaluations) is kept from one call to the next."""

    spec: SweepSpec
    space: Any

    def __call__(self, params: dict[str, Any]) -> str | None:
        return key_of_params(self.spec, self.space, params)


def study_identity(storage_url: str, study_name: str) -> str:
    """Which study a parent run belongs to: its storage and the study's name. The storage's password is left
    out: agents that give it in the URL and agents that take it from PGPASSWORD or ~/.pgpass share one study."""
    return digest(f"{redact(storage_url).replace(':***@', '@')}#{study_name}")


def cache_key(stage: str, config: Any, parent_key: str | None, versions: Any) -> str:
    """A build stage's artifact: hash of its parent's key, the stage, its config and the tool versions."""
    return digest({"stage": stage, "config": config, "parent": parent_key, "versions": versions})

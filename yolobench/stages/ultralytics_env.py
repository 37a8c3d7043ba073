"""Make Ultralytics behave the same everywhere: a sweep must depend only on what yolobench declares,
not on the user's Ultralytics settings file, the loggers that happen to be installed, or the network.

Every knob below was checked against the installed Ultralytics source (8.4.x); the reason sits next
to it. Most of them are read once, when `ultralytics.utils` is imported (module constants), so
`prepare_ultralytics` must run before the first Ultralytics import in the process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

from yolobench.cache import write_atomically
from yolobench.versions import versions  # noqa: F401  (re-exported: stages and blob.py import it from here)

# Ultralytics keeps settings.json (and downloaded fonts) in get_user_config_dir() = $YOLO_CONFIG_DIR/Ultralytics.
SETTINGS_SUBDIR = "Ultralytics"

ENVIRONMENT = {
    # utils/__init__.py: AUTOINSTALL = env_bool("YOLO_AUTOINSTALL", True). When True, checks.check_requirements()
    # pip/uv-installs whatever an export or train path asks for (the ONNX exporter asks for onnx, onnxruntime and
    # onnxslim>=0.1.82). Off: a missing package is a warning, never a silent change to the environment.
    "YOLO_AUTOINSTALL": "false",
    # utils/__init__.py: is_online() returns False at once. That turns off Model.train()'s PyPI "new version"
    # query (checks.check_pip_update_available), the anonymous events and Sentry, and the AutoUpdate path, and makes
    # downloads.safe_download() raise on its first failure instead of retrying for 5 + 10 + 20 s. A download that
    # works is unaffected (safe_download only asks is_online() after a failure), so the weights stage still fetches
    # official weights through Ultralytics' normal path when the host is reachable.
    "YOLO_OFFLINE": "true",
}

# callbacks/platform.py reads this before the settings' api_key and would stream training to Ultralytics Platform.
REMOVED_ENVIRONMENT = ("ULTRALYTICS_API_KEY",)

# Integrations that callbacks/base.py add_integration_callbacks() attaches to every trainer when their setting is
# True. mlflow defaults to True and its callback logs to MLFLOW_TRACKING_URI (or ./mlruns) under the sweep's own
# tracking store; clearml, comet, dvc and raytune also default to True and log wherever they are configured.
INTEGRATION_SETTINGS = ("clearml", "comet", "dvc", "mlflow", "raytune", "tensorboard", "wandb")

FIXED_SETTINGS: dict[str, Any] = {
    **{name: False for name in INTEGRATION_SETTINGS},
    "sync": False,  # events.py anonymous usage events and Sentry crash reports
    "api_key": "",  # Platform logging (callbacks/platform.py)
    "vscode_msg": False,  # one-off advertising message
    "openvino_msg": False,  # one-off advertising message
}

# Callback modules that talk to something outside the sweep; the trainer guard drops any that are still attached.
_INTEGRATION_MODULES = {f"ultralytics.utils.callbacks.{name}" for name in (*INTEGRATION_SETTINGS, "wb", "platform")}
_INTEGRATION_MODULES.add("ultralytics.utils.events")

# data/utils.py check_det_dataset() calls checks.check_font("Arial.ttf") on every training run; a font missing from
# USER_CONFIG_DIR and matplotlib's list triggers an HTTP HEAD plus a download from GitHub. Plots are off, so the font
# is never drawn with; matplotlib's bundled DejaVu Sans (wide Unicode coverage) stands in for both names.
_FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")

_prepared_home: Path | None = None


class UltralyticsEnvironmentError(RuntimeError):
    """Ultralytics was imported before prepare_ultralytics(), or ignored what it set."""


def _settings(home: Path) -> dict[str, Any]:
    # Ultralytics' own default runs/datasets/weights dirs are relative to the cwd's git root; keep them in `home`.
    return {
        **FIXED_SETTINGS,
        "datasets_dir": str(home / "datasets"),
        "weights_dir": str(home / "weights"),
        "runs_dir": str(home / "runs"),
    }


def _write_settings(settings_file: Path, wanted: dict[str, Any]) -> None:
    """Merge `wanted` into the settings file atomically (workers may prepare the same home at once)."""
    current: dict[str, Any] = {}
    if settings_file.is_file():
        try:
            current = json.loads(settings_file.read_text())
        except (OSError, ValueError):
            current = {}
    if current and all(current.get(k) == v for k, v in wanted.items()):
        return
    write_atomically(settings_file, json.dumps({**current, **wanted}, indent=2))


def _install_fonts(config_dir: Path) -> None:
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or spec.origin is None:
        return  # no matplotlib, no Ultralytics either
    source = Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in _FONT_NAMES:
        target = config_dir / name
        if not target.exists() and source.is_file():
            write_atomically(target, source.read_bytes())


def _check_loaded(config_dir: Path, wanted: dict[str, Any]) -> None:
    """After import: Ultralytics reads our settings file, with our values, and the env constants took."""
    utils = sys.modules["ultralytics.utils"]
    settings_file = Path(utils.SETTINGS_FILE).resolve()
    if settings_file.parent != config_dir:
        raise UltralyticsEnvironmentError(
            f"Ultralytics was imported before prepare_ultralytics() and reads {settings_file}; "
            "call prepare_ultralytics() before anything imports ultralytics"
        )
    if utils.AUTOINSTALL or utils.ONLINE:
        raise UltralyticsEnvironmentError(
            "Ultralytics was imported before prepare_ultralytics() set YOLO_AUTOINSTALL/YOLO_OFFLINE"
        )
    stale = {k: v for k, v in wanted.items() if k in utils.SETTINGS.defaults and utils.SETTINGS.get(k) != v}
    if stale:  # e.g. a schema migration on first load; update() validates and persists
        utils.SETTINGS.update(stale)


def prepare_ultralytics(home: Path) -> None:
    """Point Ultralytics at a yolobench-owned settings dir and switch off everything that reaches outside the sweep.

    Call before any `import ultralytics`; the user's global ~/.config/Ultralytics/settings.json is never
    read or written. Ultralytics reads its settings file once per process, so the first home stays in force:
    a later call (same or another home) only re-checks that the switches are still off.
    """
    global _prepared_home
    if _prepared_home is not None:
        _check_loaded(_prepared_home / SETTINGS_SUBDIR, _settings(_prepared_home))
        return
    home = Path(home).resolve()
    config_dir = home / SETTINGS_SUBDIR
    config_dir.mkdir(parents=True, exist_ok=True)
    wanted = _settings(home)
    if "ultralytics.utils" not in sys.modules:
        os.environ["YOLO_CONFIG_DIR"] = str(home)
        os.environ.update(ENVIRONMENT)
        for name in REMOVED_ENVIRONMENT:
            os.environ.pop(name, None)
        _write_settings(config_dir / "settings.json", wanted)
        _install_fonts(config_dir)
        import ultralytics.utils  # noqa: F401  (loads the settings we just wrote)
    _check_loaded(config_dir, wanted)
    _prepared_home = home


def ensure_prepared(default_home: Path) -> Path:
    """Prepare with `default_home` unless the process already chose a home; return the home in use."""
    prepare_ultralytics(default_home)
    assert _prepared_home is not None
    return _prepared_home


def drop_integration_callbacks(trainer: Any) -> list[str]:
    """Trainer callback (on_pretrain_routine_start): detach logger integrations that are still attached.

    The settings already keep them off; this guard makes a hand-edited settings file unable to make
    Ultralytics log into the sweep's MLflow store. Returns the integrations it dropped, e.g. ['events', 'platform']
    (those two are always attached and stay inert: sync is off and there is no API key).
    """
    dropped: set[str] = set()
    for functions in trainer.callbacks.values():
        keep = [f for f in functions if getattr(f, "__module__", "") not in _INTEGRATION_MODULES]
        dropped.update(f.__module__.rsplit(".", 1)[-1] for f in functions if f not in keep)
        functions[:] = keep  # in place: the list may be the one being iterated
    return sorted(dropped)


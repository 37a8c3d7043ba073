"""The target sweep files shipped with yolobench, beside this module, and how a command's argument names
a sweep: a path to a sweep file, or the name of a shipped target (`yolobench targets` lists them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

FOLDER = Path(__file__).parent


class UnknownTarget(ValueError):
    """Neither a sweep file nor a shipped target."""


def shipped() -> dict[str, Path]:
    """Target name -> its sweep file, in name order."""
    return {path.stem: path for path in sorted(FOLDER.glob("*.yaml"))}


def resolve(name_or_path: str | Path) -> Path:
    """A file that exists is the sweep file (`quickstart.yaml` here is the user's edited copy); a bare
    name, or a file name that does not exist here, names a shipped target."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = path.name[:-5] if path.name.endswith(".yaml") else path.name
    targets = shipped()
    if path.parent == Path(".") and name in targets:
        return targets[name]
    if path.suffix in (".yaml", ".yml", ".json") or path.parent != Path("."):
        raise UnknownTarget(f"sweep file not found: {path}")
    raise UnknownTarget(f"no sweep file or target named '{name_or_path}'; targets: {', '.join(targets)} "
                        "(`yolobench targets` describes them)")


@dataclass(frozen=True)
class TargetRow:
    name: str
    target: str
    runtime: str
    variants: int | None
    baseline: str


def describe() -> list[TargetRow]:
    """One row per shipped target, for `yolobench targets`."""
    from yolobench.space import Space
    from yolobench.spec import load_spec

    rows = []
    for name, path in shipped().items():
        spec = load_spec(path)
        space = Space.from_spec(spec)
        rows.append(TargetRow(name, spec.target, spec.runtime.name, space.count(), space.baseline.label))
    return rows


def write_copy(name: str, destination: Path | None = None, force: bool = False) -> Path:
    """An editable copy of a shipped target (its comments kept) for `yolobench init`; never overwrites
    a file unless asked, since it may be the user's edited copy."""
    targets = shipped()
    if name not in targets:
        raise UnknownTarget(f"no target named '{name}'; targets: {', '.join(targets)}")
    destination = Path(destination) if destination is not None else Path(f"{name}.yaml")
    if destination.exists() and not force:
        raise FileExistsError(f"{destination} exists; pass --force to overwrite it, or name another file")
    header = (f"# Copied from yolobench's target '{name}'. Edit it, then:\n"
              f"#   yolobench plan {destination}      (what it will build)\n"
              f"#   yolobench sweep {destination}     (build, measure and log every variant)\n"
              f"# The name of the sweep (its MLflow experiment and Optuna study) is the file's stem unless "
              f"`name:` is set.\n")
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_text(header + targets[name].read_text())
    return destination

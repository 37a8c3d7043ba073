"""Command line: targets, init, plan, sweep, build, report, ui, doctor, data. Every command that takes a
sweep takes a shipped target's name or a sweep file, with the same overrides. Heavy imports stay inside
the commands so `yolobench --help` and a measuring host stay light."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from yolobench.overrides import Overrides
from yolobench.urls import redact, without_credentials
from yolobench.spec import SpecError, SweepNotFound, SweepSpec, load_spec, load_sweep

DEFAULT_HOME = Path(os.environ.get("YOLOBENCH_HOME", "mlruns"))


def _overrides(args: argparse.Namespace) -> Overrides:
    return Overrides(args.weights, args.data, tuple(args.only or ()), tuple(args.set or ()))


def _load(args: argparse.Namespace) -> SweepSpec:
    """The sweep named on the command line with its overrides; notes on what they moved go to stderr."""
    spec, notes = load_sweep(args.file, _overrides(args))
    for note in notes:
        print(f"yolobench: {note}", file=sys.stderr)
    return spec


def _targets(args: argparse.Namespace) -> int:
    from yolobench.targets import describe

    rows = describe()
    width, runtime, baseline = (max(len(getattr(r, f)) for r in rows) for f in ("name", "runtime", "baseline"))
    print(f"{'target':<{width}}  {'variants':>8}  {'runtime':<{runtime}}  {'baseline':<{baseline}}  description")
    for row in rows:
        count = row.variants if row.variants is not None else "pareto"
        print(f"{row.name:<{width}}  {count:>8}  {row.runtime:<{runtime}}  {row.baseline:<{baseline}}  {row.target}")
    print(f"\nuse a name wherever a sweep file goes (yolobench plan {rows[0].name}); "
          "yolobench init NAME [FILE] writes an editable copy")
    return 0


def _init(args: argparse.Namespace) -> int:
    from yolobench.targets import UnknownTarget, write_copy

    try:
        path = write_copy(args.target, Path(args.dest) if args.dest else None, args.force)
    except (UnknownTarget, FileExistsError) as error:
        print(f"yolobench: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path}; edit it, then: {_launcher()} plan {path}")
    return 0


def _print_plan(args: argparse.Namespace) -> int:
    from yolobench.space import Space

    spec = _load(args)
    space = Space.from_spec(spec)
    print(f"sweep: {spec.name}  ({spec.target or spec.runtime.name})")
    options = spec.runtime.model_dump(exclude={"name"})
    print(f"runtime: {spec.runtime.name}  " + " ".join(f"{k}={v}" for k, v in options.items() if v not in (None, {}, [])))
    count = space.count()
    print(f"variants: {count if count is not None else 'continuous'}")
    print(f"search: {spec.search.mode}" + (
        f" ({spec.search.sampler}; budget {spec.search.budget.trials or '-'} trials, "
        f"{spec.search.budget.minutes or '-'} min)" if spec.search.mode == "pareto" else ""))
    print("axes:")
    for name, values in space.axes.items():
        if isinstance(values, list):
            print(f"  {name}: {', '.join(str(v) for v in values)}  ({len(values)})")
        else:
            step = f" step {values.step}" if values.step else ""
            print(f"  {name}: {values.low} .. {values.high}{step}  (continuous)")
    if space.excluded:
        print(f"excluded: {list(space.excluded)}")
    print(f"baseline: {space.baseline.label}")
    if args.list and space.is_finite:
        for index, variant in enumerate(space.variants(), 1):
            print(f"  {index:>4}  {variant.label}")
    return 0


def _settings(args: argparse.Namespace):
    from yolobench.settings import SweepSettings

    return SweepSettings(
        home=Path(args.home),
        tracking_uri=args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"),
        storage=args.storage,
        experiment=args.experiment or getattr(args, "study", None),
        study=getattr(args, "study", None),
        heartbeat_grace_s=getattr(args, "heartbeat_grace", None),
        retry_failed=getattr(args, "retry_failed", False),
        cache_dir=Path(args.cache_dir) if getattr(args, "cache_dir", None) else None,
        measure_only=getattr(args, "measure_only", False),
    )


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0 seconds, got {text}")
    return seconds


def _launcher() -> str:
    """How the user can call yolobench again: plain `yolobench` when on PATH, else the script's path."""
    script = Path(sys.argv[0])
    if script.name != "yolobench" or shutil.which("yolobench") == str(script):
        return "yolobench"
    try:
        return str(script.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(script)


def _sweep(args: argparse.Namespace) -> int:
    if args.dry_run:
        return _print_plan(args)
    from yolobench.errors import DataInvalid, SweepStopped
    from yolobench.runner import run_sweep

    spec = _load(args)
    try:
        summary = run_sweep(spec, _settings(args))
    except SweepStopped as error:
        print(f"yolobench: {error}", file=sys.stderr)
        return 2 if isinstance(error, DataInvalid) else 1  # 2: the input is wrong, as for a bad sweep file
    except KeyboardInterrupt as interrupt:  # Ctrl-C or SIGTERM: the variant in flight was discarded
        why = str(interrupt) or "interrupted"
        print(f"\nyolobench: stopped ({why}); run the same command again to resume", file=sys.stderr)
        return 130
    _print_summary(args, summary)
    return 0 if summary.succeeded else 1


def _print_summary(args: argparse.Namespace, summary) -> None:
    print(
        f"\nsweep {summary.sweep}: {summary.total} variants; measured now {summary.measured}, "
        f"already done {summary.already_done}, failed {summary.failed}"
        + (f", answered from the store {summary.reused}" if summary.reused else "")
    )
    for label, reason in summary.failures.items():
        print(f"  FAILED {label}: {reason.splitlines()[0][:300]}")
    failed = summary.failed + summary.failed_before
    if failed:
        retry = " ".join([_launcher(), *sys.argv[1:]]) if sys.argv[1:2] == ["sweep"] else f"{_launcher()} sweep {args.file}"
        if "--retry-failed" not in retry:
            retry += " --retry-failed"
        print(f"{failed} variant(s) failed (their MLflow runs say why); to try them again: {retry}")
    print(f"runs: experiment '{summary.experiment}' in {redact(summary.tracking_uri)} (parent run {summary.parent_run_id})")
    print(f"study: '{args.study or summary.sweep}' in {redact(summary.storage)}")
    ui_hint = f"{_launcher()} ui" + (f" --home {args.home}" if Path(args.home) != Path("mlruns") else "")
    if args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"):
        ui_hint = f"open {redact(summary.tracking_uri)} in a browser" if summary.tracking_uri.startswith("http") else (
            f"mlflow ui --backend-store-uri {redact(summary.tracking_uri)}")
    print(f"open the UI: {ui_hint}  (then http://127.0.0.1:5000)")


def _ui(args: argparse.Namespace) -> int:
    from yolobench.tracking import Tracker, default_tracking_uri, variants_url

    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(Path(args.home))
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", args.host,
               "--port", str(args.port)]
    print("running:", redact(" ".join(command)), flush=True)
    for experiment_id, name in Tracker(uri).sweep_experiments():  # links straight to the variants, fastest first
        print(f"  {name}: {variants_url(f'http://{args.host}:{args.port}', experiment_id)}", flush=True)
    return subprocess.call(command)


def _data(args: argparse.Namespace) -> int:
    from yolobench.data.synthetic import make_synthetic_dataset

    data_yaml = make_synthetic_dataset(Path(args.dir), args.train_images, args.val_images, args.image_size, args.seed)
    print(f"wrote {data_yaml}")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from yolobench.doctor import format_report, runtime_report
    from yolobench.measure.system import host_fingerprint

    print("\n".join(format_report(runtime_report(), host_fingerprint())))
    return 0


def _report(args: argparse.Namespace) -> int:
    from yolobench.report import print_report

    spec = _load(args)
    return print_report(spec, _settings(args).for_spec(spec))


def _build(args: argparse.Namespace) -> int:
    from yolobench.bundle import BUNDLE_SWEEP, build_for_host
    from yolobench.errors import DataInvalid, SweepStopped

    if not args.bundle and not args.publish:
        print("yolobench build: say where the models go: --bundle DIR (a folder to copy to the device) "
              "and/or --publish (the MLflow store)", file=sys.stderr)
        return 2
    spec = _load(args)
    settings = _settings(args).for_spec(spec)
    bundle = Path(args.bundle).resolve() if args.bundle else None
    try:
        summary = build_for_host(spec, settings, bundle, args.publish)
    except SweepStopped as error:
        print(f"yolobench: {error}", file=sys.stderr)
        return 2 if isinstance(error, DataInvalid) else 1
    except KeyboardInterrupt:
        print("\nyolobench: stopped; run the same command again to go on (built models are cached)", file=sys.stderr)
        return 130
    print(f"\nbuilt {len(summary.built)} of {summary.models} models for the {summary.variants} variants of "
          f"'{summary.sweep}'; failed {len(summary.failures)}")
    for name, reason in summary.failures.items():
        print(f"  FAILED {name}: {reason.splitlines()[0][:300]}")
    if bundle is not None:
        print(f"bundle: {bundle}; copy it to the measuring host and run there:\n"
              f"  yolobench sweep {bundle / BUNDLE_SWEEP} --measure-only --cache-dir {bundle}")
    if args.publish:
        uri = without_credentials(settings.resolved_tracking_uri)
        if uri != settings.resolved_tracking_uri:
            print("the tracking server's credentials: MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD on the device")
        sweep = " ".join([args.file, *_overrides(args).as_list()])
        print(f"published to experiment '{summary.experiment}' in {uri}; on the measuring host run:\n"
              f"  yolobench sweep {sweep} --measure-only --tracking-uri {uri}")
    return 0 if summary.succeeded else 1


def _compare(args: argparse.Namespace) -> int:
    from yolobench.compare import compare
    from yolobench.spec import load_spec

    specs = [load_spec(sweep) for sweep in args.sweeps]  # target names or files, as the other commands take
    return compare(specs, _settings(args), Path(args.out))


def _promote(args: argparse.Namespace) -> int:
    """Register one variant's model in the MLflow Model Registry with its figures, and print the version."""
    from yolobench.promote import NotPromotable, promote
    from yolobench.spec import load_spec
    from yolobench.tracking import Tracker

    if len(args.variant) > 2:
        print("yolobench promote: give [TARGET|FILE] RUN|LABEL, nothing more", file=sys.stderr)
        return 2
    *sweep, what = args.variant
    spec = load_spec(sweep[0]) if sweep else None
    experiment = args.experiment or (spec.tracking.experiment or spec.name if spec is not None else None)
    settings = _settings(args).for_spec(spec) if spec is not None else _settings(args)
    try:
        version = promote(Tracker(settings.resolved_tracking_uri), what, args.name, experiment,
                          spec.name if spec is not None else None)
    except NotPromotable as error:
        print(f"yolobench: {error}", file=sys.stderr)
        return 1
    figures = ", ".join(f"{k.removeprefix('yolobench.')} {v}" for k, v in version.tags.items()
                        if k in ("yolobench.latency_ms_p50", "yolobench.map50_95", "yolobench.speedup_vs_baseline"))
    print(f"registered '{version.name}' version {version.version} from run {version.run_id} "
          f"({version.tags.get('yolobench.label', '?')}: {figures}); load it as models:/{version.name}/{version.version}")
    return 0


def _with_secrets_hidden(args: argparse.Namespace) -> int:
    """Run the command; a traceback that gets out (a bug, a library's error) has any URL's password hidden."""
    from yolobench.errors import SweepStopped

    try:
        return args.handler(args)
    except (SpecError, KeyboardInterrupt):
        raise
    except SweepStopped as error:  # a store that is not there, a driver that is missing
        print(f"yolobench: {redact(str(error))}", file=sys.stderr)
        return 1
    except Exception:
        import traceback

        print(redact(traceback.format_exc()), file=sys.stderr, end="")
        return 1


def _add_store_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--home", default=str(DEFAULT_HOME),
                         help="local store: MLflow db, artifacts, Optuna db, cache (default: mlruns)")
    command.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or the local store)")
    command.add_argument("--storage", help="Optuna storage URL (default: sqlite under --home)")
    command.add_argument("--experiment", help="MLflow experiment name (default: --study, else the sweep's name)")
    command.add_argument("--study", help="Optuna study name, one per device class, e.g. cpu-ort-i9 (default: the "
                                         "sweep's name); agents of one class share it, other classes never see it")


def _add_sweep_argument(command: argparse.ArgumentParser) -> None:
    command.add_argument("file", metavar="TARGET|FILE", help="a shipped target (yolobench targets) or a sweep file")
    overrides = command.add_argument_group("overrides (validated as the sweep file is)")
    overrides.add_argument("--weights", help="model.weights: an official name (yolo11n.pt), a pattern with "
                                             "{scale}, or one local .pt")
    overrides.add_argument("--data", help="data.yaml: an Ultralytics data yaml")
    overrides.add_argument("--only", action="append", metavar="AXIS=V1,V2", help="keep only these values of an axis")
    overrides.add_argument("--set", action="append", metavar="KEY=YAML",
                           help="any field, by dotted key (e.g. measure.min_runs=100)")


def _add_sweep_commands(commands) -> None:
    """The commands that read a sweep file: plan, sweep, build, report."""
    plan = commands.add_parser("plan", help="count and list a sweep's variants without building anything")
    _add_sweep_argument(plan)
    plan.add_argument("--list", action="store_true", help="print every variant")
    plan.set_defaults(handler=_print_plan)

    sweep = commands.add_parser("sweep", help="build, measure and log every variant of a sweep (resumes)")
    _add_sweep_argument(sweep)
    sweep.add_argument("--dry-run", action="store_true", help="same as plan")
    sweep.add_argument("--list", action="store_true", help="with --dry-run: print every variant")
    sweep.add_argument("--retry-failed", action="store_true", help="run variants that failed before again")
    sweep.add_argument("--measure-only", action="store_true",
                       help="never build: take each variant's model from the cache folder or from MLflow (a measuring "
                            "host without the build extra); a variant whose model is missing fails with what is missing")
    sweep.add_argument("--cache-dir", help="artifact cache folder, e.g. one copied from the build machine "
                                           "(default: cache/ under --home)")
    sweep.add_argument("--heartbeat-grace", type=_seconds, metavar="SECONDS",
                       default=os.environ.get("YOLOBENCH_HEARTBEAT_GRACE_S"),
                       help="a worker whose heartbeat stops this long is taken for dead and its variant is taken over "
                            "(default: YOLOBENCH_HEARTBEAT_GRACE_S, else 120)")
    _add_store_options(sweep)
    sweep.set_defaults(handler=_sweep)

    build = commands.add_parser("build", help="build every variant's model for a measuring host, without measuring")
    _add_sweep_argument(build)
    build.add_argument("--bundle", metavar="DIR", help="write the models and the effective sweep file into DIR")
    build.add_argument("--publish", action="store_true", help="log the models to the MLflow store "
                                                              "(experiment <name>-builds)")
    build.add_argument("--cache-dir", help="artifact cache folder (default: cache/ under --home)")
    _add_store_options(build)
    build.set_defaults(handler=_build)

    report = commands.add_parser("report", help="print a sweep's results from the store")
    _add_sweep_argument(report)
    _add_store_options(report)
    report.set_defaults(handler=_report)


def _add_store_commands(commands) -> None:
    """The commands that read the MLflow store the sweeps wrote: promote, compare, ui."""
    promote = commands.add_parser("promote", help="register one variant's model in the MLflow Model Registry")
    promote.add_argument("variant", nargs="+", metavar="[TARGET|FILE] RUN|LABEL",
                         help="a run id, or a variant's label within the sweep's experiment (give the sweep first)")
    promote.add_argument("--name", required=True, help="registered model name (a new version each time)")
    _add_store_options(promote)
    promote.set_defaults(handler=_promote)

    compare = commands.add_parser("compare", help="one table and one plot of several sweeps' fronts "
                                                  "(latency_ms_p50 against mAP50-95), baselines marked")
    compare.add_argument("sweeps", nargs="+", metavar="SWEEP", help="sweep files (or target names), one per target")
    compare.add_argument("--out", default=".", help="folder for compare.png and compare.html (default: here)")
    _add_store_options(compare)
    compare.set_defaults(handler=_compare)

    ui = commands.add_parser("ui", help="start the MLflow UI on the store in use")
    ui.add_argument("--home", default=str(DEFAULT_HOME))
    ui.add_argument("--tracking-uri")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(handler=_ui)


def _add_tool_commands(commands) -> None:
    """The commands that need neither a sweep nor a store: doctor, data synth."""
    doctor = commands.add_parser("doctor", help="which runtimes and providers are usable here, and why not")
    doctor.set_defaults(handler=_doctor)

    data = commands.add_parser("data", help="data set tools")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    synth = data_commands.add_parser("synth", help="write the deterministic synthetic data set")
    synth.add_argument("dir")
    synth.add_argument("--train-images", type=int, default=200)
    synth.add_argument("--val-images", type=int, default=50)
    synth.add_argument("--image-size", type=int, default=320)
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(handler=_data)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yolobench", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    targets = commands.add_parser("targets", help="list the target sweep files shipped with yolobench")
    targets.set_defaults(handler=_targets)

    init = commands.add_parser("init", help="write an editable copy of a shipped target")
    init.add_argument("target")
    init.add_argument("dest", nargs="?", help="file to write (default: TARGET.yaml here)")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    init.set_defaults(handler=_init)

    _add_sweep_commands(commands)
    _add_store_commands(commands)
    _add_tool_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _with_secrets_hidden(args)
    except SweepNotFound as error:
        print(f"yolobench: {error}", file=sys.stderr)
        return 2
    except SpecError as error:
        print(f"yolobench: bad sweep file:\n{error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

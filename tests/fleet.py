"""A team's fleet on loopback, as tracking/README.md sets it up: PostgreSQL with a password-protected role, an
MLflow tracking server on it (artifact proxy, basic auth where MLflow's auth extra is installed), one build host
that publishes the models (`yolobench build --publish`) and two device agents of one class on one study
(`yolobench sweep --measure-only`), each with its own home and cache, no shared disk. Agent A gives its
credentials in the URLs, agent B takes them from the environment (MLFLOW_TRACKING_USERNAME/PASSWORD,
PGPASSWORD). Agent A hangs in its first variant and is SIGKILLed there; B takes that variant over once A's
heartbeat is older than the grace; then A is restarted and finds nothing left.

Then the checks: every variant FINISHED exactly once (one run, one measured trial), every model fetched
through the server's artifact proxy, A's variant finished by B, and the password in no captured output, param,
tag, study attribute or artifact downloaded from the server. Run by tests/test_fleet.py and
benchmarks/fleet.py (which prints the timeline and the checks). The runtime is the fake one
(tests/fake_yolobench.py), so every second here is the harness's and the services'."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.fakes import fake_sweep_file
from tests.services import MlflowServer, Postgres, mlflow_server, postgres_with_role

ROOT = Path(__file__).resolve().parents[1]
DEVICE_CLASS = "fleet-fake-orin"  # the agents' study (and experiment): one per device class
GRACE_S = 8.0
# 2 precisions x 2 input sizes x 3 runtime knobs: 12 variants from 4 models (the knob is the device's own).
FLEET_AXES = {"scale": ["n"], "precision": ["fp32", "fp16"], "imgsz": [64, 96], "knob": [1, 2, 3]}


@dataclass
class Process:
    """A yolobench process with its output read line by line as it comes, each line timed from the start."""

    name: str
    popen: subprocess.Popen
    started: float
    clock: Callable[[], float]
    lines: list[tuple[float, str]] = field(default_factory=list)
    reader: threading.Thread | None = None

    def read(self) -> None:
        for line in self.popen.stdout:
            self.lines.append((self.clock(), line.rstrip("\n")))

    @property
    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def wait_for(self, text: str, timeout_s: float) -> float:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for at, line in list(self.lines):
                if text in line:
                    return at
            if self.popen.poll() is not None and self.reader is not None and not self.reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"{self.name} never printed {text!r}:\n{self.output[-3000:]}")

    def finish(self, timeout_s: float) -> int:
        code = self.popen.wait(timeout=timeout_s)
        if self.reader is not None:
            self.reader.join(timeout=10)
        return code


@dataclass
class FleetResult:
    password: str
    basic_auth: bool
    timeline: list[tuple[float, str, str]]  # (seconds since the services were up, who, what)
    checks: list[tuple[str, bool, str]]  # (what, held, detail)
    processes: dict[str, Process]
    durations: dict[str, float]

    @property
    def passed(self) -> bool:
        return all(held for _, held, _ in self.checks)

    def failures(self) -> str:
        return "\n".join(f"{name}: {detail}" for name, held, detail in self.checks if not held)


def _yolobench(name: str, argv: list[str], env: dict[str, str], clock: Callable[[], float]) -> Process:
    command = [sys.executable, "-m", "tests.fake_yolobench", *argv]
    popen = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                             cwd=ROOT, start_new_session=True)
    process = Process(name, popen, clock(), clock)
    process.reader = threading.Thread(target=process.read, daemon=True)
    process.reader.start()
    return process


def _environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PG", "YOLOBENCH_"))}
    return {**env, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "MLFLOW_DISABLE_TELEMETRY": "true", **extra}


def run_fleet(folder: Path | None = None, grace_s: float = GRACE_S, basic_auth: bool | None = None,
              say: Callable[[str], None] = lambda _: None) -> FleetResult | None:
    """The whole scenario in `folder` (a temporary one by default); None when no PostgreSQL server is installed."""
    folder = Path(folder or tempfile.mkdtemp(prefix="yolobench-fleet-"))
    with postgres_with_role() as database:
        if database is None:
            return None
        say(f"PostgreSQL up on 127.0.0.1:{database.port} (role {database.user}, password auth)")
        began = time.monotonic()
        with mlflow_server(database, folder / "server", basic_auth) as server:
            say(f"mlflow server up on {server.uri} in {time.monotonic() - began:.1f} s "
                f"(basic auth: {'on' if server.user else 'off: pip install mlflow[auth]'})")
            return _scenario(folder, database, server, grace_s, say)


def _scenario(folder: Path, database: Postgres, server: MlflowServer, grace_s: float,
              say: Callable[[str], None]) -> FleetResult:
    t0 = time.monotonic()
    clock = lambda: time.monotonic() - t0  # noqa: E731
    timeline: list[tuple[float, str, str]] = []

    def event(who: str, what: str) -> None:
        timeline.append((clock(), who, what))

    sweep_file = folder / "fleet.yaml"
    sweep_file.write_text(yaml.safe_dump(fake_sweep_file(axes=FLEET_AXES)))
    durations: dict[str, float] = {}

    # The build host: builds the 4 models and publishes them to the tracking server (credentials in the URL).
    event("build", "yolobench build --publish")
    build = _yolobench("build", ["build", str(sweep_file), "--publish", "--home", str(folder / "build-host"),
                                 "--tracking-uri", server.uri_with_credentials], _environment(), clock)
    code = build.finish(300)
    durations["build"] = clock() - build.started
    event("build", f"exit {code} after {durations['build']:.1f} s")
    assert code == 0, build.output

    common = ["sweep", str(sweep_file), "--measure-only", "--study", DEVICE_CLASS, "--heartbeat-grace", str(grace_s)]
    a_argv = [*common, "--home", str(folder / "agent-a"), "--tracking-uri", server.uri_with_credentials,
              "--storage", database.url("optuna")]
    a_env = _environment(YOLOBENCH_FAKE_HOSTNAME="agent-a", YOLOBENCH_FAKE_OPEN_DELAY_S="600")
    b_argv = [*common, "--home", str(folder / "agent-b"), "--tracking-uri", server.uri,
              "--storage", database.url("optuna", password=False)]
    b_env = _environment(YOLOBENCH_FAKE_HOSTNAME="agent-b", PGPASSWORD=database.password,
                         **server.client_environment())
    event("agents", "agent A (credentials in URLs) and agent B (credentials from the environment) start")
    agent_a = _yolobench("agent-a", a_argv, a_env, clock)
    agent_b = _yolobench("agent-b", b_argv, b_env, clock)
    opened = agent_a.wait_for("fake runtime: opening a session", 240)
    held = next(line.split("] ", 1)[1].removesuffix(" ...") for _, line in agent_a.lines if line.endswith(" ..."))
    event("agent-a", f"mid-variant {held} (model fetched, session opening) at {opened:.1f} s")
    os.killpg(agent_a.popen.pid, signal.SIGKILL)
    killed_at = clock()
    event("agent-a", "SIGKILL")
    agent_a.finish(30)
    code_b = agent_b.finish(400)
    durations["agent-b"] = clock() - agent_b.started
    taken_at = next((at for at, line in agent_b.lines if held in line and "mAP50-95" in line), None)
    if taken_at is not None:
        event("agent-b", f"finished {held} (taken over) at {taken_at:.1f} s, {taken_at - killed_at:.1f} s after the kill")
    event("agent-b", f"exit {code_b} after {durations['agent-b']:.1f} s")

    # A restarted agent picks up where the study is: here, nothing is left.
    restart = _yolobench("agent-a2", a_argv, _environment(YOLOBENCH_FAKE_HOSTNAME="agent-a"), clock)
    code_restart = restart.finish(300)
    event("agent-a", f"restarted: exit {code_restart}, {_summary_line(restart.output)}")

    processes = {p.name: p for p in (build, agent_a, agent_b, restart)}
    for name, process in processes.items():  # each one's output, as it printed it
        (folder / f"{name}.log").write_text(process.output + "\n")
    checks = _checks(folder, database, server, processes, held, code_b, code_restart, taken_at, killed_at, grace_s)
    given = [agent_a, *([build] if server.user else [])]  # without basic auth the tracking URI has no password
    checks.append((f"the password was on the command lines of {', '.join(p.name for p in given)} and in B's environment",
                   all(database.password in " ".join(p.popen.args) for p in given)
                   and b_env.get("PGPASSWORD") == database.password, ""))
    return FleetResult(database.password, server.user is not None, timeline, checks, processes, durations)


def _summary_line(output: str) -> str:
    return next((line.strip() for line in output.splitlines() if line.startswith("sweep ")), "no summary line")


def _checks(folder: Path, database: Postgres, server: MlflowServer, processes: dict[str, Process], held: str,
            code_b: int, code_restart: int, taken_at: float | None, killed_at: float,
            grace_s: float) -> list[tuple[str, bool, str]]:
    import mlflow
    import optuna
    from mlflow.entities import ViewType

    from yolobench import search, tracking

    checks: list[tuple[str, bool, str]] = []

    def check(what: str, held_: bool, detail: str = "") -> None:
        checks.append((what, bool(held_), detail))

    secret = database.password
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # the downloads below, in this process
    client = mlflow.MlflowClient(server.uri_with_credentials)
    experiment = client.get_experiment_by_name(DEVICE_CLASS)
    builds = client.get_experiment_by_name("fake-builds")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    children = [r for r in runs if tracking.PARENT_TAG in r.data.tags]
    parents = [r for r in runs if tracking.PARENT_TAG not in r.data.tags]
    keys = [r.data.tags[tracking.VARIANT_KEY_TAG] for r in children]
    check("agent B and the restarted agent exit 0", code_b == 0 and code_restart == 0, f"{code_b}, {code_restart}")
    check("12 variants, each one FINISHED run", len(children) == 12 and len(set(keys)) == 12
          and {r.info.status for r in children} == {"FINISHED"},
          f"{len(children)} runs, {len(set(keys))} keys, {sorted({r.info.status for r in children})}")
    check("one parent run", len(parents) == 1, f"{len(parents)}")
    everything = client.search_runs([experiment.experiment_id], max_results=1000, run_view_type=ViewType.DELETED_ONLY)
    left = [r for r in everything if r.info.run_name == held and tracking.PARENT_TAG in r.data.tags]
    check("the run the killed agent left RUNNING was removed when B finished its variant",
          len(left) == 1 and left[0].info.status == "RUNNING", f"{[(r.info.status, r.info.lifecycle_stage) for r in left]}")

    study = optuna.load_study(study_name=DEVICE_CLASS, storage=database.url("optuna", "postgresql+psycopg2"))
    measured = [t.user_attrs["variant_key"] for t in study.trials if t.user_attrs.get("outcome") == "measured"]
    check("each variant measured once in the study", len(measured) == len(set(measured)) == 12,
          f"{len(measured)} measured trials, {len(set(measured))} keys")
    workers = {t.user_attrs.get("worker", "").split(":")[0] for t in study.trials if t.user_attrs.get("outcome") == "measured"}
    # The grace runs from A's last heartbeat, which may come up to one heartbeat interval before the kill.
    beat_s = search.heartbeat_interval_for(grace_s)
    check("the killed agent's variant finished by agent B after the grace",
          taken_at is not None and taken_at - killed_at >= grace_s - beat_s
          and f"{held} p50" in processes["agent-b"].output,
          f"{held}: {'%.1f s after the kill' % (taken_at - killed_at) if taken_at else 'never'}; measured by {workers}")
    stale = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL and "outcome" not in t.user_attrs]
    check("its trial failed by its expired heartbeat", len(stale) == 1, f"{len(stale)} stale trial(s)")
    check("the restarted agent finds nothing left", "measured now 0" in processes["agent-a2"].output,
          _summary_line(processes["agent-a2"].output))

    build_runs = {r.info.run_id for r in client.search_runs([builds.experiment_id], max_results=1000)}
    sources = [(r.data.params.get("model_source", ""), r) for r in children]
    fetched = [s for s, _ in sources if s.startswith("mlflow:run ") and s.split()[1] in build_runs]
    from_own_cache = [s for s, r in sources if s.startswith("cache:") and _agent_home(s, folder)]
    check("every model fetched through the server (or from the agent's own copy of what it fetched)",
          len(fetched) + len(from_own_cache) == 12 and len(fetched) >= 4,
          f"{len(fetched)} from build runs via the server, {len(from_own_cache)} from the agent's own cache")
    proxy_gets = sum("GET /api/2.0/mlflow-artifacts/artifacts/" in line and "/model/" in line
                     for line in server.log.read_text().splitlines())
    check("the server's artifact proxy served the models", proxy_gets >= 4, f"{proxy_gets} model file downloads")

    # The password: in no output, param, tag, study attribute or artifact.
    leaks: list[str] = []
    for name, process in processes.items():
        if secret in process.output:
            leaks.append(f"output of {name}: " + next(line for _, line in process.lines if secret in line)[:200])
    all_runs = client.search_runs([experiment.experiment_id, builds.experiment_id], max_results=5000,
                                  run_view_type=ViewType.ALL)
    downloads = folder / "downloaded"
    for run in all_runs:
        for kind, values in (("param", run.data.params), ("tag", run.data.tags)):
            leaks += [f"{kind} {k} of run {run.info.run_name}" for k, v in values.items() if secret in str(v)]
        target = downloads / run.info.run_id
        target.mkdir(parents=True, exist_ok=True)
        if client.list_artifacts(run.info.run_id):
            client.download_artifacts(run.info.run_id, "", str(target))
    for model in client.search_logged_models([experiment.experiment_id, builds.experiment_id]):
        leaks += [f"logged model {model.name} {k}" for k, v in {**model.params, **model.tags}.items() if secret in str(v)]
        mlflow.artifacts.download_artifacts(artifact_uri=model.artifact_location,
                                            dst_path=str(downloads / f"model-{model.model_id}"),
                                            tracking_uri=server.uri_with_credentials)
    for holder in (experiment, builds):
        leaks += [f"experiment tag {k}" for k, v in holder.tags.items() if secret in str(v)]
    files = [p for p in downloads.rglob("*") if p.is_file()]
    leaks += [f"artifact {p.relative_to(downloads)}" for p in files if secret.encode() in p.read_bytes()]
    attrs = json.dumps([study.user_attrs, [t.user_attrs for t in study.trials]], default=str)
    if secret in attrs:
        leaks.append("the study's attributes")
    local = [p for home in ("build-host", "agent-a", "agent-b") for p in (folder / home).rglob("*") if p.is_file()]
    leaks += [f"file {p.relative_to(folder)} written by yolobench" for p in local if secret.encode() in p.read_bytes()]
    check("no password in any output, param, tag, study attribute, artifact or file yolobench wrote", not leaks,
          f"searched {len(processes)} outputs, {len(all_runs)} runs' params and tags, {len(files)} downloaded "
          f"artifacts, {len(local)} local files" + (f"; found in: {leaks}" if leaks else ""))
    return checks


def _agent_home(source: str, folder: Path) -> bool:
    path = Path(source.removeprefix("cache:"))
    return path.parent in (folder / "agent-a", folder / "agent-b")


def print_report(result: FleetResult, say: Callable[[str], None] = print) -> None:
    say("\ntimeline (s since the services were up):")
    for at, who, what in result.timeline:
        say(f"  {at:6.1f}  {who:<8} {what}")
    say("\nchecks:")
    for what, held, detail in result.checks:
        say(f"  [{'ok' if held else 'FAIL'}] {what}" + (f"  ({detail})" if detail else ""))

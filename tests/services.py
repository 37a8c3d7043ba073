"""The services a team runs for a fleet, started on loopback the way tracking/README.md tells a team to start
them: PostgreSQL with a password-protected role (scram-sha-256 over TCP), and `mlflow server` on that database
with artifact proxying and, where MLflow's auth extra (Flask-WTF) is installed, basic auth. Each context manager
tears its service down. The password is random per start: a test then greps everything yolobench wrote for it."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.postgres import _free_port, _server_bin

ROLE = "yolobench"
DATABASES = ("mlflow", "optuna")


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    password: str

    def url(self, database: str, scheme: str = "postgresql", password: bool = True) -> str:
        """`scheme://user[:password]@host:port/database`; without the password, libpq takes it from PGPASSWORD
        or ~/.pgpass."""
        secret = f":{self.password}" if password else ""
        return f"{scheme}://{self.user}{secret}@{self.host}:{self.port}/{database}"


def _as_postgres_user() -> list[str]:
    # initdb and the server refuse to run as root: run them as the package's own `postgres` user then.
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


@contextmanager
def postgres_with_role(databases: tuple[str, ...] = DATABASES) -> Iterator[Postgres | None]:
    """A fresh PostgreSQL cluster on a free loopback port: TCP connections need a password (scram-sha-256), the
    superuser only gets in through the server's own Unix socket. Role `yolobench` (random password) owns one
    database per name in `databases`. None when no PostgreSQL server is installed."""
    bindir = _server_bin()
    if bindir is None:
        yield None
        return
    as_user = _as_postgres_user()
    folder = Path(tempfile.mkdtemp(prefix="yolobench-pg-"))  # under /tmp: pytest's tmp folders are root's only
    if as_user:
        shutil.chown(folder, "postgres", "postgres")
    data, port, password = folder / "data", _free_port(), secrets.token_urlsafe(18)
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust",
                    "--auth-host=scram-sha-256"], check=True, capture_output=True)
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "log"),
                    "-w", "start"], check=True, capture_output=True)
    try:
        sql = [f"CREATE ROLE {ROLE} LOGIN PASSWORD '{password}';",
               *(f"CREATE DATABASE {name} OWNER {ROLE};" for name in databases)]
        # The statements go on stdin, so the password is in no process list.
        subprocess.run([*as_user, str(bindir / "psql"), "-h", str(folder), "-p", str(port), "-U", "postgres",
                        "-v", "ON_ERROR_STOP=1", "-q", "-f", "-"], input="\n".join(sql), text=True, check=True,
                       capture_output=True)
        yield Postgres("127.0.0.1", port, ROLE, password)
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def basic_auth_available() -> bool:
    """MLflow's basic-auth app needs its auth extra (`pip install mlflow[auth]`: Flask-WTF)."""
    import importlib.util

    return importlib.util.find_spec("flask_wtf") is not None


@dataclass(frozen=True)
class MlflowServer:
    host: str
    port: int
    user: str | None  # None: no basic auth, anyone on the network may write
    password: str | None
    artifacts: Path  # --artifacts-destination
    log: Path  # the server's stdout and stderr

    @property
    def uri(self) -> str:
        """The tracking URI without credentials (clients give them in MLFLOW_TRACKING_USERNAME/PASSWORD)."""
        return f"http://{self.host}:{self.port}"

    @property
    def uri_with_credentials(self) -> str:
        return f"http://{self.user}:{self.password}@{self.host}:{self.port}" if self.user else self.uri

    def client_environment(self) -> dict[str, str]:
        return {"MLFLOW_TRACKING_USERNAME": self.user, "MLFLOW_TRACKING_PASSWORD": self.password} if self.user else {}


@contextmanager
def mlflow_server(database: Postgres, folder: Path, basic_auth: bool | None = None,
                  timeout_s: float = 120.0) -> Iterator[MlflowServer]:
    """`mlflow server` on database `mlflow` of `database`, artifacts proxied into folder/artifacts, one worker,
    on a free loopback port; up once /health answers. The database password reaches the server as PGPASSWORD,
    never on its command line. With basic auth (default: where MLflow's auth extra is installed) the role's user
    and password are the server's admin; the user store is folder/auth.db."""
    import requests

    basic_auth = basic_auth_available() if basic_auth is None else basic_auth
    folder.mkdir(parents=True, exist_ok=True)
    artifacts, log, port = folder / "artifacts", folder / "mlflow-server.log", _free_port()
    command = [sys.executable, "-m", "mlflow", "server",
               "--backend-store-uri", database.url("mlflow", "postgresql+psycopg2", password=False),
               "--artifacts-destination", str(artifacts), "--serve-artifacts",
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = {**os.environ, "PGPASSWORD": database.password, "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    if basic_auth:
        config = folder / "basic_auth.ini"
        config.write_text(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{folder / 'auth.db'}\n"
                          f"admin_username = {database.user}\nadmin_password = {database.password}\n"
                          "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                          "auth_cache_ttl_seconds = 60\n")
        command += ["--app-name", "basic-auth"]
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(config)
        env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = secrets.token_hex(16)  # CSRF protection of the auth app's forms
    with open(log, "w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    server_info = MlflowServer("127.0.0.1", port, database.user if basic_auth else None,
                               database.password if basic_auth else None, artifacts, log)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"mlflow server exited {server.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if requests.get(f"{server_info.uri}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server not up after {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield server_info
    finally:
        if server.poll() is None:
            os.killpg(server.pid, 15)  # the server and its uvicorn/gunicorn workers
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, 9)
                server.wait()

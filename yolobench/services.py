"""Fail fast on a store that is not there: MLflow's client retries an unreachable tracking server for
minutes and a database driver ends in a page of traceback. Before a sweep opens its stores, each remote
one is asked once, within a timeout, and an unreachable one stops the sweep with one message naming the
service (credentials hidden) and what to check."""

from __future__ import annotations

import os
import time

from yolobench.errors import SweepStopped
from yolobench.urls import redact

DEFAULT_TIMEOUT_S = 30.0
TIMEOUT_ENV = "YOLOBENCH_CONNECT_TIMEOUT_S"


class ServiceUnreachable(SweepStopped):
    """A tracking server or database that did not answer."""


def connect_timeout() -> float:
    """Seconds a store gets to answer: YOLOBENCH_CONNECT_TIMEOUT_S, else 30."""
    text = os.environ.get(TIMEOUT_ENV, "")
    try:
        return float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        raise SweepStopped(f"{TIMEOUT_ENV}={text!r}: expected seconds, e.g. 30") from None


def _is_database(url: str) -> bool:
    scheme = url.split("://", 1)[0]
    return scheme.split("+", 1)[0] in ("postgresql", "postgres", "mysql", "mssql", "oracle")


def check_tracking_server(uri: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """An http(s) tracking URI answers MLflow's /health; a database URI (MLflow on SQL directly) connects."""
    if _is_database(uri):
        check_database(uri, "MLflow's database", timeout_s)
        return
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    started = time.monotonic()
    try:
        response = requests.get(uri.rstrip("/") + "/health", timeout=timeout_s)
    except requests.RequestException as error:
        raise ServiceUnreachable(
            f"the MLflow tracking server {redact(uri)} could not be reached ({type(error).__name__} after "
            f"{time.monotonic() - started:.1f} s; timeout {timeout_s:.0f} s). Check that `mlflow server` runs "
            "there, and the URL's scheme, host and port (--tracking-uri or MLFLOW_TRACKING_URI)") from None
    if response.status_code in (401, 403):
        raise ServiceUnreachable(f"the MLflow tracking server {redact(uri)} refused the credentials "
                                 f"(HTTP {response.status_code}); check the user and password")
    if response.status_code >= 400:
        raise ServiceUnreachable(f"{redact(uri)} answered HTTP {response.status_code} at /health: is it an MLflow "
                                 "tracking server (`mlflow server`)?")


def check_database(url: str, service: str = "the Optuna database", timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """One connection, bounded by the driver's connect timeout."""
    if not _is_database(url):
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    engine = create_engine(url, connect_args={"connect_timeout": max(1, int(timeout_s))}, poolclass=_null_pool())
    started = time.monotonic()
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as error:
        reason = str(getattr(error, "orig", error)).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ServiceUnreachable(
            f"{service} {redact(url)} could not be reached ({redact(reason)}, after "
            f"{time.monotonic() - started:.1f} s; timeout {timeout_s:.0f} s). Check that PostgreSQL runs there and accepts this user "
            "(host, port, database name; the password from the URL, PGPASSWORD or ~/.pgpass)") from None
    finally:
        engine.dispose()


def _null_pool():
    from sqlalchemy.pool import NullPool

    return NullPool


def check_stores(tracking_uri: str, storage: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    check_tracking_server(tracking_uri, timeout_s)
    check_database(storage, "the Optuna database", timeout_s)

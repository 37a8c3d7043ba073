"""Store URLs as users write them: credentials are shown as *** wherever yolobench prints, logs or
records a URL (or an error that repeats one), and `postgresql://` is given the PostgreSQL driver that is
installed, since SQLAlchemy's default for it (psycopg 3) is often not the one a team installed."""

from __future__ import annotations

import importlib.util
import re
from typing import Any

from yolobench.errors import SweepStopped

_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:@/\s]*):(?P<secret>[^@/\s]+)@")
_SECRET_QUERY = re.compile(r"(?P<key>[?&](?:password|passwd|pwd|token|access_token|secret)=)(?P<secret>[^&\s]+)",
                           re.IGNORECASE)

# SQLAlchemy dialect suffix -> the module that driver imports.
_POSTGRES_DRIVERS = (("psycopg2", "psycopg2"), ("psycopg", "psycopg"), ("pg8000", "pg8000"))


class DriverMissing(SweepStopped):
    """A PostgreSQL URL and no driver for it installed."""


def redact(text: str) -> str:
    """`text` with the password of every `scheme://user:password@` and every password-like query value
    replaced by ***; the user and host stay, so the message still says where."""
    text = _CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _SECRET_QUERY.sub(lambda m: f"{m['key']}***", text)


def without_credentials(url: str) -> str:
    """The URL with no user or password, for a command printed to be pasted on another host."""
    return re.sub(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^@/\s]*@", lambda m: m["scheme"], url)


def redacted(payload: Any) -> Any:
    """A JSON-like payload (a sweep file's mapping) with every string in it redacted."""
    if isinstance(payload, str):
        return redact(payload)
    if isinstance(payload, dict):
        return {key: redacted(value) for key, value in payload.items()}
    if isinstance(payload, (list, tuple)):
        return [redacted(value) for value in payload]
    return payload


def with_installed_driver(url: str) -> str:
    """`postgresql://` (or `postgres://`) as the installed driver's dialect; other URLs unchanged."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgresql", "postgres"):
        return url
    for dialect, module in _POSTGRES_DRIVERS:
        if importlib.util.find_spec(module) is not None:
            return f"postgresql+{dialect}://{rest}"
    raise DriverMissing(f"{redact(url)}: no PostgreSQL driver is installed; pip install psycopg2-binary "
                        "(or write the URL as postgresql+<driver>:// for one you have)")

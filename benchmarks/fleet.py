"""A team's fleet on loopback, end to end (tests/fleet.py): PostgreSQL with a password, `mlflow server` on it
with artifact proxying (and basic auth where MLflow's auth extra is installed), one build host publishing, two
device agents of one class sharing one study with no shared disk, one SIGKILLed mid-variant and its variant
taken over by the other after the heartbeat grace, then a restart that finds nothing left. Prints the timeline
and the checks (each variant FINISHED once, models through the server, no password in any output, param, tag
or artifact); exits 1 if a check fails.

    .venv/bin/python benchmarks/fleet.py [--grace 8] [--keep DIR] [--no-basic-auth]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fleet import GRACE_S, print_report, run_fleet  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grace", type=float, default=GRACE_S, help="--heartbeat-grace of the agents, seconds")
    parser.add_argument("--keep", help="folder for the homes, server files and downloads (default: a temporary one)")
    parser.add_argument("--no-basic-auth", action="store_true", help="run mlflow server without its basic-auth app")
    args = parser.parse_args()
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="yolobench-fleet-"))
    started = time.monotonic()
    result = run_fleet(folder, args.grace, False if args.no_basic_auth else None, say=print)
    if result is None:
        print("no PostgreSQL server installed here (apt-get install postgresql)", file=sys.stderr)
        return 2
    print_report(result)
    print(f"\n{'all checks hold' if result.passed else 'CHECKS FAILED'}; {time.monotonic() - started:.0f} s in all, "
          f"files in {folder}")
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())

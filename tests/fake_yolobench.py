"""`yolobench` as a subprocess with the test doubles in place: the fake runtime registered as any plug-in is,
FakeBuilder wherever the command would build, and (from the environment) what a test needs of one process:

- YOLOBENCH_FAKE_HOSTNAME: the host name this process reports, so processes on one machine look like agents on
  several (a worker on another host is judged by its heartbeat alone, never by its pid).
- YOLOBENCH_FAKE_OPEN_DELAY_S: every session this process opens first sleeps that long, so a kill lands
  mid-variant (its trial RUNNING, its heartbeat beating, its model fetched).

Run as `python -m tests.fake_yolobench sweep ...` with the repository root on PYTHONPATH."""

from __future__ import annotations

import os
import socket
import sys
import time


def _install_doubles() -> None:
    from tests.fakes import FakeBuilder, FakeRuntime, register_fake_runtime
    from yolobench import bundle, runner
    from yolobench.stages import ultralytics_env

    register_fake_runtime()
    if hostname := os.environ.get("YOLOBENCH_FAKE_HOSTNAME"):
        socket.gethostname = lambda: hostname  # type: ignore[assignment]
    if delay := float(os.environ.get("YOLOBENCH_FAKE_OPEN_DELAY_S", "0") or 0):
        def slow_open() -> None:
            print(f"fake runtime: opening a session, sleeping {delay:.0f} s", file=sys.stderr, flush=True)
            time.sleep(delay)

        FakeRuntime.on({}, slow_open)

    def fake_builder(spec, cache, *args, **kwargs):  # LocalBuilder's signature; nothing is trained or exported
        return FakeBuilder(spec, cache)

    runner.LocalBuilder = fake_builder  # type: ignore[assignment]
    bundle.LocalBuilder = fake_builder  # type: ignore[assignment]
    ultralytics_env.prepare_ultralytics = lambda *args, **kwargs: None  # FakeBuilder needs no Ultralytics (nor torch)


def main() -> int:
    _install_doubles()
    from yolobench.cli import main as yolobench_main

    return yolobench_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())

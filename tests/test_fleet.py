"""The fleet on loopback (tests/fleet.py): PostgreSQL and `mlflow server` as a team runs them, a build host that
publishes, two device agents of one class on one study, one SIGKILLed mid-variant and its variant finished by
the other after the heartbeat grace; no password anywhere. About a minute and a half, most of it the services'
start-up and the grace."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fleet import print_report, run_fleet

pytestmark = pytest.mark.slow


def test_a_build_host_and_two_agents_share_one_study_through_the_servers(tmp_path: Path, capsys) -> None:
    result = run_fleet(tmp_path)
    if result is None:
        pytest.skip("no PostgreSQL server installed here (apt-get install postgresql)")
    with capsys.disabled():
        print_report(result)
    assert result.passed, result.failures()

"""Every registered runtime against tests/runtime_conformance.py: its declared data everywhere, its behaviour
where it can run (skipped with its own reason elsewhere). A runtime registered later is picked up here."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.runtime_conformance import RuntimeTestCase
from yolobench.runtimes import registry

RUNTIMES = registry.names()


@pytest.fixture(params=RUNTIMES)
def case(request: pytest.FixtureRequest) -> RuntimeTestCase:
    return RuntimeTestCase(request.param)


def test_axes_defaults_and_values_are_allowed(case: RuntimeTestCase) -> None:
    case.check_axes()


def test_precisions_are_known_ones(case: RuntimeTestCase) -> None:
    case.check_precisions()


def test_options_model_imports_and_takes_just_the_name(case: RuntimeTestCase) -> None:
    case.check_options_model()


def test_implementation_imports_and_carries_its_info(case: RuntimeTestCase) -> None:
    case.check_implementation()


def test_availability_and_checks_say_why(case: RuntimeTestCase) -> None:
    case.check_availability_says_why()
    case.check_checks_have_reasons()


def test_compiles_opens_infers_describes_and_closes_twice(case: RuntimeTestCase, tmp_path: Path) -> None:
    case.check_infers_describes_and_closes(tmp_path)


def test_every_value_of_an_open_time_axis_opens(case: RuntimeTestCase, tmp_path: Path) -> None:
    case.check_every_open_time_axis_value_opens(tmp_path)

"""Fixtures of the broker's tests: a setup of doubles, and a broker running in this process.

A test module takes them with `pytest_plugins = ["broker_fixtures"]` (a conftest.py here
would shadow tests/conftest.py, which other tests import by that name)."""

from __future__ import annotations

import pytest
from broker_harness import BrokerSetup


@pytest.fixture
def make_setup(tmp_path):
    setups: list[BrokerSetup] = []

    def make(**options) -> BrokerSetup:
        setup = BrokerSetup(tmp_path / f"setup-{len(setups)}", **options)
        setups.append(setup)
        return setup

    yield make
    for setup in setups:
        setup.close()
        setup.check_no_leaks()


@pytest.fixture
def setup(make_setup) -> BrokerSetup:
    return make_setup()


@pytest.fixture
def broker(setup):
    """The broker in this process, against `setup`'s doubles (sweeps only when a test calls them)."""
    return setup.start_in_process()

"""Fixtures for the log adapters' tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.streams.kafka_broker import BrokerUnavailable, start_broker


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """``host:port`` of a tansu broker started for this test session (and stopped after it).

    Skips the tests that use it when no tansu binary is available, unless
    ``FIELDSTREAM_REQUIRE_ALL=1`` (set by CI) turns the skip into a failure.
    """
    try:
        broker = start_broker()
    except BrokerUnavailable as error:
        if os.environ.get("FIELDSTREAM_REQUIRE_ALL") == "1":
            pytest.fail(f"{error} (FIELDSTREAM_REQUIRE_ALL=1 forbids skipping)")
        pytest.skip(str(error))
    try:
        yield broker.bootstrap
    finally:
        broker.stop()

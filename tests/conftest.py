"""Fixtures for the real components the tests use: a Kafka-protocol broker and PostgreSQL.

Where a component is missing on a user's machine, the tests that need it skip with a message
saying how to get it; ``FIELDSTREAM_REQUIRE_ALL=1`` (set by .ci/run) turns those skips into
failures, so CI always runs them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests.streams.kafka_broker import BrokerUnavailable, start_broker

POSTGRES_URL = os.environ.get(
    "FIELDSTREAM_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
POSTGRES_HOW = (
    "PostgreSQL tests need a server at 127.0.0.1:5432 with user postgres and database test "
    "(trust auth), e.g. `apt-get install postgresql` and `createdb test`; or set "
    "FIELDSTREAM_TEST_POSTGRES to another postgresql:// URL"
)


def _missing(message: str) -> None:
    if os.environ.get("FIELDSTREAM_REQUIRE_ALL") == "1":
        pytest.fail(f"{message} (FIELDSTREAM_REQUIRE_ALL=1 forbids skipping)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """``host:port`` of a tansu broker started for this test session (and stopped after it)."""
    try:
        broker = start_broker()
    except BrokerUnavailable as error:
        _missing(str(error))
        raise
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The URL of the test PostgreSQL server (skips, or fails in CI, when there is none)."""
    try:
        import psycopg

        with psycopg.connect(POSTGRES_URL.split("?")[0], connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as error:
        _missing(f"no PostgreSQL at {POSTGRES_URL} ({error}). {POSTGRES_HOW}")
    return POSTGRES_URL


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh schema in the test database, as a URL (dropped after the test)."""
    import psycopg

    schema = f"fs_test_{uuid.uuid4().hex[:12]}"
    yield f"{postgres_server}?schema={schema}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")

"""A real PostgreSQL server for the tests: one throwaway cluster per session
(:class:`swipepay.cli.harness.postgres.PostgresCluster`), a fresh empty database per test.

Where PostgreSQL or psycopg is missing the tests skip on a developer's machine and fail in CI
(:func:`tests.support.ci.unavailable`); the README's test command installs both.  A test that
kills or stops the server takes ``pg_private_cluster``, its own cluster, so the session's one
keeps serving the others.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from swipepay.cli.harness import postgres
from tests.support.ci import unavailable


def _cluster() -> postgres.PostgresCluster:
    reason = postgres.missing()
    if reason is not None:
        unavailable(reason)
    return postgres.PostgresCluster()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[postgres.PostgresCluster]:
    """The session's PostgreSQL cluster, started on first use and removed at the end."""
    with _cluster() as cluster:
        yield cluster


@pytest.fixture
def pg_url(pg_cluster: postgres.PostgresCluster) -> str:
    """The URL of a new, empty database in the session's cluster."""
    return pg_cluster.create_database()


@pytest.fixture
def pg_private_cluster() -> Iterator[postgres.PostgresCluster]:
    """A cluster of this test's own, for tests that kill, stop or restart the server."""
    with _cluster() as cluster:
        yield cluster

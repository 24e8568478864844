"""The PostgreSQL-only test modules import psycopg at the top: where it is not installed they
are left out of collection on a developer's machine, like every PostgreSQL test there (tests/
support/postgres.py skips), and collected anyway in CI, where the missing import fails loudly."""

from __future__ import annotations

from importlib.util import find_spec

from tests.support.ci import in_ci

collect_ignore = (
    [] if find_spec("psycopg") is not None or in_ci() else ["test_pg_storage.py", "test_races.py"]
)

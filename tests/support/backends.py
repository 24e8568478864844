"""Both storage backends for one test: ``database_url`` is a fresh SQLite file's URL, then a
fresh PostgreSQL database's (from :mod:`tests.support.postgres`), so a storage or ledger test
written once checks the contract both implementations promise."""

from __future__ import annotations

from pathlib import Path

import pytest

from swipepay.center.database import sqlite_url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty database of each backend in turn, as a URL for ``open_storage``."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "center.db")
    url: str = request.getfixturevalue("pg_url")
    return url

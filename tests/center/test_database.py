"""Database URLs: the forms open_storage accepts, the clear errors for the others, the lab's
``database`` setting, ``swipepay init --db`` and ``--db`` on the center commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from swipepay.center.database import (
    normalize,
    open_storage,
    parse_url,
    redact,
    sqlite_url,
)
from swipepay.center.lab import Lab
from swipepay.center.storage import SQLiteStorage, StorageUnavailable
from swipepay.cli.main import main
from swipepay.firmware_sim.errors import ConfigError


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///abs/dir/c.db", "/abs/dir/c.db"),
        ("sqlite:rel/c.db", "/base/rel/c.db"),
        ("sqlite:/abs/c.db", "/abs/c.db"),
        ("rel/c.db", "/base/rel/c.db"),
        ("/abs/c.db", "/abs/c.db"),
        ("SQLITE:///abs/c.db", "/abs/c.db"),
    ],
)
def test_sqlite_forms(url: str, path: str) -> None:
    parsed = parse_url(url, Path("/base"))
    assert parsed.kind == "sqlite" and parsed.path == Path(path)


def test_postgresql_forms() -> None:
    for url in ("postgresql://u@h/db", "postgres://u@h:5433/db?sslmode=require"):
        parsed = parse_url(url)
        assert parsed.kind == "postgresql" and parsed.target == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u@h/db", "unsupported database URL scheme 'mysql'"),
        ("", "empty database URL"),
        ("sqlite://host/c.db", "names a host"),
        ("sqlite:", "names no file"),
        ("postgresql:db", "must start with postgresql://"),
    ],
)
def test_other_urls_are_refused_with_the_accepted_forms(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        open_storage(url)


def test_passwords_never_show() -> None:
    url = "postgresql://me:s3cret@db.example/center"
    assert redact(url) == "postgresql://me:***@db.example/center"
    assert "s3cret" not in str(parse_url(url))
    assert redact("postgresql://me@db/center") == "postgresql://me@db/center"
    with pytest.raises(ConfigError, match="unsupported") as info:
        open_storage("mssql://me:s3cret@db/center")
    assert "s3cret" not in str(info.value)


def test_open_storage_picks_the_backend(tmp_path: Path, pg_url: str) -> None:
    for url in (tmp_path / "a.db", f"sqlite://{tmp_path}/b.db", str(tmp_path / "c.db")):
        storage = open_storage(url)
        assert isinstance(storage, SQLiteStorage)
        storage.close()
    from swipepay.center.pg_storage import PostgresStorage  # only where PostgreSQL is tested

    storage = open_storage(pg_url)
    assert isinstance(storage, PostgresStorage)
    storage.close()
    with pytest.raises(StorageUnavailable):
        open_storage("postgresql://nobody@127.0.0.1:1/none")


def test_normalize_makes_sqlite_paths_absolute(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    assert normalize("sqlite:c.db") == sqlite_url(tmp_path / "c.db") == f"sqlite://{tmp_path}/c.db"
    assert normalize("postgresql://u@h/db") == "postgresql://u@h/db"


def test_lab_database_setting(lab: Lab) -> None:
    assert lab.database_url == sqlite_url(lab.db_path)
    manifest = json.loads((lab.root / "lab.json").read_text())
    for value, want in (
        ("sqlite:other/c.db", sqlite_url(lab.root / "other" / "c.db")),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
    ):
        (lab.root / "lab.json").write_text(json.dumps({**manifest, "database": value}))
        assert Lab(lab.root).database_url == want
    (lab.root / "lab.json").write_text(json.dumps({**manifest, "database": 5}))
    with pytest.raises(ConfigError, match="database must be"):
        _ = Lab(lab.root).database_url


def test_center_commands_take_db(lab: Lab, tmp_path: Path) -> None:
    """``--db`` overrides the lab's database; a bad URL is one clear line, exit 3."""
    home = str(lab.root)
    out = CliRunner().invoke(main, ["center", "report", "--home", home, "--db", "mysql://x/y"])
    assert out.exit_code == 3 and "unsupported database URL scheme" in out.output
    empty = tmp_path / "empty.db"
    out = CliRunner().invoke(main, ["center", "unblock", "--home", home, "--card", "alice-visa",
                                    "--db", f"sqlite://{empty}"])  # fmt: skip
    assert out.exit_code == 3 and "not enrolled" in out.output  # it used the empty database
    out = CliRunner().invoke(main, ["center", "serve", "--home", home, "--db", "oracle://x"])
    assert out.exit_code == 3 and "unsupported database URL scheme" in out.output
    for command in ("serve", "report", "unblock"):
        out = CliRunner().invoke(main, ["center", command, "--help"])
        assert "--db URL" in out.output


def test_init_db_puts_the_center_in_postgresql(tmp_path: Path, pg_url: str) -> None:
    home = tmp_path / "lab"
    out = CliRunner().invoke(main, ["init", str(home), "--db", pg_url])
    assert out.exit_code == 0, out.output
    lab = Lab(home)
    assert lab.database_url == pg_url
    assert not lab.db_path.exists()  # no SQLite file: the center's data is in PostgreSQL
    out = CliRunner().invoke(
        main, ["center", "unblock", "--home", str(home), "--card", "bob-debit"]
    )
    assert out.exit_code == 0, out.output
    out = CliRunner().invoke(main, ["center", "report", "--home", str(home), "--format", "json"])
    assert out.exit_code == 0 and json.loads(out.output) == []
    storage = open_storage(pg_url)
    try:
        with storage.transaction():
            assert len(storage.list_terminals()) == len(lab.terminals())
            assert storage.get_card(lab.cards()["alice-visa"].pan) is not None
    finally:
        storage.close()


def test_init_refuses_a_password_in_the_url(tmp_path: Path) -> None:
    out = CliRunner().invoke(main, ["init", str(tmp_path / "lab"), "--db",
                                    "postgresql://me:s3cret@h/db"])  # fmt: skip
    assert out.exit_code == 3 and "PGPASSWORD" in out.output and "s3cret" not in out.output
    assert not (tmp_path / "lab" / "lab.json").exists()

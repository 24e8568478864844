"""Which database the center uses, named by one URL: :func:`open_storage`.

Accepted forms:

* ``sqlite:///abs/path/center.db`` -- a SQLite file by absolute path;
* ``sqlite:relative/path/center.db`` -- a SQLite file relative to ``base`` (the lab directory
  for a lab's ``database`` setting, the working directory on the command line);
* a plain path (``center.db``, ``/var/lib/swipepay/center.db``, a :class:`~pathlib.Path`);
* ``postgresql://user[:password]@host[:port]/dbname[?options]`` (also ``postgres://``), any
  libpq connection URL; psycopg is imported only then.

Anything else is refused with a :class:`ConfigError` naming the accepted forms.  A password in
a URL never appears in a message (:func:`redact`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from swipepay.center.storage import SQLiteStorage, Storage
from swipepay.firmware_sim.errors import ConfigError

#: A URL scheme: two or more letters (one letter is a Windows drive, a plain path) and a colon.
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+):")

_FORMS = "sqlite:///ABSOLUTE/PATH, sqlite:RELATIVE/PATH, a file path, or postgresql://..."


@dataclass(frozen=True)
class DatabaseUrl:
    """A parsed database name: ``kind`` and either a SQLite ``path`` or a PostgreSQL ``url``."""

    kind: Literal["sqlite", "postgresql"]
    target: str

    @property
    def path(self) -> Path:
        if self.kind != "sqlite":
            raise ConfigError(f"{redact(self.target)} is not a SQLite database")
        return Path(self.target)

    def __str__(self) -> str:
        return redact(self.target) if self.kind == "postgresql" else sqlite_url(self.path)


def parse_url(url: str | Path, base: Path | None = None) -> DatabaseUrl:
    """``url`` as a :class:`DatabaseUrl`; relative SQLite paths are taken from ``base``."""
    if isinstance(url, Path):
        return DatabaseUrl("sqlite", str(_resolve(url, base)))
    text = url.strip()
    if not text:
        raise ConfigError(f"empty database URL; use {_FORMS}")
    match = _SCHEME.match(text)
    if match is None:
        return DatabaseUrl("sqlite", str(_resolve(Path(text), base)))
    scheme = match.group(1).lower()
    rest = text[match.end() :]
    if scheme == "sqlite":
        if rest.startswith("///"):
            path = Path(rest[2:])
        elif rest.startswith("//"):
            raise ConfigError(
                f"SQLite URL {text!r} names a host; use sqlite:///ABSOLUTE/PATH or "
                "sqlite:RELATIVE/PATH"
            )
        else:
            path = Path(rest)
        if not str(path) or str(path) in (".", "/"):
            raise ConfigError(f"SQLite URL {text!r} names no file; use {_FORMS}")
        return DatabaseUrl("sqlite", str(_resolve(path, base)))
    if scheme in ("postgresql", "postgres"):
        if not rest.startswith("//"):
            raise ConfigError(f"PostgreSQL URL {redact(text)!r} must start with {scheme}://")
        return DatabaseUrl("postgresql", text)
    raise ConfigError(f"unsupported database URL scheme {scheme!r}; use {_FORMS}")


def open_storage(url: str | Path, base: Path | None = None) -> Storage:
    """Open (creating or upgrading its schema if needed) the database ``url`` names."""
    parsed = parse_url(url, base)
    if parsed.kind == "sqlite":
        return SQLiteStorage(parsed.path)
    try:
        from swipepay.center.pg_storage import PostgresStorage
    except ImportError:
        raise ConfigError("PostgreSQL needs psycopg 3: pip install 'swipepay[postgres]'") from None
    return PostgresStorage(parsed.target)


def normalize(url: str | Path) -> str:
    """``url`` as given on a command line, made independent of the working directory: a SQLite
    path becomes an absolute ``sqlite:///`` URL; a PostgreSQL URL stays as it is."""
    parsed = parse_url(url)
    return parsed.target if parsed.kind == "postgresql" else sqlite_url(parsed.path)


def sqlite_url(path: Path) -> str:
    """The ``sqlite:///...`` URL of ``path`` (made absolute)."""
    return "sqlite://" + Path(path).absolute().as_posix()


def has_password(url: str) -> bool:
    """Whether ``url`` carries a password in its user part."""
    return redact(url) != url


def redact(url: str) -> str:
    """``url`` with the password of its user part, if any, replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    userinfo, _, hostpart = rest.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{hostpart}"


def _resolve(path: Path, base: Path | None) -> Path:
    path = path.expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    return path

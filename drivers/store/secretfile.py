"""Files holding secrets: written 0600 atomically, refused when others could have read them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from swipepay.drivers.store.userfile import MAX_FILE_BYTES, read_regular
from swipepay.firmware_sim.errors import ConfigError

#: Any permission bit for group or others makes a secret file unusable.
FOREIGN_ACCESS = stat.S_IRWXG | stat.S_IRWXO


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` so that no moment exists in which another user could read it.

    The file is created 0600 under a temporary name, synced, and renamed over the old one, so a
    crash leaves either the old content or the new one, never half a key.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to a file that already existed
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_private(path: Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """Read a secret file; :class:`ConfigError` if it is missing, readable by others, not a
    regular file or over ``limit`` bytes (:func:`~drivers.store.userfile.read_regular`: the
    mode is checked on the opened file)."""

    def owner_only(info: os.stat_result) -> None:
        if info.st_mode & FOREIGN_ACCESS:
            raise ConfigError(
                f"secret file {path} has mode {stat.S_IMODE(info.st_mode):04o}; "
                "others may have read it: chmod 600 it, and replace the secret if they could have"
            )

    return read_regular(path, "secret file", limit, owner_only)

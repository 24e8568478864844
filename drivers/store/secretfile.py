"""Files holding secrets: written 0600 atomically, refused when others could have read them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

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


#: Largest secret file read (keys, a phone profile, the lab's PINs are a few KB): a path that
#: names something else (a log, a disk image) is refused instead of read whole into memory.
MAX_SECRET_BYTES = 1 << 20


def read_private(path: Path, limit: int = MAX_SECRET_BYTES) -> bytes:
    """Read a secret file; :class:`ConfigError` if it is missing, readable by others, not a
    regular file (a FIFO or a device would block or never end) or over ``limit`` bytes.

    The checks are made on the opened file (``fstat``), so the file read is the file checked;
    ``O_NONBLOCK`` keeps the open of a FIFO from waiting for a writer.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(f"secret file {path} is missing") from None
    except OSError as exc:
        raise ConfigError(f"cannot read secret file {path}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"secret file {path} is not a regular file")
        if info.st_mode & FOREIGN_ACCESS:
            raise ConfigError(
                f"secret file {path} has mode {stat.S_IMODE(info.st_mode):04o}; "
                "others may have read it: chmod 600 it, and replace the secret if they could have"
            )
        chunks: list[bytes] = []
        left = limit + 1
        while left > 0 and (chunk := os.read(fd, left)):
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    if left <= 0:
        raise ConfigError(f"secret file {path} is larger than {limit} bytes: not a secret file")
    return b"".join(chunks)

"""Reading a file a user names (settings, a trace, a secret): a regular file of bounded size,
or a :class:`ConfigError` at once.

``open()`` and ``read_text()`` on a path block for ever on a FIFO with no writer, never end on
a character device, and read a file whole whatever its size.  Here the file is opened with
``O_NONBLOCK`` (a FIFO's open returns at once), checked on the opened descriptor (``fstat``:
the file read is the file checked) and read up to a limit.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from swipepay.firmware_sim.errors import ConfigError

#: Default limit: settings and secret files are a few KB.
MAX_FILE_BYTES = 1 << 20


def read_regular(
    path: Path,
    what: str,
    limit: int = MAX_FILE_BYTES,
    check: Callable[[os.stat_result], None] | None = None,
) -> bytes:
    """The bytes of the regular file at ``path`` (``what`` names it in errors, e.g. "trace").

    ``check`` sees the opened file's status before anything is read (a secret file's mode);
    it raises to refuse the file.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} is missing") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{what} {path} is not a regular file")
        if check is not None:
            check(info)
        chunks: list[bytes] = []
        left = limit + 1
        while left > 0 and (chunk := os.read(fd, left)):
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if left <= 0:
        raise ConfigError(f"{what} {path} is larger than {limit} bytes")
    return b"".join(chunks)

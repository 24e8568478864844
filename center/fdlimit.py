"""The open-file limit a center needs for its connection cap (``RLIMIT_NOFILE``).

Every terminal connection is a file descriptor, so a center that is to hold a fleet of
terminals (10,000 by default) needs at least that many open files.  Linux starts most
processes with a soft limit of 1024 and a hard limit far above it; any process may raise its
soft limit up to the hard limit, and only a privileged one the hard limit itself.  So
``center serve`` raises the soft limit to the hard limit (where the platform allows it), and
then checks that the cap, the handshakes in progress and the center's own files fit:

* a cap given on the command line that does not fit is refused with what to do about it;
* the default cap is lowered to what fits, with a warning (a center must start on a machine
  with a small hard limit, it just holds fewer terminals there).
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass
from typing import Final

from swipepay.firmware_sim.errors import ConfigError

_log = logging.getLogger(__name__)

#: Descriptors the center uses besides its connections: the listening socket, the database and
#: its WAL and shared memory, the signature verifier's pipes, stdio, logs, a metrics listener.
RESERVED: Final = 64


@dataclass(frozen=True)
class FileLimit:
    """The process's open-file limit after :func:`raise_soft_limit`: soft (in force) and hard
    (None: unlimited)."""

    soft: int
    hard: int | None
    #: The soft limit before it was raised.
    was: int


def _value(limit: int) -> int | None:
    return None if limit == resource.RLIM_INFINITY else limit


def raise_soft_limit(want: int | None = None) -> FileLimit:
    """Raise this process's soft ``RLIMIT_NOFILE`` to its hard limit (or to ``want`` when the
    hard limit is unlimited); never lowers it.  Where the platform refuses, the limit stays."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, want or soft)
    if soft != resource.RLIM_INFINITY and target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:  # e.g. macOS caps the soft limit at OPEN_MAX
            _log.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, exc)
    now = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return FileLimit(
        soft=now if now != resource.RLIM_INFINITY else 1 << 30, hard=_value(hard), was=soft
    )


def connections_that_fit(limit: FileLimit, handshakes: int) -> int:
    """The largest connection cap whose descriptors fit in ``limit`` beside ``handshakes``
    connections in their TLS handshake and the center's own files."""
    return max(0, limit.soft - handshakes - RESERVED)


def fit_connection_cap(cap: int | None, default: int, handshakes: int) -> int:
    """The connection cap ``center serve`` runs with, after raising the open-file limit.

    ``cap`` is the one given on the command line (None: ``default``).  A given cap that does not
    fit raises :class:`ConfigError` saying what to do; the default is lowered to what fits.
    """
    limit = raise_soft_limit(want=(cap or default) + handshakes + RESERVED)
    fits = connections_that_fit(limit, handshakes)
    if cap is None:
        if default > fits:
            _log.warning(
                "open-file limit %d (hard %s): holding at most %d terminal connections, not %d; "
                "raise the hard limit (ulimit -Hn, LimitNOFILE=) for more",
                limit.soft, limit.hard or "unlimited", fits, default,
            )  # fmt: skip
            return max(1, fits)
        return default
    if cap > fits:
        hard = "unlimited" if limit.hard is None else str(limit.hard)
        raise ConfigError(
            f"--max-connections {cap} needs about {cap + handshakes + RESERVED} open files, "
            f"but this process may open {limit.soft} (hard limit {hard}): lower "
            f"--max-connections to {fits} or less, or raise the hard limit (`ulimit -Hn` as "
            "root, LimitNOFILE= in a systemd unit, nofile in /etc/security/limits.conf)"
        )
    return cap

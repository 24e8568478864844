"""One logging set-up for the three programs (terminal, phone, center).

* Human-readable lines by default, JSON lines with ``--log-json`` (one object per line, for
  ``jq`` and log shippers).  Both go to stderr, so a command's ``--json`` result on stdout stays
  parseable.
* Every line carries the transaction ID (terminal ID + STAN, e.g. ``POS00001-000042``) of the
  transaction being worked on, from a :class:`contextvars.ContextVar`: code deep in a driver
  logs without being handed the ID, and lines outside a transaction show ``-``.
* No secrets: the formatters run every message through :func:`redact`, which masks anything
  that looks like a PAN (6+4 shown) or a track; PINs and keys are never passed to a logger in
  the first place (the project rule), this is the second line of defence for card numbers.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import IO, Final

from swipepay.firmware_sim.printable import one_line

#: The transaction ID of the work in progress ("" outside a transaction).
TXN_ID: Final[contextvars.ContextVar[str]] = contextvars.ContextVar("swipepay_txn", default="")

#: Levels accepted by ``--log-level`` (specs as data).
LEVELS: Final[dict[str, int]] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

#: Default level per command: the long-running servers say what they do, one-shot commands
#: (whose result is their output) only warn.
SERVER_COMMANDS: Final = frozenset({"center", "phone"})


def default_level(command: str | None) -> str:
    return "info" if command in SERVER_COMMANDS else "warning"


#: 12-19 digits (a PAN) possibly inside track data; the first 6 and last 4 stay visible.
_PAN = re.compile(r"(?<![0-9])([0-9]{6})([0-9]{2,9})([0-9]{4})(?![0-9])")
#: Track 1 / track 2 bodies after the PAN: name and discretionary data go too.
_TRACK_TAIL = re.compile(r"([\^=])[^?\s]*\?")


#: The shortest run of digits :data:`_PAN` masks.
_TWELVE_DIGITS = re.compile(r"[0-9]{12}")


def redact(text: str) -> str:
    """Mask card numbers (6+4) and track data in a log message.

    What could need masking is looked for first: most lines (every decision the center logs)
    hold neither a track separator nor 12 digits in a row, and then the two substitutions could
    not change anything (one scan for the digits costs about half of the two).
    """
    if "^" not in text and "=" not in text and _TWELVE_DIGITS.search(text) is None:
        return text
    text = _TRACK_TAIL.sub(r"\1…?", text)
    return _PAN.sub(lambda m: m.group(1) + "*" * len(m.group(2)) + m.group(3), text)


def txn_id(terminal_id: str, stan: str | int) -> str:
    """``POS00001`` + 42 -> ``POS00001-000042`` (what a center operator greps for)."""
    stan_text = f"{int(stan):06d}" if isinstance(stan, int) else stan
    return f"{terminal_id}-{stan_text}"


@contextlib.contextmanager
def transaction(ident: str) -> Iterator[None]:
    """Tag every log line inside the block with transaction ID ``ident``."""
    token = TXN_ID.set(ident)
    try:
        yield
    finally:
        TXN_ID.reset(token)


def _txn_of(record: logging.LogRecord) -> str:
    """The transaction ID a line shows: one given with ``extra={"txn": ...}``, else the
    context's (:data:`TXN_ID`), else a message key among the arguments; ``""`` if none.

    Looked up by the formatters, while the record is handled, in the thread and context of the
    logging call (handlers here are synchronous), rather than by a handler filter: a filter
    costs a fifth of a center decision's INFO line."""
    return getattr(record, "txn", "") or TXN_ID.get() or _txn_from_args(record.args)


def _txn_from_args(args: object) -> str:
    """The center logs message keys (terminal ID + STAN) as arguments: use them as the ID."""
    for arg in args if isinstance(args, tuple) else ():
        terminal, stan = getattr(arg, "terminal_id", None), getattr(arg, "stan", None)
        if isinstance(terminal, str) and isinstance(stan, str):
            return txn_id(terminal, stan)
    return ""


class TextFormatter(logging.Formatter):
    """``2026-11-26T02:50:17.123Z INFO  terminal POS00001-000042 message``."""

    _second = -1
    _stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:  # the date and time part, made once a second (a server
            # logs every decision at INFO)
            self._second = second
            self._stamp = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        stamp = self._stamp
        line = (
            f"{stamp}.{int(record.msecs):03d}Z {record.levelname:<7} {record.name} "
            f"{_txn_of(record) or '-'} {one_line(redact(record.getMessage()))}"
        )
        if record.exc_info and record.levelno >= logging.ERROR:
            line += f" [{record.exc_info[0].__name__ if record.exc_info[0] else 'error'}]"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, txn, msg (and exc: the exception type)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "txn": _txn_of(record) or None,
            "msg": redact(record.getMessage()),
        }
        if record.exc_info and record.exc_info[0] is not None:
            # The type only: exception texts may quote input (track data) and tracebacks locals.
            out["exc"] = record.exc_info[0].__name__
        return json.dumps(out, ensure_ascii=False)


_HANDLER_NAME = "swipepay"


def setup_logging(
    json_lines: bool = False, level: str = "info", stream: IO[str] | None = None
) -> None:
    """Install the one handler on the root logger (idempotent: calling again replaces it)."""
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root.addHandler(handler)
    root.setLevel(LEVELS[level])
    _lean_records()


def _lean_records() -> None:
    """Leave out of every log record what no formatter here prints: the caller's file, line
    and function (a walk up the stack per record) and the thread and process names.  These are
    the logging HOWTO's "Optimization" switches; they cut the center's INFO line per decision
    from ~38 to ~25 us (~19 with the once-a-second time stamp)."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def configured() -> bool:
    """Whether :func:`setup_logging` ran (commands then leave ``basicConfig`` alone)."""
    return any(h.get_name() == _HANDLER_NAME for h in logging.getLogger().handlers)

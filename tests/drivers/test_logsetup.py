"""The one logging set-up: the transaction ID on each line, PANs masked, text and JSON lines."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from swipepay.center.storage import MessageKey
from swipepay.drivers.logsetup import setup_logging, transaction

PAN = "4999990000000001"


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """The root logger writing to a string, restored afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    out = io.StringIO()
    try:
        yield out
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


@pytest.mark.parametrize("json_lines", [False, True])
def test_each_line_names_its_transaction_wherever_the_id_comes_from(
    stream: io.StringIO, json_lines: bool
) -> None:
    setup_logging(json_lines, "info", stream)
    log = logging.getLogger("swipepay.test")
    log.info("no transaction")
    with transaction("POS00001-000042"):
        log.info("inside a transaction")
    # The center passes message keys as arguments: their terminal ID and STAN name the line.
    log.info("authorization %s: %s", MessageKey("ATM00002", "000007", "1202093000"), "00")
    log.info("given", extra={"txn": "POS00003-000001"})
    with transaction("POS00001-000042"):  # an explicit ID wins over the context's
        log.info("given inside", extra={"txn": "POS00003-000002"})
    if json_lines:
        got = [json.loads(line)["txn"] for line in lines(stream)]
        assert got == [None, "POS00001-000042", "ATM00002-000007", "POS00003-000001",
                       "POS00003-000002"]  # fmt: skip
    else:
        got = [line.split()[3] for line in lines(stream)]
        assert got == ["-", "POS00001-000042", "ATM00002-000007", "POS00003-000001",
                       "POS00003-000002"]  # fmt: skip


@pytest.mark.parametrize("json_lines", [False, True])
def test_card_numbers_and_track_data_are_masked(stream: io.StringIO, json_lines: bool) -> None:
    setup_logging(json_lines, "info", stream)
    logging.getLogger("swipepay.test").warning("read %s and ;%s=29122010000000000000?", PAN, PAN)
    text = stream.getvalue()
    assert PAN not in text and "2912201" not in text
    assert "499999******0001" in text


def test_the_level_filters_lines(stream: io.StringIO) -> None:
    setup_logging(False, "warning", stream)
    log = logging.getLogger("swipepay.test")
    log.info("not shown")
    log.warning("shown")
    assert [line.split()[1] for line in lines(stream)] == ["WARNING"]


@pytest.mark.parametrize("json_lines", [False, True])
def test_a_record_stays_one_line_whatever_it_quotes(stream: io.StringIO, json_lines: bool) -> None:
    # Before: a newline in a quoted value forged a second line in the text log, and an escape
    # sequence reached the operator's terminal as it was.
    setup_logging(json_lines, "info", stream)
    forged = "x\n2026-12-02T00:00:00.000Z INFO    swipepay.center - approved\r\x1b[2J"
    logging.getLogger("swipepay.test").warning("peer sent %s", forged)
    got = lines(stream)
    assert len(got) == 1
    assert "\x1b" not in stream.getvalue() and "\r" not in stream.getvalue()
    if not json_lines:
        assert got[0].endswith("peer sent x\\n2026-12-02T00:00:00.000Z INFO    "
                               "swipepay.center - approved\\r\\x1b[2J")  # fmt: skip

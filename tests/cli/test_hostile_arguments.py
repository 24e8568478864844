"""The hostile-argument campaign of the commands, kept as a test: each row is an invocation
found, at some point, to end in a traceback, a hang or a silent acceptance.  Every one must now
end at once with its exit code (2 usage, 3 configuration, 5 unreachable) and a one-line
message, and never show a traceback.  Rows use ``{lab}`` for the test's own lab."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from swipepay.center.lab import Lab
from swipepay.cli.main import main

TERMINAL = ["terminal", "run", "--home", "{lab}", "--center", "local", "--type", "balance"]
PHONE = ["phone", "run", "--profile", "{lab}/phones/alice-phone.json", "--once", "--decline"]

CASES: list[tuple[list[str], int, str]] = [
    # numbers that are no numbers
    ([*TERMINAL, "--host-timeout", "inf"], 2, "not in the range"),
    ([*TERMINAL, "--card-timeout", "nan"], 2, "not a number of seconds"),
    (["bench", "center", "--seconds", "nan"], 2, "not a number of seconds"),
    (["conformance", "--link", "tcp:127.0.0.1:9", "--connect-timeout", "nan"], 2, "seconds"),
    (["center", "serve", "--home", "{lab}", "--idle-timeout", "-1"], 2, "not in the range"),
    ([*PHONE, "--link", "tcp:127.0.0.1:0", "--timeout", "inf"], 2, "not in the range"),
    # digits of other scripts
    ([*TERMINAL, "--center", "127.0.0.1:٨٥٨٣"], 3, "is not a number"),
    ([*PHONE, "--link", "tcp:127.0.0.1:٧٠٠٠"], 3, "is not a number"),
    (["center", "report", "--home", "{lab}", "--date", "٢٠٢٦-١٢-٠٢"], 3, "YYYY-MM-DD"),
    (
        [
            "terminal",
            "run",
            "--home",
            "{lab}",
            "--center",
            "local",
            "--type",
            "purchase",
            "--amount",
            "١٢.٠٠",
        ],
        4,
        "not an amount",
    ),
    # driver URLs
    ([*TERMINAL, "--card", "nfcpy:udp:127.0.0.1:abc"], 3, "port 1 to 65535"),
    ([*TERMINAL, "--card", "mock:alice-visa?vai=tap"], 3, "unknown option 'vai'"),
    ([*TERMINAL, "--card", "mock:alice-visa?via=tap&via=swipe"], 3, "given twice"),
    ([*TERMINAL, "--phone", "mock:alice-phone?declin"], 3, "unknown option 'declin'"),
    ([*TERMINAL, "--card", "::"], 3, "not a driver URL"),
    # files and databases
    ([*TERMINAL, "--config", "{lab}/phones"], 2, "is a directory"),
    (["trace", "{lab}/lab.json"], 4, "trace line 1"),
    (
        ["center", "report", "--home", "{lab}", "--db", "sqlite:///{lab}/lab.json"],
        3,
        "cannot open the SQLite database",
    ),
    (
        ["center", "report", "--home", "{lab}", "--db", "sqlite:///{lab}/no/such/dir/x.db"],
        3,
        "cannot open the SQLite database",
    ),
    (["init", "{lab}/lab.json/inside"], 3, "cannot create the lab directory"),
    (["center", "report", "--home", "{lab}/phones"], 3, "not a swipepay lab"),
]


@pytest.mark.parametrize(("args", "code", "words"), CASES)
def test_hostile_arguments_end_at_once_with_one_line(
    lab: Lab, args: list[str], code: int, words: str
) -> None:
    argv = [a.replace("{lab}", str(lab.root)) for a in args]
    result = CliRunner().invoke(main, argv)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert result.exit_code == code, result.output
    assert words in result.output, result.output

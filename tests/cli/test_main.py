"""The swipepay command as a user runs it: init, demo, --json, and bad arguments."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from swipepay.cli.main import main


def test_help_lists_commands() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "demo" in result.output and "init" in result.output


def test_init_creates_a_lab_with_private_secret_files(tmp_path: Path) -> None:
    home = tmp_path / "lab"
    result = CliRunner().invoke(main, ["init", str(home)])
    assert result.exit_code == 0, result.output
    secrets = [
        home / "ca" / "ca.key",
        home / "center" / "center.key",
        home / "center" / "keys" / "center-bdk.hex",
        home / "center" / "keys" / "center-pvk.hex",
        home / "secrets" / "pins.json",
        home / "terminals" / "POS00001" / "link.key",
        home / "terminals" / "POS00001" / "tls.key",
        *sorted((home / "phones").glob("*.json")),
    ]
    assert len(secrets) > 8
    for path in secrets:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    pins = json.loads((home / "secrets" / "pins.json").read_text())
    db = (home / "center" / "center.db").read_bytes()
    for pin in pins.values():
        # PIN verification data only: the clear PIN is nowhere in the center's database.
        assert f'"{pin}"'.encode() not in db
    again = CliRunner().invoke(main, ["init", str(home)])
    assert again.exit_code == 3 and "already holds a lab" in again.output


def test_init_where_no_directory_can_be_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    result = CliRunner().invoke(main, ["init", str(tmp_path / "a-file" / "lab")])
    assert result.exit_code == 3, result.output  # before: a NotADirectoryError traceback
    assert "cannot create the lab directory" in result.output


def test_demo_json_runs_every_type_and_failure_without_showing_pins(tmp_path: Path) -> None:
    home = tmp_path / "lab"
    result = CliRunner().invoke(main, ["demo", "--home", str(home), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    txns = data["transactions"]
    assert data["ledger_balanced"] is True
    types = {t["type"] for t in txns}
    assert types == {"purchase", "preauth", "completion", "withdrawal", "deposit", "balance"}
    endings = [(t["response_code"], t["ending"]) for t in txns]
    assert ("55", "DECLINED_BY_HOST") in endings
    assert ("51", "DECLINED_BY_HOST") in endings
    assert (None, "NO_PHONE") in endings
    assert (None, "DECLINED_BY_USER") in endings
    assert all(t["as_expected"] for t in txns)
    purchase = txns[0]
    assert [s["step"] for s in purchase["steps"]] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert purchase["apdu_count"] == 6
    assert purchase["bytes_to_phone"] + purchase["bytes_from_phone"] < 1000
    pins = json.loads((home / "secrets" / "pins.json").read_text())
    story = CliRunner().invoke(main, ["demo", "--home", str(home)])
    assert story.exit_code == 0, story.output
    for pin in pins.values():
        # A PIN as a token of its own: 4 digits can also occur inside a timing like 0.99629.
        token = re.compile(rf"(?<![\d.]){pin}(?![\d.])")
        for output in (result.output, story.output):
            assert not token.search(output.replace(str(home), ""))


def test_demo_as_a_process_on_a_temporary_lab() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "from swipepay.cli.main import main; main()", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "ledger balanced: True; 10/10 ended as expected" in proc.stdout
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["demo", "--bogus"], 2, "No such option"),
        (["nonsense"], 2, "No such command"),
    ],
)
def test_bad_arguments_get_usage_errors(args: list[str], code: int, words: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == code and words in result.output


def test_demo_on_a_directory_that_is_not_a_lab(tmp_path: Path) -> None:
    (tmp_path / "lab.json").write_text("{not json")
    result = CliRunner().invoke(main, ["demo", "--home", str(tmp_path)])
    assert result.exit_code == 3
    assert "not valid JSON" in result.output and "Traceback" not in result.output

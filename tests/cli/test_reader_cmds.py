"""``swipepay readers`` and ``swipepay card read`` on the lab's mock cards (PC/SC reads are in
tests/drivers/test_pcsc.py, where pcscd runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from swipepay.center.lab import create_lab
from swipepay.cli.main import main


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lab") / "lab"
    create_lab(root)
    return root


def test_readers_lists_every_section() -> None:
    result = CliRunner().invoke(main, ["readers"])
    assert result.exit_code == 0, result.output
    for title in ("PC/SC readers", "Serial ports", "nfcpy devices"):
        assert title in result.output


def test_card_read_masks_the_pan(home: Path) -> None:
    pan = json.loads((home / "lab.json").read_text())["cards"][0]["pan"]
    args = ["card", "read", "--reader", "mock:alice-visa?via=insert", "--home", str(home), "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["pan"] == pan[:6] + "*" * (len(pan) - 10) + pan[-4:]
    assert pan not in result.output
    assert (out["source"], out["entry_mode"]) == ("emv-contact", "05")
    shown = CliRunner().invoke(main, [*args, "--show-pan"])
    assert json.loads(shown.output)["pan"] == pan


def test_card_read_errors_are_one_line(home: Path) -> None:
    result = CliRunner().invoke(main, ["card", "read", "--reader", "mock:alice-visa"])
    assert result.exit_code == 3 and "need --home" in result.output
    result = CliRunner().invoke(
        main, ["card", "read", "--reader", "mock:nobody", "--home", str(home)]
    )
    assert result.exit_code == 3 and "no card named 'nobody'" in result.output
    result = CliRunner().invoke(main, ["card", "read", "--reader", "pcsc:x?mode=bad"])
    assert result.exit_code == 3 and "mode must be one of" in result.output

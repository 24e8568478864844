"""A lab directory's manifest (lab.json) as people edit it: whatever they leave there is read as
a lab or refused with a one-line configuration error, never a traceback from deep inside."""

from __future__ import annotations

import json
import os

import pytest

from swipepay.center.lab import MANIFEST, Lab
from swipepay.firmware_sim.errors import ConfigError


def test_the_manifest_as_created_reads_back(lab: Lab) -> None:
    again = Lab(lab.root)
    assert again.terminals() == lab.terminals() and "POS00001" in again.terminals()
    assert again.phones() == lab.phones() and set(again.cards()) == set(lab.cards())
    assert again.card_account("alice-visa") == lab.card_account("alice-visa")


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ([], "is not a JSON object"),  # before: AttributeError ('list' has no 'get')
        ({"terminals": 5}, "'terminals' entries are malformed"),
        ({"terminals": [{"terminal_id": "T1"}]}, "'terminals' entries are malformed"),
        ({"cards": [{"name": "x"}]}, "'cards' entries are malformed"),
        ({"phones": [["alice-phone"]]}, "'phones' entries are malformed"),
    ],
)
def test_a_broken_manifest_is_a_configuration_error(
    lab: Lab, manifest: object, message: str
) -> None:
    (lab.root / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match=message):
        broken = Lab(lab.root)
        broken.terminals()
        broken.cards()
        broken.phones()


def test_a_manifest_that_is_no_file_is_refused_at_once(lab: Lab) -> None:
    manifest = lab.root / MANIFEST
    manifest.unlink()
    os.mkfifo(manifest)  # before: opened with read_text, waiting for a writer
    with pytest.raises(ConfigError, match="is not a regular file"):
        Lab(lab.root)
    manifest.unlink()
    with pytest.raises(ConfigError, match="not a swipepay lab"):
        Lab(lab.root)


@pytest.mark.parametrize(
    "pins", [[1], {"alice-visa": 1234}, {"alice-visa": "12a4"}, {"alice-visa": "١٢٣٤"}]
)
def test_a_broken_pin_file_is_refused_without_showing_it(lab: Lab, pins: object) -> None:
    # Before: AttributeError or KeyError tracebacks from `demo` and `terminal run`.
    path = lab.root / "secrets" / "pins.json"
    path.write_text(json.dumps(pins))
    with pytest.raises(ConfigError, match="must map each card name to a PIN") as info:
        lab.pins()
    assert "1234" not in str(info.value) and "12a4" not in str(info.value)


def test_a_card_without_a_pin_is_named(lab: Lab) -> None:
    assert lab.pin("alice-visa") == lab.pins()["alice-visa"]
    with pytest.raises(ConfigError, match="no PIN for card 'nobody'"):
        lab.pin("nobody")

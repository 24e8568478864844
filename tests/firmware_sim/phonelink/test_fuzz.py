"""Any bytes from the air get a status word from the applet and a typed error from the codecs."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swipepay.firmware_sim.apdu import ResponseApdu
from swipepay.firmware_sim.errors import SwipepayError
from swipepay.firmware_sim.phonelink.protocol import (
    ConfirmationBody,
    PaymentRequestBody,
    ResultBody,
)
from tests.support.phonelink import PAN, make_pair, txn

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

apdus = st.one_of(
    st.binary(max_size=300),
    # Well-formed headers with the phone link's class and instructions, random bodies.
    st.builds(
        lambda cla, ins, body: bytes([cla, ins, 0, 0, len(body)]) + body + b"\x00",
        st.sampled_from([0x00, 0x80, 0x84]),
        st.sampled_from([0xA4, 0x10, 0x12, 0x20, 0x30, 0x40, 0xB0]),
        st.binary(min_size=1, max_size=255),
    ),
)


def _advance(stage: int):  # type: ignore[no-untyped-def]
    p = make_pair()

    def confirmed() -> None:
        p.applet.confirm("4321")
        p.link.handle_confirmation(p.send(p.link.confirmation_command().apdu))

    steps = [
        lambda: p.link.handle_select(p.send(p.link.select_command().apdu)),
        lambda: p.link.handle_connect(p.send(p.link.connect_command(PAN.encode()).apdu)),
        lambda: p.link.handle_authenticate(p.send(p.link.authenticate_command().apdu)),
        lambda: p.link.handle_payment_request(p.send(p.link.payment_request_command(txn()).apdu)),
        confirmed,
    ]
    for step in steps[:stage]:
        step()
    return p


#: Applet state after _advance(stage), for the soak's per-state APDU counts.
STATES = ("IDLE", "SELECTED", "CONNECTED", "AUTHENTICATED", "REQUESTED", "ANSWERED")


@pytest.mark.soak(
    "applet", scale=2.5, units=lambda kw: {f"APDUs in {STATES[kw['stage']]}": len(kw["junk"])}
)
@FUZZ
@given(stage=st.integers(0, 5), junk=st.lists(apdus, min_size=1, max_size=4))
def test_applet_answers_every_input_with_a_status_word(stage: int, junk: list[bytes]) -> None:
    p = _advance(stage)
    for apdu in junk:
        response = p.send(apdu)
        parsed = ResponseApdu.parse(response)
        assert parsed.sw != 0x9000 or apdu[:2] in (b"\x00\xa4",), apdu.hex()
    # After any amount of junk, a fresh session still works from SELECT.
    p.link = make_pair().link
    p.link.certificate = p.cert
    p.link._signing_key = p.terminal_key
    p.link.handle_select(p.send(p.link.select_command().apdu))
    p.link.handle_connect(p.send(p.link.connect_command(PAN.encode()).apdu))
    p.link.handle_authenticate(p.send(p.link.authenticate_command().apdu))


@pytest.mark.soak("phonelink-bodies")
@FUZZ
@given(st.binary(max_size=120))
def test_body_codecs_raise_only_typed_errors(data: bytes) -> None:
    for codec in (PaymentRequestBody, ConfirmationBody, ResultBody):
        with contextlib.suppress(SwipepayError):
            codec.decode(data)


@FUZZ
@given(
    amount=st.integers(0, 999_999_999_999),
    stan=st.from_regex(r"[0-9]{6}", fullmatch=True),
    at=st.from_regex(r"[0-9]{10}", fullmatch=True),
)
def test_payment_request_round_trip(amount: int, stan: str, at: str) -> None:
    body = PaymentRequestBody(0x00, amount, "978", stan, at)
    assert PaymentRequestBody.decode(body.encode()) == body

"""Messages the center does not process: answered with MTI + 10 and 39 = 30 when ISO 8583:1987
defines an answer to them (a request or an advice), else not answered and the connection closed.

``hardware_notes/iso8583.md`` ("Fields per MTI") states the rule; one case per kind of MTI.
"""

from __future__ import annotations

import iso8583
import pytest

from swipepay.firmware_sim.hostlink import iso8583 as codec
from tests.support.lab_center import POS, RawClient, ServerThread, ledger, still_serves

#: Fields any of these messages carries: enough to be decoded, never enough to be processed.
_BODY = {"3": "000000", "4": "000000001000", "7": "1126120000", "11": "000001", "41": POS}


@pytest.mark.parametrize(
    ("mti", "answer"),
    [
        ("0300", "0310"),  # file action request: a class the center does not serve
        ("0120", "0130"),  # authorization advice
        ("0221", "0230"),  # financial advice, repeat: answered as its first transmission
        ("0420", "0430"),  # reversal advice
        ("0820", "0830"),  # network management advice
        ("0201", "0210"),  # financial request, repeat: the terminal retransmits 0200 instead
    ],
)
def test_request_or_advice_not_served_is_answered_mti_plus_10_with_30(
    server: ServerThread, mti: str, answer: str
) -> None:
    c = RawClient(server.lab, server.port)
    try:
        fields = c.call({"t": mti, **_BODY})
        assert (fields["t"], fields["39"]) == (answer, "30")
        assert fields["11"] == "000001" and fields["41"] == POS  # echoed
    finally:
        c.close()
    with ledger(server.lab) as center:
        assert center.check_balanced()


@pytest.mark.parametrize(
    "mti",
    [
        "1200",  # ISO 8583:1993 (version digit 1): not a version the center speaks
        "2100",  # ISO 8583:2003
        "0000",  # message class 0: reserved by ISO
        "0900",  # message class 9: reserved by ISO
        "0210",  # a response: never answered
        "0430",  # an advice response
        "0240",  # a notification: ISO 8583:1987 defines no answer
        "0250",  # function 5: reserved
    ],
)
def test_mti_without_a_1987_answer_closes_the_connection(server: ServerThread, mti: str) -> None:
    c = RawClient(server.lab, server.port)
    try:
        body, _ = iso8583.encode({"t": mti, **_BODY}, codec.SPEC)
        c.send_raw(codec.frame(bytes(body)))
        assert c.recv_frame() is None
    finally:
        c.close()
    still_serves(server)


@pytest.mark.parametrize(
    ("mti", "answer"),
    [
        ("0100", "0110"),
        ("0200", "0210"),
        ("0201", "0210"),
        ("0220", "0230"),
        ("0221", "0230"),
        ("0300", "0310"),
        ("0400", "0410"),
        ("0421", "0430"),
        ("0502", "0512"),
        ("0503", "0512"),
        ("0605", "0614"),
        ("0800", "0810"),
        ("0820", "0830"),
        ("1200", None),
        ("0000", None),
        ("0900", None),
        ("0110", None),
        ("0230", None),
        ("0240", None),
        ("0206", None),
        ("02 0", None),
        ("020", None),
        ("０２００", None),  # full-width digits: not ASCII
    ],
)
def test_response_mti_rule(mti: str, answer: str | None) -> None:
    assert codec.response_mti(mti) == answer


def test_undecodable_body_with_an_answerable_mti_gets_30() -> None:
    answer = codec.format_error_fields(b"0300garbage", "bad")
    assert answer is not None and (answer["t"], answer["39"]) == ("0310", "30")
    assert codec.format_error_fields(b"1200garbage", "bad") is None

"""What the terminal says when the phone refuses a command (PhoneRefused)."""

from __future__ import annotations

from swipepay.firmware_sim import ecc
from swipepay.firmware_sim.phonelink.protocol import Ins
from swipepay.firmware_sim.phonelink.terminal_link import PhoneRefused, TerminalLink
from tests.support.phonelink import make_cert, make_pair


def test_the_status_word_is_said_once() -> None:
    text = str(PhoneRefused(Ins.PAYMENT_REQUEST, 0x6985))
    assert text.count("6985") == 1


def test_a_certificate_of_another_lab_names_home() -> None:
    pair = make_pair()
    other_ca, key = ecc.generate_key(), ecc.generate_key()
    link = TerminalLink(make_cert(other_ca, key), key)
    pair.send(link.select_command().apdu)
    link.handle_connect(pair.send(link.connect_command(b"4761739001010119").apdu))
    answer = pair.send(link.authenticate_command().apdu)
    try:
        link.handle_authenticate(answer)
    except PhoneRefused as exc:
        assert exc.sw == 0x6982
        assert str(exc).count("6982") == 1 and "another lab" in str(exc) and "--home" in str(exc)
    else:
        raise AssertionError("the phone accepted a certificate of another CA")

"""The simulated EMV card applet and the UID card, at the byte level."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swipepay.firmware_sim.apdu import ResponseApdu
from swipepay.firmware_sim.cards import EmvCardApplet, EmvCardProfile, UidCard
from swipepay.firmware_sim.cards.emv_card import QVSDC_PDOL
from swipepay.firmware_sim.errors import LocalError
from swipepay.firmware_sim.tlv import find_all, find_tag
from swipepay.firmware_sim.tracks import parse_track2_equivalent

PAN = "4111111111111111"
SELECT_PSE = "00A404000E315041592E5359532E444446303100"
SELECT_PPSE = "00A404000E325041592E5359532E444446303100"
SELECT_VISA = "00A4040007A000000003101000"
GPO_EMPTY = "80A8000002830000"
GPO_QVSDC = "80A80000168314" + "00" * 20 + "00"


def profile(**kw: object) -> EmvCardProfile:
    return EmvCardProfile(PAN, "2812", "DOE/JOHN", **kw)  # type: ignore[arg-type]


def send(card: EmvCardApplet | UidCard, hexapdu: str) -> ResponseApdu:
    return ResponseApdu.parse(card.process(bytes.fromhex(hexapdu)))


def test_select_ppse_lists_applications_by_priority() -> None:
    second = profile(aid=bytes.fromhex("A0000000032010"), label="VISA ELECTRON", priority=2)
    card = EmvCardApplet(profile(extra_aids=(second,)), "contactless")
    r = send(card, SELECT_PPSE)
    assert r.sw == 0x9000
    entries = find_all(r.data, 0x61)
    assert [find_tag(e, 0x4F) for e in entries] == [
        bytes.fromhex("A0000000031010"),
        bytes.fromhex("A0000000032010"),
    ]
    assert [find_tag(e, 0x87) for e in entries] == [b"\x01", b"\x02"]
    assert find_tag(r.data, 0x50) == b"VISA CREDIT"


def test_directories_depend_on_interface() -> None:
    contact = EmvCardApplet(profile(), "contact")
    assert send(contact, SELECT_PPSE).sw == 0x6A82
    r = send(contact, SELECT_PSE)
    assert r.sw == 0x9000 and find_tag(r.data, 0x88) == b"\x01"
    record = send(contact, "00B2010C00")
    assert record.sw == 0x9000
    assert find_tag(record.data, 0x4F) == bytes.fromhex("A0000000031010")
    assert send(contact, "00B2020C00").sw == 0x6A83
    contactless = EmvCardApplet(profile(), "contactless")
    assert send(contactless, SELECT_PSE).sw == 0x6A82


def test_no_pse() -> None:
    assert send(EmvCardApplet(profile(has_pse=False), "contact"), SELECT_PSE).sw == 0x6A82


def test_select_aid_fci_carries_pdol() -> None:
    card = EmvCardApplet(profile(pdol=QVSDC_PDOL), "contactless")
    r = send(card, SELECT_VISA)
    assert r.sw == 0x9000
    assert find_tag(r.data, 0x84) == bytes.fromhex("A0000000031010")
    assert find_tag(r.data, 0x9F38) == QVSDC_PDOL
    assert send(card, "00A4040005A00000000400").sw == 0x6A82


def test_partial_aid_selection() -> None:
    r = send(EmvCardApplet(profile(), "contact"), "00A4040005A00000000300")
    assert find_tag(r.data, 0x84) == bytes.fromhex("A0000000031010")


def test_gpo_checks_pdol_length() -> None:
    card = EmvCardApplet(profile(pdol=QVSDC_PDOL), "contactless")
    send(card, SELECT_VISA)
    assert send(card, GPO_EMPTY).sw == 0x6700
    assert send(card, "80A80000168414" + "00" * 20 + "00").sw == 0x6A80  # not tag 83
    assert send(card, GPO_QVSDC).sw == 0x9000
    assert send(card, GPO_QVSDC).sw == 0x6985  # only once per selection


def test_gpo_and_records() -> None:
    card = EmvCardApplet(profile(), "contact")
    assert send(card, "00B2010C00").sw == 0x6985  # nothing selected
    assert send(card, GPO_EMPTY).sw == 0x6985  # GPO before SELECT
    send(card, SELECT_VISA)
    assert send(card, "00B2010C00").sw == 0x6985  # READ RECORD before GPO
    gpo = send(card, GPO_EMPTY)
    assert gpo.sw == 0x9000
    assert find_tag(gpo.data, 0x94) == bytes.fromhex("08010200")
    assert find_tag(gpo.data, 0x57) is None
    rec1 = send(card, "00B2010C00")
    t2 = parse_track2_equivalent(find_tag(rec1.data, 0x57) or b"")
    assert (t2.pan, t2.expiry, t2.service_code) == (PAN, "2812", "201")
    assert find_tag(rec1.data, 0x5F20) == b"DOE/JOHN"
    rec2 = send(card, "00B2020C00")
    assert find_tag(rec2.data, 0x5A) == bytes.fromhex(PAN)
    assert find_tag(rec2.data, 0x5F24) == bytes.fromhex("281231")
    assert send(card, "00B2030C00").sw == 0x6A83
    assert send(card, "00B2011400").sw == 0x6A83  # SFI 2
    assert send(card, "00B2010800").sw == 0x6A86  # P2 without the record-number bits


def test_data_in_gpo() -> None:
    card = EmvCardApplet(profile(pdol=QVSDC_PDOL, data_in_gpo=True), "contactless")
    send(card, SELECT_VISA)
    gpo = send(card, GPO_QVSDC)
    assert gpo.data[0] == 0x77
    assert find_tag(gpo.data, 0x94) is None
    assert find_tag(gpo.data, 0x5A) == bytes.fromhex(PAN)
    assert find_tag(gpo.data, 0x57) is not None
    assert send(card, "00B2010C00").sw == 0x6A83


def test_t0_style_get_response_and_wrong_le() -> None:
    card = EmvCardApplet(profile(t0_style=True), "contact")
    r = send(card, SELECT_VISA)
    assert r.sw1 == 0x61 and not r.data
    size = r.sw2
    assert send(card, f"00C00000{size + 1:02X}").sw == 0x6C00 | size
    full = send(card, f"00C00000{size:02X}")
    assert full.sw == 0x9000 and len(full.data) == size
    assert send(card, "00C0000010").sw == 0x6985  # nothing left
    assert send(card, GPO_EMPTY).sw1 == 0x61
    send(card, "00C000000C")
    wrong = send(card, "00B2010C00")
    assert wrong.sw1 == 0x6C
    exact = send(card, f"00B2010C{wrong.sw2:02X}")
    assert exact.sw == 0x9000 and len(exact.data) == wrong.sw2


def test_t0_get_response_in_pieces() -> None:
    card = EmvCardApplet(profile(t0_style=True), "contact")
    size = send(card, SELECT_VISA).sw2
    first = send(card, "00C0000010")
    assert first.sw == 0x6100 | (size - 0x10) and len(first.data) == 0x10
    rest = send(card, f"00C00000{size - 0x10:02X}")
    assert rest.sw == 0x9000


@pytest.mark.parametrize(
    ("apdu", "sw"),
    [
        ("84A4040007A000000003101000", 0x6E00),  # wrong CLA
        ("00A8000002830000", 0x6E00),  # GPO with ISO class
        ("00CA9F1700", 0x6D00),  # unknown INS
        ("00A4000007A000000003101000", 0x6A86),  # SELECT by file id
        ("00A40400", 0x6A82),  # no name
        ("00A4040007A0000000", 0x6700),  # Lc longer than the data
        ("00", 0x6700),
        ("FFCA000000", 0x6E00),
    ],
)
def test_bad_commands_get_status_words(apdu: str, sw: int) -> None:
    assert send(EmvCardApplet(profile(), "contact"), apdu).sw == sw


def test_profile_validation() -> None:
    with pytest.raises(LocalError):
        profile(pdol=b"\x9f")
    with pytest.raises(LocalError):
        EmvCardProfile("4111111111111112", "2812", "DOE/JOHN")
    with pytest.raises(LocalError):
        EmvCardApplet(profile(contactless=False), "contactless")
    for digits in ({"service_code": "٢٠١"}, {"discretionary": "١٠٠"}, {"service_code": "²01"}):
        with pytest.raises(LocalError):  # no BCD nibble holds them
            profile(**digits)


@given(st.lists(st.binary(max_size=40), max_size=8), st.booleans(), st.booleans())
def test_fuzz_card_never_raises(apdus: list[bytes], t0: bool, contactless: bool) -> None:
    card = EmvCardApplet(profile(t0_style=t0), "contactless" if contactless else "contact")
    for apdu in [bytes.fromhex(SELECT_VISA), *apdus]:
        answer = card.process(apdu)
        assert len(answer) >= 2
        ResponseApdu.parse(answer)


def test_uid_card() -> None:
    card = UidCard(bytes.fromhex("04A1B2C3D4E580"))
    r = send(card, "FFCA000000")
    assert r.sw == 0x9000 and r.data == bytes.fromhex("04A1B2C3D4E580")
    assert send(card, "FFCA000007").data == bytes.fromhex("04A1B2C3D4E580")
    assert send(card, "FFCA000004").sw == 0x6C07
    assert send(card, "FFCA010000").sw == 0x6A81
    assert send(card, SELECT_VISA).sw == 0x6D00
    with pytest.raises(LocalError):
        UidCard(b"\x01\x02")


@given(st.binary(max_size=20))
def test_fuzz_uid_card(apdu: bytes) -> None:
    answer = UidCard(b"\x01\x02\x03\x04").process(apdu)
    assert ResponseApdu.parse(answer).sw in (0x9000, 0x6A81, 0x6D00, 0x6C04)

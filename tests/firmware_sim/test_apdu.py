"""ISO/IEC 7816-4 APDU codec: every case of ISO/IEC 7816-3 12.1.3, and hostile bytes.

Byte strings used as examples:

* SELECT of the phone-link AID, ``00 A4 04 00 07 F0 53 57 50 41 59 01 00`` — fixed by the
  design (hardware_notes/design.md §4).
* SELECT PPSE ``00A404000E325041592E5359532E444446303100`` — hardware_notes/standards.md.
* GET RESPONSE ``00 C0 00 00 xx`` and READ RECORD ``00 B2 rec (SFI<<3|4) 00`` — same page.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swipepay.firmware_sim.apdu import CommandApdu, ResponseApdu, select_by_name
from swipepay.firmware_sim.errors import DecodeError, LocalError, WrongLength
from swipepay.firmware_sim.statuswords import SW

AID = bytes.fromhex("F0535750415901")


def test_select_phone_link_aid_matches_the_design() -> None:
    apdu = select_by_name(AID)
    assert apdu.encode() == bytes.fromhex("00A4040007F053575041590100")
    assert CommandApdu.parse(apdu.encode()) == apdu
    assert apdu.header == bytes.fromhex("00A40400")
    assert apdu.is_short


def test_select_ppse_matches_notes() -> None:
    raw = bytes.fromhex("00A404000E325041592E5359532E444446303100")
    apdu = CommandApdu.parse(raw)
    assert apdu.data == b"2PAY.SYS.DDF01"
    assert apdu.le == 256
    assert apdu == select_by_name(b"2PAY.SYS.DDF01")


# (wire hex, data, le, canonical re-encoding if shorter) for each ISO/IEC 7816-3 case.
CASES: list[tuple[str, bytes, int | None, str | None]] = [
    ("80CA9F17", b"", None, None),  # case 1
    ("00C0000010", b"", 0x10, None),  # case 2S (GET RESPONSE)
    ("00B2010C00", b"", 256, None),  # case 2S, Le 00 = 256
    ("0020008002ABCD", b"\xab\xcd", None, None),  # case 3S
    ("00A4040002ABCD7F", b"\xab\xcd", 0x7F, None),  # case 4S
    ("00B0000000012C", b"", 300, None),  # case 2E
    ("00B00000000000", b"", 65536, None),  # case 2E, Le 0000 = 65536
    ("00B000000000FF", b"", 255, "00B00000FF"),  # case 2E that would fit short
    ("00D6000000000201FF", b"\x01\xff", None, "00D6000002" "01FF"),  # case 3E, fits short
    ("002A9E9A0000020102012C", b"\x01\x02", 300, None),  # case 4E
    ("002A9E9A00000201020000", b"\x01\x02", 65536, None),  # case 4E, Le 0000
]


@pytest.mark.parametrize(("wire", "data", "le", "canonical"), CASES)
def test_each_case_parses_and_re_encodes(
    wire: str, data: bytes, le: int | None, canonical: str | None
) -> None:
    raw = bytes.fromhex(wire)
    apdu = CommandApdu.parse(raw)
    assert (apdu.data, apdu.le) == (data, le)
    assert apdu.header == raw[:4]
    assert apdu.encode() == bytes.fromhex(canonical or wire)
    assert CommandApdu.parse(apdu.encode()) == apdu


@pytest.mark.parametrize(("wire", "data", "le", "canonical"), CASES)
def test_short_only_refuses_extended_forms(
    wire: str, data: bytes, le: int | None, canonical: str | None
) -> None:
    raw = bytes.fromhex(wire)
    is_extended = len(raw) > 5 and raw[4] == 0
    if is_extended:
        with pytest.raises(WrongLength):
            CommandApdu.parse(raw, short_only=True)
    else:
        assert CommandApdu.parse(raw, short_only=True) == CommandApdu.parse(raw)


def test_extended_used_only_when_needed() -> None:
    assert CommandApdu(0x00, 0xB0, 0, 0, le=256).encode() == bytes.fromhex("00B0000000")
    assert CommandApdu(0x00, 0xB0, 0, 0, le=257).encode() == bytes.fromhex("00B00000000101")
    big = CommandApdu(0x00, 0xD6, 0, 0, bytes(256))
    assert not big.is_short
    assert big.encode()[4:7] == bytes.fromhex("000100")
    # Short data but extended Le forces both into the extended form.
    mixed = CommandApdu(0x00, 0x2A, 0x9E, 0x9A, b"\x01", le=257)
    assert mixed.encode() == bytes.fromhex("002A9E9A000001010101")
    assert not mixed.is_short


@pytest.mark.parametrize(
    "wire",
    [
        "",  # no header
        "00",
        "00A404",  # header truncated
        "00A404000000",  # 00 00: neither short (Lc=0 is not allowed) nor extended
        "00A4040002AB",  # Lc=2, 1 byte of data
        "00A4040002ABCDEF00",  # Lc=2, 4 bytes follow: trailing bytes
        "00A4040000000001",  # extended with Lc=0000
        "00A40400000002010203",  # extended Lc=2, 3 bytes follow: neither 3E nor 4E
        "00A40400000002AB",  # extended Lc=2, truncated data
        "00A4040000000201020000FF",  # extended 4E with a trailing byte
    ],
)
def test_inconsistent_lengths_are_wrong_length(wire: str) -> None:
    with pytest.raises(WrongLength) as info:
        CommandApdu.parse(bytes.fromhex(wire))
    assert info.value.status_word == SW.WRONG_LENGTH


def test_invalid_class_and_instruction_bytes() -> None:
    with pytest.raises(DecodeError) as cla:
        CommandApdu.parse(bytes.fromhex("FFA40400"))
    assert cla.value.status_word == SW.CLA_NOT_SUPPORTED
    for ins in (0x60, 0x6F, 0x90, 0x9F):
        with pytest.raises(DecodeError) as bad:
            CommandApdu.parse(bytes((0x80, ins, 0, 0)))
        assert bad.value.status_word == SW.INS_NOT_SUPPORTED
        with pytest.raises(LocalError):
            CommandApdu(0x80, ins, 0, 0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cla": 256},
        {"cla": -1},
        {"ins": 0x1A4},
        {"p1": 256},
        {"p2": -1},
        {"le": 0},
        {"le": 65537},
        {"data": bytes(65536)},
        {"data": "text"},
    ],
)
def test_constructor_validates_fields(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {"cla": 0x00, "ins": 0xA4, "p1": 0x04, "p2": 0x00}
    fields.update(kwargs)
    with pytest.raises(LocalError):
        CommandApdu(**fields)  # type: ignore[arg-type]


commands = st.builds(
    CommandApdu,
    cla=st.integers(0, 0xFE),
    ins=st.integers(0, 0xFF).filter(lambda i: i >> 4 not in (0x6, 0x9)),
    p1=st.integers(0, 0xFF),
    p2=st.integers(0, 0xFF),
    data=st.one_of(st.binary(max_size=260), st.binary(min_size=250, max_size=600)),
    le=st.one_of(st.none(), st.integers(1, 300), st.integers(1, 65536)),
)


@settings(max_examples=400)
@given(commands)
def test_command_round_trip(apdu: CommandApdu) -> None:
    raw = apdu.encode()
    assert CommandApdu.parse(raw) == apdu
    if apdu.is_short:
        assert CommandApdu.parse(raw, short_only=True) == apdu
    assert raw[:4] == apdu.header
    assert apdu.is_short == (len(apdu.data) <= 255 and (apdu.le or 0) <= 256)
    if apdu.is_short:
        assert len(raw) <= 4 + 1 + 255 + 1


@pytest.mark.soak("apdu-command")
@settings(max_examples=500)
@given(st.one_of(st.binary(max_size=12), st.binary(max_size=300)))
def test_any_bytes_give_command_or_decode_error(raw: bytes) -> None:
    try:
        apdu = CommandApdu.parse(raw)
    except DecodeError:
        return
    again = apdu.encode()
    assert CommandApdu.parse(again) == apdu
    extended_wire = len(raw) > 5 and raw[4] == 0
    if not (extended_wire and apdu.is_short):  # only that case re-encodes differently
        assert again == raw


@settings(max_examples=300)
@given(st.binary(max_size=4), st.integers(0, 0xFF), st.binary(max_size=300))
def test_well_formed_short_prefix_with_garbage_tail(head: bytes, lc: int, tail: bytes) -> None:
    """Bodies that start like a real Lc exercise the 3S/4S branches more than random bytes."""
    raw = (head + bytes(4))[:4] + bytes((lc,)) + tail
    try:
        apdu = CommandApdu.parse(raw)
    except DecodeError:
        return
    assert CommandApdu.parse(apdu.encode()) == apdu
    if lc:  # a non-zero first body byte means a short-form command: exact round trip
        assert apdu.encode() == raw


def test_response_basics() -> None:
    ok = ResponseApdu.parse(bytes.fromhex("6F03840101" "9000"))
    assert ok.ok
    assert (ok.sw, ok.sw1, ok.sw2) == (SW.OK, 0x90, 0x00)
    assert ok.data == bytes.fromhex("6F03840101")
    more = ResponseApdu(b"", 0x6110)
    assert not more.ok
    assert (more.sw1, more.sw2) == (0x61, 0x10)
    assert more.encode() == bytes.fromhex("6110")


@pytest.mark.parametrize(
    "wire",
    [
        "",  # no status word
        "90",  # half a status word
        "0000",  # SW1 00
        "6000",  # SW1 60 is the T=0 NULL procedure byte
        "0102A000",  # SW1 A0
        "010250FF",  # SW1 50
    ],
)
def test_response_malformed(wire: str) -> None:
    with pytest.raises(DecodeError):
        ResponseApdu.parse(bytes.fromhex(wire))


@settings(max_examples=300)
@given(st.binary(max_size=300), st.sampled_from([*range(0x61, 0x70), *range(0x90, 0xA0)]),
       st.integers(0, 0xFF))
def test_response_round_trip(data: bytes, sw1: int, sw2: int) -> None:
    response = ResponseApdu(data, sw1 << 8 | sw2)
    assert ResponseApdu.parse(response.encode()) == response


@pytest.mark.soak("apdu-response")
@settings(max_examples=300)
@given(st.binary(max_size=40))
def test_any_bytes_give_response_or_decode_error(raw: bytes) -> None:
    try:
        response = ResponseApdu.parse(raw)
    except DecodeError:
        return
    assert response.encode() == raw


def test_response_constructor_validates() -> None:
    for sw in (-1, 0x10000, 0x6000, 0x0000, 0xA000):
        with pytest.raises(LocalError):
            ResponseApdu(b"", sw)


def test_select_by_name_validates_aid() -> None:
    with pytest.raises(LocalError):
        select_by_name(b"")
    with pytest.raises(LocalError):
        select_by_name(bytes(17))
    assert select_by_name(AID, le=None).encode() == bytes.fromhex("00A4040007F0535750415901")

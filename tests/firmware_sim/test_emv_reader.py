"""The terminal's EMV read sequence, run against the simulated card applet."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swipepay.firmware_sim.carddata import CardData
from swipepay.firmware_sim.cards import EmvCardApplet, EmvCardProfile
from swipepay.firmware_sim.cards.emv_card import QVSDC_PDOL
from swipepay.firmware_sim.emv_reader import (
    MAX_EXCHANGES,
    CardReadError,
    EmvReader,
    Step,
    run_reader,
)
from swipepay.firmware_sim.errors import DecodeError, LocalProtocolError
from swipepay.firmware_sim.tlv import encode_tlv

PAN = "4111111111111111"
VISA = bytes.fromhex("A0000000031010")
ELECTRON = bytes.fromhex("A0000000032010")
MASTERCARD = bytes.fromhex("A0000000041010")
TERMINAL_DATA = {
    0x9F66: bytes.fromhex("36000000"),
    0x9F02: bytes.fromhex("1234"),  # shorter than n12: padded on the left
    0x9F37: bytes.fromhex("DEADBEEF"),
    0x5F2A: bytes.fromhex("0978"),
    0x9A: bytes.fromhex("250131"),
}


def profile(**kw: object) -> EmvCardProfile:
    return EmvCardProfile(PAN, "2812", "DOE/JOHN", **kw)  # type: ignore[arg-type]


class Transcript:
    """A transmit function that records every exchange and can tamper with one answer."""

    def __init__(
        self,
        card: Callable[[bytes], bytes],
        tamper_at: int | None = None,
        replacement: bytes = b"",
    ) -> None:
        self.card = card
        self.tamper_at = tamper_at
        self.replacement = replacement
        self.log: list[tuple[bytes, bytes]] = []

    def __call__(self, command: bytes) -> bytes:
        answer = self.card(command)
        if len(self.log) == self.tamper_at:
            answer = self.replacement
        self.log.append((command, answer))
        return answer

    def instructions(self) -> list[str]:
        return [command[:2].hex().upper() for command, _ in self.log]


def read(
    card_profile: EmvCardProfile, contactless: bool, **reader_kw: object
) -> tuple[CardData, Transcript]:
    applet = EmvCardApplet(card_profile, "contactless" if contactless else "contact")
    transcript = Transcript(applet.process)
    reader = EmvReader(contactless, terminal_data=TERMINAL_DATA, **reader_kw)  # type: ignore[arg-type]
    return run_reader(reader, transcript), transcript


def check_card(card: CardData, contactless: bool) -> None:
    assert card.pan == PAN
    assert card.expiry == "2812"
    assert card.name == "DOE/JOHN"
    assert card.service_code == "201"
    assert card.track2 == "4111111111111111=281220110000000"
    assert card.aid == VISA
    assert card.entry_mode == ("07" if contactless else "05")
    assert card.source == ("emv-contactless" if contactless else "emv-contact")


def test_contact_with_pse() -> None:
    card, t = read(profile(), contactless=False)
    check_card(card, contactless=False)
    assert t.log[0][0] == bytes.fromhex("00A404000E315041592E5359532E444446303100")
    # SELECT PSE, directory record 1, end of directory, SELECT, GPO, two records
    assert t.instructions() == ["00A4", "00B2", "00B2", "00A4", "80A8", "00B2", "00B2"]


def test_contact_without_pse_falls_back_to_aid_list() -> None:
    card, t = read(profile(has_pse=False), contactless=False)
    check_card(card, contactless=False)
    assert t.log[0][1] == bytes.fromhex("6A82")
    selects = [cmd[5:-1] for cmd, _ in t.log if cmd[:2] == b"\x00\xa4"]
    assert selects[1] == VISA  # first entry of the known AIDs
    assert selects[-1] == VISA  # final selection after trying the list
    assert MASTERCARD in selects


def test_contactless_ppse() -> None:
    card, t = read(profile(), contactless=True)
    check_card(card, contactless=True)
    assert t.log[0][0] == bytes.fromhex("00A404000E325041592E5359532E444446303100")
    assert t.instructions() == ["00A4", "00A4", "80A8", "00B2", "00B2"]


def test_data_in_gpo_without_afl() -> None:
    card, t = read(profile(data_in_gpo=True, pdol=QVSDC_PDOL), contactless=True)
    check_card(card, contactless=True)
    assert t.instructions() == ["00A4", "00A4", "80A8"]


def test_pdol_filled_from_terminal_data() -> None:
    _, t = read(profile(data_in_gpo=True, pdol=QVSDC_PDOL), contactless=True)
    gpo = t.log[2][0]
    expected_values = (
        "36000000"  # 9F66 TTQ
        "000000001234"  # 9F02 amount, numeric: left-padded
        "DEADBEEF"  # 9F37 unpredictable number
        "0978"  # 5F2A
        "250131"  # 9A
        "00"  # 9C not supplied: zero-filled
    )
    assert gpo == bytes.fromhex("80A8000016" + "8314" + expected_values + "00")


@pytest.mark.parametrize("contactless", [False, True])
@pytest.mark.parametrize("has_pse", [False, True])
def test_t0_style_card(contactless: bool, has_pse: bool) -> None:
    card, t = read(profile(t0_style=True, has_pse=has_pse), contactless=contactless)
    check_card(card, contactless=contactless)
    assert "00C0" in t.instructions()  # GET RESPONSE after 61xx
    answers = [answer for _, answer in t.log]
    assert any(a[0] == 0x6C for a in answers)
    # after each 6Cxx the same command is sent again with Le = xx
    for i, (command, answer) in enumerate(t.log[:-1]):
        if answer[0] == 0x6C:
            assert t.log[i + 1][0] == command[:-1] + answer[1:]


@pytest.mark.parametrize("contactless", [False, True])
@pytest.mark.parametrize("has_pse", [False, True])
def test_two_applications_chosen_by_priority(contactless: bool, has_pse: bool) -> None:
    electron = EmvCardProfile(
        "4000000000000002", "2901", "DOE/JOHN", aid=ELECTRON, label="VISA ELECTRON", priority=1
    )
    card, _ = read(
        profile(priority=2, extra_aids=(electron,), has_pse=has_pse), contactless=contactless
    )
    assert card.aid == ELECTRON
    assert card.pan == "4000000000000002"
    assert card.expiry == "2901"


def test_application_without_priority_comes_last() -> None:
    electron = EmvCardProfile(
        "4000000000000002", "2901", "DOE/JOHN", aid=ELECTRON, priority=None
    )
    card, _ = read(profile(priority=9, extra_aids=(electron,)), contactless=True)
    assert card.aid == VISA


def test_unsupported_application_is_not_chosen() -> None:
    with pytest.raises(CardReadError, match="no payment application"):
        read(profile(), contactless=True, aid_list=[MASTERCARD])
    with pytest.raises(CardReadError, match="no payment application"):
        read(profile(has_pse=False), contactless=False, aid_list=[MASTERCARD])


def test_card_without_ppse() -> None:
    with pytest.raises(CardReadError, match="6A82") as info:
        run_reader(EmvReader(True), lambda _: bytes.fromhex("6A82"))
    assert info.value.sw == 0x6A82


def _exchange_count(card_profile: EmvCardProfile, contactless: bool) -> int:
    return len(read(card_profile, contactless)[1].log)


ERROR_CASES = [
    (profile(), False),
    (profile(), True),
    (profile(data_in_gpo=True, pdol=QVSDC_PDOL), True),
    (profile(t0_style=True), True),
]
BAD_ANSWERS = [
    bytes.fromhex("6985"),
    bytes.fromhex("6F00"),
    b"",
    b"\x90",
    bytes.fromhex("DEADBEEF9000"),  # garbage data with a good status
    bytes.fromhex("6F0A9000"),  # truncated TLV
    bytes.fromhex("9000"),  # no data at all
]


@pytest.mark.parametrize(("card_profile", "contactless"), ERROR_CASES)
@pytest.mark.parametrize("bad", BAD_ANSWERS, ids=lambda b: b.hex() or "empty")
def test_bad_answer_at_each_step(
    card_profile: EmvCardProfile, contactless: bool, bad: bytes
) -> None:
    steps = _exchange_count(card_profile, contactless)
    for step in range(steps):
        applet = EmvCardApplet(card_profile, "contactless" if contactless else "contact")
        transmit = Transcript(applet.process, tamper_at=step, replacement=bad)
        reader = EmvReader(contactless, terminal_data=TERMINAL_DATA)
        try:
            run_reader(reader, transmit)
        except CardReadError as exc:
            assert PAN not in str(exc)
            assert reader.next_command() is None
            assert reader.error is exc
            with pytest.raises(CardReadError):
                _ = reader.result
            continue
        # The only tolerated tampering: a refused candidate SELECT in the AID-list fallback
        # or a refused PSE that sends the reader to its AID list.
        assert reader.done
        assert transmit.log[step][0][:2] == b"\x00\xa4"


def test_reader_api_misuse() -> None:
    reader = EmvReader(True)
    with pytest.raises(LocalProtocolError):
        _ = reader.result
    assert reader.step is Step.SELECT_DIRECTORY
    assert reader.next_command() == reader.next_command()  # idempotent until an answer
    with pytest.raises(CardReadError):
        reader.receive(b"\x6a\x82")
    with pytest.raises(LocalProtocolError):
        reader.receive(b"\x90\x00")


def test_endless_61xx_is_bounded() -> None:
    with pytest.raises(CardReadError, match="too long"):
        run_reader(EmvReader(True), lambda _: b"\x00" * 200 + bytes.fromhex("61C8"))
    calls = 0

    def one_byte_at_a_time(_: bytes) -> bytes:
        nonlocal calls
        calls += 1
        return bytes.fromhex("6101")

    with pytest.raises(CardReadError, match="exchanges"):
        run_reader(EmvReader(True), one_byte_at_a_time)
    assert calls == MAX_EXCHANGES + 1


def test_6cxx_repeated_with_same_le_is_refused() -> None:
    with pytest.raises(CardReadError, match="asks again"):
        run_reader(EmvReader(True), lambda cmd: bytes((0x6C, 0x10)))


def _scripted(answers: dict[str, str]) -> Callable[[bytes], bytes]:
    def transmit(command: bytes) -> bytes:
        return bytes.fromhex(answers.get(command[:2].hex().upper(), "6D00"))

    return transmit


def _fci(aid: bytes) -> str:
    return (encode_tlv(0x6F, encode_tlv(0x84, aid)) + b"\x90\x00").hex()


def test_gpo_format_1_and_pan_consistency() -> None:
    ppse = encode_tlv(
        0x6F,
        encode_tlv(0x84, b"2PAY.SYS.DDF01")
        + encode_tlv(0xA5, encode_tlv(0xBF0C, encode_tlv(0x61, encode_tlv(0x4F, VISA)))),
    )
    record = encode_tlv(
        0x70,
        encode_tlv(0x57, bytes.fromhex("4111111111111111D2812201"))
        + encode_tlv(0x5A, bytes.fromhex("4111111111111111")),
    )
    answers = {
        "00A4": (ppse + b"\x90\x00").hex(),
        "80A8": "800619800801010090 00".replace(" ", ""),
        "00B2": (record + b"\x90\x00").hex(),
    }
    # PPSE and the final SELECT share an instruction: answer by call order instead.
    selects = iter([answers["00A4"], _fci(VISA)])

    def transmit(command: bytes) -> bytes:
        if command[:2] == b"\x00\xa4":
            return bytes.fromhex(next(selects))
        return _scripted(answers)(command)

    card = run_reader(EmvReader(True), transmit)
    assert (card.pan, card.expiry, card.name, card.service_code) == (PAN, "2812", "", "201")

    bad_record = encode_tlv(
        0x70,
        encode_tlv(0x57, bytes.fromhex("4111111111111111D2812201"))
        + encode_tlv(0x5A, bytes.fromhex("5555555555554444")),
    )
    answers["00B2"] = (bad_record + b"\x90\x00").hex()
    selects = iter([answers["00A4"], _fci(VISA)])
    with pytest.raises(CardReadError, match="differs"):
        run_reader(EmvReader(True), transmit)


# --------------------------------------------------------------------------- fuzzing


@settings(max_examples=150)
@given(st.lists(st.binary(max_size=60), min_size=1, max_size=40), st.booleans())
def test_fuzz_random_card_answers(answers: list[bytes], contactless: bool) -> None:
    reader = EmvReader(contactless, terminal_data=TERMINAL_DATA)
    feed = iter(answers * (MAX_EXCHANGES // len(answers) + 2))
    exchanges = 0
    try:
        while reader.next_command() is not None:
            exchanges += 1
            assert exchanges <= MAX_EXCHANGES + 1
            reader.receive(next(feed))
    except (CardReadError, DecodeError):
        assert not reader.done
        return
    assert reader.done and reader.result.pan


@settings(max_examples=150)
@given(
    st.integers(0, 30),
    st.integers(0, 200),
    st.integers(0, 255),
    st.sampled_from([0, 1, 2, 3]),
    st.booleans(),
)
def test_fuzz_corrupted_real_card(
    step: int, position: int, byte: int, case: int, contactless: bool
) -> None:
    """A real card whose answer at one step has one byte changed: the read ends cleanly."""
    card_profile = [
        profile(),
        profile(has_pse=False),
        profile(data_in_gpo=True, pdol=QVSDC_PDOL),
        profile(t0_style=True),
    ][case]
    applet = EmvCardApplet(card_profile, "contactless" if contactless else "contact")

    def corrupt(command: bytes) -> bytes:
        answer = bytearray(applet.process(command))
        if corrupt.calls == step:  # type: ignore[attr-defined]
            answer[position % len(answer)] = byte
        corrupt.calls += 1  # type: ignore[attr-defined]
        return bytes(answer)

    corrupt.calls = 0  # type: ignore[attr-defined]
    reader = EmvReader(contactless, terminal_data=TERMINAL_DATA)
    try:
        card = run_reader(reader, corrupt)
    except (CardReadError, DecodeError):
        return
    assert card.source.startswith("emv")

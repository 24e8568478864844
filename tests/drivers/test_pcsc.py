"""Real pyscard against a real pcscd, with the lab's virtual cards and phone on vpcd's slots.

Every read here goes pyscard -> libpcsclite -> pcscd -> vpcd (TCP) -> drivers.vpcd -> the
simulated card, so the PC/SC drivers are tested with the daemon and the races of the field.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from swipepay.center.core import Center
from swipepay.center.lab import Lab
from swipepay.center.local_host import LocalHost
from swipepay.cli.harness.pcscd import Pcscd, wait_slot
from swipepay.drivers.base import DriverContext
from swipepay.drivers.pcsc import PcscCardReader, PcscPhoneLink, is_contactless, is_storage_card
from swipepay.drivers.registry import open_card_reader, open_phone_link
from swipepay.drivers.runner import TxnReport, run_transaction
from swipepay.drivers.virtual_cards import ATRS, CardOnSlot, card_on_slot
from swipepay.drivers.vpcd import VirtualCard, VpcdClient, VpcdPhoneServer
from swipepay.firmware_sim.cards.emv_card import EmvCardProfile
from swipepay.firmware_sim.cards.uid_card import UidCard
from swipepay.firmware_sim.errors import ConfigError, LinkTimeout, TransportError
from swipepay.firmware_sim.phone import Phone, ScriptedUser
from swipepay.firmware_sim.phonelink.terminal_link import TerminalLink
from swipepay.firmware_sim.terminal import Ending, Order, Terminal
from swipepay.firmware_sim.transaction import TxnType
from tests.support.labs import lab_phone
from tests.support.pcsc import Slot

READER0 = "Virtual PCD 00 00"
READER1 = "Virtual PCD 00 01"
PAN = "4761739001010119"
PROFILE = EmvCardProfile(pan=PAN, expiry="2712", name="MARTIN/ALICE")


def insert(slot: Slot, card: CardOnSlot) -> VpcdClient:
    return slot.insert(VpcdClient(card.virtual_card(), port=slot.port))


def read(url: str = f"pcsc:{READER0}", timeout: float = 5.0) -> PcscCardReader:
    reader = open_card_reader(url, DriverContext(amount=12_34))
    assert isinstance(reader, PcscCardReader)
    reader.read(timeout)
    return reader


def test_atr_classification() -> None:
    assert is_contactless(ATRS["contactless"]) and not is_storage_card(ATRS["contactless"])
    assert is_contactless(ATRS["uid"]) and is_storage_card(ATRS["uid"])
    assert not is_contactless(ATRS["contact"])


def test_contact_card_through_pse(slot0: Slot) -> None:
    insert(slot0, card_on_slot(PROFILE, "contact"))
    reader = read()
    assert reader.last is not None
    card = reader.last.card
    assert (card.pan, card.source, card.entry_mode) == (PAN, "emv-contact", "05")
    assert reader.last.mode == "contact"
    assert reader.last.trace[0][0][5:19] == b"1PAY.SYS.DDF01"


def test_contactless_card_through_ppse(slot0: Slot) -> None:
    insert(slot0, card_on_slot(PROFILE, "contactless"))
    reader = read()
    assert reader.last is not None
    card = reader.last.card
    assert (card.pan, card.source, card.entry_mode) == (PAN, "emv-contactless", "07")
    assert reader.last.trace[0][0][5:19] == b"2PAY.SYS.DDF01"


def test_mode_from_url_overrides_the_atr(slot0: Slot) -> None:
    insert(slot0, card_on_slot(PROFILE, "contact"))
    reader = read(f"pcsc:{READER0}?mode=contact")
    assert reader.last is not None and reader.last.card.source == "emv-contact"
    with pytest.raises(ConfigError, match="mode"):
        open_card_reader("pcsc:x?mode=swipe")


def test_card_with_data_in_gpo(slot0: Slot) -> None:
    profile = EmvCardProfile(pan=PAN, expiry="2712", name="DIAZ/CAROL", data_in_gpo=True)
    insert(slot0, card_on_slot(profile, "contactless"))
    reader = read()
    assert reader.last is not None
    assert reader.last.card.pan == PAN
    assert not any(apdu[1] == 0xB2 for apdu, _ in reader.last.trace)  # no READ RECORD


def test_t0_card_with_61xx_and_6cxx(slot0: Slot) -> None:
    profile = EmvCardProfile(
        pan=PAN, expiry="2712", name="MARTIN/ALICE", t0_style=True, has_pse=False
    )
    insert(slot0, card_on_slot(profile, "contact"))
    reader = read()
    assert reader.last is not None
    assert reader.last.card.pan == PAN
    sws = {response[-2] for _, response in reader.last.trace}
    assert 0x61 in sws and 0x6C in sws
    assert any(apdu[1] == 0xC0 for apdu, _ in reader.last.trace)  # GET RESPONSE


def test_uid_card(slot0: Slot) -> None:
    insert(slot0, card_on_slot(UidCard(bytes.fromhex("04A1B2C3"))))
    reader = read()
    assert reader.last is not None
    card = reader.last.card
    assert (card.source, card.uid) == ("uid", bytes.fromhex("04A1B2C3"))


def test_card_removed_mid_read(slot0: Slot) -> None:
    applet = card_on_slot(PROFILE, "contact")
    clients: list[VpcdClient] = []

    def pulled_on_third(apdu: bytes) -> bytes:
        if clients[0].card.apdus >= 3:
            clients[0].pull()
        return applet.handler(apdu)

    client = VpcdClient(VirtualCard(pulled_on_third, applet.atr), port=slot0.port)
    clients.append(client)
    slot0.insert(client)
    with pytest.raises(TransportError, match=r"removed|unplugged|does not answer"):
        read()


def test_no_card_within_timeout(slot0: Slot) -> None:
    with pytest.raises(LinkTimeout, match="no card on Virtual PCD 00 00"):
        open_card_reader(f"pcsc:{READER0}").read_card(0.3)


def test_unknown_reader_lists_the_readers(pcscd: Pcscd) -> None:
    with pytest.raises(ConfigError, match=r"no PC/SC reader matches .NoSuch.*Virtual PCD 00 00"):
        open_card_reader("pcsc:NoSuch").read_card(1)


# -- the phone link: lab phone on slot 1, served by the vpcd phone driver ----------------------


def lab_phone_on_slot(lab: Lab, name: str) -> Phone:
    """The lab phone ``name``, its user confirming after one "pending" poll."""
    return lab_phone(lab, name, delay_polls=1)


@pytest.fixture
def served_phone(slot1: Slot) -> Iterator[Callable[[Phone], VpcdPhoneServer]]:
    """Serve a phone on slot 1 in a thread; stop it and wait for EMPTY afterwards."""
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def start(phone: Phone) -> VpcdPhoneServer:
        server = VpcdPhoneServer("vpcd:127.0.0.1:35964", "127.0.0.1", slot1.port)
        thread = threading.Thread(target=server.serve, args=(phone, stop), daemon=True)
        thread.start()
        threads.append(thread)
        wait_slot(READER1, True)
        return server

    yield start
    stop.set()
    for thread in threads:
        thread.join(5)
    wait_slot(READER1, False)


def transaction(lab: Lab, slot0: Slot, amount: int) -> TxnReport:
    insert(slot0, card_on_slot(lab.cards()["alice-visa"], "contactless"))
    config = lab.terminal_config("POS00001")
    cert, key = lab.terminal_link_identity("POS00001")
    terminal = Terminal(config, TerminalLink(cert, key), 1)
    center = Center.open(lab.db_path, lab.center_keys())
    reader = open_card_reader(f"pcsc:{READER0}", DriverContext(amount=amount))
    link = open_phone_link(f"pcsc:{READER1}")
    assert isinstance(link, PcscPhoneLink)
    try:
        return run_transaction(
            terminal,
            Order(TxnType.PURCHASE, amount),
            reader=reader,
            link=link,
            host=LocalHost(center),
            card_timeout=5,
            phone_timeout=5,
            sleep=lambda s: time.sleep(min(s, 0.01)),
        )
    finally:
        link.disconnect()
        center.close()


def test_whole_transaction_over_pcsc(
    lab: Lab, slot0: Slot, served_phone: Callable[[Phone], VpcdPhoneServer]
) -> None:
    phone = lab_phone_on_slot(lab, "alice-phone")
    served_phone(phone)
    report = transaction(lab, slot0, 12_34)
    assert report.outcome.ending is Ending.APPROVED, report.outcome.message
    assert report.outcome.response_code == "00"
    assert report.apdu_count >= 5
    assert isinstance(phone.user, ScriptedUser) and phone.user.results


def test_phone_leaves_the_field_mid_transaction(
    lab: Lab, slot0: Slot, served_phone: Callable[[Phone], VpcdPhoneServer]
) -> None:
    phone = lab_phone_on_slot(lab, "alice-phone")
    seen = [0]
    servers: list[VpcdPhoneServer] = []
    real = phone.process

    def leaving(apdu: bytes) -> bytes:
        seen[0] += 1
        if seen[0] == 3:  # after SELECT and CONNECT, the phone is taken away
            servers[0].pull()
        return real(apdu)

    phone.process = leaving  # type: ignore[method-assign]
    servers.append(served_phone(phone))
    report = transaction(lab, slot0, 5_00)
    assert report.outcome.ending is Ending.PHONE_GONE
    assert "left the field" in report.outcome.message


def test_phone_link_without_phone_times_out(slot1: Slot) -> None:
    link = open_phone_link(f"pcsc:{READER1}")
    with pytest.raises(LinkTimeout, match="no phone"):
        link.connect(0.3)
    with pytest.raises(TransportError, match="left the field"):
        link.transmit(b"\x00\xa4\x04\x00")


def test_lab_paths_are_real(lab: Lab) -> None:
    assert Path(lab.db_path).parent.is_dir()

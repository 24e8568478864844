"""The terminal's EMV read sequence (method step 1 for chip cards), as a sans-IO state machine.

Like h11, :class:`EmvReader` does no I/O: :meth:`EmvReader.next_command` gives the command APDU
to send, :meth:`EmvReader.receive` takes the card's answer, and :attr:`EmvReader.result` is the
:class:`~firmware_sim.carddata.CardData` at the end.  PC/SC, nfcpy, the mock reader and the tests
all drive it with :func:`run_reader`, so there is one read sequence to get right.

The sequence (EMV Book 1 section 12, Book 3 section 10, Contactless Book B):

1. Contact: SELECT PSE ``1PAY.SYS.DDF01`` and read its directory records; if the card has no
   PSE (``6A82``, common) or lists nothing we support, SELECT each AID of the terminal's list.
   Contactless: SELECT PPSE ``2PAY.SYS.DDF01``, whose FCI lists the applications (BF0C/61).
2. Choose the supported application with the best priority (tag 87 low nibble, 1 first; entries
   without a priority last) and SELECT it; its FCI may carry a PDOL (9F38).
3. GET PROCESSING OPTIONS with the PDOL values from ``terminal_data``.
4. Either the answer has the card data (qVSDC-like, tag 57 in template 77) or an AFL (94) whose
   records are read with READ RECORD.

T=0 procedure answers are handled here, below the sequence, as python-emv's transmission layer
does: ``61xx`` is followed by GET RESPONSE (the pieces are joined), ``6Cxx`` by the same command
with Le = xx.  The steps above never see either.

A card is an outside party: every answer is checked, every failure is a :class:`CardReadError`
naming the step and the status word, and the number of exchanges is bounded, so a hostile or
broken card cannot keep the terminal busy forever.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Final

from swipepay.firmware_sim.apdu import CommandApdu, ResponseApdu, select_by_name
from swipepay.firmware_sim.carddata import CardData, check_expiry
from swipepay.firmware_sim.cards.emv_card import PPSE, PSE
from swipepay.firmware_sim.errors import DecodeError, LocalProtocolError, RemoteError
from swipepay.firmware_sim.statuswords import SW, describe
from swipepay.firmware_sim.tlv import encode_tlv, find_all, find_tag, parse_dol, parse_tlv
from swipepay.firmware_sim.tracks import Track2, parse_track2_equivalent


class CardReadError(RemoteError):
    """The chip card could not be read: it refused a step or answered something malformed.

    ``sw`` is the card's status word when the card refused, ``None`` for malformed answers.
    The message never contains the PAN.
    """

    def __init__(self, message: str, *, sw: int | None = None) -> None:
        super().__init__(message)
        self.sw = sw


#: Application identifiers the terminal supports (registered RIDs + PIX), for the AID-list
#: fallback and to filter what a PSE/PPSE offers.  Matching is by prefix (EMV Book 1 12.3.1).
AIDS: Final[dict[str, bytes]] = {
    "Visa credit/debit": bytes.fromhex("A0000000031010"),
    "Visa Electron": bytes.fromhex("A0000000032010"),
    "V PAY": bytes.fromhex("A0000000032020"),
    "Mastercard": bytes.fromhex("A0000000041010"),
    "Maestro": bytes.fromhex("A0000000043060"),
    "American Express": bytes.fromhex("A00000002501"),
    "Discover": bytes.fromhex("A0000001523010"),
    "JCB": bytes.fromhex("A0000000651010"),
    "UnionPay": bytes.fromhex("A000000333010101"),
    "UnionPay debit": bytes.fromhex("A000000333010102"),
    "Interac": bytes.fromhex("A0000002771010"),
}
KNOWN_AIDS: Final[tuple[bytes, ...]] = tuple(AIDS.values())

#: Numeric (format n) tags: right-justified, so padded and truncated on the left
#: (EMV Book 3 5.4).  Every other PDOL entry is padded/truncated on the right.
NUMERIC_TAGS: Final = frozenset(
    {0x9F02, 0x9F03, 0x5F2A, 0x5F36, 0x9F1A, 0x9A, 0x9C, 0x9F21, 0x9F41}
)

#: Bounds that keep a hostile card from stalling or exhausting the terminal.
MAX_EXCHANGES: Final = 128
MAX_DIRECTORY_RECORDS: Final = 16
MAX_RECORDS: Final = 32
MAX_RESPONSE: Final = 4096
#: Lc is one byte and tag 83 + its length take 2 bytes.
MAX_PDOL_VALUES: Final = 252

#: Tags read from GPO and records; the first occurrence of each wins.
CARD_TAGS: Final = (0x57, 0x5A, 0x5F24, 0x5F20, 0x5F30)


class Step(Enum):
    """Where the read is.  The answer to the command in flight is handled by :data:`_HANDLERS`."""

    SELECT_DIRECTORY = "SELECT PSE/PPSE"
    READ_DIRECTORY = "READ RECORD (PSE directory)"
    SELECT_CANDIDATE = "SELECT AID (list of AIDs)"
    SELECT_APPLICATION = "SELECT application"
    GET_PROCESSING_OPTIONS = "GET PROCESSING OPTIONS"
    READ_RECORD = "READ RECORD"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class Candidate:
    """An application the card offers and the terminal supports."""

    aid: bytes
    priority: int | None
    order: int

    @property
    def sort_key(self) -> tuple[int, int]:
        """Priority 1 first, 15 last; 0 / absent mean "no priority" and come after all others."""
        return (self.priority or 16, self.order)


def _bcd_digits(value: bytes) -> str:
    """Digits of a compressed-numeric field (``F``-padded on the right)."""
    digits = value.hex().upper().rstrip("F")
    if not digits.isdigit():
        raise CardReadError("a numeric field from the card has non-BCD digits")
    return digits


class EmvReader:
    """The terminal side of an EMV card read; feed it answers until :attr:`done`."""

    def __init__(
        self,
        contactless: bool,
        aid_list: Sequence[bytes] = KNOWN_AIDS,
        terminal_data: Mapping[int, bytes] | None = None,
    ) -> None:
        self.contactless = contactless
        self.aid_list = tuple(bytes(aid) for aid in aid_list)
        self.terminal_data = dict(terminal_data or {})
        self._step = Step.SELECT_DIRECTORY
        self._wire: CommandApdu | None = select_by_name(PPSE if contactless else PSE)
        self._chained = b""
        self._exchanges = 0
        self._candidates: list[Candidate] = []
        self._aid_index = 0
        self._directory_sfi = 0
        self._directory_record = 0
        self._aid: bytes | None = None
        self._records: list[tuple[int, int]] = []
        self._record_index = 0
        self._data: dict[int, bytes] = {}
        self._result: CardData | None = None
        self._error: CardReadError | None = None

    # ------------------------------------------------------------------ public interface

    @property
    def step(self) -> Step:
        return self._step

    @property
    def done(self) -> bool:
        """True when the card was read successfully and :attr:`result` is available."""
        return self._step is Step.DONE

    @property
    def error(self) -> CardReadError | None:
        """Why the read failed, once it has."""
        return self._error

    @property
    def result(self) -> CardData:
        """The card data; raises the read's :class:`CardReadError` if it failed."""
        if self._result is not None:
            return self._result
        if self._error is not None:
            raise self._error
        raise LocalProtocolError("the EMV read has not finished yet")

    def next_command(self) -> bytes | None:
        """The command APDU to send now, or ``None`` when the read is over (done or failed)."""
        if self._wire is None or self._step in (Step.DONE, Step.FAILED):
            return None
        return self._wire.encode()

    def receive(self, response: bytes) -> None:
        """Take the card's answer to the last command; raises :class:`CardReadError` on failure."""
        if self.next_command() is None:
            raise LocalProtocolError("no command is waiting for an answer")
        try:
            self._receive(bytes(response))
        except CardReadError as exc:
            self._fail(exc)
            raise
        except DecodeError as exc:
            error = CardReadError(f"{self._step.value}: malformed answer from the card: {exc}")
            self._fail(error)
            raise error from None

    # ------------------------------------------------------------------ transmission layer

    def _fail(self, error: CardReadError) -> None:
        self._error = error
        self._step = Step.FAILED
        self._wire = None

    def _receive(self, raw: bytes) -> None:
        self._exchanges += 1
        if self._exchanges > MAX_EXCHANGES:
            raise CardReadError(f"card read abandoned after {MAX_EXCHANGES} exchanges")
        response = ResponseApdu.parse(raw)
        assert self._wire is not None
        if response.sw1 == 0x61:  # T=0: more bytes waiting, fetch them
            self._chained += response.data
            if len(self._chained) > MAX_RESPONSE:
                raise CardReadError("card answer too long")
            self._wire = CommandApdu(0x00, 0xC0, 0x00, 0x00, le=response.sw2 or 256)
            return
        if response.sw1 == 0x6C:  # T=0: wrong Le, the card tells the right one
            le = response.sw2 or 256
            if self._wire.le == le:
                raise CardReadError(f"{self._step.value}: card asks again for Le={le}", sw=0x6C)
            self._wire = dataclasses.replace(self._wire, le=le)
            return
        data, self._chained = self._chained + response.data, b""
        self._wire = None
        _HANDLERS[self._step](self, data, response.sw)

    def _send(self, step: Step, command: CommandApdu) -> None:
        self._step = step
        self._wire = command

    def _refused(self, sw: int, what: str | None = None) -> CardReadError:
        return CardReadError(f"card refused {what or self._step.value}: {describe(sw)}", sw=sw)

    def _expect_ok(self, sw: int) -> None:
        if sw != SW.OK:
            raise self._refused(sw)

    # ------------------------------------------------------------------ application selection

    def _supported(self, aid: bytes) -> bool:
        return 5 <= len(aid) <= 16 and any(aid.startswith(known) for known in self.aid_list)

    def _add_entries(self, data: bytes) -> None:
        """Add the supported applications of the directory entries (61) found in ``data``."""
        for entry in find_all(data, 0x61):
            aid = find_tag(entry, 0x4F)
            if aid is None or not self._supported(aid):
                continue
            if any(c.aid == aid for c in self._candidates):
                continue
            self._candidates.append(Candidate(aid, _priority(entry), len(self._candidates)))

    def _on_select_directory(self, data: bytes, sw: int) -> None:
        if sw == SW.FILE_NOT_FOUND and not self.contactless:
            self._start_aid_list()  # no PSE on this card: try the terminal's AIDs
            return
        self._expect_ok(sw)
        if find_tag(data, 0x6F) is None:
            raise CardReadError(f"{self._step.value}: answer is not an FCI (6F)")
        self._add_entries(data)
        if self.contactless:
            self._choose()
            return
        sfi = find_tag(data, 0x88)
        if not self._candidates and sfi is not None and len(sfi) == 1 and 1 <= sfi[0] <= 30:
            self._directory_sfi = sfi[0]
            self._read_directory_record(1)
        elif self._candidates:
            self._choose()
        else:
            self._start_aid_list()

    def _read_directory_record(self, number: int) -> None:
        self._directory_record = number
        p2 = (self._directory_sfi << 3) | 0x04
        self._send(Step.READ_DIRECTORY, CommandApdu(0x00, 0xB2, number, p2, le=256))

    def _on_read_directory(self, data: bytes, sw: int) -> None:
        if sw == SW.RECORD_NOT_FOUND:  # end of the directory
            if self._candidates:
                self._choose()
            else:
                self._start_aid_list()
            return
        self._expect_ok(sw)
        objects = parse_tlv(data)
        if not objects or objects[0].tag != 0x70:
            raise CardReadError("PSE directory record is not a record template (70)")
        self._add_entries(data)
        if self._directory_record >= MAX_DIRECTORY_RECORDS:
            self._on_read_directory(b"", SW.RECORD_NOT_FOUND)
        else:
            self._read_directory_record(self._directory_record + 1)

    def _start_aid_list(self) -> None:
        self._aid_index = 0
        self._select_next_candidate()

    def _select_next_candidate(self) -> None:
        if self._aid_index >= len(self.aid_list):
            self._choose()
            return
        aid = self.aid_list[self._aid_index]
        self._aid_index += 1
        if not 1 <= len(aid) <= 16:
            self._select_next_candidate()
            return
        self._send(Step.SELECT_CANDIDATE, select_by_name(aid))

    def _on_select_candidate(self, data: bytes, sw: int) -> None:
        # Any refusal (6A82 not found, 6283 blocked, ...) just means "not this one".
        if sw == SW.OK:
            asked = self.aid_list[self._aid_index - 1]
            name = find_tag(data, 0x84) or asked
            fci = find_tag(data, 0xA5) or b""
            if (
                name.startswith(asked)
                and self._supported(name)
                and all(c.aid != name for c in self._candidates)
            ):
                self._candidates.append(Candidate(name, _priority(fci), len(self._candidates)))
        self._select_next_candidate()

    def _choose(self) -> None:
        if not self._candidates:
            raise CardReadError("the card has no payment application this terminal supports")
        best = min(self._candidates, key=lambda c: c.sort_key)
        self._aid = best.aid
        self._send(Step.SELECT_APPLICATION, select_by_name(best.aid))

    # ------------------------------------------------------------------ reading the application

    def _on_select_application(self, data: bytes, sw: int) -> None:
        self._expect_ok(sw)
        if find_tag(data, 0x6F) is None:
            raise CardReadError("application FCI missing (6F)")
        name = find_tag(data, 0x84)
        if name is not None and name != self._aid:
            raise CardReadError("card selected a different application than asked")
        pdol = find_tag(data, 0x9F38) or b""
        values = self._pdol_values(pdol)
        command = CommandApdu(0x80, 0xA8, 0x00, 0x00, encode_tlv(0x83, values), le=256)
        self._send(Step.GET_PROCESSING_OPTIONS, command)

    def _pdol_values(self, pdol: bytes) -> bytes:
        """Concatenated PDOL values: ``terminal_data`` fitted to each length, else zeros."""
        entries = parse_dol(pdol)
        if sum(length for _, length in entries) > MAX_PDOL_VALUES:
            raise CardReadError("card's PDOL asks for more data than a GPO command can carry")
        out = b""
        for tag, length in entries:
            value = self.terminal_data.get(tag, b"")
            if tag in NUMERIC_TAGS:
                value = value[-length:] if length else b""
                value = value.rjust(length, b"\x00")
            else:
                value = value[:length].ljust(length, b"\x00")
            out += value
        return out

    def _collect(self, data: bytes) -> None:
        for tag in CARD_TAGS:
            if tag not in self._data:
                value = find_tag(data, tag)
                if value is not None:
                    self._data[tag] = value

    def _on_gpo(self, data: bytes, sw: int) -> None:
        self._expect_ok(sw)
        objects = parse_tlv(data)
        if not objects or objects[0].tag not in (0x77, 0x80):
            raise CardReadError("GPO answer is neither format 1 (80) nor format 2 (77)")
        template = objects[0]
        if template.tag == 0x80:
            if len(template.value) < 2:
                raise CardReadError("GPO format 1 answer has no AIP")
            afl = template.value[2:]
        else:
            self._collect(template.value)
            afl = find_tag(template.value, 0x94) or b""
        self._records = _parse_afl(afl)
        self._record_index = 0
        if self._records:
            self._read_next_record()
        else:
            self._finish()

    def _read_next_record(self) -> None:
        sfi, number = self._records[self._record_index]
        command = CommandApdu(0x00, 0xB2, number, (sfi << 3) | 0x04, le=256)
        self._send(Step.READ_RECORD, command)

    def _on_read_record(self, data: bytes, sw: int) -> None:
        sfi, number = self._records[self._record_index]
        if sw != SW.OK:
            raise self._refused(sw, f"READ RECORD {number} of SFI {sfi}")
        objects = parse_tlv(data)
        if not objects or objects[0].tag != 0x70:
            raise CardReadError(f"record {number} of SFI {sfi} is not a record template (70)")
        self._collect(data)
        self._record_index += 1
        if self._record_index < len(self._records):
            self._read_next_record()
        else:
            self._finish()

    def _finish(self) -> None:
        """Turn the collected data objects into :class:`CardData`."""
        track2: Track2 | None = None
        if 0x57 in self._data:
            track2 = parse_track2_equivalent(self._data[0x57])
        pan = _bcd_digits(self._data[0x5A]) if 0x5A in self._data else None
        if pan is None and track2 is not None:
            pan = track2.pan
        if pan is None:
            raise CardReadError("the card gave no card number (neither 5A nor 57)")
        if track2 is not None and track2.pan != pan:
            raise CardReadError("card number differs between 5A and track 2 equivalent (57)")
        if 0x5F24 in self._data:
            date = _bcd_digits(self._data[0x5F24])
            expiry = date[:4]
            if len(date) != 6:
                raise CardReadError("expiry date (5F24) is not YYMMDD")
            check_expiry(expiry)
        elif track2 is not None:
            expiry = track2.expiry
        else:
            raise CardReadError("the card gave no expiry date (neither 5F24 nor 57)")
        if track2 is not None:
            service_code = track2.service_code
        elif 0x5F30 in self._data:
            service_code = self._data[0x5F30].hex()[-3:]
        else:
            service_code = ""
        raw_name = self._data.get(0x5F20, b"").decode("ascii", "replace")
        name = "".join(c for c in raw_name if c.isprintable()).strip()
        self._result = CardData(
            pan=pan,
            expiry=expiry,
            name=name,
            service_code=service_code,
            track2=track2.content if track2 else f"{pan}={expiry}{service_code}",
            entry_mode="07" if self.contactless else "05",
            source="emv-contactless" if self.contactless else "emv-contact",
            aid=self._aid,
        )
        self._step = Step.DONE


def _priority(template: bytes) -> int | None:
    """Low nibble of tag 87 (Application Priority Indicator), or ``None``."""
    value = find_tag(template, 0x87)
    if value is None or len(value) != 1:
        return None
    return value[0] & 0x0F or None


def _parse_afl(afl: bytes) -> list[tuple[int, int]]:
    """``(SFI, record)`` pairs of an AFL: 4-byte entries SFI<<3, first, last, offline count."""
    if len(afl) % 4:
        raise CardReadError("AFL (94) length is not a multiple of 4")
    records: list[tuple[int, int]] = []
    for i in range(0, len(afl), 4):
        sfi_byte, first, last, offline = afl[i : i + 4]
        sfi = sfi_byte >> 3
        if sfi_byte & 0x07 or not 1 <= sfi <= 30 or first == 0 or last < first:
            raise CardReadError(f"AFL entry {afl[i : i + 4].hex().upper()} is invalid")
        if offline > last - first + 1:
            raise CardReadError(f"AFL entry {afl[i : i + 4].hex().upper()} is invalid")
        records.extend((sfi, number) for number in range(first, last + 1))
        if len(records) > MAX_RECORDS:
            raise CardReadError(f"AFL lists more than {MAX_RECORDS} records")
    return records


#: Which method handles the answer to the command sent in each step.
_HANDLERS: Final[dict[Step, Callable[[EmvReader, bytes, int], None]]] = {
    Step.SELECT_DIRECTORY: EmvReader._on_select_directory,
    Step.READ_DIRECTORY: EmvReader._on_read_directory,
    Step.SELECT_CANDIDATE: EmvReader._on_select_candidate,
    Step.SELECT_APPLICATION: EmvReader._on_select_application,
    Step.GET_PROCESSING_OPTIONS: EmvReader._on_gpo,
    Step.READ_RECORD: EmvReader._on_read_record,
}


def run_reader(reader: EmvReader, transmit: Callable[[bytes], bytes]) -> CardData:
    """Drive ``reader`` over ``transmit`` (one APDU out, one answer back) to the end.

    The only glue a driver needs; ``transmit`` may raise its transport errors, which pass through.
    """
    while (command := reader.next_command()) is not None:
        reader.receive(transmit(command))
    return reader.result

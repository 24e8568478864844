"""ISO/IEC 14443-4 (ISO-DEP) block protocol, card side, without I/O.

The phone is the card (hardware_notes/design.md §2).  Android builds this layer into its NFC
controller; nfcpy in listen mode (RC-S380, PN53x, the ``udp:`` simulator) hands us raw frames, so
we have to be the PICC ourselves.  Like h11, :class:`IsoDepCard` does no I/O: feed it every
frame from the field (PCB onward, CRC already stripped) with :meth:`IsoDepCard.receive`; it
returns a :class:`Reaction` with the frame to send back (``None``: stay silent) and events.
An :class:`Apdu` event hands a complete (de-chained) command to the applet; the driver answers
with :meth:`IsoDepCard.respond`, which chains the response if it exceeds the reader's FSD.
If the applet is slow the driver may call :meth:`IsoDepCard.request_wtx` first (S(WTX)).

Block handling (ISO/IEC 14443-4:2008 section 7.5.4; "rule" numbers are the standard's):

=====================  =========================  ==============================================
state                  frame received             answer
=====================  =========================  ==============================================
idle / halted          RATS ``E0 <FSDI|CID>``     ATS; -> active (udp: hands RATS over)
any active             S(DESELECT)                S(DESELECT); -> halted, :class:`Deselected`
active / receiving     I-block, chaining          toggle block number, R(ACK) (rule 2, D)
active / receiving     I-block, last              toggle, :class:`Apdu` -> processing
active / sending       R(x), number = ours        retransmit the last block (rule 11)
active / sending       R(NAK), number != ours     R(ACK) with our number (rule 12; presence)
sending                R(ACK), number != ours     toggle, next chained I-block (rule 13)
wtx pending            S(WTX) response, same WTXM :class:`WtxGranted` -> processing
any                    anything else              silence (rule 10: stay in receive mode)
=====================  =========================  ==============================================

CID: supported (ATS TC bit 2) and echoed in every answer when the reader sent one; blocks for
another CID, or without CID while ours is not 0, are ignored.  NAD is not supported (TC bit 1
clear): I-blocks carrying one are ignored.  A chained command longer than ``max_command`` is
acknowledged to its end and answered ``6700`` without reaching the applet, so memory stays
bounded and the reader still gets a status word.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

from swipepay.firmware_sim.errors import ConfigError, LocalProtocolError

#: FSCI/FSDI -> frame size in bytes (PCB..CRC).  FSDI 9-F are RFU in the 2008 edition and read
#: as 256 (the largest frame nfcpy and Android use).
FRAME_SIZES: Final[tuple[int, ...]] = (16, 24, 32, 40, 48, 64, 96, 128, 256)
FC_HZ: Final = 13.56e6

RATS: Final = 0xE0
PCB_CHAINING: Final = 0x10
PCB_CID: Final = 0x08
PCB_NAD: Final = 0x04
PCB_BLOCK_NUMBER: Final = 0x01
PCB_NAK: Final = 0x10
I_BLOCK: Final = 0x02
R_ACK: Final = 0xA2
S_DESELECT: Final = 0xC2
S_WTX: Final = 0xF2
WTXM_MAX: Final = 59
#: The short APDU maximum (5 header/Lc + 255 data + Le): what an HCE phone accepts.
SHORT_APDU_MAX: Final = 261

#: PCB classification as data: (mask, value, kind).  The masks leave out the bits that vary
#: within a kind (chaining, CID, NAD, block number, ACK/NAK).
BLOCK_KINDS: Final[tuple[tuple[int, int, str], ...]] = (
    (0xE2, 0x02, "I"),
    (0xE6, 0xA2, "R"),
    (0xF7, 0xC2, "DESELECT"),
    (0xF7, 0xF2, "WTX"),
)

SW_WRONG_LENGTH: Final = b"\x67\x00"


def fwt_seconds(fwi: int) -> float:
    """Frame waiting time for FWI (ISO 14443-4 7.2): 256 * 16 / fc * 2**FWI."""
    return 4096 / FC_HZ * (1 << fwi)


def frame_size(index: int) -> int:
    return FRAME_SIZES[index] if 0 <= index < len(FRAME_SIZES) else 256


class State(Enum):
    IDLE = "idle"
    ACTIVE = "active"
    RECEIVING = "receiving chained command"
    PROCESSING = "applet processing"
    WTX_PENDING = "waiting for S(WTX) response"
    SENDING = "sending chained response"
    HALTED = "halted (deselected)"


# -- events ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Activated:
    """RATS answered: the reader's frame size and the CID it assigned."""

    fsd: int
    cid: int


@dataclass(frozen=True)
class Apdu:
    """A complete command APDU for the applet; answer with :meth:`IsoDepCard.respond`."""

    data: bytes


@dataclass(frozen=True)
class WtxGranted:
    """The reader accepted our S(WTX): keep processing, then respond or ask again."""

    wtxm: int


@dataclass(frozen=True)
class Deselected:
    """S(DESELECT) answered: the card is halted; the session is over."""


@dataclass(frozen=True)
class Ignored:
    """A frame was dropped in silence (rule 10); the reason is for transcripts and tests."""

    reason: str


Event = Activated | Apdu | WtxGranted | Deselected | Ignored


@dataclass(frozen=True)
class Reaction:
    send: bytes | None
    events: tuple[Event, ...] = ()


@dataclass(frozen=True)
class CardParams:
    """What the ATS announces, like an Android HCE controller: FSC 256, FWI 8, CID, no NAD."""

    fsci: int = 8
    fwi: int = 8
    sfgi: int = 0
    cid_supported: bool = True
    historical: bytes = b""
    #: Longest chained command accepted (bytes); longer ones are answered 6700.
    max_command: int = SHORT_APDU_MAX

    def __post_init__(self) -> None:
        if not 0 <= self.fsci <= 8:
            raise ConfigError(f"FSCI must be 0..8, not {self.fsci}")
        if not 0 <= self.fwi <= 14:
            raise ConfigError(f"FWI must be 0..14, not {self.fwi}")
        if not 0 <= self.sfgi <= 14:
            raise ConfigError(f"SFGI must be 0..14, not {self.sfgi}")
        if len(self.historical) > 15:
            raise ConfigError("at most 15 historical bytes fit an ATS here")
        if self.max_command < 4:
            raise ConfigError("max_command must allow at least an APDU header")

    @property
    def fsc(self) -> int:
        return FRAME_SIZES[self.fsci]

    @property
    def fwt(self) -> float:
        return fwt_seconds(self.fwi)

    def ats(self) -> bytes:
        """TL T0 TA TB TC [historical]: TA 80 = 106 kbit/s both ways only, as HCE."""
        body = bytes(
            [
                0x70 | self.fsci,
                0x80,
                (self.fwi << 4) | self.sfgi,
                0x02 if self.cid_supported else 0x00,
            ]
        )
        body += self.historical
        return bytes([len(body) + 1]) + body


@dataclass(frozen=True)
class _Block:
    kind: str
    pcb: int
    has_cid: bool
    inf: bytes


@dataclass
class IsoDepCard:
    """One PICC's ISO-DEP state; a new activation (RATS) starts it afresh."""

    params: CardParams = field(default_factory=CardParams)
    state: State = State.IDLE
    fsd: int = 256
    cid: int = 0
    _block: int = 1
    _last: bytes | None = None
    _command: bytearray = field(default_factory=bytearray)
    _overflow: bool = False
    _echo_cid: bool = False
    _pending: bytes = b""
    _wtxm: int = 0

    # -- activation -----------------------------------------------------------------------

    def assume_activated(self, rats: bytes | None = None) -> Activated:
        """For devices that answer RATS themselves (RC-S380, PN53x): take its parameters."""
        fsd, cid = 256, 0
        if rats is not None and len(rats) == 2 and rats[0] == RATS and rats[1] & 0x0F != 15:
            fsd, cid = frame_size(rats[1] >> 4), rats[1] & 0x0F
        return self._activate(fsd, cid)

    def _activate(self, fsd: int, cid: int) -> Activated:
        self.state = State.ACTIVE
        self.fsd = fsd
        self.cid = cid if self.params.cid_supported else 0
        self._block = 1  # rule C
        self._last = None
        self._command.clear()
        self._overflow = False
        self._pending = b""
        return Activated(self.fsd, self.cid)

    # -- frames in --------------------------------------------------------------------------

    def receive(self, frame: bytes) -> Reaction:
        """Handle one frame from the reader; never raises for what the reader sent."""
        if self.state in (State.PROCESSING,):
            raise LocalProtocolError("a frame arrived while the applet holds the turn")
        if self.state in (State.IDLE, State.HALTED):
            return self._receive_rats(bytes(frame))
        if len(frame) + 2 > self.params.fsc:
            return _ignore("frame longer than FSC")
        parsed = self._parse(bytes(frame))
        if isinstance(parsed, Ignored):
            return Reaction(None, (parsed,))
        handler = _HANDLERS[parsed.kind]
        return handler(self, parsed)

    def _receive_rats(self, frame: bytes) -> Reaction:
        if len(frame) != 2 or frame[0] != RATS:
            return _ignore("not a RATS while not activated")
        if frame[1] & 0x0F == 15:
            return _ignore("RATS with the RFU CID 15")
        event = self._activate(frame_size(frame[1] >> 4), frame[1] & 0x0F)
        return Reaction(self.params.ats(), (event,))

    def _parse(self, frame: bytes) -> _Block | Ignored:
        if not frame:
            return Ignored("empty frame")
        pcb = frame[0]
        kind = next((k for mask, value, k in BLOCK_KINDS if pcb & mask == value), None)
        if kind is None:
            return Ignored(f"unknown PCB {pcb:02X}")
        rest = frame[1:]
        has_cid = bool(pcb & PCB_CID)
        if has_cid:
            if not self.params.cid_supported:
                return Ignored("CID sent but not supported")
            if not rest:
                return Ignored("CID bit set but no CID byte")
            if rest[0] & 0x0F != self.cid:
                return Ignored("block for another CID")
            rest = rest[1:]
        elif self.cid != 0:
            return Ignored("block without CID while ours is not 0")
        if kind == "I" and pcb & PCB_NAD:
            return Ignored("NAD not supported")
        if kind in ("R", "DESELECT") and rest:
            return Ignored(f"{kind}-block with an information field")
        if kind == "WTX" and len(rest) != 1:
            return Ignored("S(WTX) without a one-byte WTXM")
        return _Block(kind, pcb, has_cid, rest)

    def _frame(self, pcb: int, inf: bytes = b"") -> bytes:
        if self._echo_cid:
            return bytes([pcb | PCB_CID, self.cid]) + inf
        return bytes([pcb]) + inf

    def _send(self, frame: bytes, *events: Event) -> Reaction:
        self._last = frame
        return Reaction(frame, events)

    def _on_i_block(self, block: _Block) -> Reaction:
        if self.state not in (State.ACTIVE, State.RECEIVING):
            return _ignore(f"I-block while {self.state.value}")
        self._block = block.pcb & PCB_BLOCK_NUMBER  # rule D (toggle) made robust to repeats
        self._echo_cid = block.has_cid
        if len(self._command) + len(block.inf) > self.params.max_command:
            self._overflow = True
            self._command.clear()
        elif not self._overflow:
            self._command += block.inf
        if block.pcb & PCB_CHAINING:
            self.state = State.RECEIVING
            return self._send(self._frame(R_ACK | self._block))  # rule 2
        command, overflow = bytes(self._command), self._overflow
        self._command.clear()
        self._overflow = False
        self.state = State.PROCESSING
        if overflow:
            return Reaction(self.respond(SW_WRONG_LENGTH), (Ignored("chained command too long"),))
        return Reaction(None, (Apdu(command),))

    def _on_r_block(self, block: _Block) -> Reaction:
        number = block.pcb & PCB_BLOCK_NUMBER
        nak = bool(block.pcb & PCB_NAK)
        self._echo_cid = block.has_cid
        if number == self._block:  # rule 11
            if self._last is None:
                return self._reply(self._frame(R_ACK | self._block))
            return self._reply(self._last)
        if nak:  # rule 12: also nfcpy's presence check
            return self._reply(self._frame(R_ACK | self._block))
        if self.state is State.SENDING:  # rule 13
            self._block ^= 1
            return self._send(self._next_chunk())
        return _ignore("R(ACK) with a foreign block number outside chaining")

    def _reply(self, frame: bytes) -> Reaction:
        """Answer without changing the last block (so a lost answer can be asked for again)."""
        return Reaction(frame)

    def _on_deselect(self, block: _Block) -> Reaction:
        self._echo_cid = block.has_cid
        frame = self._frame(S_DESELECT)
        self.state = State.HALTED
        self._command.clear()
        self._pending = b""
        self._last = None
        return Reaction(frame, (Deselected(),))

    def _on_wtx(self, block: _Block) -> Reaction:
        if self.state is not State.WTX_PENDING:
            return _ignore("S(WTX) response without a request")
        if block.inf[0] & 0x3F != self._wtxm:
            return _ignore("S(WTX) response with another WTXM")
        self.state = State.PROCESSING
        return Reaction(None, (WtxGranted(self._wtxm),))

    # -- frames out -------------------------------------------------------------------------

    def respond(self, response: bytes) -> bytes:
        """The applet's answer to the last :class:`Apdu`: the (first) I-block to send."""
        if self.state is not State.PROCESSING:
            raise LocalProtocolError(f"no command to answer ({self.state.value})")
        self._pending = bytes(response)
        frame = self._next_chunk()
        self._last = frame
        return frame

    def request_wtx(self, wtxm: int) -> bytes:
        """Ask the reader for WTXM x FWT more time (rule 9); the answer comes via receive."""
        if self.state is not State.PROCESSING:
            raise LocalProtocolError(f"S(WTX) only while processing ({self.state.value})")
        if not 1 <= wtxm <= WTXM_MAX:
            raise LocalProtocolError(f"WTXM must be 1..{WTXM_MAX}, not {wtxm}")
        self._wtxm = wtxm
        self.state = State.WTX_PENDING
        frame = self._frame(S_WTX, bytes([wtxm]))
        self._last = frame
        return frame

    def _next_chunk(self) -> bytes:
        room = self.fsd - 3 - (1 if self._echo_cid else 0)  # PCB + CRC (+ CID)
        chunk, self._pending = self._pending[:room], self._pending[room:]
        if self._pending:
            self.state = State.SENDING
            return self._frame(I_BLOCK | PCB_CHAINING | self._block, chunk)
        self.state = State.ACTIVE
        return self._frame(I_BLOCK | self._block, chunk)


def _ignore(reason: str) -> Reaction:
    return Reaction(None, (Ignored(reason),))


_HANDLERS: Final[dict[str, Callable[[IsoDepCard, _Block], Reaction]]] = {
    "I": IsoDepCard._on_i_block,
    "R": IsoDepCard._on_r_block,
    "DESELECT": IsoDepCard._on_deselect,
    "WTX": IsoDepCard._on_wtx,
}

"""How long a list of APDU exchanges takes on the air, ISO/IEC 14443-A (sans-IO: pure arithmetic).

The phone link's cost is dominated by the radio, not by the CPUs at either end, so the benchmark
states what the exchanges it counted would take at 106 kbit/s.  The formula, as data in
:class:`AirSpec` (ISO/IEC 14443-2/-3/-4):

* one elementary time unit (etu) is ``128 / fc`` with ``fc = 13.56 MHz`` (9.44 µs at 106 kbit/s);
* a *standard frame* of ``n`` bytes is ``9 n + 2`` etu: 8 data bits + 1 odd parity bit per byte,
  plus start and end of communication;
* an APDU travels in I-blocks: PCB + information field + CRC_A, i.e. 3 bytes added per block.
  An information field larger than the frame size (FSC to the card, FSD to the reader, minus the
  3 block bytes) is chained: every block but the last is acknowledged by an R(ACK) block
  (PCB + CRC_A) from the other side;
* every frame is followed by a turn-around gap before the other side answers: at least the
  frame delay time ``1172 / fc`` (≈ 86 µs) each way by default; EMVCo terminals typically
  leave ~500 µs card→reader, which :data:`EMVCO` models.

Not counted: field activation (REQA, anticollision, SELECT, RATS; a few ms once per tap), S(WTX)
time extensions, and retransmissions after errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["EMVCO", "ISO_106", "AirSpec", "AirTime", "air_time", "frame_etu"]


@dataclass(frozen=True)
class AirSpec:
    """The constants of the air-time formula."""

    fc_hz: float = 13_560_000.0
    etu_fc: int = 128  # 106 kbit/s
    bits_per_byte: int = 9  # 8 data bits + odd parity
    frame_extra_etu: int = 2  # start + end of communication
    block_overhead: int = 3  # PCB (1) + CRC_A (2) around each I-block's information field
    ack_bytes: int = 3  # R(ACK): PCB + CRC_A
    gap_to_card_fc: int = 1172  # reader frame end -> card frame start (FDT, ISO 14443-3)
    gap_to_reader_fc: int = 1172  # card frame end -> next reader frame start
    fsc: int = 256  # largest frame the card accepts (bytes, incl. PCB and CRC)
    fsd: int = 256  # largest frame the reader accepts

    @property
    def etu_s(self) -> float:
        return self.etu_fc / self.fc_hz

    @property
    def bit_rate(self) -> float:
        return self.fc_hz / self.etu_fc

    def describe(self) -> str:
        """The formula in one line, for benchmark output."""
        return (
            f"ISO/IEC 14443-A at {self.bit_rate / 1000:.0f} kbit/s: etu = {self.etu_fc}/fc "
            f"= {self.etu_s * 1e6:.2f} us; frame of n bytes = {self.bits_per_byte}n + "
            f"{self.frame_extra_etu} etu; I-block = APDU + {self.block_overhead} bytes "
            f"(PCB + CRC_A), chained above FSC/FSD {self.fsc}/{self.fsd} with R(ACK); gaps "
            f"{self.gap_to_card_fc}/fc to the card, {self.gap_to_reader_fc}/fc to the reader"
        )


#: The defaults: minimum gaps both ways.
ISO_106 = AirSpec()
#: A typical EMVCo-conformant terminal: ~500 µs (6780/fc) before the reader's next frame.
EMVCO = AirSpec(gap_to_reader_fc=6780)


@dataclass(frozen=True)
class AirTime:
    """What :func:`air_time` found: frames, bytes on the air and seconds."""

    exchanges: int
    frames: int
    bytes_to_card: int  # APDU bytes only (no block overhead)
    bytes_to_reader: int
    air_bytes: int  # every byte of every frame, block overhead and R(ACK)s included
    etu: int
    seconds: float

    @property
    def ms(self) -> float:
        return self.seconds * 1000


def frame_etu(n_bytes: int, spec: AirSpec = ISO_106) -> int:
    """Length of one standard frame of ``n_bytes`` bytes, in etu."""
    if n_bytes < 1:
        raise ValueError("a standard frame carries at least one byte")
    return spec.bits_per_byte * n_bytes + spec.frame_extra_etu


def _blocks(apdu_len: int, frame_size: int, spec: AirSpec) -> list[int]:
    """Frame sizes (bytes) of the I-blocks carrying an APDU of ``apdu_len`` bytes."""
    room = frame_size - spec.block_overhead
    if room < 1:
        raise ValueError("frame size leaves no room for data")
    sizes = []
    left = apdu_len
    while True:
        part = min(left, room)
        sizes.append(part + spec.block_overhead)
        left -= part
        if left <= 0:
            return sizes


def air_time(
    exchanges: Sequence[tuple[bytes | int, bytes | int]], spec: AirSpec = ISO_106
) -> AirTime:
    """Air time of ``exchanges``: (command APDU, response APDU), each as bytes or a length.

    Each frame (I-blocks and the R(ACK)s chaining needs) costs :func:`frame_etu` plus the gap
    before the other side's next frame.
    """
    etu_per_fc = 1 / spec.etu_fc
    frames = 0
    air_bytes = 0
    etu = 0.0
    sent = received = 0
    for command, response in exchanges:
        n_cmd = command if isinstance(command, int) else len(command)
        n_rsp = response if isinstance(response, int) else len(response)
        if n_cmd < 1 or n_rsp < 2:
            raise ValueError("a command has at least 1 byte, a response at least its SW1-SW2")
        sent += n_cmd
        received += n_rsp
        # (frame bytes, towards the card?) in the order they go on the air
        sequence: list[tuple[int, bool]] = []
        to_card = _blocks(n_cmd, spec.fsc, spec)
        for block in to_card[:-1]:
            sequence += [(block, True), (spec.ack_bytes, False)]
        sequence.append((to_card[-1], True))
        to_reader = _blocks(n_rsp, spec.fsd, spec)
        for block in to_reader[:-1]:
            sequence += [(block, False), (spec.ack_bytes, True)]
        sequence.append((to_reader[-1], False))
        for size, towards_card in sequence:
            frames += 1
            air_bytes += size
            gap = spec.gap_to_card_fc if towards_card else spec.gap_to_reader_fc
            etu += frame_etu(size, spec) + gap * etu_per_fc
    whole = round(etu)
    return AirTime(
        exchanges=len(exchanges),
        frames=frames,
        bytes_to_card=sent,
        bytes_to_reader=received,
        air_bytes=air_bytes,
        etu=whole,
        seconds=etu * spec.etu_s,
    )

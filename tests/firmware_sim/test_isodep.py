"""ISO-DEP card side: exact blocks, and round trips with a reader model over a lossy channel."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swipepay.firmware_sim.errors import ConfigError, LocalProtocolError
from swipepay.firmware_sim.isodep import (
    FRAME_SIZES,
    Activated,
    Apdu,
    CardParams,
    Deselected,
    Ignored,
    IsoDepCard,
    State,
    WtxGranted,
    fwt_seconds,
)

SELECT = bytes.fromhex("00A4040007 F05357504159 01 00")


def active(rats: bytes = b"\xe0\x80", **params: int) -> IsoDepCard:
    card = IsoDepCard(CardParams(**params))  # type: ignore[arg-type]
    reaction = card.receive(rats)
    assert reaction.send == card.params.ats()
    return card


def test_ats_like_android_hce() -> None:
    assert CardParams().ats() == bytes.fromhex("0578808002")
    assert CardParams(historical=b"\x01\x02").ats() == bytes.fromhex("07788080020102")
    assert fwt_seconds(8) == pytest.approx(0.0773, abs=1e-4)


@pytest.mark.parametrize("bad", [{"fsci": 9}, {"fwi": 15}, {"historical": bytes(16)}])
def test_bad_params_are_config_errors(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        CardParams(**bad)  # type: ignore[arg-type]


def test_rats_then_apdu_then_presence_check_then_deselect() -> None:
    card = IsoDepCard()
    assert card.receive(b"\x02\x00").send is None  # not activated: silence
    reaction = card.receive(b"\xe0\x80")
    assert reaction.events == (Activated(256, 0),)
    reaction = card.receive(b"\x02" + SELECT)
    assert reaction == type(reaction)(None, (Apdu(SELECT),))
    assert card.respond(b"\x90\x00") == b"\x02\x90\x00"
    # nfcpy's presence check: R(NAK) with the reader's next block number -> R(ACK) with ours
    assert card.receive(b"\xb3").send == b"\xa2"
    # a lost answer: R(NAK) with our block number -> the last I-block again
    assert card.receive(b"\xb2").send == b"\x02\x90\x00"
    assert card.receive(b"\x03\x00\xca\x00\x00").events == (Apdu(b"\x00\xca\x00\x00"),)
    assert card.respond(b"\x6a\x82") == b"\x03\x6a\x82"
    reaction = card.receive(b"\xc2")
    assert reaction.send == b"\xc2" and reaction.events == (Deselected(),)
    assert card.state is State.HALTED
    assert card.receive(b"\x02\x00").send is None


def test_cid_is_echoed_and_foreign_blocks_ignored() -> None:
    card = active(b"\xe0\x81")
    assert card.cid == 1
    assert card.receive(b"\x02\x00\xa4").send is None  # no CID while ours is 1
    assert card.receive(b"\x0a\x02\x00\xa4").send is None  # CID 2
    assert card.receive(b"\x0a\x41\x00\xa4").events == (Apdu(b"\x00\xa4"),)  # power bits ignored
    assert card.respond(b"\x90\x00") == b"\x0a\x01\x90\x00"
    assert card.receive(b"\xca\x01").send == b"\xca\x01"


def test_nad_and_malformed_blocks_are_ignored() -> None:
    card = active()
    for frame in (b"", b"\x06\x01\x00", b"\xa2\x00", b"\xf2", b"\x0a", b"\x22", bytes(300)):
        reaction = card.receive(frame)
        assert reaction.send is None and isinstance(reaction.events[0], Ignored)


def test_chained_command_and_chained_response() -> None:
    card = active(b"\xe0\x00", max_command=100)  # FSD 16: 13 bytes of INF per block
    assert card.receive(b"\x12" + bytes(range(10))).send == b"\xa2"
    assert card.receive(b"\x03" + bytes(range(10, 20))).events == (Apdu(bytes(range(20))),)
    first = card.respond(bytes(range(30)))
    assert first == b"\x13" + bytes(range(13))
    assert card.receive(b"\xa3").send == first  # R(ACK) with our number: retransmit
    assert card.receive(b"\xa2").send == b"\x12" + bytes(range(13, 26))
    assert card.receive(b"\xa3").send == b"\x03" + bytes(range(26, 30))
    assert card.state is State.ACTIVE


def test_overlong_chained_command_gets_6700_not_the_applet() -> None:
    card = active(max_command=20)
    assert card.receive(b"\x12" + bytes(15)).send == b"\xa2"
    reaction = card.receive(b"\x03" + bytes(15))
    assert reaction.send == b"\x03\x67\x00"
    assert not any(isinstance(e, Apdu) for e in reaction.events)


def test_wtx() -> None:
    card = active()
    card.receive(b"\x02\x00\xa4")
    with pytest.raises(LocalProtocolError):
        card.receive(b"\xb2")  # the applet holds the turn
    with pytest.raises(LocalProtocolError):
        card.request_wtx(0)
    assert card.request_wtx(10) == b"\xf2\x0a"
    assert card.receive(b"\xf2\x0b").send is None  # another WTXM
    assert card.receive(b"\xb2").send == b"\xf2\x0a"  # request lost: again
    assert card.receive(b"\xf2\x0a").events == (WtxGranted(10),)
    assert card.respond(b"\x90\x00") == b"\x02\x90\x00"
    with pytest.raises(LocalProtocolError):
        card.respond(b"\x90\x00")


# -- a reader (PCD) model, like nfcpy's IsoDepInitiator, over a channel that loses frames ----


class Pcd:
    def __init__(
        self,
        card: IsoDepCard,
        handler: Callable[[bytes], bytes],
        losses: Iterator[bool],
        fsdi: int,
        cid: int | None,
    ) -> None:
        self.card, self.handler, self.losses = card, handler, losses
        self.fsdi, self.cid = fsdi, cid
        self.pni = 0
        self.calls: list[bytes] = []
        self.fsc = 0

    def _xfer(self, frame: bytes) -> bytes | None:
        """One frame out, one back; None is a timeout (lost on the way out or back)."""
        if next(self.losses):
            return None
        reaction = self.card.receive(frame)
        send = reaction.send
        for event in reaction.events:
            if isinstance(event, Apdu):
                self.calls.append(event.data)
                send = self.card.respond(self.handler(event.data))
        assert send is None or len(send) + 2 <= FRAME_SIZES[min(self.fsdi, 8)]
        if send is None or next(self.losses):
            return None
        return send

    def _block(self, pcb: int, inf: bytes = b"") -> bytes:
        if self.cid is None:
            return bytes([pcb]) + inf
        return bytes([pcb | 0x08, self.cid]) + inf

    def _strip(self, frame: bytes) -> tuple[int, bytes]:
        if self.cid is None:
            return frame[0], frame[1:]
        assert frame[0] & 0x08 and frame[1] == self.cid
        return frame[0], frame[2:]

    def activate(self) -> None:
        # A lost ATS ends in a new activation on a real reader: the model's RATS is lossless.
        ats = self.card.receive(bytes([0xE0, self.fsdi << 4 | (self.cid or 0)])).send
        assert ats is not None
        self.fsc = FRAME_SIZES[ats[1] & 0x0F]

    def _until_answer(self, frame: bytes, on_timeout: bytes) -> bytes:
        for _ in range(200):
            answer = self._xfer(frame)
            if answer is not None:
                return answer
            frame = on_timeout
        raise AssertionError("no answer after 200 tries")

    def transceive(self, apdu: bytes) -> bytes:
        miu = self.fsc - 3 - (0 if self.cid is None else 1)
        chunks = [apdu[i : i + miu] for i in range(0, len(apdu), miu)] or [b""]
        answer = b""
        for index, chunk in enumerate(chunks):
            more = index < len(chunks) - 1
            block = self._block(0x02 | (0x10 if more else 0) | self.pni, chunk)
            nak = self._block(0xB2 | self.pni)
            frame = block
            for _ in range(200):
                answer = self._until_answer(frame, nak)
                pcb, _ = self._strip(answer)
                if not (pcb & 0xF6 == 0xA2 and pcb & 1 != self.pni):
                    break
                frame = block  # rule 6: the card missed the I-block
            else:
                raise AssertionError("the I-block never got through")
            pcb, inf = self._strip(answer)
            assert pcb & 1 == self.pni
            if more:
                assert pcb & 0xF6 == 0xA2
            else:
                assert pcb & 0xE2 == 0x02
            self.pni ^= 1
        pcb, response = self._strip(answer)
        while pcb & 0x10:  # the card chains its answer
            ack = self._block(0xA2 | self.pni)
            pcb, inf = self._strip(self._until_answer(ack, ack))
            assert pcb & 0xE2 == 0x02 and pcb & 1 == self.pni
            response += inf
            self.pni ^= 1
        return response


def _answer(apdu: bytes) -> bytes:
    """A test applet whose answers are long enough to need chaining at small FSDs."""
    return (apdu[::-1] * 3)[:700] + b"\x90\x00"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    apdus=st.lists(st.binary(min_size=0, max_size=600), min_size=1, max_size=4),
    fsdi=st.integers(0, 12),
    fsci=st.integers(0, 8),
    cid=st.one_of(st.none(), st.integers(0, 14)),
    losses=st.lists(st.booleans(), max_size=30),
)
def test_round_trips_over_a_lossy_channel(
    apdus: list[bytes], fsdi: int, fsci: int, cid: int | None, losses: list[bool]
) -> None:
    card = IsoDepCard(CardParams(fsci=fsci, max_command=1024))
    pcd = Pcd(card, _answer, itertools.chain(losses, itertools.repeat(False)), fsdi, cid)
    pcd.activate()
    for apdu in apdus:
        assert pcd.transceive(apdu) == _answer(apdu)
    assert pcd.calls == apdus  # every command reached the applet exactly once, in order


VALID_PCBS = [0x02, 0x03, 0x12, 0x13, 0x0A, 0x1A, 0xA2, 0xA3, 0xB2, 0xB3, 0xAA, 0xC2, 0xCA, 0xF2]
frames = st.one_of(
    st.binary(max_size=40),
    st.builds(
        lambda p, rest: bytes([p]) + rest, st.sampled_from(VALID_PCBS), st.binary(max_size=30)
    ),
    st.sampled_from([b"\xe0\x80", b"\xe0\x01", b"\xe0\x0f", b"\xe0\x20"]),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(frames, st.binary(max_size=80), st.integers(0, 60)), max_size=40),
    st.integers(0, 8),
)
def test_random_frames_never_break_the_card(
    script: list[tuple[bytes, bytes, int]], fsci: int
) -> None:
    card = IsoDepCard(CardParams(fsci=fsci))
    for frame, answer, wtxm in script:
        reaction = card.receive(frame)
        sends = [reaction.send]
        if card.state is State.PROCESSING:
            if 1 <= wtxm <= 59:
                sends.append(card.request_wtx(wtxm))
                grant = bytes([0xFA, card.cid, wtxm]) if card.cid else bytes([0xF2, wtxm])
                assert card.receive(grant).events == (WtxGranted(wtxm),)
            sends.append(card.respond(answer))
        for sent in sends:
            assert sent is None or len(sent) + 2 <= card.fsd or sent == card.params.ats()
        assert card.state is not State.PROCESSING

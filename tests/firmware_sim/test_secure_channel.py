"""Tests of the phone-link secure channel: transcript, key schedule, key confirmation, frames."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from swipepay.firmware_sim import ecc
from swipepay.firmware_sim.errors import DecodeError, LocalError, SecurityError
from swipepay.firmware_sim.secure_channel import (
    FRAME_OVERHEAD,
    MAX_COUNTER,
    SecureChannel,
    SessionKeys,
    Transcript,
    check_key_confirmation,
    derive_session_keys,
    key_confirmation,
)

CMD_HDR = bytes.fromhex("80100000")
RSP_AAD = b"R" + CMD_HDR


def handshake() -> tuple[SessionKeys, SessionKeys, bytes]:
    """Both sides' keys from two ephemeral keys and the same transcript."""
    terminal_eph = ecc.generate_key()
    phone_eph = ecc.generate_key()
    transcript = Transcript()
    transcript.add(b"T-EPH", ecc.encode_point(terminal_eph.public_key()))
    transcript.add(b"P-EPH", ecc.encode_point(phone_eph.public_key()))
    digest = transcript.digest()
    terminal_keys = derive_session_keys(
        terminal_eph, ecc.encode_point(phone_eph.public_key()), digest
    )
    phone_keys = derive_session_keys(phone_eph, ecc.encode_point(terminal_eph.public_key()), digest)
    return terminal_keys, phone_keys, digest


def channels() -> tuple[SecureChannel, SecureChannel]:
    terminal_keys, phone_keys, _ = handshake()
    return SecureChannel(terminal_keys, "terminal"), SecureChannel(phone_keys, "phone")


# A fixed key for the frame-level tests, so hypothesis examples need no EC operations.
FIXED_KEYS = SessionKeys(t2p=bytes(range(16)), p2t=bytes(range(16, 32)), confirm=bytes(32))


# --- Transcript -------------------------------------------------------------------------------


def test_transcript_encoding_is_as_documented() -> None:
    t = Transcript()
    t.add(b"AB", b"xyz")
    expected = hashlib.sha256(b"swipepay/transcript/v1" + b"\x02AB" + b"\x00\x00\x00\x03xyz")
    assert t.digest() == expected.digest()


def test_transcript_order_and_boundaries_matter() -> None:
    a, b, c, d = Transcript(), Transcript(), Transcript(), Transcript()
    a.add(b"X", b"1")
    a.add(b"Y", b"2")
    b.add(b"Y", b"2")
    b.add(b"X", b"1")
    c.add(b"ab", b"c")
    d.add(b"a", b"bc")
    assert a.digest() != b.digest()
    assert c.digest() != d.digest()
    assert Transcript().digest() != a.digest()


def test_transcript_digest_does_not_finalize_and_copy_is_independent() -> None:
    t = Transcript()
    t.add(b"A", b"1")
    first = t.digest()
    assert t.digest() == first
    fork = t.copy()
    t.add(b"B", b"2")
    assert fork.digest() == first
    assert t.digest() != first
    fork.add(b"B", b"2")
    assert fork.digest() == t.digest()


def test_transcript_refuses_bad_labels() -> None:
    t = Transcript()
    with pytest.raises(LocalError):
        t.add(b"", b"x")
    with pytest.raises(LocalError):
        t.add(b"L" * 256, b"x")
    with pytest.raises(LocalError):
        t.add(b"L", 5)  # type: ignore[arg-type]


# --- Key schedule -----------------------------------------------------------------------------


def _hkdf_rfc5869(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    prk = hmac.new(salt, ikm, "sha256").digest()
    okm, block, i = b"", b"", 1
    while len(okm) < length:
        block = hmac.new(prk, block + info + bytes([i]), "sha256").digest()
        okm += block
        i += 1
    return okm[:length]


def test_both_sides_derive_the_same_keys() -> None:
    terminal_keys, phone_keys, _ = handshake()
    assert terminal_keys == phone_keys
    assert len(terminal_keys.t2p) == 16
    assert len(terminal_keys.p2t) == 16
    assert len(terminal_keys.confirm) == 32
    assert len({terminal_keys.t2p, terminal_keys.p2t, terminal_keys.confirm[:16]}) == 3


def test_key_schedule_matches_an_independent_hkdf() -> None:
    own, peer = ecc.generate_key(), ecc.generate_key()
    digest = hashlib.sha256(b"some transcript").digest()
    keys = derive_session_keys(own, ecc.encode_point(peer.public_key()), digest)
    shared = own.exchange(ec.ECDH(), peer.public_key())
    okm = _hkdf_rfc5869(shared, digest, b"swipepay/sc/v1", 64)
    assert (keys.t2p, keys.p2t, keys.confirm) == (okm[:16], okm[16:32], okm[32:])


def test_different_transcript_gives_different_keys() -> None:
    own, peer = ecc.generate_key(), ecc.generate_key()
    point = ecc.encode_point(peer.public_key())
    assert derive_session_keys(own, point, bytes(32)) != derive_session_keys(
        own, point, b"\x01" + bytes(31)
    )


def test_derive_refuses_bad_points_and_reflection() -> None:
    own = ecc.generate_key()
    with pytest.raises(DecodeError):
        derive_session_keys(own, b"\x04" + bytes(64), bytes(32))
    with pytest.raises(DecodeError):
        derive_session_keys(own, b"\x02" + (1).to_bytes(32, "big"), bytes(32))
    with pytest.raises(SecurityError, match="own ephemeral key"):
        derive_session_keys(own, ecc.encode_point(own.public_key()), bytes(32))
    with pytest.raises(LocalError, match="digest"):
        derive_session_keys(own, ecc.encode_point(ecc.generate_key().public_key()), bytes(31))


def test_session_keys_never_in_repr() -> None:
    text = repr(FIXED_KEYS)
    for key in (FIXED_KEYS.t2p, FIXED_KEYS.p2t, FIXED_KEYS.confirm):
        assert key.hex() not in text
        assert repr(key) not in text
    channel_text = repr(SecureChannel(FIXED_KEYS, "phone"))
    assert "role='phone'" in channel_text
    for key in (FIXED_KEYS.t2p, FIXED_KEYS.p2t):
        assert key.hex() not in channel_text
        assert repr(key) not in channel_text
    with pytest.raises(LocalError, match="t2p must be 16"):
        SessionKeys(t2p=bytes(15), p2t=bytes(16), confirm=bytes(32))


# --- Key confirmation -------------------------------------------------------------------------


def test_key_confirmation_round_trip_and_layout() -> None:
    terminal_keys, phone_keys, digest = handshake()
    from_phone = key_confirmation(phone_keys, "phone", digest)
    check_key_confirmation(terminal_keys, "phone", digest, from_phone)
    expected = hmac.new(terminal_keys.confirm, b"swipepay/kc/phone" + digest, "sha256").digest()
    assert from_phone == expected[:16]
    assert key_confirmation(terminal_keys, "terminal", digest) != from_phone


def test_key_confirmation_mismatch() -> None:
    terminal_keys, phone_keys, digest = handshake()
    good = key_confirmation(phone_keys, "phone", digest)
    other_keys, _, _ = handshake()
    with pytest.raises(SecurityError, match="key confirmation mismatch") as info:
        check_key_confirmation(other_keys, "phone", digest, good)
    assert info.value.status_word == 0x6982
    with pytest.raises(SecurityError):  # the terminal's own value reflected back
        check_key_confirmation(
            terminal_keys, "phone", digest, key_confirmation(terminal_keys, "terminal", digest)
        )
    with pytest.raises(SecurityError):  # a different transcript
        check_key_confirmation(terminal_keys, "phone", hashlib.sha256(b"x").digest(), good)
    with pytest.raises(SecurityError):  # truncated
        check_key_confirmation(terminal_keys, "phone", digest, good[:15])


def test_role_is_checked() -> None:
    with pytest.raises(LocalError):
        key_confirmation(FIXED_KEYS, "reader", bytes(32))  # type: ignore[arg-type]
    with pytest.raises(LocalError):
        SecureChannel(FIXED_KEYS, "reader")  # type: ignore[arg-type]


# --- Frames -----------------------------------------------------------------------------------


def test_round_trip_both_directions() -> None:
    terminal, phone = channels()
    for i in range(3):
        frame = terminal.seal(CMD_HDR, b"payment request %d" % i)
        assert len(frame) == len(b"payment request 0") + FRAME_OVERHEAD
        assert frame[:4] == (i + 1).to_bytes(4, "big")
        assert phone.open(CMD_HDR, frame) == b"payment request %d" % i
        reply = phone.seal(RSP_AAD, b"ack %d" % i)
        assert reply[:4] == (i + 1).to_bytes(4, "big")
        assert terminal.open(RSP_AAD, reply) == b"ack %d" % i
    assert (terminal.sent, terminal.received, phone.sent, phone.received) == (3, 3, 3, 3)


def test_frame_layout_is_as_documented() -> None:
    terminal = SecureChannel(FIXED_KEYS, "terminal")
    phone = SecureChannel(FIXED_KEYS, "phone")
    frame = terminal.seal(CMD_HDR, b"hello")
    nonce = b"T2P\x00" + (1).to_bytes(8, "big")
    assert AESGCM(FIXED_KEYS.t2p).decrypt(nonce, frame[4:], CMD_HDR) == b"hello"
    reply = phone.seal(RSP_AAD, b"ok")
    nonce = b"P2T\x00" + (1).to_bytes(8, "big")
    assert AESGCM(FIXED_KEYS.p2t).decrypt(nonce, reply[4:], RSP_AAD) == b"ok"


def _assert_wiped(channel: SecureChannel) -> None:
    assert channel.closed
    with pytest.raises(SecurityError, match="channel closed"):
        channel.seal(CMD_HDR, b"x")
    with pytest.raises(SecurityError, match="channel closed"):
        channel.open(CMD_HDR, bytes(40))


def _flip(frame: bytes, index: int) -> bytes:
    return frame[:index] + bytes([frame[index] ^ 0x01]) + frame[index + 1 :]


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda f, aad: (f, b"\x80\x12\x00\x00"), "authentication failed"),
        (lambda f, aad: (f, RSP_AAD), "authentication failed"),
        (lambda f, aad: (_flip(f, 4), aad), "authentication failed"),
        (lambda f, aad: (_flip(f, len(f) - 1), aad), "authentication failed"),
        (lambda f, aad: (f[:19], aad), "too short"),
        (lambda f, aad: (f[:-1], aad), "authentication failed"),
        (lambda f, aad: (_flip(f, 3), aad), "counter"),
    ],
    ids=["wrong-ins", "response-aad", "ct-bit", "tag-bit", "truncated", "short-tag", "counter"],
)
def test_open_failures_wipe_the_channel(
    mangle: Callable[[bytes, bytes], tuple[bytes, bytes]], message: str
) -> None:
    terminal = SecureChannel(FIXED_KEYS, "terminal")
    phone = SecureChannel(FIXED_KEYS, "phone")
    frame = terminal.seal(CMD_HDR, b"amount 1234")
    bad_frame, aad = mangle(frame, CMD_HDR)
    with pytest.raises(SecurityError, match=message) as info:
        phone.open(aad, bad_frame)
    assert info.value.status_word == 0x6982
    _assert_wiped(phone)
    # the genuine frame is no longer accepted either: the session is gone
    with pytest.raises(SecurityError, match="channel closed"):
        phone.open(CMD_HDR, frame)


def test_replayed_frame_is_refused() -> None:
    terminal, phone = channels()
    frame = terminal.seal(CMD_HDR, b"one")
    assert phone.open(CMD_HDR, frame) == b"one"
    with pytest.raises(SecurityError, match="replay"):
        phone.open(CMD_HDR, frame)
    _assert_wiped(phone)


def test_skipped_counter_is_refused() -> None:
    terminal, phone = channels()
    terminal.seal(CMD_HDR, b"lost")
    second = terminal.seal(CMD_HDR, b"second")
    with pytest.raises(SecurityError, match="gap"):
        phone.open(CMD_HDR, second)
    _assert_wiped(phone)


def test_frame_cannot_be_reflected_to_its_sender() -> None:
    terminal = SecureChannel(FIXED_KEYS, "terminal")
    frame = terminal.seal(CMD_HDR, b"x")
    with pytest.raises(SecurityError):
        terminal.open(CMD_HDR, frame)


def test_channels_from_different_sessions_do_not_interoperate() -> None:
    terminal, _ = channels()
    _, other_phone = channels()
    with pytest.raises(SecurityError):
        other_phone.open(CMD_HDR, terminal.seal(CMD_HDR, b"x"))


def test_explicit_wipe() -> None:
    terminal, _ = channels()
    assert not terminal.closed
    terminal.wipe()
    _assert_wiped(terminal)


def test_outgoing_counter_exhaustion() -> None:
    terminal = SecureChannel(FIXED_KEYS, "terminal")
    phone = SecureChannel(FIXED_KEYS, "phone")
    terminal._sent = MAX_COUNTER - 1  # reaching 2^32 frames for real would take hours
    phone._received = MAX_COUNTER - 1
    last = terminal.seal(CMD_HDR, b"last")
    assert last[:4] == b"\xff\xff\xff\xff"
    assert phone.open(CMD_HDR, last) == b"last"
    with pytest.raises(LocalError, match="exhausted"):
        terminal.seal(CMD_HDR, b"one too many")
    with pytest.raises(SecurityError):  # no frame can carry counter 2^32
        phone.open(CMD_HDR, b"\x00\x00\x00\x00" + last[4:])


def test_non_bytes_are_refused_not_zero_filled() -> None:
    terminal = SecureChannel(FIXED_KEYS, "terminal")
    with pytest.raises(LocalError):
        terminal.seal(CMD_HDR, 16)  # type: ignore[arg-type]
    assert terminal.sent == 0


@pytest.mark.soak("secure-channel")
@settings(max_examples=300, deadline=None)
@given(aad=st.binary(max_size=8), frame=st.binary(max_size=64))
def test_fuzz_open_random_frames(aad: bytes, frame: bytes) -> None:
    phone = SecureChannel(FIXED_KEYS, "phone")
    with pytest.raises((SecurityError, DecodeError)):
        phone.open(aad, frame)
    assert phone.closed


@settings(max_examples=200, deadline=None)
@given(body=st.binary(min_size=16, max_size=64))
def test_fuzz_open_frames_with_the_right_counter(body: bytes) -> None:
    phone = SecureChannel(FIXED_KEYS, "phone")
    with pytest.raises(SecurityError):
        phone.open(CMD_HDR, b"\x00\x00\x00\x01" + body)
    assert phone.closed


@settings(max_examples=50, deadline=None)
@given(messages=st.lists(st.tuples(st.binary(max_size=6), st.binary(max_size=235)), max_size=8))
def test_round_trip_property(messages: list[tuple[bytes, bytes]]) -> None:
    terminal = SecureChannel(FIXED_KEYS, "terminal")
    phone = SecureChannel(FIXED_KEYS, "phone")
    for aad, plaintext in messages:
        assert phone.open(aad, terminal.seal(aad, plaintext)) == plaintext
        assert terminal.open(b"R" + aad, phone.seal(b"R" + aad, plaintext)) == plaintext
    assert terminal.sent == phone.received == len(messages)

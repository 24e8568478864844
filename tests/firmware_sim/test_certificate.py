"""Tests of the compact terminal certificate: layout, strict parsing, verification, tampering."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from swipepay.firmware_sim import ecc
from swipepay.firmware_sim.certificate import (
    FIXED_LEN,
    MAX_LEN,
    CertificateError,
    TerminalCertificate,
    issue_certificate,
    parse_certificate,
    verify_certificate,
)
from swipepay.firmware_sim.errors import DecodeError, LocalError, SecurityError

CA_KEY = ecc.generate_key()
OTHER_CA_KEY = ecc.generate_key()
TERMINAL_KEY = ecc.generate_key()
TERMINAL_POINT = ecc.encode_point(TERMINAL_KEY.public_key())
CA_KEYS: dict[int, ec.EllipticCurvePublicKey] = {3: CA_KEY.public_key()}
NOW = 1_750_000_000
NAME_24 = "Café Zürich Bahnhofstr"  # 22 characters, 2 of them two-byte: 24 UTF-8 bytes

BASE = {
    "terminal_id": "TERM0001",
    "merchant_id": "MERCHANT0000042",
    "merchant_name": "Corner Shop",
    "public_key": TERMINAL_POINT,
    "not_before": NOW - 86_400,
    "not_after": NOW + 365 * 86_400,
}


def issue(**overrides: object) -> TerminalCertificate:
    return issue_certificate(CA_KEY, 3, **{**BASE, **overrides})  # type: ignore[arg-type]


CERT = issue(merchant_name=NAME_24)
WIRE = CERT.encode()


def test_layout_offsets_and_signature_are_as_documented() -> None:
    name = NAME_24.encode()
    assert len(name) == 24
    assert WIRE[0] == 0x01
    assert WIRE[1:9] == b"TERM0001"
    assert WIRE[9:24] == b"MERCHANT0000042"
    assert WIRE[24] == 24
    assert WIRE[25:49] == name
    assert WIRE[49:82] == TERMINAL_POINT
    assert int.from_bytes(WIRE[82:86], "big") == NOW - 86_400
    assert int.from_bytes(WIRE[86:90], "big") == NOW + 365 * 86_400
    assert WIRE[90] == 3
    assert WIRE[91:] == CERT.signature
    # The signature is over SHA-256 of the domain prefix and every byte before it.
    digest = hashlib.sha256(b"swipepay/cert/v1" + WIRE[:91]).digest()
    ecc.verify_prehashed(CA_KEY.public_key(), digest, WIRE[91:])


def test_size_with_longest_name_fits_the_apdu_budget() -> None:
    assert len(WIRE) == MAX_LEN == 155
    assert len(WIRE) <= 175
    # terminal-authentication command: cert + 64-byte signature + generous TLV overhead
    assert len(WIRE) + 64 + 3 * 3 <= 255


def test_issue_parse_verify_round_trip() -> None:
    parsed = parse_certificate(WIRE)
    assert parsed == CERT
    assert parsed.merchant_name == NAME_24
    assert parsed.encode() == WIRE
    verify_certificate(parsed, CA_KEYS, NOW)
    assert ecc.encode_point(parsed.terminal_key()) == TERMINAL_POINT


def test_short_name_round_trip() -> None:
    cert = issue(merchant_name="A")
    assert len(cert.encode()) == FIXED_LEN + 1
    assert parse_certificate(bytearray(cert.encode())) == cert  # type: ignore[arg-type]


def test_validity_bounds_are_inclusive() -> None:
    verify_certificate(CERT, CA_KEYS, CERT.not_before)
    verify_certificate(CERT, CA_KEYS, CERT.not_after)


@pytest.mark.parametrize(
    ("cert", "ca_keys", "now", "revoked", "message"),
    [
        (CERT, {4: CA_KEY.public_key()}, NOW, (), "unknown CA key index 3"),
        (CERT, {3: OTHER_CA_KEY.public_key()}, NOW, (), "CA signature does not verify"),
        (replace(CERT, merchant_name="Evil Shop"), CA_KEYS, NOW, (), "does not verify"),
        (CERT, CA_KEYS, NOW - 86_401, (), "not yet valid"),
        (CERT, CA_KEYS, NOW + 365 * 86_400 + 1, (), "expired"),
        (CERT, CA_KEYS, NOW, {"TERM0001"}, "terminal TERM0001 is revoked"),
    ],
    ids=["unknown-ca", "wrong-ca", "altered-name", "not-yet-valid", "expired", "revoked"],
)
def test_verify_failures(
    cert: TerminalCertificate,
    ca_keys: dict[int, ec.EllipticCurvePublicKey],
    now: int,
    revoked: set[str],
    message: str,
) -> None:
    with pytest.raises(CertificateError, match=message) as info:
        verify_certificate(cert, ca_keys, now, revoked)
    assert isinstance(info.value, SecurityError)
    assert info.value.status_word == 0x6982


def test_other_terminal_revoked_is_fine() -> None:
    verify_certificate(CERT, CA_KEYS, NOW, {"TERM0002"})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"merchant_name": "x" * 25}, "1..24 UTF-8 bytes, got 25"),
        ({"merchant_name": NAME_24 + "."}, "got 25"),  # 23 characters, 25 bytes
        ({"merchant_name": ""}, "1..24"),
        ({"merchant_name": "Shop\u202eevil"}, "U\\+202E"),
        ({"merchant_name": "Shop\nPay"}, "U\\+000A"),
        ({"merchant_name": " Shop"}, "whitespace"),
        ({"merchant_name": "\ud800"}, "U\\+D800"),
        ({"terminal_id": "TERM001"}, "terminal_id must be 8"),
        ({"terminal_id": "TERM000é"}, "terminal_id must be printable ASCII"),
        ({"merchant_id": "M" * 16}, "merchant_id must be 15"),
        ({"merchant_id": "M" * 14 + "\x00"}, "merchant_id must be printable"),
        ({"public_key": b"\x02" + (1).to_bytes(32, "big")}, "not a point"),
        ({"public_key": TERMINAL_POINT[1:]}, "33-byte"),
        ({"not_before": -1}, "not_before"),
        ({"not_after": 2**32}, "not_after"),
        ({"not_before": NOW + 1, "not_after": NOW}, "not_before is after not_after"),
    ],
)
def test_issue_refuses_bad_input(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(LocalError, match=message):
        issue(**overrides)


def test_issue_refuses_bad_ca_index_and_key() -> None:
    with pytest.raises(LocalError, match="ca_key_index"):
        issue_certificate(CA_KEY, 256, **BASE)  # type: ignore[arg-type]
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(LocalError, match="P-256"):
        issue_certificate(p384, 3, **BASE)  # type: ignore[arg-type]


def test_direct_construction_is_checked() -> None:
    with pytest.raises(LocalError, match="signature must be 64"):
        replace(CERT, signature=b"\x00" * 63)


def _with(offset: int, value: bytes, wire: bytes = WIRE) -> bytes:
    return wire[:offset] + value + wire[offset + len(value) :]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "0 bytes, at least 132"),
        (WIRE[:-1], "154 bytes, expected 155"),
        (WIRE + b"\x00", "156 bytes, expected 155"),
        (_with(24, b"\x00"), "merchant_name_len 0 at byte 24"),
        (_with(24, b"\x19"), "merchant_name_len 25 at byte 24"),
        (_with(0, b"\x02"), "version 0x02"),
        (_with(1, b"\x80"), "terminal_id is not ASCII"),
        (_with(1, b"\x1f"), "terminal_id must be printable"),
        (_with(9, b"\x7f"), "merchant_id must be printable"),
        (_with(25, b"\xc3\x28"), "not valid UTF-8"),
        (_with(25, b"\xed\xa0\x80"), "not valid UTF-8"),  # encoded surrogate
        (_with(25, b"\xe2\x80\xae"), "U\\+202E"),  # RIGHT-TO-LEFT OVERRIDE
        (_with(49, b"\x04"), "33-byte compressed"),
        (_with(50, b"\xff" * 32), "not a point"),
        (_with(82, b"\xff\xff\xff\xff"), "not_before is after not_after"),
    ],
)
def test_parse_refuses(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        parse_certificate(data)


def test_parse_refuses_non_bytes() -> None:
    with pytest.raises(LocalError):
        parse_certificate(10**9)  # type: ignore[arg-type]


def test_no_key_material_in_repr_or_messages() -> None:
    text = repr(CERT)
    assert "TERM0001" in text
    # the CA private key is never part of the certificate; the signature bytes are not secret,
    # but the error messages must not echo any bytes at all
    with pytest.raises(CertificateError) as info:
        verify_certificate(CERT, {3: OTHER_CA_KEY.public_key()}, NOW)
    assert CERT.signature.hex() not in str(info.value)
    assert TERMINAL_POINT.hex() not in str(info.value)


names = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Co", "Zl", "Zp", "Zs")),
    min_size=1,
    max_size=6,
)


@settings(max_examples=60, deadline=None)
@given(
    name=names,
    terminal_id=st.text(
        st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=8, max_size=8
    ),
    not_before=st.integers(0, 2**32 - 1),
    span=st.integers(0, 2**32 - 1),
    index=st.integers(0, 255),
)
def test_round_trip_property(
    name: str, terminal_id: str, not_before: int, span: int, index: int
) -> None:
    not_after = min(not_before + span, 2**32 - 1)
    cert = issue_certificate(
        CA_KEY,
        index,
        **{
            **BASE,
            "merchant_name": name,
            "terminal_id": terminal_id,
            "not_before": not_before,
            "not_after": not_after,
        },  # type: ignore[arg-type]
    )
    wire = cert.encode()
    assert len(wire) <= MAX_LEN
    assert parse_certificate(wire) == cert
    verify_certificate(cert, {index: CA_KEY.public_key()}, not_before)


def _parse_or_typed_error(data: bytes) -> None:
    try:
        cert = parse_certificate(data)
    except DecodeError:
        return
    assert cert.encode() == data  # anything accepted re-encodes to exactly the same bytes


@pytest.mark.soak("certificate")
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_parse_random_bytes(data: bytes) -> None:
    _parse_or_typed_error(data)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 24).flatmap(
        lambda n: st.tuples(
            st.just(n), st.binary(min_size=FIXED_LEN + n - 2, max_size=FIXED_LEN + n - 2)
        )
    )
)
def test_fuzz_parse_well_framed_bytes(args: tuple[int, bytes]) -> None:
    n, rest = args
    # right version, right length byte and total length: the field checks get exercised
    _parse_or_typed_error(b"\x01" + rest[:23] + bytes([n]) + rest[23:])


@settings(max_examples=300, deadline=None)
@given(position=st.integers(0, len(WIRE) - 1), xor=st.integers(1, 255))
def test_any_single_byte_tampering_is_caught(position: int, xor: int) -> None:
    tampered = bytearray(WIRE)
    tampered[position] ^= xor
    with pytest.raises((DecodeError, CertificateError)):
        cert = parse_certificate(bytes(tampered))
        verify_certificate(cert, CA_KEYS, NOW)

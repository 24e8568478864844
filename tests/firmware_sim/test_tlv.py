"""BER-TLV (EMV style): tags, lengths, nesting, padding, DOLs, hostile input.

Example data is built in the tests from the rules of EMV Book 3 Annex B / ISO/IEC 7816-4 5.2
(tag bytes, length forms), with tag numbers from hardware_notes/standards.md (PPSE FCI:
6F > A5 > BF0C > 61 > 4F/87; PDOL 9F38; AFL 94; track 2 equivalent 57).
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swipepay.firmware_sim.errors import DecodeError, LocalError
from swipepay.firmware_sim.tlv import (
    EMV_TAG_NAMES,
    MAX_DEPTH,
    Tlv,
    encode_dol,
    encode_length,
    encode_tag,
    encode_tlv,
    find_all,
    find_tag,
    parse_dol,
    parse_tlv,
)

VISA_AID = bytes.fromhex("A0000000031010")
MC_AID = bytes.fromhex("A0000000041010")


def _ppse_fci() -> bytes:
    """A PPSE answer offering two applications, nested the way the notes describe."""
    app1 = encode_tlv(0x61, encode_tlv(0x4F, VISA_AID) + encode_tlv(0x87, b"\x02"))
    app2 = encode_tlv(0x61, encode_tlv(0x4F, MC_AID) + encode_tlv(0x87, b"\x01"))
    proprietary = encode_tlv(0xA5, encode_tlv(0xBF0C, app1 + app2))
    return encode_tlv(0x6F, encode_tlv(0x84, b"2PAY.SYS.DDF01") + proprietary)


def test_encode_tag_bytes() -> None:
    assert encode_tag(0x4F) == b"\x4f"
    assert encode_tag(0x9F38) == b"\x9f\x38"
    assert encode_tag(0xBF0C) == b"\xbf\x0c"
    assert encode_tag(0xDF8111) == b"\xdf\x81\x11"
    assert encode_tag(0x9F8101) == b"\x9f\x81\x01"


@pytest.mark.parametrize(
    "tag",
    [
        0,  # padding byte, not a tag
        0xFF,  # padding byte
        0xFF01,  # starts with padding
        0x9F,  # announces a second byte that is missing
        0x4F01,  # first byte does not announce a second byte
        0x9F81,  # second byte announces a third that is missing
        0xDF81818101,  # five bytes
        -5,
    ],
)
def test_encode_tag_refuses_malformed(tag: int) -> None:
    with pytest.raises(LocalError):
        encode_tag(tag)


@pytest.mark.parametrize(
    ("length", "encoded"),
    [(0, "00"), (0x7F, "7F"), (0x80, "8180"), (0xFF, "81FF"), (0x100, "820100"),
     (0xFFFF, "82FFFF"), (0x10000, "83010000"), (0xFFFFFF, "83FFFFFF")],
)
def test_length_forms(length: int, encoded: str) -> None:
    assert encode_length(length) == bytes.fromhex(encoded)
    raw = encode_tag(0x5A) + bytes.fromhex(encoded) + bytes(length)
    [tlv] = parse_tlv(raw)
    assert len(tlv.value) == length


def test_encode_length_range() -> None:
    with pytest.raises(LocalError):
        encode_length(-1)
    with pytest.raises(LocalError):
        encode_length(0x1000000)


def test_nested_fci_parse_and_search() -> None:
    fci = _ppse_fci()
    [top] = parse_tlv(fci)
    assert top.tag == 0x6F and top.constructed
    assert [c.tag for c in top.children()] == [0x84, 0xA5]
    assert find_tag(fci, 0x84) == b"2PAY.SYS.DDF01"
    assert find_all(fci, 0x4F) == [VISA_AID, MC_AID]
    assert find_all(fci, 0x87) == [b"\x02", b"\x01"]
    assert find_tag(fci, 0xBF0C) is not None
    assert find_tag(fci, 0x9F38) is None
    assert top.name == EMV_TAG_NAMES[0x6F]


def test_primitive_has_no_children_even_if_value_looks_like_tlv() -> None:
    inner = encode_tlv(0x4F, VISA_AID)
    tlv = Tlv(0x84, inner)  # 84 is primitive: its value is opaque
    assert not tlv.constructed
    assert tlv.children() == []
    assert find_tag(tlv.encode(), 0x4F) is None


def test_padding_between_objects_is_skipped() -> None:
    a = encode_tlv(0x5A, bytes.fromhex("4111111111111111"))
    b = encode_tlv(0x5F24, bytes.fromhex("301231"))
    data = b"\x00\xff" + a + b"\x00\x00" + b + b"\xff"
    assert parse_tlv(data) == [Tlv(0x5A, bytes.fromhex("4111111111111111")),
                               Tlv(0x5F24, bytes.fromhex("301231"))]
    record = encode_tlv(0x70, b"\x00" + a + b"\xff\xff" + b)
    assert find_tag(record, 0x5F24) == bytes.fromhex("301231")


def test_non_minimal_long_length_accepted() -> None:
    assert parse_tlv(bytes.fromhex("5A8103010203")) == [Tlv(0x5A, b"\x01\x02\x03")]


@pytest.mark.parametrize(
    "wire",
    [
        "5A",  # length missing
        "5A05010203",  # value truncated
        "5A80",  # indefinite length
        "5A8400000001",  # 4 length bytes
        "5A8201",  # long length truncated
        "9F",  # multi-byte tag truncated
        "9F81",  # three-byte tag truncated
        "DF81818101",  # five-byte tag
        "6F035A0201",  # child truncated inside a constructed object (found by walking)
    ],
)
def test_malformed_is_decode_error(wire: str) -> None:
    raw = bytes.fromhex(wire)
    with pytest.raises(DecodeError):
        find_all(raw, 0x5A)


def test_constructed_parse_is_shallow_until_asked() -> None:
    bad_inside = bytes.fromhex("6F035A0201")
    [outer] = parse_tlv(bad_inside)
    with pytest.raises(DecodeError):
        outer.children()


def _nest(depth: int) -> bytes:
    data = encode_tlv(0x5A, b"\x42")
    for _ in range(depth - 1):
        data = encode_tlv(0x70, data)
    return data


def test_depth_limit() -> None:
    assert find_tag(_nest(MAX_DEPTH), 0x5A) == b"\x42"
    with pytest.raises(DecodeError):
        find_tag(_nest(MAX_DEPTH + 1), 0x5A)
    # Far deeper than Python's recursion limit would allow: still a DecodeError.
    with pytest.raises(DecodeError):
        find_all(_nest(2000), 0x5A)


def test_parse_dol() -> None:
    pdol = bytes.fromhex("9F66049F02069F37049F1A025F2A02")
    assert parse_dol(pdol) == [(0x9F66, 4), (0x9F02, 6), (0x9F37, 4), (0x9F1A, 2), (0x5F2A, 2)]
    assert encode_dol(parse_dol(pdol)) == pdol
    assert parse_dol(b"") == []
    for bad in ("9F66", "9F", "9F6680", "009F6604"):
        with pytest.raises(DecodeError):
            parse_dol(bytes.fromhex(bad))


def test_tlv_constructor_validates() -> None:
    with pytest.raises(LocalError):
        Tlv(0x00, b"")
    with pytest.raises(LocalError):
        Tlv(0x9F, b"")


def test_names_table_covers_the_emv_read() -> None:
    wanted = [0x4F, 0x50, 0x57, 0x5A, 0x5F20, 0x5F24, 0x5F25, 0x5F28, 0x5F2D, 0x61, 0x6F, 0x70,
              0x77, 0x80, 0x82, 0x84, 0x87, 0x88, 0x8C, 0x8E, 0x94, 0x9F02, 0x9F03, 0x9F10,
              0x9F1A, 0x9F26, 0x9F27, 0x9F36, 0x9F37, 0x9F38, 0x9F66, 0xA5, 0xBF0C, 0x9F4D]
    assert [t for t in wanted if t not in EMV_TAG_NAMES] == []
    for tag in EMV_TAG_NAMES:
        encode_tag(tag)  # every table key is a well-formed tag


# --- properties -------------------------------------------------------------------------

def _valid_tags(constructed: bool | None = None) -> st.SearchStrategy[int]:
    """Well-formed tags of 1-3 bytes, built directly (filtering would discard too much)."""
    bit6 = st.sampled_from([0x00, 0x20] if constructed is None else [0x20 * constructed])
    cls = st.sampled_from([0x00, 0x40, 0x80, 0xC0])
    number = st.integers(0x00, 0x1E)
    first_single = st.builds(lambda c, b, n: c | b | n, cls, bit6, number).filter(bool)
    # The "more bytes" first byte: class | constructed | 11111, except FF (padding).
    first_multi = st.builds(lambda c, b: c | b | 0x1F, cls, bit6).filter(lambda f: f != 0xFF)
    last = st.integers(0x00, 0x7F)
    middle = st.integers(0x80, 0xFF)
    return st.one_of(
        first_single,
        st.builds(lambda f, x: f << 8 | x, first_multi, last),
        st.builds(lambda f, m, x: f << 16 | m << 8 | x, first_multi, middle, last),
    )


tags = _valid_tags()
primitive_tags = _valid_tags(constructed=False)


@settings(max_examples=300)
@given(tags, st.one_of(st.binary(max_size=40), st.binary(min_size=120, max_size=300)))
def test_encode_parse_round_trip(tag: int, value: bytes) -> None:
    raw = encode_tlv(tag, value)
    assert parse_tlv(raw) == [Tlv(tag, value)]
    assert raw.startswith(encode_tag(tag))


@settings(max_examples=200)
@given(st.lists(st.tuples(primitive_tags, st.binary(max_size=20)), max_size=6), tags)
def test_constructed_round_trip_and_search(children: list[tuple[int, bytes]], outer: int) -> None:
    body = b"".join(encode_tlv(t, v) for t, v in children)
    wrapper = 0x70 if not Tlv(outer, b"").constructed else outer
    raw = encode_tlv(wrapper, body)
    [parsed] = parse_tlv(raw)
    assert [(c.tag, c.value) for c in parsed.children()] == children
    for t, _ in children:
        expected = [v for tt, v in children if tt == t]
        if t == wrapper:
            expected = [body, *expected]
        assert find_all(raw, t) == expected
        assert find_tag(raw, t) == expected[0]


@settings(max_examples=300)
@given(st.lists(st.tuples(tags, st.integers(0, 0xFFFF)), max_size=8))
def test_dol_round_trip(entries: list[tuple[int, int]]) -> None:
    assert parse_dol(encode_dol(entries)) == entries


@pytest.mark.soak("tlv")
@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_any_bytes_give_objects_or_decode_error(raw: bytes) -> None:
    try:
        objects = parse_tlv(raw)
    except DecodeError:
        return
    for tlv in objects:
        assert parse_tlv(tlv.encode()) == [tlv]
    with contextlib.suppress(DecodeError):
        find_all(raw, 0x5A)  # walking nested values must not raise anything else either


@settings(max_examples=300)
@given(st.binary(max_size=60))
def test_any_bytes_give_dol_or_decode_error(raw: bytes) -> None:
    try:
        entries = parse_dol(raw)
    except DecodeError:
        return
    assert parse_dol(encode_dol(entries)) == entries


@settings(max_examples=300)
@given(st.recursive(
    st.builds(lambda v: encode_tlv(0x5A, v), st.binary(max_size=8)),
    lambda inner: st.builds(lambda parts: encode_tlv(0x70, b"".join(parts)),
                            st.lists(inner, max_size=3)),
    max_leaves=12,
))
def test_nested_structures_walk_or_hit_depth_limit(raw: bytes) -> None:
    try:
        values = find_all(raw, 0x5A)
    except DecodeError as exc:
        assert "deeper" in str(exc)
        return
    assert all(len(v) <= 8 for v in values)

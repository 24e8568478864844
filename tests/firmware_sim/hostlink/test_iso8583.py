"""The ISO 8583 codec and the sans-IO framer: round trips, exact bytes, hostile input."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swipepay.firmware_sim.errors import DecodeError
from swipepay.firmware_sim.hostlink import iso8583 as codec
from swipepay.firmware_sim.hostmsg import AuthRequest, AuthResponse
from swipepay.firmware_sim.transaction import Transaction, TxnType

PAN = "4761739001010119"


def _txn(type_: TxnType = TxnType.PURCHASE, **kw: object) -> Transaction:
    values: dict[str, object] = {
        "type": type_,
        "amount": 12_34,
        "pan": PAN,
        "expiry": "2812",
        "terminal_id": "POS00001",
        "merchant_id": "MERCH0000000001",
        "stan": "000042",
        "transmitted_at": "1126120000",
    }
    values.update(kw)
    return Transaction(**values)  # type: ignore[arg-type]


REQ = AuthRequest(_txn(), bytes(range(16)), bytes(range(100, 112)), bytes(range(64)))


@pytest.mark.parametrize(
    "type_", [TxnType.PURCHASE, TxnType.PREAUTH, TxnType.WITHDRAWAL, TxnType.DEPOSIT]
)
def test_financial_request_round_trip(type_: TxnType) -> None:
    req = AuthRequest(_txn(type_), REQ.pin_block, REQ.ksn, REQ.confirmation)
    parsed = codec.parse_request(codec.decode(codec.encode(codec.request_fields(req))))
    assert parsed == req
    assert isinstance(parsed, AuthRequest)
    assert (parsed.pin_block, parsed.ksn, parsed.confirmation) == (
        req.pin_block,
        req.ksn,
        req.confirmation,
    )


def test_completion_carries_the_preauth_in_field_90() -> None:
    req = AuthRequest(
        _txn(
            TxnType.COMPLETION, original_stan="000041", original_at="1126115900", auth_code="123456"
        )
    )
    fields = codec.request_fields(req)
    assert fields["t"] == "0220"
    assert fields["90"] == "0100" + "000041" + "1126115900" + "0" * 22
    assert codec.parse_request(codec.decode(codec.encode(fields))) == req


def test_purchase_bytes_are_the_documented_example() -> None:
    """The 0200 example in hardware_notes/iso8583.md, byte for byte."""
    raw = codec.encode(codec.request_fields(REQ))
    assert raw[:4] == b"0200"
    assert raw[4:20] == b"7224040000C09804"  # bitmap: 2 3 4 7 11 14 22 41 42 49 52 53 62
    assert bytes(range(16)) in raw and bytes(range(64)) in raw
    assert raw.endswith(b"064" + bytes(range(64)))


def test_reversal_full_and_partial() -> None:
    full = codec.parse_request(codec.decode(codec.encode(codec.reversal_fields(REQ.txn))))
    assert full == codec.ReversalRequest("POS00001", "000042", "1126120000", None, 12_34)
    part = codec.reversal_fields(REQ.txn, 2_34)
    assert part["95"].startswith("000000001000")  # 10.00 stays posted
    assert codec.parse_request(codec.decode(codec.encode(part))).amount == 2_34  # type: ignore[union-attr]


def test_response_echoes_and_carries_the_sealed_balance_opaque() -> None:
    request = codec.request_fields(REQ)
    sealed = bytes(range(36))
    answer = AuthResponse("00", "654321", "approved", sealed_balance=sealed)
    fields = codec.response_fields(request, answer)
    assert fields["t"] == "0210" and "54" not in fields
    raw = codec.encode(fields)
    assert raw.endswith(b"036" + sealed)  # field 63, LLL binary, last field of the message
    assert codec.parse_response(codec.decode(raw)) == answer


def test_no_response_carries_a_balance_in_clear() -> None:
    assert "54" not in codec.SPEC_OVERRIDES
    fields = codec.response_fields(codec.request_fields(REQ), AuthResponse("00", "654321"))
    assert "54" not in fields and "63" not in fields


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"t": "0300"}, "unknown request MTI"),
        ({"t": "0200", "41": "POS00001"}, r"misses field\(s\) 2, 3, 4"),
        ({**codec.request_fields(REQ), "3": "990000"}, "processing code"),
        ({**codec.request_fields(REQ), "4": "00000000001x"}, "field 4 must be digits"),
        ({**codec.reversal_fields(REQ.txn), "90": "x" * 42}, "field 90"),
        ({**codec.reversal_fields(REQ.txn), "95": "9" * 42}, "field 95"),
        ({**codec.network_fields("POS00001", "000001", "1126120000", "777")}, "network"),
    ],
)
def test_parse_request_refuses(fields: dict[str, object], message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        codec.parse_request(fields)


def test_format_error_answer_needs_a_known_mti() -> None:
    assert codec.format_error_fields(b"\xff\xff", "x") is None
    answer = codec.format_error_fields(b"0200garbage", "bad")
    assert answer is not None and answer["t"] == "0210" and answer["39"] == "30"


def test_frame_decoder_splits_and_buffers() -> None:
    d = codec.FrameDecoder()
    assert d.feed(b"\x00\x03ab") == []
    assert d.pending == 4
    assert d.feed(b"c\x00\x01z\x00") == [b"abc", b"z"]
    assert d.pending == 1


@pytest.mark.parametrize("prefix", [b"\x00\x00", (codec.MAX_FRAME + 1).to_bytes(2, "big")])
def test_frame_decoder_refuses_bad_lengths(prefix: bytes) -> None:
    with pytest.raises(codec.FrameError):
        codec.FrameDecoder().feed(prefix)


@given(st.lists(st.binary(min_size=1, max_size=300), max_size=5), st.integers(1, 7))
def test_frame_decoder_any_chunking(bodies: list[bytes], chunk: int) -> None:
    stream = b"".join(codec.frame(b) for b in bodies)
    d = codec.FrameDecoder()
    out: list[bytes] = []
    for i in range(0, len(stream), chunk):
        out += d.feed(stream[i : i + chunk])
    assert out == bodies and d.pending == 0


@pytest.mark.soak("iso8583-body")
@given(st.binary(max_size=400))
def test_hostile_bodies_give_decode_errors_only(body: bytes) -> None:
    with contextlib.suppress(DecodeError):
        codec.parse_request(codec.decode(body))
    codec.format_error_fields(body, "x")


@pytest.mark.soak("iso8583-frames")
@given(st.binary(max_size=64))
def test_hostile_streams_give_frame_errors_only(data: bytes) -> None:
    with contextlib.suppress(codec.FrameError):
        codec.FrameDecoder().feed(data)


# -- the direct paths against pyiso8583 ---------------------------------------------------------


def _pyiso_decode(raw: bytes) -> dict[str, object] | str:
    """What pyiso8583 itself makes of ``raw`` with the link's spec: the dict or the error."""
    import iso8583

    try:
        return dict(iso8583.decode(raw, codec.SPEC)[0])
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def _pyiso_encode(fields: dict[str, object]) -> bytes | str:
    """pyiso8583's bytes for ``fields``, "refused" for its EncodeError, else the exception's
    type (what :func:`codec.encode` lets through, as before the direct path)."""
    import iso8583

    try:
        return bytes(iso8583.encode(dict(fields), codec.SPEC)[0])  # type: ignore[arg-type]
    except iso8583.EncodeError:
        return "refused"
    except Exception as exc:
        return type(exc).__name__


_FIELD_VALUES = st.one_of(
    st.text(alphabet="0123456789ABCDEF", max_size=70),
    st.text(max_size=50),
    st.text(alphabet="0123456789 ", max_size=45),
    st.integers(),
    st.none(),
)
_KEYS = st.one_of(
    st.sampled_from(["2", "3", "4", "7", "11", "14", "22", "38", "39", "41", "42", "44", "49",
                     "52", "53", "62", "63", "70", "90", "95", "1", "65", "p", "h", "x", "0",
                     "02", "129", "128", "64", "100"]),
    st.text(max_size=4),
)  # fmt: skip


def _well_formed() -> st.SearchStrategy[dict[str, object]]:
    base = codec.request_fields(REQ)
    return st.fixed_dictionaries(
        {}, optional={k: st.just(v) for k, v in base.items() if k != "t"}
    ).map(lambda d: {"t": "0200", **d})


@given(st.one_of(_well_formed(), st.dictionaries(_KEYS, _FIELD_VALUES, max_size=8).map(
    lambda d: {"t": "0200", **d}), st.dictionaries(_KEYS, _FIELD_VALUES, max_size=6)))  # fmt: skip
def test_direct_encode_is_pyiso8583(fields: dict[str, object]) -> None:
    expected = _pyiso_encode(fields)
    try:
        got: bytes | str = codec.encode(fields)
    except DecodeError:
        got = "refused"
    except Exception as exc:
        got = type(exc).__name__
    assert got == expected
    if isinstance(expected, bytes):
        assert codec.decode(expected) == _pyiso_decode(expected)


def _mutated() -> st.SearchStrategy[bytes]:
    raws = [
        codec.encode(codec.request_fields(REQ)),
        codec.encode(codec.reversal_fields(_txn(), 100)),
        codec.encode(codec.network_fields("POS00001", "000001", "1126120000", "301")),
    ]

    def mutate(raw: bytes, at: int, byte: int, cut: int, op: int) -> bytes:
        at %= len(raw)
        if op == 0:
            return raw[:at] + bytes([byte]) + raw[at + 1 :]
        if op == 1:
            return raw[:at] + bytes([byte]) + raw[at:]
        if op == 2:
            return raw[:at] + raw[at + 1 :]
        return raw[: max(0, len(raw) - cut)]

    return st.builds(
        mutate,
        st.sampled_from(raws),
        st.integers(0, 500),
        st.sampled_from(list(b"0123456789ABCDEFabcdef \x00\xff+-_x")),
        st.integers(0, 40),
        st.integers(0, 4),
    )


@given(st.one_of(_mutated(), st.binary(max_size=120)))
def test_direct_decode_is_pyiso8583(raw: bytes) -> None:
    expected = _pyiso_decode(raw)
    try:
        got: dict[str, object] | str = codec.decode(raw)
    except DecodeError as exc:
        got = str(exc)
    if isinstance(expected, dict):
        assert got == expected and list(got) == list(expected)
    else:
        assert isinstance(got, str) and got.startswith("ISO 8583 decode:")
    if isinstance(got, dict):  # the encoder writes the bitmaps in upper case
        again = codec.decode(codec.encode(got))
        assert {k: v for k, v in again.items() if k not in "p1"} == {
            k: v for k, v in got.items() if k not in "p1"
        }


def test_a_tertiary_bitmap_field_is_a_format_error() -> None:
    # Field 65 set in the secondary bitmap announces fields 129-192, which the spec lacks:
    # pyiso8583 raises KeyError there; the link answers 30 instead of a traceback.
    raw = codec.encode(codec.reversal_fields(_txn(), 100))
    bad = raw[:20] + b"8000000000000000" + raw[36:]
    assert raw[4:5] == b"F" and codec.decode(raw)["1"] != "8000000000000000"
    with pytest.raises(DecodeError, match="ISO 8583 decode"):
        codec.decode(bad)
    assert codec.format_error_fields(bad, "format error") is not None

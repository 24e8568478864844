"""AES DUKPT (ANSI X9.24-3-2017, AES-128) against published vectors, plus counter rules.

Vector sources:

* [NOTES] hardware_notes/standards.md — the X9.24-3-2017 vectors listed there (initial key;
  counters 1 and 2 transaction and PIN keys).
* [OPENEMV] openemv/dukpt (Leon Lynch), test/dukpt_aes128_test.c — transcribes the
  "ANSI X9.24-3:2017 Supplement Test Vectors for AES-128 BDK": transaction keys for counters
  1-8, 0x1FFFE, 0x20000, 0x20001 and the last four usable counters (0xFFFE2000 ..
  0xFFFF0000), and the PIN, MAC-generation and data-encryption keys for counters 1-8.
  The same file notes that counter 0x1FFFF is skipped (more than 16 one-bits) and that the
  KSN cannot be advanced past 0xFFFF0000.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swipepay.firmware_sim.dukpt import (
    MAX_COUNTER,
    WORKING_KEY_USAGES,
    DukptDevice,
    DukptExhausted,
    DukptHost,
    derive_initial_key,
    derive_transaction_key,
    derive_working_key,
    make_ksn,
    next_usable_counter,
    split_ksn,
    usable,
)
from swipepay.firmware_sim.errors import DecodeError, LocalError, SwipepayError

BDK = bytes.fromhex("FEDCBA9876543210F1F1F1F1F1F1F1F1")
IKID = bytes.fromhex("1234567890123456")
IK = bytes.fromhex("1273671EA26AC29AFA4D1084127652A1")  # [NOTES], [OPENEMV]

# counter -> transaction (intermediate derivation) key.
TRANSACTION_KEYS = {
    # [NOTES] and [OPENEMV]
    0x00000001: "4F21B565BAD9835E112B6465635EAE44",
    0x00000002: "2F34D68DE10F68D38091A73B9E7C437C",
    # [OPENEMV], first eight KSNs
    0x00000003: "031504E530365CF81264238540518318",
    0x00000004: "0EEFC7ADA628BA68878DA9165A8A1887",
    0x00000005: "C2A7AC328A5DA2D6002D62465BFC028B",
    0x00000006: "D30F7D9351DA58448A2F5E92B4EE3B7D",
    0x00000007: "A8253CEED9AC042C54F75D35C8352278",
    0x00000008: "718EE6CF0B27E53D5F7AF99C4D8146A2",
    # [OPENEMV], around the first skipped counter (0x1FFFF)
    0x0001FFFE: "E21E8C8D347F8561A2BE752DAA85A111",
    0x00020000: "F7AE9025468A25D37B7249CFFED224C8",
    0x00020001: "692C8EA4013645135B36497131DF9D2C",
    # [OPENEMV], the last four usable counters
    0xFFFE2000: "48E585B694EB0B18D5C35443E163C0BA",
    0xFFFE4000: "396C2C7CA1EA701C03B86B7D41F0C562",
    0xFFFE8000: "0387625F189B58AE03EF0E8CCA41105E",
    0xFFFF0000: "F6BA59389BD14A9855BE9727E7C52E3C",
}

# (counter, usage) -> working key.  [OPENEMV]; counters 1 and 2 "pin" also [NOTES].
WORKING_KEYS = {
    (1, "pin"): "AF8CB133A78F8DC2D1359F18527593FB",
    (2, "pin"): "D30BDC73EC9714B000BEC66BDB7B6D09",
    (3, "pin"): "7D69F01F3B45449F62C7816ECE723268",
    (4, "pin"): "91A0588318EC2673214271F70137896E",
    (5, "pin"): "35A43BC9EFEB09C756204B57E3FB7D4D",
    (6, "pin"): "02DCC6CD1201A3A2CA7099559C862123",
    (7, "pin"): "6ECF912F3B18CA11A7A27BB60705FD09",
    (8, "pin"): "4D9DF3FBEE3448FC3E676D04320A90F5",
    (1, "mac-generate"): "A2DC23DE6FDE0824A2BC321E08E4B8B7",
    (2, "mac-generate"): "484C3B06E8562704528CD5B46FB12FB6",
    (3, "mac-generate"): "A5DF7D9D800CA769766F0C77CA4E6E6C",
    (4, "mac-generate"): "E6E4679647D8A9057C1FC15537CB4C4E",
    (5, "mac-generate"): "0588185FE1FF8C7E22FAD78C1C61F065",
    (6, "mac-generate"): "7B60F72A5639C0EE7EB2100FA80BB793",
    (7, "mac-generate"): "BAA08CA263C69525BC6B1BA8F4275D69",
    (8, "mac-generate"): "6FD572E5D59E618875F193484F9178FB",
    (1, "data-encrypt"): "A35C412EFD41FDB98B69797C02DCD08F",
    (2, "data-encrypt"): "D639514AA33AC43AD9229E433D6D4E5B",
    (3, "data-encrypt"): "EF17F6AB45B4820C93A3DCB21BC491AD",
    (4, "data-encrypt"): "B3BD44C08BB6BA27C3BB4711D7D70387",
    (5, "data-encrypt"): "CA02DF6F30B39E14BD0B4A30E460920F",
    (6, "data-encrypt"): "C9B8A7C4E486180B2229115164F0B293",
    (7, "data-encrypt"): "0FA8F1F0A2DD7B1005A862D77CDED698",
    (8, "data-encrypt"): "650F34204ABD4E57764D61AC3D266FB1",
}


def _by_hand(transaction_key: str, usage: int, counter: int) -> bytes:
    """X9.24-3-2017 6.3.2 written out with ``cryptography`` alone, independent of dukpt.py:
    AES-ECB under the transaction key of 01 01 | usage | 0002 | 0080 | IKID[4:] | counter."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    data = bytes.fromhex(f"0101{usage:04X}00020080") + IKID[4:] + counter.to_bytes(4, "big")
    enc = Cipher(algorithms.AES(bytes.fromhex(transaction_key)), modes.ECB()).encryptor()
    return enc.update(data) + enc.finalize()


def test_data_decrypt_key_is_usage_3001_computed_independently() -> None:
    """The key the center seals a balance under (firmware_sim/balance_seal.py).  The supplement
    vectors quoted above have no "data encryption, decrypt" key, so it is checked against the
    derivation written out by hand from the published transaction keys; counter 1 also against
    the value other AES-DUKPT implementations list (16292C6E...)."""
    for counter in range(1, 9):
        ksn = make_ksn(IKID, counter)
        expected = _by_hand(TRANSACTION_KEYS[counter], 0x3001, counter)
        assert derive_working_key(IK, ksn, "data-decrypt") == expected
        assert DukptHost(BDK).working_key(ksn, "data-decrypt") == expected
    assert _by_hand(TRANSACTION_KEYS[1], 0x3001, 1) == bytes.fromhex(
        "16292C6EA8F64C5420A0584BFBC577BE"
    )
    # The by-hand derivation reproduces the published data-encrypt (3000) keys too.
    published = bytes.fromhex(WORKING_KEYS[(1, "data-encrypt")])
    assert _by_hand(TRANSACTION_KEYS[1], 0x3000, 1) == published


def test_device_gives_other_keys_only_for_its_own_issued_ksns() -> None:
    device = DukptDevice(IK, IKID)
    _, ksn = device.next_pin_key()
    assert device.working_key(ksn, "data-decrypt") == derive_working_key(IK, ksn, "data-decrypt")
    for other in (make_ksn(IKID, 2), make_ksn(bytes(8), 1)):
        with pytest.raises(LocalError):
            device.working_key(other, "data-decrypt")


def test_initial_key_vector() -> None:
    assert derive_initial_key(BDK, IKID) == IK


@pytest.mark.parametrize(("counter", "expected"), sorted(TRANSACTION_KEYS.items()))
def test_transaction_key_vectors(counter: int, expected: str) -> None:
    assert derive_transaction_key(IK, make_ksn(IKID, counter)) == bytes.fromhex(expected)


@pytest.mark.parametrize(("counter_usage", "expected"), sorted(WORKING_KEYS.items()))
def test_working_key_vectors(counter_usage: tuple[int, str], expected: str) -> None:
    counter, usage = counter_usage
    assert derive_working_key(IK, make_ksn(IKID, counter), usage) == bytes.fromhex(expected)


def test_usages_give_distinct_keys() -> None:
    """Each usage indicator must reach the derivation data (a table typo would collide)."""
    ksn = make_ksn(IKID, 5)
    keys = {derive_working_key(IK, ksn, usage) for usage in WORKING_KEY_USAGES}
    assert len(keys) == len(WORKING_KEY_USAGES)
    assert derive_transaction_key(IK, ksn) not in keys


def test_device_walks_the_published_sequence() -> None:
    device = DukptDevice(IK, IKID)
    for counter in range(1, 9):
        key, ksn = device.next_pin_key()
        assert ksn == make_ksn(IKID, counter)
        assert device.counter == counter
        assert key == bytes.fromhex(WORKING_KEYS[(counter, "pin")])


def test_device_skips_counter_with_17_one_bits() -> None:
    """[OPENEMV]: 0x1FFFE is followed by 0x20000, 0x1FFFF (17 one-bits) is never used."""
    device = DukptDevice(IK, IKID, counter=0x0001FFFD)
    counters = [split_ksn(device.next_pin_key()[1])[1] for _ in range(3)]
    assert counters == [0x0001FFFE, 0x00020000, 0x00020001]


def test_device_runs_out_after_ffff0000() -> None:
    """[OPENEMV]: the last four counters, then no further KSN."""
    device = DukptDevice(IK, IKID, counter=0xFFFE1FFF)
    seen = []
    while not device.exhausted:
        key, ksn = device.next_pin_key()
        counter = split_ksn(ksn)[1]
        seen.append(counter)
        assert key == derive_working_key(IK, ksn, "pin")
    assert seen == [0xFFFE2000, 0xFFFE4000, 0xFFFE8000, 0xFFFF0000]
    with pytest.raises(DukptExhausted):
        device.next_pin_key()
    assert device.counter == 0xFFFF0000


def test_device_resumes_from_persisted_counter() -> None:
    first = DukptDevice(IK, IKID)
    first.next_pin_key()
    first.next_pin_key()
    resumed = DukptDevice(IK, IKID, counter=first.counter)
    assert resumed.next_pin_key() == first.next_pin_key()


@settings(max_examples=300)
@given(st.integers(min_value=0, max_value=MAX_COUNTER))
def test_next_usable_counter_is_the_smallest_usable_above(counter: int) -> None:
    nxt = next_usable_counter(counter)
    if nxt is None:
        assert counter >= 0xFFFF0000
        return
    assert nxt > counter
    assert usable(nxt)
    # Nothing usable in between (gaps stay below 2**15 + 1, so brute force is cheap).
    assert not any(usable(c) for c in range(counter + 1, nxt))


@settings(max_examples=200)
@given(st.integers(min_value=0, max_value=0xFFFF0000 - 1))
def test_device_counters_strictly_increase_and_are_usable(start: int) -> None:
    device = DukptDevice(IK, IKID, counter=start)
    previous = start
    for _ in range(3):
        if device.exhausted:
            with pytest.raises(DukptExhausted):
                device.next_pin_key()
            assert device.counter == previous
            return
        _, ksn = device.next_pin_key()
        ikid, counter = split_ksn(ksn)
        assert ikid == IKID
        assert counter > previous
        assert counter.bit_count() <= 16
        previous = counter


def test_device_repr_hides_the_key() -> None:
    device = DukptDevice(IK, IKID, counter=7)
    text = repr(device) + str(device)
    assert IK.hex() not in text.lower()
    assert "1234567890123456" in text
    assert "counter=7" in text


@given(st.binary(min_size=8, max_size=8), st.integers(min_value=0, max_value=MAX_COUNTER))
def test_ksn_round_trip(ikid: bytes, counter: int) -> None:
    ksn = make_ksn(ikid, counter)
    assert len(ksn) == 12
    assert split_ksn(ksn) == (ikid, counter)


@settings(max_examples=300)
@given(st.one_of(st.binary(min_size=12, max_size=12), st.binary(max_size=20)))
def test_any_ksn_bytes_give_a_key_or_decode_error(ksn: bytes) -> None:
    try:
        key = derive_working_key(IK, ksn, "pin")
    except DecodeError:
        return
    assert len(key) == 16
    assert len(ksn) == 12


@pytest.mark.parametrize("ksn_len", [0, 10, 11, 13])
def test_wrong_ksn_length_is_decode_error(ksn_len: int) -> None:
    with pytest.raises(DecodeError):
        split_ksn(bytes(ksn_len))
    with pytest.raises(DecodeError):
        derive_transaction_key(IK, bytes(ksn_len))


@pytest.mark.parametrize("counter", [0, 0x0001FFFF, 0xFFFFFFFF, 0xFFFF0001])
def test_host_refuses_counters_no_device_sends(counter: int) -> None:
    with pytest.raises(DecodeError):
        derive_working_key(IK, make_ksn(IKID, counter), "pin")


def test_own_bad_lengths_are_local_errors() -> None:
    ksn = make_ksn(IKID, 1)
    cases: list[Callable[[], object]] = [
        lambda: derive_initial_key(BDK[:15], IKID),
        lambda: derive_initial_key(BDK + b"\x00", IKID),
        lambda: derive_initial_key(BDK, IKID[:7]),
        lambda: derive_transaction_key(IK[:8], ksn),
        lambda: derive_working_key(IK + IK, ksn, "pin"),
        lambda: derive_working_key(IK, ksn, "kek"),
        lambda: make_ksn(IKID, -1),
        lambda: make_ksn(IKID, MAX_COUNTER + 1),
        lambda: make_ksn(IKID[:4], 1),
        lambda: DukptDevice(IK[:15], IKID),
        lambda: DukptDevice(IK, IKID, counter=-1),
    ]
    for case in cases:
        with pytest.raises(LocalError) as info:
            case()
        assert not isinstance(info.value, DecodeError)
        assert IK.hex() not in str(info.value).lower()


def test_exhausted_is_a_local_swipepay_error() -> None:
    assert issubclass(DukptExhausted, LocalError)
    assert issubclass(DukptExhausted, SwipepayError)


# --- DukptHost: the center's cached derivation must equal the plain one, key for key. ---

HOST_IKIDS = [IKID, bytes.fromhex("0000000000000001"), bytes.fromhex("FFFFFFFFFFFFFFFF")]


def _reference(ikid: bytes, counter: int, usage: str = "pin") -> bytes:
    return derive_working_key(derive_initial_key(BDK, ikid), make_ksn(ikid, counter), usage)


def test_host_gives_the_published_vectors() -> None:
    host = DukptHost(BDK)
    for (counter, usage), expected in sorted(WORKING_KEYS.items()):
        assert host.working_key(make_ksn(IKID, counter), usage) == bytes.fromhex(expected)
    for counter in range(1, 9):
        expected = WORKING_KEYS[(counter, "pin")]
        assert host.pin_key(make_ksn(IKID, counter)) == bytes.fromhex(expected)


def test_host_gives_the_published_vectors_in_any_order() -> None:
    """The transaction-key vectors (far apart, also downwards) via the cache's own path."""
    host = DukptHost(BDK)
    for counter in [*sorted(TRANSACTION_KEYS, reverse=True), *sorted(TRANSACTION_KEYS)]:
        expected = derive_working_key(IK, make_ksn(IKID, counter), "pin")
        assert host.pin_key(make_ksn(IKID, counter)) == expected


usable_counters = st.integers(min_value=1, max_value=MAX_COUNTER).filter(usable)
sixteen_one_bits = st.sets(st.integers(0, 31), min_size=16, max_size=16).map(
    lambda bits: sum(1 << b for b in bits)
)
# Steps a device's counter may take: +1 (the usual case), small and large jumps, going down,
# repeating, a fresh random counter, and counters with exactly 16 one-bits.
steps = st.one_of(
    st.just(("add", 1)),
    st.tuples(st.just("add"), st.integers(-70_000, 70_000)),
    st.tuples(st.just("set"), usable_counters),
    st.tuples(st.just("set"), sixteen_one_bits),
    st.just(("add", 0)),
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(HOST_IKIDS), steps, st.sampled_from(sorted(WORKING_KEY_USAGES))),
        min_size=1,
        max_size=25,
    ),
    st.integers(min_value=1, max_value=4),
)
def test_host_matches_plain_derivation_on_any_sequence(
    ops: list[tuple[bytes, tuple[str, int], str]], max_devices: int
) -> None:
    host = DukptHost(BDK, max_devices=max_devices)
    counters = dict.fromkeys(HOST_IKIDS, 1)
    for ikid, (kind, value), usage in ops:
        counter = counters[ikid] + value if kind == "add" else value
        counter = min(max(counter, 1), MAX_COUNTER)
        if not usable(counter):
            nxt = next_usable_counter(counter)
            counter = nxt if nxt is not None else 0xFFFF0000
        counters[ikid] = counter
        assert host.working_key(make_ksn(ikid, counter), usage) == _reference(ikid, counter, usage)
        assert len(host) <= max_devices


def test_host_incrementing_device_matches_over_carries() -> None:
    """+1 steps across long carries (0x7FFF -> 0x8000 etc.) and up to the last counter."""
    host = DukptHost(BDK)
    for start in (0x7FF0, 0x0001FFF0, 0xFFFE1FF0):
        counter: int | None = start
        for _ in range(40):
            counter = next_usable_counter(counter) if counter is not None else None
            if counter is None:
                break
            assert host.pin_key(make_ksn(IKID, counter)) == _reference(IKID, counter)


def test_host_lru_evicts_and_still_gives_correct_keys() -> None:
    host = DukptHost(BDK, max_devices=2)
    a, b, c = HOST_IKIDS
    host.pin_key(make_ksn(a, 3))
    host.pin_key(make_ksn(b, 3))
    host.pin_key(make_ksn(a, 4))  # a is now the most recently used
    host.pin_key(make_ksn(c, 5))  # evicts b, the least recently used
    assert len(host) == 2
    assert a in host
    assert b not in host
    assert c in host
    assert host.max_devices == 2
    for ikid, counter in [(b, 6), (a, 5), (c, 6), (b, 7), (a, 0xFFFF0000), (c, 1)]:
        assert host.pin_key(make_ksn(ikid, counter)) == _reference(ikid, counter)
        assert len(host) == 2
    host.clear()
    assert len(host) == 0
    assert host.pin_key(make_ksn(IKID, 8)) == bytes.fromhex(WORKING_KEYS[(8, "pin")])


@settings(max_examples=300)
@given(st.one_of(st.binary(min_size=12, max_size=12), st.binary(max_size=20)))
def test_host_any_ksn_bytes_give_the_same_key_or_decode_error(ksn: bytes) -> None:
    host = DukptHost(BDK)
    try:
        key = host.pin_key(ksn)
    except DecodeError:
        assert len(host) == 0  # refused before touching the cache
        with pytest.raises(DecodeError):
            derive_working_key(IK, ksn, "pin")
        return
    assert key == derive_working_key(derive_initial_key(BDK, ksn[:8]), ksn, "pin")


@pytest.mark.parametrize(
    "ksn",
    [
        b"",
        bytes(11),
        bytes(13),
        make_ksn(IKID, 0),
        make_ksn(IKID, 0x0001FFFF),
        make_ksn(IKID, 0xFFFFFFFF),
        make_ksn(IKID, 0xFFFF0001),
    ],
)
def test_host_refuses_bad_ksns_and_keeps_working(ksn: bytes) -> None:
    host = DukptHost(BDK)
    host.pin_key(make_ksn(IKID, 7))
    with pytest.raises(DecodeError) as info:
        host.pin_key(ksn)
    assert IK.hex() not in str(info.value).lower()
    assert host.pin_key(make_ksn(IKID, 8)) == bytes.fromhex(WORKING_KEYS[(8, "pin")])


def test_host_own_errors_are_local() -> None:
    cases: list[Callable[[], object]] = [
        lambda: DukptHost(BDK[:15]),
        lambda: DukptHost(BDK + b"\x00"),
        lambda: DukptHost(BDK, max_devices=0),
        lambda: DukptHost(BDK, max_devices=True),
        lambda: DukptHost(BDK).working_key(make_ksn(IKID, 1), "kek"),
    ]
    for case in cases:
        with pytest.raises(LocalError) as info:
            case()
        assert not isinstance(info.value, DecodeError)
        assert BDK.hex() not in str(info.value).lower()


def test_host_repr_hides_keys() -> None:
    host = DukptHost(BDK)
    key = host.pin_key(make_ksn(IKID, 7))
    text = repr(host) + str(host) + "".join(repr(p) for p in host._devices.values())
    for secret in (BDK, IK, key, derive_transaction_key(IK, make_ksn(IKID, 7))):
        assert secret.hex() not in text.lower()
    assert "devices=1" in text

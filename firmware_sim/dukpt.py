"""AES DUKPT (ANSI X9.24-3-2017), AES-128 keys only: the PIN key of every payment.

It also gives the "data encryption, decrypt" key (usage ``3001``) of the same KSN, under which
the center seals a balance inquiry's answer for the phone (:mod:`firmware_sim.balance_seal`).

The phone is the PIN entry device.  It holds one *initial key* (derived by the lab from the BDK
and the device's Initial Key ID) and a transaction counter; for each PIN it takes the next
counter, derives that counter's *transaction key* and from it the *PIN working key*, and sends
the counter along inside the 12-byte KSN.  The center, which alone knows the BDK, repeats the
derivation from the KSN.  The terminal in between never holds any of these keys.

Every derivation is one AES-ECB block under the parent key, over 16 bytes of derivation data
(X9.24-3-2017 6.3.2)::

    01 | 01 | key usage (2) | algorithm 0002 = AES-128 (2) | length 0080 (2) | 8 context bytes

The usages are a table (:data:`KEY_USAGES`, :data:`WORKING_KEY_USAGES`), not branches.

Counters: a counter is usable only if it has at most 16 one-bits (so that a device needs at most
16 derivations per transaction); a device skips the others by adding the lowest set bit, and
after ``FFFF0000`` no counter is left.

Simplification: :class:`DukptDevice` keeps the initial key and re-derives from it, instead of
the standard's 32 intermediate derivation-key registers that let a real device erase the
initial key.  The keys it produces are identical; only the key-storage hygiene differs.

The host side is :class:`DukptHost`: it holds the BDK and remembers, per device, the keys it
walked for that device's last counter, so that the next counter only costs the derivations
below the one-bits it shares with the previous one.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from swipepay.firmware_sim.errors import DecodeError, LocalError

KEY_LEN: Final = 16
BDK_LEN: Final = 16
IKID_LEN: Final = 8
KSN_LEN: Final = 12
COUNTER_BITS: Final = 32
MAX_COUNTER: Final = (1 << COUNTER_BITS) - 1
#: X9.24-3: a device never uses a counter with more one-bits than this.
MAX_ONE_BITS: Final = 16

_VERSION: Final = 0x01
_KEY_BLOCK_COUNTER: Final = 0x01
#: Algorithm indicator and key length in bits for the derived key (AES-128 only here).
_ALGORITHM_AES128: Final = 0x0002
_LENGTH_BITS_AES128: Final = 0x0080

#: Key usage indicators for the key-management derivations (X9.24-3-2017 table 2).
KEY_USAGES: Final[dict[str, int]] = {
    "initial-key": 0x8001,
    "derivation-key": 0x8000,
}

#: Working-key usages a caller may ask for, by name (X9.24-3-2017 table 2).
WORKING_KEY_USAGES: Final[dict[str, int]] = {
    "pin": 0x1000,
    "mac-generate": 0x2000,
    "mac-verify": 0x2001,
    "mac-both": 0x2002,
    "data-encrypt": 0x3000,
    "data-decrypt": 0x3001,
    "data-both": 0x3002,
}


class DukptExhausted(LocalError):
    """The device has used its last transaction counter and must be re-keyed."""


def _derivation_data(usage: int, context: bytes) -> bytes:
    return (
        bytes((_VERSION, _KEY_BLOCK_COUNTER))
        + usage.to_bytes(2, "big")
        + _ALGORITHM_AES128.to_bytes(2, "big")
        + _LENGTH_BITS_AES128.to_bytes(2, "big")
        + context
    )


#: The first 8 bytes of the derivation data per usage indicator, built once: ``_derive`` runs
#: up to 17 times per PIN on the center, so it only appends the context.
_HEADERS: Final[dict[int, bytes]] = {
    usage: _derivation_data(usage, b"")
    for usage in (*KEY_USAGES.values(), *WORKING_KEY_USAGES.values())
}
_DERIVATION_KEY: Final = KEY_USAGES["derivation-key"]

#: ECB keeps no state between blocks, so one mode object serves every cipher.
_ECB: Final = modes.ECB()  # noqa: S305 -- single-block derivations, X9.24-3


def _derive(key: bytes, usage: int, context: bytes) -> bytes:
    """One derivation step: AES-128-ECB of the derivation data under ``key``.

    Built with the fewest objects the public ``cryptography`` API allows (measured: creating
    the cipher context, which schedules the key, is most of the cost).  ``finalize()`` is
    skipped: for ECB it only checks that no partial block is buffered and returns ``b""``, and
    the derivation data is always exactly one block, so ``update`` has returned all of it.
    """
    # ECB over a single fixed-format block is exactly what X9.24-3 specifies.
    encryptor = Cipher(algorithms.AES(key), _ECB).encryptor()
    return encryptor.update(_HEADERS[usage] + context)


def _check_own(name: str, value: bytes, length: int) -> None:
    """Our own keys and IDs: a wrong length is a configuration bug (:class:`LocalError`)."""
    if not isinstance(value, bytes | bytearray) or len(value) != length:
        raise LocalError(f"{name} must be {length} bytes")


def usable(counter: int) -> bool:
    """True if a device may use ``counter``: 1..2**32-1 with at most 16 one-bits."""
    return 0 < counter <= MAX_COUNTER and counter.bit_count() <= MAX_ONE_BITS


def next_usable_counter(counter: int) -> int | None:
    """The smallest usable counter above ``counter``, or ``None`` if there is none.

    Adding the lowest set bit (X9.24-3's skip) clears a run of ones; nothing between the old
    and the new value can have fewer ones, so this is the very next usable counter.
    """
    if not 0 <= counter <= MAX_COUNTER:
        raise LocalError(f"transaction counter must be 0..{MAX_COUNTER}")
    candidate = counter + 1
    while candidate <= MAX_COUNTER and candidate.bit_count() > MAX_ONE_BITS:
        candidate += candidate & -candidate
    return candidate if candidate <= MAX_COUNTER else None


def make_ksn(ikid: bytes, counter: int) -> bytes:
    """KSN = Initial Key ID (8 bytes) || counter (4 bytes, big-endian)."""
    _check_own("Initial Key ID", ikid, IKID_LEN)
    if not 0 <= counter <= MAX_COUNTER:
        raise LocalError(f"transaction counter must be 0..{MAX_COUNTER}")
    return bytes(ikid) + counter.to_bytes(4, "big")


def split_ksn(ksn: bytes) -> tuple[bytes, int]:
    """``(Initial Key ID, counter)`` of a KSN received from outside (:class:`DecodeError`)."""
    if not isinstance(ksn, bytes | bytearray) or len(ksn) != KSN_LEN:
        raise DecodeError(f"KSN must be {KSN_LEN} bytes")
    return bytes(ksn[:IKID_LEN]), int.from_bytes(ksn[IKID_LEN:], "big")


def derive_initial_key(bdk: bytes, ikid: bytes) -> bytes:
    """Initial key of one device: derived from the BDK over the whole Initial Key ID."""
    _check_own("BDK", bdk, BDK_LEN)
    _check_own("Initial Key ID", ikid, IKID_LEN)
    return _derive(bytes(bdk), KEY_USAGES["initial-key"], bytes(ikid))


def _usable_ksn(ksn: bytes) -> tuple[bytes, int]:
    """Split a KSN and refuse counters no compliant device would send."""
    ikid, counter = split_ksn(ksn)
    if not usable(counter):
        raise DecodeError("KSN counter is 0 or has more than 16 one-bits")
    return ikid, counter


def _transaction_key(initial_key: bytes, ikid: bytes, counter: int) -> bytes:
    """Walk the counter's one-bits from the most significant down, one derivation each."""
    key = bytes(initial_key)
    working = 0
    for bit in reversed(range(COUNTER_BITS)):
        mask = 1 << bit
        if counter & mask:
            working |= mask
            key = _derive(key, _DERIVATION_KEY, ikid[4:] + working.to_bytes(4, "big"))
    return key


def derive_transaction_key(initial_key: bytes, ksn: bytes) -> bytes:
    """Transaction (intermediate derivation) key for the KSN's counter."""
    _check_own("initial key", initial_key, KEY_LEN)
    ikid, counter = _usable_ksn(ksn)
    return _transaction_key(initial_key, ikid, counter)


def derive_working_key(initial_key: bytes, ksn: bytes, usage: str) -> bytes:
    """Working key (PIN, MAC or data) for the KSN's counter, derived via its transaction key.

    ``usage`` is a key of :data:`WORKING_KEY_USAGES`; the host calls this with the initial key
    it derived from its BDK and the KSN that came with the PIN block.
    """
    usage_id = WORKING_KEY_USAGES.get(usage)
    if usage_id is None:
        raise LocalError(f"unknown DUKPT key usage {usage!r}")
    _check_own("initial key", initial_key, KEY_LEN)
    ikid, counter = _usable_ksn(ksn)
    transaction_key = _transaction_key(initial_key, ikid, counter)
    return _derive(transaction_key, usage_id, ikid[4:] + counter.to_bytes(4, "big"))


class DukptDevice:
    """The PIN entry device's side: hands out one PIN key per transaction, never reusing one.

    ``counter`` is the last counter used (0 for a freshly loaded device); the caller persists
    it after each :meth:`next_pin_key` so that a restart never reuses a key.
    """

    __slots__ = ("_counter", "_ikid", "_initial_key")

    def __init__(self, initial_key: bytes, ikid: bytes, counter: int = 0) -> None:
        _check_own("initial key", initial_key, KEY_LEN)
        _check_own("Initial Key ID", ikid, IKID_LEN)
        if not 0 <= counter <= MAX_COUNTER:
            raise LocalError(f"transaction counter must be 0..{MAX_COUNTER}")
        self._initial_key = bytes(initial_key)
        self._ikid = bytes(ikid)
        self._counter = counter

    def __repr__(self) -> str:
        # Deliberately leaves the key out: reprs end up in logs and tracebacks.
        return f"DukptDevice(ikid={self._ikid.hex().upper()}, counter={self._counter})"

    @property
    def ikid(self) -> bytes:
        return self._ikid

    @property
    def counter(self) -> int:
        """The last transaction counter used (persist this)."""
        return self._counter

    @property
    def exhausted(self) -> bool:
        """True once no further PIN key can be issued."""
        return next_usable_counter(self._counter) is None

    def next_pin_key(self) -> tuple[bytes, bytes]:
        """``(PIN working key, KSN)`` for the next usable counter; advances :attr:`counter`.

        Raises :class:`DukptExhausted` once the counter space is used up.
        """
        counter = next_usable_counter(self._counter)
        if counter is None:
            raise DukptExhausted("DUKPT transaction counters exhausted; the device needs a new key")
        ksn = make_ksn(self._ikid, counter)
        key = derive_working_key(self._initial_key, ksn, "pin")
        self._counter = counter
        return key, ksn

    def working_key(self, ksn: bytes, usage: str) -> bytes:
        """Another working key (``usage`` of :data:`WORKING_KEY_USAGES`) of a KSN this device
        issued: the phone opens the center's sealed balance with the "data-decrypt" key of the
        inquiry's KSN.  A KSN of another device or one not issued yet is a :class:`LocalError`.
        """
        ikid, counter = split_ksn(ksn)
        if ikid != self._ikid or not 0 < counter <= self._counter:
            raise LocalError("KSN was not issued by this device")
        return derive_working_key(self._initial_key, ksn, usage)


#: Default bound of :class:`DukptHost`'s per-device cache (<= ~1.2 KB per device, see there).
DEFAULT_MAX_DEVICES: Final = 100_000


#: Encryption contexts a :class:`DukptHost` keeps (each ~1 KB): a few per active device.
_MAX_CONTEXTS: Final = 4096


class _DevicePath:
    """What :class:`DukptHost` remembers about one device: keys only, never in a repr.

    ``keys[i]`` is the intermediate key for the prefix of ``counter`` made of its ``i + 1``
    most significant one-bits (so ``keys[-1]`` is ``counter``'s transaction key); the prefixes
    themselves are implied by ``counter`` and not stored.
    """

    __slots__ = ("counter", "initial_key", "keys")

    def __init__(self, initial_key: bytes) -> None:
        self.initial_key = initial_key
        self.counter = 0
        self.keys: list[bytes] = []

    def __repr__(self) -> str:
        return f"_DevicePath(counter={self.counter})"


class DukptHost:
    """The center's side of AES DUKPT: working keys from KSNs, with a per-device key cache.

    Why: the center derives the PIN key of every request from its KSN, and the plain
    :func:`derive_working_key` walks all the counter's one-bits from the initial key (one AES
    step each, plus the initial key and the working key), which was ~8 % of the center's CPU
    under ``swipepay bench center``.  A device's counters only grow, mostly by one, and two
    consecutive counters share their high one-bits, so this class keeps, per Initial Key ID,
    the initial key and the intermediate keys walked for that device's last counter, and only
    derives below the highest bit where the new counter differs: for a counter one above the
    previous one that is one derivation step plus the working-key step, whatever the
    counter's size.  Counters that go down, jump or repeat are equally correct (they reuse
    what prefix they share, possibly nothing).  Every result is exactly
    ``derive_working_key(derive_initial_key(bdk, ikid), ksn, usage)``.

    Security: the cached keys are the device's initial key and keys derived from it.  The
    center holds the BDK and derives any initial key from it on demand, so keeping these in
    the same process's memory gives an attacker who can read that memory nothing the BDK did
    not already give; they never leave the object (no repr, str or exception shows them).

    Memory: at most ``max_devices`` devices (least recently used evicted first).  Measured
    with tracemalloc (CPython 3, 64-bit): ~300 bytes per device (Initial Key ID, initial key,
    LRU entry) plus ~57 bytes per one-bit of its last counter (at most 16), i.e. ~0.65 KB
    for a counter with 5 one-bits and at most ~1.2 KB; the 100 000 default bounds the cache
    to roughly 65-120 MB.  Besides, the AES encryption contexts of the keys derivations last
    ran under (a rising counter's next derivation runs under one of them: one key schedule
    per request saved): at most 4096, ~1.2 KB each (RSS), ~5 MB; they hold the same keys.

    Sans-IO and not locked: meant for one caller thread at a time.  Do not share an instance
    between threads without an external lock (the cache's path lists are updated in place).
    """

    __slots__ = ("_bdk", "_contexts", "_devices", "_max_devices")

    def __init__(self, bdk: bytes, max_devices: int = DEFAULT_MAX_DEVICES) -> None:
        _check_own("BDK", bdk, BDK_LEN)
        if isinstance(max_devices, bool) or not isinstance(max_devices, int) or max_devices < 1:
            raise LocalError("DUKPT host cache size must be a positive integer")
        self._bdk = bytes(bdk)
        self._max_devices = max_devices
        self._devices: OrderedDict[bytes, _DevicePath] = OrderedDict()
        #: Key -> its AES-ECB encryption context, for the keys derivations run under: the
        #: last transaction key of a device is the parent of its next one half the time, and
        #: the other half a key higher up its path is, so a rising counter reuses a context
        #: made for the request before instead of scheduling the key again.  Least recently
        #: used dropped first.
        self._contexts: OrderedDict[bytes, CipherContext] = OrderedDict()

    def __repr__(self) -> str:
        # Deliberately leaves the BDK and every derived key out: reprs end up in logs.
        return f"DukptHost(devices={len(self._devices)}, max_devices={self._max_devices})"

    def __len__(self) -> int:
        """Number of devices currently cached."""
        return len(self._devices)

    def __contains__(self, ikid: object) -> bool:
        """Whether the device with this Initial Key ID is currently cached."""
        return ikid in self._devices

    @property
    def max_devices(self) -> int:
        return self._max_devices

    def clear(self) -> None:
        """Forget every cached key (e.g. after a BDK rotation drill); results do not change."""
        self._devices.clear()
        self._contexts.clear()

    def _derive(self, key: bytes, usage: int, context: bytes) -> bytes:
        """:func:`_derive` through a remembered encryption context of ``key`` (an ECB context
        carries nothing from one block to the next, so one context serves every derivation
        under its key)."""
        contexts = self._contexts
        encryptor = contexts.get(key)
        if encryptor is None:
            encryptor = contexts[key] = Cipher(algorithms.AES(key), _ECB).encryptor()
            if len(contexts) > _MAX_CONTEXTS:
                contexts.popitem(last=False)
        else:
            contexts.move_to_end(key)
        return encryptor.update(_HEADERS[usage] + context)

    def pin_key(self, ksn: bytes) -> bytes:
        """PIN working key for ``ksn`` (a KSN received from outside: :class:`DecodeError`)."""
        return self.working_key(ksn, "pin")

    def working_key(self, ksn: bytes, usage: str) -> bytes:
        """Working key of ``usage`` (a key of :data:`WORKING_KEY_USAGES`) for ``ksn``.

        Same result and errors as :func:`derive_working_key` with the device's initial key:
        :class:`LocalError` for an unknown usage, :class:`DecodeError` for a KSN of the wrong
        length or with an unusable counter.  A refused KSN leaves the cache untouched.
        """
        usage_id = WORKING_KEY_USAGES.get(usage)
        if usage_id is None:
            raise LocalError(f"unknown DUKPT key usage {usage!r}")
        ikid, counter = _usable_ksn(ksn)
        transaction_key = self._transaction_key(ikid, counter)
        return self._derive(transaction_key, usage_id, ikid[4:] + counter.to_bytes(4, "big"))

    def _device(self, ikid: bytes) -> _DevicePath:
        """The device's cache entry, freshly used; derives its initial key on a miss."""
        devices = self._devices
        path = devices.get(ikid)
        if path is not None:
            devices.move_to_end(ikid)
            return path
        path = devices[ikid] = _DevicePath(derive_initial_key(self._bdk, ikid))
        if len(devices) > self._max_devices:
            devices.popitem(last=False)
        return path

    def _transaction_key(self, ikid: bytes, counter: int) -> bytes:
        """``counter``'s transaction key, re-deriving only below its first differing bit."""
        path = self._device(ikid)
        keys = path.keys
        differ = path.counter ^ counter
        if differ:
            # One-bits above the highest differing bit are shared, and so are their keys.
            top = differ.bit_length()
            del keys[(counter >> top).bit_count() :]
            key = keys[-1] if keys else path.initial_key
            context = ikid[4:]
            working = (counter >> top) << top
            for bit in reversed(range(top)):
                mask = 1 << bit
                if counter & mask:
                    working |= mask
                    key = self._derive(key, _DERIVATION_KEY, context + working.to_bytes(4, "big"))
                    keys.append(key)
            path.counter = counter
        return keys[-1]

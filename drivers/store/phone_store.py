"""The phone's persistent state: its profile file ``phones/<name>.json`` (mode 0600).

The profile holds the phone's enrollment (bound card, signing key, CA keys) and its AES-DUKPT
device: initial key, Initial Key ID and the last transaction counter used.  A DUKPT counter
must never be used twice (the center refuses a counter that does not rise, and a reused one
would reuse a PIN key), so :class:`PhoneStore` hands out a device that writes each counter to
the profile *before* deriving that counter's key: a phone killed at any moment restarts past
every counter whose key may have left it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from swipepay.drivers.store.secretfile import read_private, write_private
from swipepay.firmware_sim import ecc
from swipepay.firmware_sim.dukpt import DukptDevice, next_usable_counter
from swipepay.firmware_sim.errors import ConfigError
from swipepay.firmware_sim.phonelink.applet import PhoneIdentity


def _terminal_ids(value: Any) -> tuple[str, ...]:
    """A profile's ``revoked_terminals``: a JSON list of terminal IDs (strings)."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError("revoked_terminals must be a list of strings")
    return tuple(value)


@dataclass(frozen=True)
class PhoneProfile:
    """A phone's enrollment data as stored in ``phones/<name>.json`` (mode 0600)."""

    name: str
    card: str
    pan: str
    signing_key_pem: bytes
    initial_key: bytes
    ikid: bytes
    counter: int
    ca_keys: dict[int, bytes]
    path: Path | None = None
    #: Terminal IDs the phone refuses (hardware_notes/phone-link.md §4); optional in the file.
    revoked_terminals: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"PhoneProfile(name={self.name!r}, card={self.card!r})"

    def identity(self) -> PhoneIdentity:
        key = serialization.load_pem_private_key(self.signing_key_pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return PhoneIdentity(
            card_id=self.pan.encode("ascii"),
            pan=self.pan,
            signing_key=key,
            ca_keys={i: ecc.decode_point(p) for i, p in self.ca_keys.items()},
            revoked_terminals=frozenset(self.revoked_terminals),
        )

    def dukpt(self) -> DukptDevice:
        """A device at the stored counter that persists nothing (see :meth:`PhoneStore.dukpt`)."""
        return DukptDevice(self.initial_key, self.ikid, self.counter)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "card": self.card,
            "pan": self.pan,
            "signing_key_pem": self.signing_key_pem.decode("ascii"),
            "dukpt_initial_key": self.initial_key.hex(),
            "dukpt_ikid": self.ikid.hex(),
            "dukpt_counter": self.counter,
            "ca_keys": {str(i): p.hex() for i, p in self.ca_keys.items()},
            "revoked_terminals": list(self.revoked_terminals),
        }

    def save(self, path: Path) -> None:
        write_private(path, json.dumps(self.to_json(), indent=2).encode("utf-8"))

    def with_counter(self, counter: int) -> PhoneProfile:
        return replace(self, counter=counter)

    @classmethod
    def load(cls, path: Path) -> PhoneProfile:
        try:
            d = json.loads(read_private(path))
            return cls(
                name=str(d["name"]),
                card=str(d["card"]),
                pan=str(d["pan"]),
                signing_key_pem=str(d["signing_key_pem"]).encode("ascii"),
                initial_key=bytes.fromhex(d["dukpt_initial_key"]),
                ikid=bytes.fromhex(d["dukpt_ikid"]),
                counter=int(d["dukpt_counter"]),
                ca_keys={int(i): bytes.fromhex(p) for i, p in d["ca_keys"].items()},
                path=path,
                revoked_terminals=_terminal_ids(d.get("revoked_terminals", [])),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"phone profile {path} is malformed: {type(exc).__name__}") from None


class PhoneStore:
    """The one owner of a phone's profile file and its DUKPT counter."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.profile = PhoneProfile.load(self.path)

    def __repr__(self) -> str:
        return f"PhoneStore({self.path})"

    def dukpt(self) -> DukptDevice:
        """The phone's DUKPT device; each counter is on disk before its key is derived."""
        return _PersistedDukpt(self)

    def save_counter(self, counter: int) -> None:
        """Record ``counter`` as used (fsynced, atomic: the old or the new profile, never half)."""
        self.profile = self.profile.with_counter(counter)
        self.profile.save(self.path)


class _PersistedDukpt(DukptDevice):
    """A :class:`DukptDevice` that reserves each counter in its :class:`PhoneStore` first."""

    __slots__ = ("_store",)

    def __init__(self, store: PhoneStore) -> None:
        profile = store.profile
        super().__init__(profile.initial_key, profile.ikid, profile.counter)
        self._store = store

    def next_pin_key(self) -> tuple[bytes, bytes]:
        counter = next_usable_counter(self.counter)
        if counter is not None:  # None: the base class raises DukptExhausted
            self._store.save_counter(counter)
        return super().next_pin_key()

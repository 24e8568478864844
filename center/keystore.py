"""The center's own secret keys: the DUKPT base derivation key and the PIN verification key.

Only the center holds the BDK (hardware_notes/design.md §4: a terminal relays PIN blocks it can
never decrypt), so these bytes must never reach a log, a repr or an exception message: the secret
fields are ``repr=False`` and every error names the file, never its content.

On disk each key is one hex file in a lab directory, written with mode 0600.
:meth:`CenterKeys.load` refuses a secret file that the group or others may access, the way
ssh refuses a readable private key: a key that others could have read is as good as leaked.
"""

from __future__ import annotations

import binascii
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from swipepay.center.secretfile import read_private, write_private
from swipepay.firmware_sim.errors import ConfigError

BDK_LEN = 16  # AES-128 BDK (ANSI X9.24-3-2017)
BDK_ID_LEN = 4  # first half of the DUKPT Initial Key ID
PVK_LEN = 32  # HMAC-SHA256 key for PIN verification data


@dataclass(frozen=True)
class KeyFile:
    """Where one key lives and whether it is secret."""

    attr: str
    filename: str
    length: int
    secret: bool


#: The key files of a lab directory, as data.
KEY_FILES: tuple[KeyFile, ...] = (
    KeyFile("bdk", "center-bdk.hex", BDK_LEN, secret=True),
    KeyFile("bdk_id", "center-bdk-id.hex", BDK_ID_LEN, secret=False),
    KeyFile("pvk", "center-pvk.hex", PVK_LEN, secret=True),
)


@dataclass(frozen=True)
class CenterKeys:
    """The BDK (and its ID) every phone's DUKPT keys derive from, and the PIN verification key."""

    bdk: bytes = field(repr=False)
    bdk_id: bytes
    pvk: bytes = field(repr=False)

    def __post_init__(self) -> None:
        for kf in KEY_FILES:
            value = getattr(self, kf.attr)
            if not isinstance(value, bytes) or len(value) != kf.length:
                raise ConfigError(f"{kf.attr} must be {kf.length} bytes")

    @classmethod
    def generate(cls, bdk_id: bytes | None = None) -> CenterKeys:
        """Fresh random keys (for ``swipepay init`` and tests)."""
        return cls(
            bdk=secrets.token_bytes(BDK_LEN),
            bdk_id=bdk_id if bdk_id is not None else secrets.token_bytes(BDK_ID_LEN),
            pvk=secrets.token_bytes(PVK_LEN),
        )

    def save(self, directory: str | Path) -> None:
        """Write every key as a hex file with mode 0600 (the directory is created with 0700)."""
        path = Path(directory)
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        for kf in KEY_FILES:
            write_private(path / kf.filename, getattr(self, kf.attr).hex().encode("ascii") + b"\n")

    @classmethod
    def load(cls, directory: str | Path) -> CenterKeys:
        """Read the keys back; :class:`ConfigError` for a missing, malformed or exposed file."""
        path = Path(directory)
        values = {kf.attr: _read_key(path / kf.filename, kf) for kf in KEY_FILES}
        return cls(**values)


def _read_key(path: Path, kf: KeyFile) -> bytes:
    if kf.secret:
        raw = read_private(path)
    else:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(f"key file {path} is missing") from None
    try:
        value = binascii.unhexlify(raw.strip())
    except (binascii.Error, ValueError):
        raise ConfigError(f"key file {path} is not hex") from None
    if len(value) != kf.length:
        raise ConfigError(f"key file {path} must hold {kf.length} bytes, not {len(value)}")
    return value

"""The terminal application's settings: defaults, then ``HOME/terminal.toml`` (or ``--config``),
then command-line options.  The keys and their types are data (:data:`CONFIG_KEYS`)."""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from swipepay.drivers.store.userfile import read_regular
from swipepay.firmware_sim.address import Address, parse_address
from swipepay.firmware_sim.errors import ConfigError

CONFIG_FILE: Final = "terminal.toml"


@dataclass(frozen=True)
class TerminalSettings:
    """What a terminal run is configured with (a terminal.toml key per field)."""

    terminal_id: str = "POS00001"
    merchant_id: str | None = None
    merchant_name: str | None = None
    card: str = "mock:"
    phone: str = "pcsc:Virtual PCD 00 01"
    center: str = "127.0.0.1:8583"
    card_timeout: float = 30.0
    phone_timeout: float = 30.0
    host_timeout: float = 15.0
    confirm_timeout: float = 60.0
    poll_interval_ms: int = 200
    #: The phone-link AID, hex (None: the lab's ``aid``, by default F0535750415901).
    aid: str | None = None

    def __post_init__(self) -> None:
        for key, (shortest, longest) in TEXT_LENGTHS.items():
            text = getattr(self, key)
            if text is not None and not (
                shortest <= len(text) <= longest and text.isascii() and text.isprintable()
            ):
                size = str(longest) if shortest == longest else f"{shortest} to {longest}"
                raise ConfigError(
                    f"{key} must be {size} printable ASCII characters (ISO 8583 field "
                    f"{ISO_FIELDS[key]}), not {text!r}"
                )
        for key, (low, high) in NUMBER_RANGES.items():
            value = getattr(self, key)
            if not (math.isfinite(value) and low < value <= high):
                option = f" (--{key.replace('_', '-')})" if key in OPTIONS else ""
                raise ConfigError(
                    f"{key}{option} must be above {low} and at most {high}, not {value}"
                )


#: The lengths of the settings that go into the request as they are: a value the ISO 8583
#: field cannot hold is refused before a card is read or a phone asked, not when the request
#: is encoded after the user typed the PIN.
TEXT_LENGTHS: Final[dict[str, tuple[int, int]]] = {"terminal_id": (8, 8), "merchant_id": (1, 15)}
ISO_FIELDS: Final[dict[str, int]] = {"terminal_id": 41, "merchant_id": 42}

#: The settings ``terminal run`` also takes as options (the rest only from terminal.toml).
OPTIONS: Final = frozenset({"card_timeout", "phone_timeout", "host_timeout", "confirm_timeout"})

#: The range of each number setting, (above, at most): a wait of zero, below zero, NaN or
#: infinity is no setting (and infinity cannot become the milliseconds the terminal counts in).
NUMBER_RANGES: Final[dict[str, tuple[float, float]]] = {
    "card_timeout": (0, 86_400),
    "phone_timeout": (0, 86_400),
    "host_timeout": (0, 86_400),
    "confirm_timeout": (0, 86_400),
    "poll_interval_ms": (0, 60_000),
}


#: Keys a terminal.toml may set -> the type of their value (specs as data).
CONFIG_KEYS: Final[dict[str, type]] = {
    "terminal_id": str,
    "merchant_id": str,
    "merchant_name": str,
    "card": str,
    "phone": str,
    "center": str,
    "card_timeout": float,
    "phone_timeout": float,
    "host_timeout": float,
    "confirm_timeout": float,
    "poll_interval_ms": int,
    "aid": str,
}


#: Keys whose value may also be a TOML list of strings (kept comma-joined, as on the command
#: line).
LIST_KEYS: Final = frozenset({"center"})


#: What each key means (the comment above it in the terminal.toml ``swipepay init`` writes).
CONFIG_HELP: Final[dict[str, str]] = {
    "terminal_id": "Terminal ID: a terminal of this lab (POS00001, ATM00001).",
    "merchant_id": "Merchant ID sent to the center (default: the lab's, from the certificate).",
    "merchant_name": "Merchant name on the console (the phone shows the certificate's).",
    "card": "Card reader: mock: (offer the lab's cards), mock:alice-visa?via=tap, "
    "pcsc:Virtual PCD 00 00, serial:/dev/ttyUSB0?proto=msr605.",
    "phone": "Phone link: pcsc:Virtual PCD 00 01, tcp:127.0.0.1:7000, mock:alice-phone.",
    "center": "Center HOST:PORT (TLS), or local (the lab's center in this process).  Several "
    "as a list are tried in order, one that does not answer is skipped: "
    'center = ["10.0.0.1:8583", "10.0.0.2:8583"].',
    "card_timeout": "Seconds to wait for a card.",
    "phone_timeout": "Seconds to wait for a phone in the field.",
    "host_timeout": "Seconds to wait for the center's answer.",
    "confirm_timeout": "Seconds the user has to confirm on the phone.",
    "poll_interval_ms": "Milliseconds between the terminal's polls of the phone.",
    "aid": "The phone-link AID, hex (default: the lab's aid); the phone's must match.",
}


#: Example values for the keys whose default is the lab's own value.
_EXAMPLES: Final[dict[str, str]] = {
    "merchant_id": "MERCH0000000001",
    "merchant_name": "Kiosk",
    "aid": "F0535750415901",
}


def commented_config() -> str:
    """A terminal.toml that sets nothing: every key commented out at its default, explained."""
    lines = [
        "# Settings of `swipepay terminal run` for this lab (command-line options win).",
        "# Uncomment a line to change it; the values shown are the defaults.",
    ]
    defaults = TerminalSettings()
    for key in CONFIG_KEYS:
        value = getattr(defaults, key)
        lines += ["", f"# {CONFIG_HELP[key]}"]
        if value is None:  # no default: the lab's own value; show an example
            lines.append(f'# {key} = "{_EXAMPLES[key]}"')
        elif isinstance(value, str):
            lines.append(f'# {key} = "{value}"')
        else:
            lines.append(f"# {key} = {value}")
    return "\n".join(lines) + "\n"


def load_settings(home: Path, config: Path | None, given: Mapping[str, Any]) -> TerminalSettings:
    """Defaults, then ``HOME/terminal.toml`` (or ``--config``), then ``given`` (None: not given)."""
    path = config if config is not None else home / CONFIG_FILE
    from_file: dict[str, Any] = {}
    if config is not None or path.exists():
        try:
            from_file = tomllib.loads(read_regular(path, "settings file").decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    values: dict[str, Any] = {}
    for key, value in from_file.items():
        want = CONFIG_KEYS.get(key)
        if want is None:
            raise ConfigError(f"{path}: unknown key {key!r} (known: {', '.join(CONFIG_KEYS)})")
        if key in LIST_KEYS and isinstance(value, list):
            if not value or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{path}: {key} must be a string or a list of strings")
            value = ",".join(value)
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, want) or isinstance(value, bool):
            raise ConfigError(f"{path}: {key} must be a {want.__name__}")
        values[key] = value
    values.update({k: v for k, v in given.items() if v is not None})
    settings = replace(TerminalSettings(), **values)
    center_addresses(settings.center)  # a bad address is said before anything is opened
    return settings


def center_addresses(center: str) -> list[Address]:
    """The ``center`` setting -> the centers to try, in order; ``[]`` for ``local`` (the lab's
    center in this process).  Several are comma-separated (a TOML list is joined so)."""
    names = [n.strip() for n in center.split(",")]
    if names == ["local"]:
        return []
    if "local" in names:
        raise ConfigError("--center: 'local' cannot be combined with other centers")
    if "" in names:
        raise ConfigError(f"--center: an empty address in {center!r} (HOST:PORT,HOST:PORT)")
    return [parse_address(n, "--center", alternative=" or 'local'") for n in names]

"""``HOST:PORT`` as the command line and the driver URLs write it, parsed in one place.

Used by ``center serve --listen``, ``terminal run --center``, the ``tcp:`` phone link and the
``vpcd:`` slots.  An IPv6 host goes in brackets (``[::1]:8583``), as in URLs; without a port
a bare IPv6 address is accepted where a default port exists (``vpcd:::1``).

Either part may be left out only where the caller gives a default for it.  Port 0 ("any free
port") is only for listening sockets (``any_port``).  Every mistake is one
:class:`~firmware_sim.errors.ConfigError` sentence naming the option or URL it came from.
"""

from __future__ import annotations

from typing import NamedTuple

from swipepay.firmware_sim.errors import ConfigError


class Address(NamedTuple):
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_address(
    text: str,
    what: str,
    *,
    default_host: str | None = None,
    default_port: int | None = None,
    any_port: bool = False,
    alternative: str = "",
) -> Address:
    """``"127.0.0.1:8583"`` -> ``Address("127.0.0.1", 8583)``.

    ``what`` names the source in errors (``"--listen"``, ``"tcp: URL"``); ``alternative`` is
    added to the expected form (``" or 'local'"``).
    """
    host, port_text = _split(text)
    try:
        if not host:
            if default_host is None:
                raise ValueError("no host")
            host = default_host
        if not port_text:
            if default_port is None:
                raise ValueError("no port")
            return Address(host, default_port)
        if not (port_text.isascii() and port_text.isdigit()):
            raise ValueError(f"port {port_text!r} is not a number")
        port = int(port_text)
        if not (0 if any_port else 1) <= port <= 65535:
            raise ValueError(f"port {port} out of range")
    except ValueError as exc:
        host_part = "[HOST]" if default_host is not None else "HOST"
        port_part = "[:PORT]" if default_port is not None else ":PORT"
        raise ConfigError(
            f"{what} must be {host_part}{port_part}{alternative}, not {text!r} ({exc})"
        ) from None
    return Address(host, port)


def _split(text: str) -> tuple[str, str]:
    """Host and port text, either may be empty; brackets taken off an IPv6 host."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return "", text  # no valid host; the port check reports it
        return host, rest[1:]
    if text.count(":") > 1:
        return text, ""  # a bare IPv6 address: no port
    host, _sep, port_text = text.partition(":")
    return host, port_text
